//! The `nats` backend: NATS JetStream (feature `nats`).
//!
//! # Layout
//! - **One stream per topic**, named `PREFIX_<encoded topic>` ([`names`]), holding one subject
//!   `PREFIX.<encoded topic>`, replicated [`NatsConfig::replicas`] ways (3 by default). An
//!   event's offset is its stream sequence. A stream's sequence is dense: JetStream numbers
//!   every message it stores 1, 2, 3, … and, since the stream holds this topic alone, offsets
//!   strictly increase per topic **without gaps**; retention only removes from the front. (One
//!   stream holding every topic as a subject would number them too, but a topic's offsets would
//!   then skip the other topics' sequences, and limits by age and count could not differ per
//!   topic.)
//! - Publish waits for JetStream's acknowledgement, which comes once a majority of the
//!   stream's replicas stored the event. Each publish carries a `Nats-Msg-Id`, so retrying it
//!   after a lost acknowledgement (a server's failover) stores it once and returns the first
//!   offset (JetStream's duplicate window, 2 minutes).
//! - Subscribers read through an ordered pull consumer (ephemeral, 1 replica, recreated from
//!   the last offset seen when its server goes away); the reader checks that offsets follow
//!   each other, drops duplicates after a recreation and reports a jump as
//!   [`Error::Truncated`](crate::Error::Truncated) (retention removed events it had not read).
//! - A consumer group is a durable pull consumer `PREFIX_<encoded group>` on the topic's stream
//!   with explicit acks, the group's ack wait and unlimited server redeliveries; a member that
//!   receives an event for the `max_attempts + 1`-th time republishes it to the dead-letter topic
//!   (same message id rule: once) and terminates it.
//! - Retention by age and count are the stream's `max_age` and `max_msgs` limits (discard old).

mod config;
mod group;
mod names;
mod subscribe;

pub use config::NatsConfig;
pub use group::{Delivery, Member, GroupOptions};
pub use subscribe::{Reader, Start};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use tokio::sync::Mutex;

use crate::{Error, Result};

/// Timeout of one attempt of a request, retried until the request timeout.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Header naming the topic an event was dead-lettered from.
pub(crate) const DLQ_TOPIC_HEADER: &str = "Sync-Event-Dead-Letter-Topic";
/// Header holding the offset it had there.
pub(crate) const DLQ_OFFSET_HEADER: &str = "Sync-Event-Dead-Letter-Offset";

/// How long a topic's events are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Events older than this are removed.
    pub max_age: Option<Duration>,
    /// Only the newest this many events are kept.
    pub max_events: Option<u64>,
}

/// A topic's stream as we use it.
#[derive(Debug, Clone)]
pub(crate) struct Topic {
    pub(crate) topic: String,
    pub(crate) stream: String,
    pub(crate) subject: String,
}

/// The `nats` backend. Cheap to clone (one shared connection).
#[derive(Clone)]
pub struct NatsEvents {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    config: NatsConfig,
    /// Topics whose stream we created or found, by topic name.
    topics: Mutex<HashMap<String, Arc<Topic>>>,
}

impl std::fmt::Debug for NatsEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsEvents")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// A published event's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Its offset in the topic (the stream sequence).
    pub offset: u64,
}

/// A stored event.
#[derive(Debug, Clone)]
pub struct RawEvent {
    /// Offset in its topic.
    pub offset: u64,
    /// When JetStream stored it.
    pub time: SystemTime,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// Payload.
    pub payload: Bytes,
}

