#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(clippy::print_stdout, clippy::print_stderr)]

mod error;
mod event;
mod local;
mod options;

#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
mod etcd;

#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub mod nats;

#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;

/// For the conformance macro's expansion in other crates.
#[cfg(feature = "conformance")]
#[doc(hidden)]
pub use sync_core as __core;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream};
use serde::Serialize;

pub use error::{Error, Result};
pub use event::{dead_letter, Delivery, Event, Headers, Message, Start};
pub use local::LocalEvents;
pub use options::{
    EventOptions, GroupOptions, Retention, LOCAL_DEFAULT_MAX_EVENTS, LOCAL_MAX_EVENT_BYTES,
    MAX_AGE, MAX_DELIVERIES, MAX_EVENTS,
};
pub use sync_core::name::MAX_NAME_LEN;

#[cfg(feature = "etcd")]
pub use etcd::{EtcdEvents, ETCD_MAX_EVENT_BYTES};
#[cfg(feature = "nats")]
pub use nats::{NatsConfig, NatsEvents};
#[cfg(feature = "etcd")]
pub use sync_etcd::{EtcdConfig, EtcdConnection, TlsConfig};

/// A strongly consistent event stream: topics of events with per-topic offsets, plain
/// subscribers and consumer groups. In-process ([`LocalEvents`]) or on etcd (`EtcdEvents`,
/// feature `etcd`).
///
/// - [`publish`](EventStream::publish) returns the event's offset once it is durable; offsets
///   strictly increase per topic, and every reader sees the same order with no gaps.
/// - [`subscribe`](EventStream::subscribe) streams a topic from a [`Start`], in order, without
///   gaps or duplicates; a start older than retention is [`Error::Truncated`].
/// - [`join`](EventStream::join) makes this handle a member of a consumer group: each event to
///   one member, ack/nack, redelivery after the ack wait, a dead-letter topic after the retry
///   limit, at least once.
///
/// The trait is dyn-compatible: `Arc<dyn EventStream>` picks a backend at run time.
///
/// ```
/// use futures::StreamExt;
/// use sync_event::{EventStream, LocalEvents, Message, Start};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let events = LocalEvents::new();
/// let a = events.publish("orders", Message::new("one")).await?;
/// let b = events.publish("orders", Message::new("two").with_header("k", "v")).await?;
/// assert!(b > a);
/// let mut sub = events.subscribe("orders", Start::Earliest).await?;
/// let first = sub.next().await.unwrap()?;
/// assert_eq!((first.offset, first.payload.as_slice()), (a, &b"one"[..]));
/// assert_eq!(sub.next().await.unwrap()?.headers["k"], "v");
/// # Ok::<(), sync_event::Error>(()) }).unwrap();
/// ```
pub trait EventStream: Send + Sync + std::fmt::Debug {
    /// Appends `message` to `topic` and returns its offset once it is durable (local: stored
    /// in memory; etcd: committed by the cluster). Fails with [`Error::InvalidName`] for a bad
    /// topic and [`Error::TooLarge`] (naming the limit) for an event over the backend's limit.
    ///
    /// Cancel-safe in the sense that matters for a log: a dropped publish is either published
    /// whole, once, or not at all, and never leaves a gap readers could see filled in later.
    fn publish<'a>(&'a self, topic: &'a str, message: Message) -> BoxFuture<'a, Result<u64>>;

    /// Streams `topic` from `start`: events in offset order, no gaps, no duplicates. Fails
    /// with [`Error::Truncated`] if `start` lies before the oldest retained event; the stream
    /// yields [`Error::Truncated`] (and ends) if the subscriber fell so far behind that
    /// retention dropped the events it had not read yet. A slow subscriber never slows down
    /// or loses a publisher's events: it reads from the topic's storage at its own pace.
    fn subscribe<'a>(&'a self, topic: &'a str, start: Start)
        -> BoxFuture<'a, Result<Subscription>>;

    /// Joins consumer group `group` of `topic` as a new member. The group's position is
    /// durable: it starts at `options.start()` only the first time the group is seen.
    fn join<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
        options: GroupOptions,
    ) -> BoxFuture<'a, Result<Box<dyn Member>>>;

    /// The oldest offset `topic` retains, or the next offset it will give when it retains
    /// nothing (1 for a topic never published to).
    fn first_available<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<u64>>;
}

