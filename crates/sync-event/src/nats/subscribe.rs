//! Plain subscribers: an ephemeral pull consumer read through a gap check, recreated from the
//! next offset whenever it fails.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream;
use futures::StreamExt;

use super::{event, first_available, retry, unavailable, NatsEvents};
use crate::{Error, Event, Result, Start, Subscription};

/// Where a consumer starts, as JetStream's deliver policy, and the offset expected first
/// (`None` for a start by time: the server finds it).
pub(super) struct Resolved {
    pub(super) policy: DeliverPolicy,
    pub(super) next: Option<u64>,
}

impl NatsEvents {
    /// Resolves `start` on `stream` (whose info was just fetched), or `Truncated`.
    ///
    /// JetStream keeps no trace of the events retention removed, so a start by time is judged
    /// by the oldest retained event: once anything was removed, a time before that event's
    /// publish time may have lost events and is `Truncated` (conservatively: the removed
    /// events may all have been older than the time asked for).
    pub(super) async fn resolve(
        &self,
        topic: &str,
        stream: &async_nats::jetstream::stream::Stream,
        start: Start,
    ) -> Result<Resolved> {
        let state = &stream.cached_info().state;
        let first = first_available(state.messages, state.first_sequence, state.last_sequence);
        let after_last = state.last_sequence + 1;
        let truncated = |requested| Error::Truncated {
            topic: topic.to_string(),
            requested,
            first_available: first,
        };
        let at = |n: u64| Resolved {
            policy: DeliverPolicy::ByStartSequence { start_sequence: n },
            next: Some(n),
        };
        Ok(match start {
            Start::Earliest => at(first),
            Start::Latest => at(after_last),
            Start::Offset(n) if n < first => return Err(truncated(n)),
            Start::Offset(n) => at(n),
            Start::Time(t) => {
                if first > 1 && t < self.time_of(topic, stream, first, state.messages).await? {
                    return Err(truncated(first - 1));
                }
                Resolved {
                    policy: DeliverPolicy::ByStartTime {
                        start_time: t.into(),
                    },
                    next: None,
                }
            }
        })
    }

    /// Publish time of the event at `offset` (the stream's first); now if the stream is empty.
    async fn time_of(
        &self,
        topic: &str,
        stream: &async_nats::jetstream::stream::Stream,
        offset: u64,
        messages: u64,
    ) -> Result<SystemTime> {
        if messages == 0 {
            return Ok(SystemTime::now());
        }
        match stream.get_raw_message(offset).await {
            Ok(m) => Ok(m.time.into()),
            // Removed meanwhile: the next one is newer still, so "before" stays true.
            Err(e) if e.to_string().contains("not found") => Ok(SystemTime::now()),
            Err(e) => Err(unavailable(
                "read the oldest event",
                &self.endpoint(),
                format!("topic {topic:?}: {e}"),
            )),
        }
    }

    pub(super) async fn subscribe_from(&self, topic: &str, start: Start) -> Result<Subscription> {
        let t = self.topic(topic).await?;
        let deadline = self.deadline();
        let stream = retry(deadline, || self.js().get_stream(t.stream.clone()))
            .await
            .map_err(|e| unavailable("subscribe", &self.endpoint(), e))?;
        let resolved = self.resolve(topic, &stream, start).await?;
        let consumer = retry(deadline, || {
            stream.create_consumer(consumer_config(&t.subject, resolved.policy))
        })
        .await
        .map_err(|e| unavailable("subscribe", &self.endpoint(), e))?;
        // For a start by time, the server picked the first offset when it made the consumer:
        // the one after what its info calls delivered. Knowing it, a consumer recreated before
        // the first event starts there too.
        let next = resolved
            .next
            .unwrap_or(consumer.cached_info().delivered.stream_sequence + 1);
        let messages = retry(deadline, || pull_messages(&consumer))
            .await
            .map_err(|e| unavailable("subscribe", &self.endpoint(), e))?;
        let reader = Reader {
            topic: t.topic.clone(),
            subject: t.subject.clone(),
            stream,
            messages: Some(messages),
            delivered: 0,
            next,
            // "The oldest retained event": if retention drops it before it is read, the next
            // oldest is what was asked for.
            any_first: start == Start::Earliest,
            done: false,
        };
        let stream = futures::stream::unfold(reader, |mut r| async move {
            let item = r.read().await?;
            Some((item, r))
        });
        Ok(Subscription::new(stream.boxed()))
    }
}

