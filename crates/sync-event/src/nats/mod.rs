//! The `nats` backend: NATS JetStream (feature `nats`).
//!
//! # Layout
//! - **One stream per topic**, named `PREFIX_<encoded topic>` (see `names.rs`) and holding one
//!   subject `PREFIX.<encoded topic>`, replicated [`NatsConfig::replicas`] ways (3 by default).
//!   An event's offset is its stream sequence. JetStream numbers the messages of a stream
//!   1, 2, 3, … in the order its raft group commits them, and since the stream holds this topic
//!   alone, offsets strictly increase per topic **without gaps**; retention removes only from
//!   the front. (One stream for every topic, a subject per topic, would number them too, but a
//!   topic's offsets would then skip the other topics' sequences, and limits by age and count
//!   could not differ per topic.) The stream's description holds the topic's name.
//! - **Publish** waits for JetStream's acknowledgement, sent once a majority of the stream's
//!   replicas stored the event. Each publish carries a random `Nats-Msg-Id`; an attempt whose
//!   acknowledgement is lost (its server died) is sent again with the same id, and JetStream
//!   stores it once and answers with the first offset (its duplicate window, 2 minutes).
//! - **Subscribers** read through an ephemeral pull consumer each (1 replica, in memory, no
//!   acks, a 2 s idle heartbeat), recreated from the next offset when it misses two heartbeats
//!   (its server went away), fails or skips a delivery. The reader checks that each offset
//!   follows the last: it drops what a recreated consumer delivers twice and reports a jump as
//!   [`Error::Truncated`] (retention removed events it had not read yet).
//! - A **consumer group** is a durable pull consumer `PREFIX_<encoded group>` on the topic's
//!   stream, with the group's replicas, explicit acks, the group's ack wait and unlimited
//!   server-side redeliveries: the member that gets an event for the `max_deliveries + 1`-th
//!   time (or nacks its last delivery) republishes it to the dead-letter topic, with a message
//!   id derived from (stream, offset) so that it is stored there once, and terminates it.
//! - **Retention** by age and count are the stream's `max_age` and `max_msgs` limits
//!   (discard old), set from [`EventOptions`] when a handle first uses the topic.
//! - **Size**: the servers' `max_payload` (1 MiB by default) bounds a message with its headers;
//!   the limit we enforce is that minus [`FRAMING_RESERVE`] for the header framing and our own
//!   headers.

mod config;
mod group;
mod names;
mod subscribe;
#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod testing;

pub use config::NatsConfig;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use async_nats::HeaderMap;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::{
    check_name, Error, Event, EventOptions, EventStream, GroupOptions, Headers, Member, Message,
    Result, Retention, Start, Subscription,
};

/// Bytes of `max_payload` kept for the header framing (`NATS/1.0`, `: ` and CRLF per header)
/// and our `Nats-Msg-Id` header.
pub const FRAMING_RESERVE: usize = 1024;
/// Timeout of one attempt of a request; attempts are repeated until the request timeout.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// The `nats` backend: topics as JetStream streams on a NATS cluster. Cheap to clone (one
/// shared connection). See the [module docs](self) for the layout.
#[derive(Clone)]
pub struct NatsEvents {
    inner: Arc<Inner>,
}

struct Inner {
    js: jetstream::Context,
    config: NatsConfig,
    options: EventOptions,
    /// The size limit enforced (payload plus headers, as [`Message::size`] counts).
    max_bytes: usize,
    /// The servers' `max_payload` (a message with its headers).
    server_max_payload: usize,
    /// Topics whose stream this handle created or found, by topic name.
    topics: Mutex<HashMap<String, Arc<Topic>>>,
}

/// A topic's stream and subject.
#[derive(Debug)]
pub(crate) struct Topic {
    pub(crate) topic: String,
    pub(crate) stream: String,
    pub(crate) subject: String,
}

impl std::fmt::Debug for NatsEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsEvents")
            .field("config", &self.inner.config)
            .field("max_bytes", &self.inner.max_bytes)
            .finish_non_exhaustive()
    }
}

