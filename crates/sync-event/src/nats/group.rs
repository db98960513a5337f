//! Consumer groups: one durable pull consumer per (topic, group), shared by its members.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::{stream, Message};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{event, first_available, names, retry, unavailable, NatsEvents, Topic};
use crate::event::dead_letter;
use crate::{Delivery, Error, GroupOptions, Member, Result};

/// How long one pull request waits at the server for an event before the next is sent.
const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// A member of a consumer group on the `nats` backend (see [`NatsEvents`]'s module docs).
///
/// A member pulls one event at a time, and only while a [`next`](Member::next) waits: an
/// event never waits in a member's buffer, where no other member could take it and where the
/// server would count a delivery the user never saw (JetStream's delivery count is the
/// `attempt`). The pull runs in a task of its own, so a `next()` dropped while it waits (a
/// `select!`, a timeout) loses nothing: the event lands in the member's inbox for the next
/// call.
///
/// JetStream's consumer steps over the events retention removed before it delivered them,
/// without a word. So while the topic has a retention limit, a member compares, before each
/// pull, the group's position (the consumer's last delivered offset) with the stream's first
/// retained offset, and reports a gap between them as [`Error::Truncated`]; see
/// [`check_gap`](NatsMember::check_gap) for what this check cannot see.
pub(crate) struct NatsMember {
    rules: Arc<Rules>,
    consumer: PullConsumer,
    /// The topic's stream, read by the gap check.
    stream: stream::Stream,
    /// Whether the topic has a retention limit (and so can drop events the group has not
    /// taken): the gap check is made only then.
    limited: bool,
    /// The first available offset of the last gap this member reported: a loss is reported
    /// once, and a later one from where the last ended.
    reported: SyncMutex<u64>,
    pulls: Arc<Pulls>,
    /// Deliveries handed out and not yet acked or nacked, by tag (the consumer sequence).
    held: SyncMutex<HashMap<u64, Held>>,
}

/// What a member needs to settle a delivery.
struct Rules {
    events: NatsEvents,
    topic: Arc<Topic>,
    group: String,
    dead_letter: Arc<Topic>,
    options: GroupOptions,
}

struct Held {
    acker: Acker,
    /// When it arrived (the server's ack wait started a little earlier).
    since: Instant,
}

impl std::fmt::Debug for NatsMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsMember")
            .field("topic", &self.rules.topic.topic)
            .field("group", &self.rules.group)
            .finish_non_exhaustive()
    }
}

impl NatsEvents {
    /// Joins `group` on `topic`, creating the group's durable consumer if it is new.
    pub(super) async fn join_group(
        &self,
        topic: &str,
        group: &str,
        options: GroupOptions,
    ) -> Result<NatsMember> {
        crate::check_name("group", group)?;
        options.validate(topic)?;
        let t = self.topic(topic).await?;
        let dead_letter = self.topic(&options.dead_letter_for(topic)).await?;
        let deadline = self.deadline();
        let stream = retry(deadline, || self.js().get_stream(t.stream.clone()))
            .await
            .map_err(|e| unavailable("join a group", &self.endpoint(), e))?;
        let name = names::encode(&self.config().prefix, group);
        let consumer: PullConsumer = match stream.get_consumer(&name).await {
            Ok(c) => c,
            Err(_) => {
                // A new group (or a failed lookup: creating an existing consumer with the
                // same configuration is harmless).
                let start = self.resolve(topic, &stream, options.start()).await?;
                let config = pull::Config {
                    durable_name: Some(name.clone()),
                    description: Some(group.to_string()),
                    deliver_policy: start.policy,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: options.ack_wait(),
                    // Unlimited: a member moves an event to the dead-letter topic itself, so
                    // an event whose last delivery's member died is still delivered, and moved.
                    max_deliver: -1,
                    filter_subject: t.subject.clone(),
                    num_replicas: self.config().replicas,
                    ..Default::default()
                };
                retry(deadline, || {
                    stream.get_or_create_consumer(&name, config.clone())
                })
                .await
                .map_err(|e| unavailable("create a group", &self.endpoint(), e))?
            }
        };
        let have = &stream.cached_info().config;
        let retention = self.inner.options.retention_for(topic);
        let limited = have.max_messages > 0
            || !have.max_age.is_zero()
            || retention.max_events().is_some()
            || retention.max_age().is_some();
        Ok(NatsMember {
            stream,
            limited,
            reported: SyncMutex::new(0),
            rules: Arc::new(Rules {
                events: self.clone(),
                topic: t,
                group: group.to_string(),
                dead_letter,
                options,
            }),
            consumer,
            pulls: Arc::new(Pulls::default()),
            held: SyncMutex::new(HashMap::new()),
        })
    }
}

