//! Consumer groups: one durable pull consumer per (topic, group), shared by the members.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::message::{AckKind, Acker};
use futures::StreamExt;

use super::subscribe::event;
use super::{names, retry, unavailable, NatsEvents, RawEvent, Topic, DLQ_OFFSET_HEADER, DLQ_TOPIC_HEADER};
use crate::{Error, Result};
use std::sync::Arc;

/// A group's settings (fixed by the member that creates the group).
#[derive(Debug, Clone)]
pub struct GroupOptions {
    /// An event not acked within this time goes to another member.
    pub ack_wait: Duration,
    /// Deliveries before an event goes to the dead-letter topic.
    pub max_attempts: u32,
    /// The dead-letter topic.
    pub dead_letter: String,
    /// Where a new group starts: the oldest kept event (`true`) or the next one.
    pub from_earliest: bool,
}

/// One member of a group.
pub struct Member {
    rules: Arc<Rules>,
    messages: pull::Stream,
}

/// What a member and its deliveries need to move an event to the dead-letter topic.
struct Rules {
    events: NatsEvents,
    topic: Arc<Topic>,
    dead_letter: Arc<Topic>,
    max_attempts: u32,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("topic", &self.rules.topic.topic)
            .finish_non_exhaustive()
    }
}

/// An event handed to a member: ack it, or nack it for redelivery.
pub struct Delivery {
    /// The event.
    pub event: RawEvent,
    /// How many times it was delivered, this time included.
    pub attempt: u32,
    acker: Acker,
    rules: Arc<Rules>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("offset", &self.event.offset)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// Done with it: it is not delivered again.
    pub async fn ack(self) -> Result<()> {
        self.acker.ack().await.map_err(|e| Error::Unavailable {
            message: format!("cannot ack offset {}: {e}", self.event.offset),
            source: None,
        })
    }

    /// Give it back now: it is delivered again (to any member) at once, or, after its last
    /// attempt, moved to the dead-letter topic.
    pub async fn nack(self) -> Result<()> {
        if self.attempt >= self.rules.max_attempts {
            return self.rules.dead_letter(&self.event, &self.acker).await;
        }
        self.acker
            .ack_with(AckKind::Nak(None))
            .await
            .map_err(|e| Error::Unavailable {
                message: format!("cannot nack offset {}: {e}", self.event.offset),
                source: None,
            })
    }
}

impl NatsEvents {
    /// Joins `group` on `topic`, creating the group's durable consumer if it is new.
    pub async fn join(&self, topic: &str, group: &str, options: GroupOptions) -> Result<Member> {
        let t = self.topic(topic).await?;
        let dead_letter = self.topic(&options.dead_letter).await?;
        let deadline = tokio::time::Instant::now() + self.config().request_timeout;
        let stream = retry(deadline, || self.js().get_stream(t.stream.clone()))
            .await
            .map_err(|e| unavailable(&format!("cannot read the stream of topic {topic:?}"), e))?;
        let name = names::encode(&self.config().prefix, group);
        let config = pull::Config {
            durable_name: Some(name.clone()),
            description: Some(group.to_string()),
            deliver_policy: if options.from_earliest {
                DeliverPolicy::All
            } else {
                DeliverPolicy::New
            },
            ack_policy: AckPolicy::Explicit,
            ack_wait: options.ack_wait,
            // Unlimited: the member moves an event to the dead-letter topic itself, so an
            // event whose last delivery's member died is still delivered (and moved).
            max_deliver: -1,
            filter_subject: t.subject.clone(),
            num_replicas: self.config().replicas,
            ..Default::default()
        };
        let consumer: async_nats::jetstream::consumer::PullConsumer =
            retry(deadline, || stream.get_or_create_consumer(&name, config.clone()))
                .await
                .map_err(|e| unavailable(&format!("cannot join group {group:?} of topic {topic:?}"), e))?;
        let messages = retry(deadline, || consumer.messages())
            .await
            .map_err(|e| unavailable(&format!("cannot join group {group:?} of topic {topic:?}"), e))?;
        Ok(Member {
            rules: Arc::new(Rules {
                events: self.clone(),
                topic: t,
                dead_letter,
                max_attempts: options.max_attempts.max(1),
            }),
            messages,
        })
    }
}

impl Member {
    /// The next event for this member. Events past their last attempt are moved to the
    /// dead-letter topic on the way.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        loop {
            let message = match self.messages.next().await? {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(topic = %self.rules.topic.topic, error = %e, "group member's pull recovering");
                    continue;
                }
            };
            let attempt = match message.info() {
                Ok(info) => u32::try_from(info.delivered).unwrap_or(u32::MAX),
                Err(e) => {
                    return Some(Err(Error::Backend {
                        message: format!("topic {:?}: a message without JetStream metadata: {e}", self.rules.topic.topic),
                        source: None,
                    }))
                }
            };
            let ev = match event(&self.rules.topic.topic, &message) {
                Ok(ev) => ev,
                Err(e) => return Some(Err(e)),
            };
            let (_, acker) = message.split();
            if attempt > self.rules.max_attempts {
                if let Err(e) = self.rules.dead_letter(&ev, &acker).await {
                    // Not acked: it comes back after the ack wait and is moved then.
                    tracing::warn!(topic = %self.rules.topic.topic, offset = ev.offset, error = %e, "dead-lettering failed");
                }
                continue;
            }
            return Some(Ok(Delivery {
                event: ev,
                attempt,
                acker,
                rules: self.rules.clone(),
            }));
        }
    }
}

impl Rules {
    async fn dead_letter(&self, ev: &RawEvent, acker: &Acker) -> Result<()> {
        let mut headers = ev.headers.clone();
        headers.push((DLQ_TOPIC_HEADER.into(), self.topic.topic.clone()));
        headers.push((DLQ_OFFSET_HEADER.into(), ev.offset.to_string()));
        // One id per (stream, offset): a member that dies between the publish and the
        // termination gets it redelivered and publishes it again, stored once.
        let id = format!("dlq-{}-{}", self.topic.stream, ev.offset);
        self.events
            .publish_as(&self.dead_letter, &headers, ev.payload.clone(), &id)
            .await?;
        acker.ack_with(AckKind::Term).await.map_err(|e| Error::Unavailable {
            message: format!("cannot terminate offset {} after dead-lettering: {e}", ev.offset),
            source: None,
        })
    }
}