impl NatsEvents {
    /// Connects to the servers in `config`. Fails with [`Error::Unavailable`] when none answers
    /// within the connect timeout.
    pub async fn connect(config: NatsConfig) -> Result<NatsEvents> {
        config.validate().map_err(|reason| Error::Backend {
            message: format!("invalid NATS configuration: {reason}"),
            source: None,
        })?;
        let mut options = async_nats::ConnectOptions::new()
            .connection_timeout(config.connect_timeout)
            .request_timeout(Some(config.request_timeout))
            .name("sync-event");
        if let Some(user) = &config.user {
            options =
                options.user_and_password(user.clone(), config.password.clone().unwrap_or_default());
        }
        let urls = config.urls.join(", ");
        let connect = options.connect(config.urls.clone());
        let client = match tokio::time::timeout(config.connect_timeout, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                return Err(Error::Unavailable {
                    message: format!("cannot connect to NATS at {urls}: {e}"),
                    source: Some(Box::new(e)),
                })
            }
            Err(_) => {
                return Err(Error::Unavailable {
                    message: format!(
                        "cannot connect to NATS at {urls} within {:?}",
                        config.connect_timeout
                    ),
                    source: None,
                })
            }
        };
        // Each request gets a short timeout and is retried (with the same message id for a
        // publish) until `request_timeout`: a request sent to a server that just died is then
        // re-sent after ATTEMPT_TIMEOUT, not after the whole request timeout.
        let js = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout.min(ATTEMPT_TIMEOUT))
            .build(client.clone());
        Ok(NatsEvents {
            inner: Arc::new(Inner {
                client,
                js,
                config,
                topics: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The largest event (payload plus headers) the servers accept: their `max_payload`.
    pub fn max_payload(&self) -> usize {
        self.inner.client.server_info().max_payload
    }

    pub(crate) fn js(&self) -> &jetstream::Context {
        &self.inner.js
    }

    pub(crate) fn config(&self) -> &NatsConfig {
        &self.inner.config
    }

    fn stream_config(&self, t: &Topic, retention: Retention) -> stream::Config {
        stream::Config {
            name: t.stream.clone(),
            description: Some(t.topic.clone()),
            subjects: vec![t.subject.clone()],
            num_replicas: self.inner.config.replicas,
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            max_age: retention.max_age.unwrap_or_default(),
            max_messages: retention
                .max_events
                .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)),
            ..Default::default()
        }
    }

    /// The topic's stream, created (without retention limits) if missing.
    pub(crate) async fn topic(&self, topic: &str) -> Result<Arc<Topic>> {
        if let Some(t) = self.inner.topics.lock().await.get(topic) {
            return Ok(t.clone());
        }
        let t = self.describe(topic);
        let config = self.stream_config(&t, Retention::default());
        let deadline = tokio::time::Instant::now() + self.inner.config.request_timeout;
        let stream = retry(deadline, || self.inner.js.get_or_create_stream(config.clone()))
            .await
            .map_err(|e| unavailable(&format!("cannot open the stream of topic {topic:?}"), e))?;
        self.check_owner(&t, stream.cached_info().config.description.as_deref())?;
        let t = Arc::new(t);
        self.inner
            .topics
            .lock()
            .await
            .insert(topic.to_string(), t.clone());
        Ok(t)
    }

    /// Sets the topic's retention (creating its stream if missing).
    pub async fn set_retention(&self, topic: &str, retention: Retention) -> Result<()> {
        let t = self.topic(topic).await?;
        let config = self.stream_config(&t, retention);
        let deadline = tokio::time::Instant::now() + self.inner.config.request_timeout;
        retry(deadline, || self.inner.js.update_stream(config.clone()))
            .await
            .map_err(|e| unavailable(&format!("cannot set the retention of topic {topic:?}"), e))?;
        Ok(())
    }

    fn describe(&self, topic: &str) -> Topic {
        let prefix = &self.inner.config.prefix;
        let stream = names::encode(prefix, topic);
        let subject = format!("{prefix}.{}", &stream[prefix.len() + 1..]);
        Topic {
            topic: topic.to_string(),
            stream,
            subject,
        }
    }

    /// The stream's description names its topic; a long topic whose hashed name collides with
    /// another's is refused rather than mixed up.
    fn check_owner(&self, t: &Topic, description: Option<&str>) -> Result<()> {
        match description {
            Some(d) if d != t.topic => Err(Error::InvalidTopic {
                topic: t.topic.clone(),
                reason: format!(
                    "its NATS stream name {} is taken by topic {d:?} (a hash collision of long names); rename the topic",
                    t.stream
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Publishes one event and returns its offset once JetStream acknowledged it.
    pub async fn publish(
        &self,
        topic: &str,
        headers: &[(String, String)],
        payload: Bytes,
    ) -> Result<Published> {
        let size = payload.len()
            + headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>();
        let max = self.max_payload();
        if size > max.saturating_sub(128) {
            return Err(Error::PayloadTooLarge {
                topic: topic.to_string(),
                size,
                max,
                what: "the NATS servers' max_payload, payload and headers together; raise max_payload in the server configuration or publish smaller events".into(),
            });
        }
        let t = self.topic(topic).await?;
        let id = message_id();
        self.publish_as(&t, headers, payload, &id).await
    }

    /// Publishes with message id `id`: retried publishes of one id are stored once.
    pub(crate) async fn publish_as(
        &self,
        t: &Topic,
        headers: &[(String, String)],
        payload: Bytes,
        id: &str,
    ) -> Result<Published> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(k.as_str(), v.as_str());
        }
        let deadline = tokio::time::Instant::now() + self.inner.config.request_timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            let message = jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .headers(map.clone())
                .message_id(id)
                .expected_stream(&t.stream);
            let attempt = async {
                self.inner
                    .js
                    .send_publish(t.subject.clone(), message)
                    .await?
                    .await
            };
            let error = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(ack)) => return Ok(Published { offset: ack.sequence }),
                Ok(Err(e)) => e,
                Err(_) => {
                    return Err(Error::Unavailable {
                        message: format!(
                            "publish to topic {:?} was not acknowledged by NATS within {:?}",
                            t.topic, self.inner.config.request_timeout
                        ),
                        source: None,
                    })
                }
            };
            let retryable = matches!(
                error.kind(),
                PublishErrorKind::TimedOut
                    | PublishErrorKind::BrokenPipe
                    | PublishErrorKind::MaxAckPending
                    | PublishErrorKind::StreamNotFound
                    | PublishErrorKind::Other
            );
            if !retryable || tokio::time::Instant::now() + pause >= deadline {
                return Err(unavailable(
                    &format!("publish to topic {:?} failed", t.topic),
                    error,
                ));
            }
            tracing::debug!(topic = %t.topic, %error, "publish retried");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

/// A message id for JetStream's de-duplication: random, 128 bits.
fn message_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

pub(crate) fn unavailable<E>(what: &str, e: E) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    Error::Unavailable {
        message: format!("{what}: {e}"),
        source: Some(Box::new(e)),
    }
}

/// Runs `op` until it succeeds or `deadline` passes (then its last error), pausing 20 ms
/// doubling to 500 ms: JetStream answers "temporarily unavailable" while a stream or the meta
/// group elects a leader.
pub(crate) async fn retry<T, E, F, Fut>(deadline: tokio::time::Instant, mut op: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut pause = Duration::from_millis(20);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() + pause < deadline => {
                tracing::debug!(error = %e, "NATS request retried");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            Err(e) => return Err(e),
        }
    }
}