impl NatsMember {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn next_delivery(&self) -> Result<Delivery> {
        loop {
            // Registered before looking at the inbox, so a pull finishing in between wakes us.
            let arrived = self.pulls.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if self.pulls.left.load(Ordering::SeqCst) {
                return Err(Error::Closed);
            }
            let Some((message, since)) = self.pulls.take() else {
                if self.limited && !self.pulls.pulling.load(Ordering::SeqCst) {
                    self.check_gap().await?;
                }
                self.pulls.start(&self.consumer, &self.rules.topic.topic);
                arrived.await;
                continue;
            };
            let (ev, tag, attempt) = event(&self.rules.topic.topic, &message)?;
            let (_, acker) = message.split();
            if self.expired(since) {
                // Waited in the inbox past its ack wait (no next() came): the server gives it
                // to a member again; this copy is stale.
                continue;
            }
            if attempt > self.rules.options.max_deliveries() {
                if let Err(e) = self.rules.dead_letter(&ev, attempt - 1, &acker).await {
                    // Not terminated: it comes back after the ack wait and is moved then.
                    tracing::warn!(topic = %self.rules.topic.topic, offset = ev.offset, error = %e, "dead-lettering failed");
                }
                continue;
            }
            self.held().insert(tag, Held { acker, since });
            return Ok(Delivery::new(ev, attempt, tag));
        }
    }

    /// [`Error::Truncated`] if retention dropped events the group has not taken yet: the
    /// consumer's next offset (its last delivered one plus one) lies before the stream's first
    /// retained offset. Made before each pull, so the pull that would step over them comes
    /// after the report.
    ///
    /// What it cannot see: events dropped in the round trip between this check and the pull
    /// right after it (retention catching up with a group that is a few events from its
    /// front), or between another member's check and pull. Each member checks, so several
    /// members may each report the same loss.
    async fn check_gap(&self) -> Result<()> {
        let deadline = self.rules.events.deadline();
        let (consumer, stream) = futures::future::join(
            retry(deadline, || self.consumer.get_info()),
            retry(deadline, || self.stream.get_info()),
        )
        .await;
        let endpoint = || self.rules.events.endpoint();
        let next = consumer
            .map_err(|e| unavailable("read the group's position", &endpoint(), e))?
            .delivered
            .stream_sequence
            + 1;
        let state = stream
            .map_err(|e| unavailable("read the topic's stream", &endpoint(), e))?
            .state;
        let first = first_available(state.messages, state.first_sequence, state.last_sequence);
        let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        let requested = next.max(*reported);
        if requested >= first {
            return Ok(());
        }
        *reported = first;
        Err(Error::Truncated {
            topic: self.rules.topic.topic.clone(),
            requested,
            first_available: first,
        })
    }

    /// Whether a delivery that arrived at `since` is past its ack wait (with a margin: the
    /// server's ack wait started when it sent the event, a little before `since`, so an ack in
    /// the last tenth, at most 100 ms, could reach it after it gave the event to another
    /// member).
    fn expired(&self, since: Instant) -> bool {
        let wait = self.rules.options.ack_wait();
        let margin = (wait / 10).min(Duration::from_millis(100));
        since.elapsed() + margin >= wait
    }

    /// Takes the delivery's claim, or `DeliveryLost` if it is gone or its ack wait passed.
    fn take(&self, d: &Delivery) -> Result<Held> {
        let lost = || Error::DeliveryLost {
            topic: self.rules.topic.topic.clone(),
            group: self.rules.group.clone(),
            offset: d.event.offset,
        };
        let held = self.held().remove(&d.tag).ok_or_else(lost)?;
        if self.expired(held.since) {
            // Not sent: the server redelivers it, as `DeliveryLost` says.
            return Err(lost());
        }
        Ok(held)
    }

    async fn ack_delivery(&self, d: &Delivery) -> Result<()> {
        let held = self.take(d)?;
        // Confirmed by the server: once this returns, the group will not deliver it again.
        match held.acker.double_ack_with(AckKind::Ack).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.held().insert(d.tag, held);
                Err(unavailable("ack", &self.rules.events.endpoint(), e))
            }
        }
    }

    async fn nack_delivery(&self, d: &Delivery) -> Result<()> {
        let held = self.take(d)?;
        if d.attempt >= self.rules.options.max_deliveries() {
            return self
                .rules
                .dead_letter(&d.event, d.attempt, &held.acker)
                .await;
        }
        // Confirmed by the server, like an ack: JetStream queues acks apart from pull
        // requests, so an unconfirmed nak could still be pending when this member's next pull
        // arrives, and the pull would get the next event before the redelivery ("redeliveries
        // first" would break; the conformance case caught it about once in 25 runs).
        match held.acker.double_ack_with(AckKind::Nak(None)).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.held().insert(d.tag, held);
                Err(unavailable("nack", &self.rules.events.endpoint(), e))
            }
        }
    }

    async fn leave_group(&self) -> Result<()> {
        self.pulls.left.store(true, Ordering::SeqCst);
        while let Some((m, _)) = self.pulls.take() {
            let _ = m.ack_with(AckKind::Nak(None)).await;
        }
        let held: Vec<Held> = self.held().drain().map(|(_, h)| h).collect();
        for h in held {
            let _ = h.acker.ack_with(AckKind::Nak(None)).await;
        }
        Ok(())
    }
}