/// How often the server sends a subscriber's consumer an idle heartbeat; two missed ones (4 s)
/// and the reader recreates its consumer elsewhere. async-nats's own ordered consumer waits
/// two missed heartbeats of 15 s: a subscriber whose consumer was on a killed node paused
/// 63 s in `tests/nats_subscriber_failover.rs` (2.6–7 s with this).
const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long one pull request of a subscriber lasts at the server.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// How long the server keeps a subscriber's consumer once nobody pulls from it (a dropped
/// subscription, or one whose reader moved to a new consumer).
const INACTIVE: Duration = Duration::from_secs(30);
/// Pause before recreating a consumer that could not be made.
const RECREATE_PAUSE: Duration = Duration::from_millis(200);

/// A subscriber's consumer: ephemeral, 1 replica in memory, no acks (what an ordered
/// consumer is), starting at `policy`.
fn consumer_config(subject: &str, policy: DeliverPolicy) -> pull::Config {
    pull::Config {
        deliver_policy: policy,
        ack_policy: AckPolicy::None,
        max_deliver: 1,
        filter_subject: subject.to_owned(),
        inactive_threshold: INACTIVE,
        num_replicas: 1,
        memory_storage: true,
        ..Default::default()
    }
}

async fn pull_messages(
    consumer: &PullConsumer,
) -> Result<pull::Stream, async_nats::jetstream::consumer::StreamError> {
    consumer
        .stream()
        .heartbeat(HEARTBEAT)
        .expires(PULL_EXPIRES)
        .messages()
        .await
}

/// A subscriber's position.
struct Reader {
    topic: String,
    subject: String,
    /// The topic's stream, where a failed consumer is recreated.
    stream: stream::Stream,
    /// The current consumer's messages; `None` once it failed (recreated on the next read).
    messages: Option<pull::Stream>,
    /// The current consumer's last delivery number (its consumer sequence; 0 for a new one):
    /// they follow 1, 2, 3, … unless a delivery was lost in transit.
    delivered: u64,
    /// The offset the next event must have.
    next: u64,
    /// Until the first event, accept a later offset than `next` (a start at `Earliest`).
    any_first: bool,
    /// Ended after an error.
    done: bool,
}

impl Reader {
    async fn read(&mut self) -> Option<Result<Event>> {
        if self.done {
            return None;
        }
        loop {
            let Some(messages) = self.messages.as_mut() else {
                self.recreate().await;
                continue;
            };
            let message = match messages.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    // Its server went away (missed heartbeats), or it was deleted: a new
                    // consumer from the next offset, wherever the cluster places it.
                    tracing::debug!(topic = %self.topic, error = %e, "subscriber's consumer failed; recreating it");
                    self.messages = None;
                    continue;
                }
                None => {
                    self.messages = None;
                    continue;
                }
            };
            let ev = match event(&self.topic, &message) {
                Ok((ev, delivery, _)) => {
                    if delivery != self.delivered + 1 {
                        // A delivery of this consumer went missing (lost in a reconnect): the
                        // offsets after it are no evidence of retention. Start again from
                        // the next offset.
                        tracing::debug!(topic = %self.topic, delivery, expected = self.delivered + 1, "subscriber's consumer skipped a delivery; recreating it");
                        self.messages = None;
                        continue;
                    }
                    self.delivered = delivery;
                    ev
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            if self.any_first {
                self.next = self.next.max(ev.offset);
            }
            let next = self.next;
            if ev.offset < next {
                continue; // delivered again by a recreated consumer
            }
            if ev.offset > next {
                self.done = true;
                return Some(Err(Error::Truncated {
                    topic: self.topic.clone(),
                    requested: next,
                    first_available: ev.offset,
                }));
            }
            self.next = next + 1;
            self.any_first = false;
            return Some(Ok(ev));
        }
    }

    /// Makes a new consumer from the next offset, trying until it works (as the ordered
    /// consumer of async-nats does: a subscription has no deadline). The gap check sees an
    /// offset retention removed meanwhile as a jump.
    async fn recreate(&mut self) {
        let config = consumer_config(
            &self.subject,
            DeliverPolicy::ByStartSequence {
                start_sequence: self.next,
            },
        );
        loop {
            let made = match self.stream.create_consumer(config.clone()).await {
                Ok(consumer) => pull_messages(&consumer).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match made {
                Ok(messages) => {
                    self.messages = Some(messages);
                    self.delivered = 0;
                    return;
                }
                Err(e) => {
                    tracing::debug!(topic = %self.topic, error = %e, "recreating the subscriber's consumer failed; retrying");
                    tokio::time::sleep(RECREATE_PAUSE).await;
                }
            }
        }
    }
}