/// A member of a consumer group, made by [`EventStream::join`].
///
/// Every event of the topic (from the group's position on) is delivered to one member at a
/// time; a delivery not [`ack`](Member::ack)ed within the ack wait, [`nack`](Member::nack)ed,
/// or held by a member that left or died goes to a member again, until the retry limit sends
/// it to the dead-letter topic.
///
/// ```
/// use sync_event::{EventStream, GroupOptions, LocalEvents, Message};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let events = LocalEvents::new();
/// events.publish("jobs", Message::new("a")).await?;
/// let member = events.join("jobs", "workers", GroupOptions::new()).await?;
/// let d = member.next().await?;
/// assert_eq!((d.event.payload.as_slice(), d.attempt), (&b"a"[..], 1));
/// member.ack(&d).await?;
/// member.leave().await?;
/// # Ok::<(), sync_event::Error>(()) }).unwrap();
/// ```
pub trait Member: Send + Sync + std::fmt::Debug {
    /// Waits for the next event for this member. Cancel-safe: a delivery claimed by a dropped
    /// call is redelivered after the ack wait (or at once when the member leaves).
    fn next(&self) -> BoxFuture<'_, Result<Delivery>>;
    /// Marks the delivery done: the group will not deliver it again. [`Error::DeliveryLost`]
    /// if the claim ran out first (the event is or will be delivered again).
    fn ack<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<()>>;
    /// Gives the delivery back for redelivery now (it counts as a delivery toward the retry
    /// limit).
    fn nack<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<()>>;
    /// Leaves the group, handing back every delivery not acked. Dropping a member does the
    /// same in the background; a member that dies is handled by the ack wait (etcd: also its
    /// lease).
    fn leave(&self) -> BoxFuture<'_, Result<()>>;
}

/// A subscription: a [`Stream`] of events in offset order.
pub struct Subscription {
    inner: BoxStream<'static, Result<Event>>,
}

impl Subscription {
    /// Wraps a backend's stream (for backends).
    pub fn new(inner: BoxStream<'static, Result<Event>>) -> Self {
        Subscription { inner }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl Stream for Subscription {
    type Item = Result<Event>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

macro_rules! forward_stream {
    ($t:ty) => {
        impl<T: EventStream + ?Sized> EventStream for $t {
            fn publish<'a>(
                &'a self,
                topic: &'a str,
                message: Message,
            ) -> BoxFuture<'a, Result<u64>> {
                (**self).publish(topic, message)
            }
            fn subscribe<'a>(
                &'a self,
                topic: &'a str,
                start: Start,
            ) -> BoxFuture<'a, Result<Subscription>> {
                (**self).subscribe(topic, start)
            }
            fn join<'a>(
                &'a self,
                topic: &'a str,
                group: &'a str,
                options: GroupOptions,
            ) -> BoxFuture<'a, Result<Box<dyn Member>>> {
                (**self).join(topic, group, options)
            }
            fn first_available<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<u64>> {
                (**self).first_available(topic)
            }
        }
    };
}

forward_stream!(Arc<T>);
forward_stream!(Box<T>);

/// Conveniences over any [`EventStream`].
pub trait EventStreamExt: EventStream {
    /// Publishes `value` as JSON.
    ///
    /// ```
    /// use futures::StreamExt;
    /// use sync_event::{EventStream, EventStreamExt, LocalEvents, Start};
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let events = LocalEvents::new();
    /// events.publish_json("t", &serde_json::json!({"n": 1})).await?;
    /// let e = events.subscribe("t", Start::Earliest).await?.next().await.unwrap()?;
    /// assert_eq!(e.json::<serde_json::Value>()?["n"], 1);
    /// # Ok::<(), sync_event::Error>(()) }).unwrap();
    /// ```
    fn publish_json<'a, T: Serialize + ?Sized>(
        &'a self,
        topic: &'a str,
        value: &T,
    ) -> impl Future<Output = Result<u64>> + Send + 'a {
        let message = Message::json(value);
        async move { self.publish(topic, message?).await }.boxed()
    }
}

impl<T: EventStream + ?Sized> EventStreamExt for T {}

/// Opens an event backend from a URL: `local` (in-process) or `etcd://host:port,…/prefix`
/// (feature `etcd`).
///
/// ```
/// use sync_event::EventOptions;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let events = sync_event::open("local", EventOptions::new()).await?;
/// assert_eq!(events.publish("t", "x".into()).await?, 1);
/// assert!(sync_event::open("zookeeper://x", EventOptions::new()).await.is_err());
/// # Ok::<(), sync_event::Error>(()) }).unwrap();
/// ```
pub async fn open(url: &str, options: EventOptions) -> Result<Arc<dyn EventStream>> {
    #[cfg(feature = "nats")]
    if sync_core::backend::scheme(url) == "nats" {
        return Ok(Arc::new(
            nats::NatsEvents::connect(url.parse().map_err(Error::Config)?, options).await?,
        ));
    }
    match sync_core::backend::Backend::from_url(url).map_err(|e| Error::Config(e.to_string()))? {
        sync_core::backend::Backend::Local => Ok(Arc::new(LocalEvents::with_options(options)?)),
        #[cfg(feature = "etcd")]
        sync_core::backend::Backend::Etcd(cfg) => {
            Ok(Arc::new(EtcdEvents::connect(*cfg, options).await?))
        }
        #[allow(unreachable_patterns)]
        other => Err(Error::Config(format!(
            "the {} backend is not compiled into sync-event; enable its `{}` feature",
            other.name(),
            other.name()
        ))),
    }
}

pub(crate) fn check_name(what: &'static str, name: &str) -> Result<()> {
    sync_core::name::validate_name(name).map_err(|r| Error::invalid_name(what, name, r))
}
