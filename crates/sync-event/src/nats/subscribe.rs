//! Plain subscribers: an ordered pull consumer read through a gap check.

use std::time::SystemTime;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
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
        let config = pull::OrderedConfig {
            filter_subject: t.subject.clone(),
            deliver_policy: resolved.policy,
            ..Default::default()
        };
        let consumer = retry(deadline, || stream.create_consumer(config.clone()))
            .await
            .map_err(|e| unavailable("subscribe", &self.endpoint(), e))?;
        // For a start by time, the server picked the first offset when it made the consumer:
        // the one after what its info calls delivered. Knowing it, a consumer recreated before
        // the first event (which then starts from the beginning) is filtered too.
        let next = resolved
            .next
            .unwrap_or(consumer.cached_info().delivered.stream_sequence + 1);
        let messages = retry(deadline, || consumer.clone().messages())
            .await
            .map_err(|e| unavailable("subscribe", &self.endpoint(), e))?;
        let reader = Reader {
            topic: t.topic.clone(),
            messages,
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

/// A subscriber's position.
struct Reader {
    topic: String,
    messages: pull::Ordered,
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
            let message = match self.messages.next().await? {
                Ok(m) => m,
                Err(e) => {
                    // The ordered consumer recreates itself after its server went away.
                    tracing::debug!(topic = %self.topic, error = %e, "subscriber's consumer recovering");
                    continue;
                }
            };
            let ev = match event(&self.topic, &message) {
                Ok((ev, _, _)) => ev,
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
}