/// The member's pull in flight and what it brought.
#[derive(Default)]
struct Pulls {
    /// Arrived, not yet handed out, with when it arrived.
    inbox: SyncMutex<VecDeque<(Message, Instant)>>,
    pulling: AtomicBool,
    left: AtomicBool,
    arrived: Notify,
}

impl Pulls {
    fn take(&self) -> Option<(Message, Instant)> {
        self.inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// Starts a pull of one event unless one is in flight.
    fn start(self: &Arc<Self>, consumer: &PullConsumer, topic: &str) {
        if self.pulling.swap(true, Ordering::SeqCst) {
            return;
        }
        let (me, consumer, topic) = (self.clone(), consumer.clone(), topic.to_string());
        tokio::spawn(async move {
            let got = pull_one(&consumer, &topic).await;
            if let Some(m) = got {
                if me.left.load(Ordering::SeqCst) {
                    let _ = m.ack_with(AckKind::Nak(None)).await;
                } else {
                    me.inbox
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_back((m, Instant::now()));
                }
            }
            me.pulling.store(false, Ordering::SeqCst);
            me.arrived.notify_waiters();
        });
    }
}

/// Pulls one event; `None` when the pull request expired empty or failed (after a pause).
async fn pull_one(consumer: &PullConsumer, topic: &str) -> Option<Message> {
    let batch = consumer
        .batch()
        .max_messages(1)
        .expires(PULL_EXPIRES)
        .messages()
        .await;
    let mut batch = match batch {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(%topic, error = %e, "pull request failed; retrying");
            tokio::time::sleep(Duration::from_millis(100)).await;
            return None;
        }
    };
    match batch.next().await {
        Some(Ok(m)) => Some(m),
        Some(Err(e)) => {
            tracing::debug!(%topic, error = %e, "pull failed; retrying");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
        None => None,
    }
}

impl Rules {
    /// Republishes the event to the dead-letter topic (once, whatever the retries) and
    /// terminates it in the group.
    async fn dead_letter(&self, ev: &crate::Event, deliveries: u32, acker: &Acker) -> Result<()> {
        let mut headers = ev.headers.clone();
        headers.insert(dead_letter::TOPIC.into(), self.topic.topic.clone());
        headers.insert(dead_letter::OFFSET.into(), ev.offset.to_string());
        headers.insert(dead_letter::GROUP.into(), self.group.clone());
        headers.insert(dead_letter::DELIVERIES.into(), deliveries.to_string());
        // One id per (stream, group, offset): a member that dies between the publish and the
        // termination has it redelivered and published again, and JetStream stores it once.
        let id = format!("dlq-{}-{}-{}", self.topic.stream, self.group, ev.offset);
        self.events
            .publish_as(&self.dead_letter, &headers, ev.payload.clone(), &id)
            .await?;
        acker
            .double_ack_with(AckKind::Term)
            .await
            .map_err(|e| unavailable("terminate a dead letter", &self.events.endpoint(), e))
    }
}

impl Member for NatsMember {
    fn next(&self) -> BoxFuture<'_, Result<Delivery>> {
        self.next_delivery().boxed()
    }

    fn ack<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<()>> {
        self.ack_delivery(delivery).boxed()
    }

    fn nack<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<()>> {
        self.nack_delivery(delivery).boxed()
    }

    fn leave(&self) -> BoxFuture<'_, Result<()>> {
        self.leave_group().boxed()
    }
}

impl Drop for NatsMember {
    /// Hands back what it holds, in the background if a runtime is there; otherwise the ack
    /// wait brings it back.
    fn drop(&mut self) {
        self.pulls.left.store(true, Ordering::SeqCst);
        let held: Vec<Held> = self.held().drain().map(|(_, h)| h).collect();
        let pulls = self.pulls.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                for h in held {
                    let _ = h.acker.ack_with(AckKind::Nak(None)).await;
                }
                while let Some((m, _)) = pulls.take() {
                    let _ = m.ack_with(AckKind::Nak(None)).await;
                }
            });
        }
    }
}