impl NatsEvents {
    /// Connects to the servers of `config`. [`Error::Unavailable`] when none answers within
    /// the connect timeout; [`Error::Config`] for a bad configuration or options.
    pub async fn connect(config: NatsConfig, options: EventOptions) -> Result<NatsEvents> {
        config.validate().map_err(Error::Config)?;
        let endpoint = config.urls.join(",");
        let mut connect = async_nats::ConnectOptions::new()
            .connection_timeout(config.connect_timeout)
            .request_timeout(Some(config.request_timeout.min(ATTEMPT_TIMEOUT)))
            .name("sync-event");
        if let Some(user) = &config.user {
            connect = connect
                .user_and_password(user.clone(), config.password.clone().unwrap_or_default());
        }
        let client = match tokio::time::timeout(
            config.connect_timeout,
            connect.connect(config.urls.clone()),
        )
        .await
        {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(unavailable("connect", &endpoint, e)),
            Err(_) => {
                return Err(unavailable(
                    "connect",
                    &endpoint,
                    format!("no answer within {:?}", config.connect_timeout),
                ))
            }
        };
        let server_limit = client.server_info().max_payload;
        let max_bytes = options.validate(server_limit.saturating_sub(FRAMING_RESERVE))?;
        // Each request gets ATTEMPT_TIMEOUT and is repeated (a publish with the same message
        // id) until the request timeout: one sent to a server that just died is re-sent to
        // another after 2 s, not after the whole request timeout.
        let js = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout.min(ATTEMPT_TIMEOUT))
            .build(client);
        Ok(NatsEvents {
            inner: Arc::new(Inner {
                js,
                config,
                options,
                max_bytes,
                server_max_payload: server_limit,
                topics: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The largest event this handle publishes (payload plus headers): the servers'
    /// `max_payload` minus [`FRAMING_RESERVE`], or less if the options ask for less.
    pub fn max_event_bytes(&self) -> usize {
        self.inner.max_bytes
    }

    pub(crate) fn js(&self) -> &jetstream::Context {
        &self.inner.js
    }

    /// The configuration it was connected with.
    pub fn config(&self) -> &NatsConfig {
        &self.inner.config
    }

    pub(crate) fn endpoint(&self) -> String {
        self.inner.config.urls.join(",")
    }

    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.inner.config.request_timeout
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

    fn stream_config(&self, t: &Topic, retention: Retention) -> stream::Config {
        stream::Config {
            name: t.stream.clone(),
            description: Some(t.topic.clone()),
            subjects: vec![t.subject.clone()],
            num_replicas: self.inner.config.replicas,
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            max_age: retention.max_age().unwrap_or_default(),
            max_messages: retention
                .max_events()
                .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)),
            ..Default::default()
        }
    }

    /// The topic's stream: created (with this handle's retention for it) if missing, its
    /// limits brought to this handle's retention if they differ.
    pub(crate) async fn topic(&self, topic: &str) -> Result<Arc<Topic>> {
        check_name("topic", topic)?;
        if let Some(t) = self.inner.topics.lock().await.get(topic) {
            return Ok(t.clone());
        }
        let t = self.describe(topic);
        let wanted = self.stream_config(&t, self.inner.options.retention_for(topic));
        let deadline = self.deadline();
        let stream = retry(deadline, || {
            self.inner.js.get_or_create_stream(wanted.clone())
        })
        .await
        .map_err(|e| unavailable("open the topic's stream", &self.endpoint(), e))?;
        let have = &stream.cached_info().config;
        if let Some(owner) = have.description.as_deref().filter(|d| *d != topic) {
            return Err(Error::Config(format!(
                "topic {topic:?}: its NATS stream {} belongs to topic {owner:?} (a hash collision of long names); rename the topic",
                t.stream
            )));
        }
        if have.max_age != wanted.max_age || have.max_messages != wanted.max_messages {
            retry(deadline, || self.inner.js.update_stream(wanted.clone()))
                .await
                .map_err(|e| unavailable("set the topic's retention", &self.endpoint(), e))?;
        }
        let t = Arc::new(t);
        self.inner
            .topics
            .lock()
            .await
            .insert(topic.to_string(), t.clone());
        Ok(t)
    }

    /// The topic's stream if it exists (without creating it).
    pub(crate) async fn existing_stream(&self, topic: &str) -> Result<Option<stream::Stream>> {
        check_name("topic", topic)?;
        let name = self.describe(topic).stream;
        let deadline = self.deadline();
        let mut pause = Duration::from_millis(20);
        loop {
            match self.inner.js.get_stream(&name).await {
                Ok(s) => return Ok(Some(s)),
                Err(e)
                    if matches!(
                        e.kind(),
                        jetstream::context::GetStreamErrorKind::JetStream(j)
                            if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) if Instant::now() + pause >= deadline => {
                    return Err(unavailable("read the topic's stream", &self.endpoint(), e))
                }
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    async fn publish_message(&self, topic: &str, message: Message) -> Result<u64> {
        check_name("topic", topic)?;
        let size = message.size();
        if size > self.inner.max_bytes {
            return Err(Error::TooLarge {
                topic: topic.to_string(),
                size,
                limit: self.inner.max_bytes,
                backend: "nats",
                limit_from: crate::error::limit_from(
                    &self.inner.options,
                    &format!(
                        "the servers' max_payload of {} bytes less {FRAMING_RESERVE} kept for the header framing",
                        self.inner.server_max_payload
                    ),
                ),
            });
        }
        let t = self.topic(topic).await?;
        let id = format!("{:032x}", rand::random::<u128>());
        self.publish_as(&t, &message.headers, message.payload, &id)
            .await
    }

    /// Publishes with message id `id` (publishes of one id within 2 minutes are stored once)
    /// and returns the offset JetStream acknowledged.
    pub(crate) async fn publish_as(
        &self,
        t: &Topic,
        headers: &Headers,
        payload: Vec<u8>,
        id: &str,
    ) -> Result<u64> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                names::escape(k, true).as_str(),
                names::escape(v, false).as_str(),
            );
        }
        let payload = bytes::Bytes::from(payload);
        let deadline = self.deadline();
        let mut pause = Duration::from_millis(20);
        loop {
            let message = jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .headers(map.clone())
                .message_id(id);
            let attempt = async {
                self.inner
                    .js
                    .send_publish(t.subject.clone(), message)
                    .await?
                    .await
            };
            let error = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(ack)) => return Ok(ack.sequence),
                Ok(Err(e)) => e,
                Err(_) => {
                    return Err(unavailable(
                        "publish",
                        &self.endpoint(),
                        format!(
                            "topic {:?}: no acknowledgement within {:?}",
                            t.topic, self.inner.config.request_timeout
                        ),
                    ))
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
            if !retryable || Instant::now() + pause >= deadline {
                return Err(unavailable("publish", &self.endpoint(), error));
            }
            tracing::debug!(topic = %t.topic, %error, "publish attempt failed; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    async fn first_available_of(&self, topic: &str) -> Result<u64> {
        let Some(stream) = self.existing_stream(topic).await? else {
            return Ok(1);
        };
        let state = &stream.cached_info().state;
        Ok(first_available(
            state.messages,
            state.first_sequence,
            state.last_sequence,
        ))
    }
}

/// The oldest retained offset, or the next one when the stream is empty.
pub(crate) fn first_available(messages: u64, first: u64, last: u64) -> u64 {
    if messages == 0 {
        last + 1
    } else {
        first.max(1)
    }
}

/// Builds an [`Event`] from a JetStream message of `topic`.
pub(crate) fn event(topic: &str, message: &jetstream::Message) -> Result<(Event, u64, u32)> {
    let info = message.info().map_err(|e| {
        Error::Config(format!(
            "topic {topic:?}: a NATS message without JetStream metadata ({e}); is another program publishing to our subjects?"
        ))
    })?;
    let mut headers = Headers::new();
    for (k, vs) in message.headers.iter().flat_map(|h| h.iter()) {
        let k = k.to_string();
        if k.starts_with("Nats-") {
            continue;
        }
        if let Some(v) = vs.last() {
            headers.insert(names::unescape(&k), names::unescape(v.as_str()));
        }
    }
    let published_at: SystemTime = info.published.into();
    let msg = Message {
        payload: message.payload.to_vec(),
        headers,
    };
    let delivered = u32::try_from(info.delivered).unwrap_or(u32::MAX);
    Ok((
        Event::new(topic, info.stream_sequence, published_at, msg),
        info.consumer_sequence,
        delivered,
    ))
}

pub(crate) fn unavailable(
    op: &'static str,
    endpoint: &str,
    source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
) -> Error {
    Error::Unavailable {
        op,
        endpoint: endpoint.to_string(),
        source: source.into(),
    }
}

/// Runs `op` until it succeeds or `deadline` passes (then returns its last error), pausing
/// 20 ms doubling to 500 ms: JetStream answers "temporarily unavailable" while a stream's or
/// the meta group's raft elects a leader.
pub(crate) async fn retry<T, E, F, Fut>(deadline: Instant, mut op: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut pause = Duration::from_millis(20);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() + pause < deadline => {
                tracing::debug!(error = %e, "NATS request failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            Err(e) => return Err(e),
        }
    }
}

impl EventStream for NatsEvents {
    fn publish<'a>(&'a self, topic: &'a str, message: Message) -> BoxFuture<'a, Result<u64>> {
        self.publish_message(topic, message).boxed()
    }

    fn subscribe<'a>(
        &'a self,
        topic: &'a str,
        start: Start,
    ) -> BoxFuture<'a, Result<Subscription>> {
        self.subscribe_from(topic, start).boxed()
    }

    fn join<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
        options: GroupOptions,
    ) -> BoxFuture<'a, Result<Box<dyn Member>>> {
        async move {
            let m: Box<dyn Member> = Box::new(self.join_group(topic, group, options).await?);
            Ok(m)
        }
        .boxed()
    }

    fn first_available<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<u64>> {
        self.first_available_of(topic).boxed()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn first_available_of_an_empty_stream_is_the_next_offset() {
        assert_eq!(super::first_available(0, 0, 0), 1);
        assert_eq!(super::first_available(0, 8, 7), 8);
        assert_eq!(super::first_available(3, 5, 7), 5);
    }
}
