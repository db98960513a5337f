//! Plain subscribers: an ordered pull consumer read through a gap check.

use std::time::SystemTime;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use futures::StreamExt;

use super::{retry, unavailable, NatsEvents, RawEvent, Topic};
use crate::{Error, Result};

/// Where a subscriber starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The oldest event still kept.
    Earliest,
    /// The first event published after the subscription was made.
    Latest,
    /// This offset; [`Error::Truncated`] if retention removed it already.
    Offset(u64),
    /// The first event stored at or after this time.
    Time(SystemTime),
}

/// The events of one topic, in offset order, without gaps or duplicates.
pub struct Reader {
    topic: String,
    messages: pull::Ordered,
    /// The offset the next event must have; 0 until the first one when starting by time.
    next: u64,
    /// Ended after an error.
    done: bool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("topic", &self.topic)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl NatsEvents {
    /// Subscribes to `topic` from `start`.
    pub async fn subscribe(&self, topic: &str, start: Start) -> Result<Reader> {
        let t = self.topic(topic).await?;
        let deadline = tokio::time::Instant::now() + self.config().request_timeout;
        let stream = retry(deadline, || self.js().get_stream(t.stream.clone()))
            .await
            .map_err(|e| unavailable(&format!("cannot read the stream of topic {topic:?}"), e))?;
        // `get_stream` fetched the stream's info just now.
        let state = stream.cached_info().state.clone();
        // An empty stream reports first = last + 1.
        let first = state.first_sequence.max(1);
        let after_last = state.last_sequence + 1;
        let (policy, next) = match start {
            Start::Earliest => (DeliverPolicy::ByStartSequence { start_sequence: first }, first),
            Start::Latest => (
                DeliverPolicy::ByStartSequence { start_sequence: after_last },
                after_last,
            ),
            Start::Offset(n) if n < first && first > 1 => {
                return Err(Error::Truncated {
                    topic: topic.to_string(),
                    asked: n,
                    first_available: first,
                })
            }
            Start::Offset(n) => (
                DeliverPolicy::ByStartSequence { start_sequence: n.max(1) },
                n.max(1),
            ),
            Start::Time(at) => (
                DeliverPolicy::ByStartTime { start_time: at.into() },
                0,
            ),
        };
        let config = pull::OrderedConfig {
            filter_subject: t.subject.clone(),
            deliver_policy: policy,
            ..Default::default()
        };
        let consumer = retry(deadline, || stream.create_consumer(config.clone()))
            .await
            .map_err(|e| unavailable(&format!("cannot subscribe to topic {topic:?}"), e))?;
        let messages = retry(deadline, || consumer.clone().messages())
            .await
            .map_err(|e| unavailable(&format!("cannot subscribe to topic {topic:?}"), e))?;
        Ok(Reader {
            topic: t.topic.clone(),
            messages,
            next,
            done: false,
        })
    }
}

/// Converts a JetStream message into an event.
pub(crate) fn event(t: &str, message: &async_nats::jetstream::Message) -> Result<RawEvent> {
    let info = message.info().map_err(|e| Error::Backend {
        message: format!("topic {t:?}: a NATS message without JetStream metadata: {e}"),
        source: None,
    })?;
    let headers = message
        .headers
        .iter()
        .flat_map(|h| h.iter())
        .flat_map(|(k, vs)| {
            vs.iter()
                .map(move |v| (k.to_string(), v.as_str().to_string()))
        })
        .filter(|(k, _)| !k.starts_with("Nats-"))
        .collect();
    Ok(RawEvent {
        offset: info.stream_sequence,
        time: info.published.into(),
        headers,
        payload: message.payload.clone(),
    })
}

impl Reader {
    /// The next event; `None` never (the stream of a topic does not end) unless after an error.
    pub async fn next(&mut self) -> Option<Result<RawEvent>> {
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
                Ok(ev) => ev,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            if self.next == 0 {
                self.next = ev.offset;
            }
            if ev.offset < self.next {
                continue; // seen before the consumer was recreated
            }
            if ev.offset > self.next {
                self.done = true;
                return Some(Err(Error::Truncated {
                    topic: self.topic.clone(),
                    asked: self.next,
                    first_available: ev.offset,
                }));
            }
            self.next += 1;
            return Some(Ok(ev));
        }
    }
}

#[allow(dead_code)]
fn _topic(_: &Topic) {}
