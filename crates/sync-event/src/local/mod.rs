//! The in-process backend: topics in memory, bounded per topic by retention.

mod group;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use futures::future::BoxFuture;
use futures::FutureExt;
use hashbrown::HashMap as FastMap;
use tokio::sync::watch;

use crate::{
    check_name, Error, Event, EventOptions, EventStream, GroupOptions, Member, Message, Result,
    Retention, Start, Subscription, LOCAL_DEFAULT_MAX_EVENTS, LOCAL_MAX_EVENT_BYTES,
};

/// The in-process backend: every handle cloned from one `LocalEvents` shares its topics and
/// groups. Memory is bounded per topic: count retention defaults to
/// [`LOCAL_DEFAULT_MAX_EVENTS`] and events to [`LOCAL_MAX_EVENT_BYTES`].
///
/// ```
/// use sync_event::{EventOptions, EventStream, LocalEvents, Retention};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let events = LocalEvents::with_options(
///     EventOptions::new().with_retention(Retention::new().with_max_events(2)),
/// )?;
/// for p in ["a", "b", "c"] {
///     events.publish("t", p.into()).await?;
/// }
/// assert_eq!(events.first_available("t").await?, 2);
/// # Ok::<(), sync_event::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct LocalEvents {
    inner: Arc<Inner>,
}

struct Inner {
    options: EventOptions,
    max_bytes: usize,
    /// Topics by name (hashbrown's foldhash: one cheap probe per publish or read).
    topics: Mutex<FastMap<String, Topic>>,
    ids: AtomicU64,
}

struct Topic {
    /// Retained events, contiguous offsets.
    events: VecDeque<Event>,
    /// The offset the next publish gets.
    next: u64,
    /// Publish time of the newest event retention dropped.
    dropped_until: Option<SystemTime>,
    retention: Retention,
    /// Bumped on a change readers or members may wait for, when one may wait (`waiting`).
    changed: watch::Sender<u64>,
    /// Set (under the lock) by a reader or member that found nothing to do and is about to wait
    /// on `changed`; the next change bumps `changed` and clears it. A publish nobody waits for
    /// thus wakes nothing (tokio's `watch` notifies its waiter lists on every send). A reader
    /// that stops waiting leaves it set: one needless bump, never a missed one, as every waiter
    /// checks the state and sets it under the same lock as the change that clears it.
    waiting: bool,
    groups: HashMap<String, Group>,
}

struct Group {
    /// The next offset never delivered to the group.
    cursor: u64,
    /// Delivered, not acked.
    pending: BTreeMap<u64, Pending>,
}

struct Pending {
    attempts: u32,
    holder: Option<Hold>,
}

#[derive(Clone, Copy)]
struct Hold {
    member: u64,
    until: Instant,
    tag: u64,
}

impl Topic {
    fn new(retention: Retention) -> Self {
        Topic {
            events: VecDeque::new(),
            next: 1,
            dropped_until: None,
            retention,
            changed: watch::Sender::new(0),
            waiting: false,
            groups: HashMap::new(),
        }
    }

    fn first_available(&self) -> u64 {
        self.events.front().map_or(self.next, |e| e.offset)
    }

    fn get(&self, offset: u64) -> Option<&Event> {
        let first = self.first_available();
        if offset < first {
            return None;
        }
        self.events.get((offset - first) as usize)
    }

    fn prune(&mut self) {
        let max = self.retention.max_events().unwrap_or(u64::MAX);
        // The clock is read only when an age limit needs it.
        let now = self.retention.max_age().map(|a| (a, SystemTime::now()));
        loop {
            let Some(front) = self.events.front() else {
                return;
            };
            let too_many = self.events.len() as u64 > max;
            let too_old = now.is_some_and(|(a, now)| {
                now.duration_since(front.published_at).is_ok_and(|d| d > a)
            });
            if !(too_many || too_old) {
                return;
            }
            let e = self.events.pop_front().expect("front exists");
            self.dropped_until = Some(e.published_at);
        }
    }

    /// Wakes the waiters, if any may wait.
    fn bump(&mut self) {
        if std::mem::take(&mut self.waiting) {
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn append(&mut self, name: &str, message: Message) -> u64 {
        let offset = self.next;
        // Publish times never go backwards within a topic, so a start by time is a search.
        let mut at = SystemTime::now();
        if let Some(last) = self.events.back() {
            at = at.max(last.published_at);
        }
        self.events.push_back(Event::new(name, offset, at, message));
        self.next += 1;
        self.prune();
        self.bump();
        offset
    }

    /// Where `start` points, or `Truncated`.
    fn resolve(&self, name: &str, start: Start) -> Result<u64> {
        let first = self.first_available();
        let truncated = |requested| Error::Truncated {
            topic: name.to_owned(),
            requested,
            first_available: first,
        };
        match start {
            Start::Earliest => Ok(first),
            Start::Latest => Ok(self.next),
            Start::Offset(n) if n < first => Err(truncated(n)),
            Start::Offset(n) => Ok(n),
            Start::Time(t) => {
                if self.dropped_until.is_some_and(|d| d >= t) {
                    return Err(truncated(first.saturating_sub(1).max(1)));
                }
                let idx = self.events.partition_point(|e| e.published_at < t);
                Ok(first + idx as u64)
            }
        }
    }
}

impl Default for LocalEvents {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for LocalEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEvents")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl LocalEvents {
    /// A backend with default options.
    pub fn new() -> Self {
        Self::with_options(EventOptions::new()).expect("default options are valid")
    }

    /// A backend with `options`; [`Error::InvalidOptions`] for out-of-range settings.
    pub fn with_options(options: EventOptions) -> Result<Self> {
        let max_bytes = options.validate(LOCAL_MAX_EVENT_BYTES)?;
        Ok(LocalEvents {
            inner: Arc::new(Inner {
                options,
                max_bytes,
                topics: Mutex::new(FastMap::new()),
                ids: AtomicU64::new(1),
            }),
        })
    }

    /// How many events `topic` holds in memory now.
    pub fn retained(&self, topic: &str) -> usize {
        let mut topics = self.inner.lock();
        let t = self.inner.topic(&mut topics, topic);
        t.prune();
        t.events.len()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, FastMap<String, Topic>> {
        self.topics.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn topic<'m>(&self, topics: &'m mut FastMap<String, Topic>, name: &str) -> &'m mut Topic {
        // One probe by `&str`: the key is allocated only when the topic is new.
        topics.entry_ref(name).or_insert_with(|| {
            let mut r = self.options.retention_for(name);
            if r.max_events().is_none() {
                r = r.with_max_events(LOCAL_DEFAULT_MAX_EVENTS);
            }
            Topic::new(r)
        })
    }

    fn check_size(&self, topic: &str, message: &Message) -> Result<()> {
        let size = message.size();
        if size > self.max_bytes {
            return Err(Error::TooLarge {
                topic: topic.to_owned(),
                size,
                limit: self.max_bytes,
                backend: "local",
                limit_from: crate::error::limit_from(&self.options, "LOCAL_MAX_EVENT_BYTES"),
            });
        }
        Ok(())
    }
}

impl EventStream for LocalEvents {
    fn publish<'a>(&'a self, topic: &'a str, message: Message) -> BoxFuture<'a, Result<u64>> {
        let r = (|| {
            check_name("topic", topic)?;
            self.inner.check_size(topic, &message)?;
            let mut topics = self.inner.lock();
            Ok(self.inner.topic(&mut topics, topic).append(topic, message))
        })();
        futures::future::ready(r).boxed()
    }

    fn subscribe<'a>(
        &'a self,
        topic: &'a str,
        start: Start,
    ) -> BoxFuture<'a, Result<Subscription>> {
        let r = (|| {
            check_name("topic", topic)?;
            let mut topics = self.inner.lock();
            let t = self.inner.topic(&mut topics, topic);
            t.prune();
            let next = t.resolve(topic, start)?;
            let reader = Reader {
                inner: self.inner.clone(),
                topic: topic.to_owned(),
                next,
                wait: None,
                done: false,
                ahead: VecDeque::new(),
            };
            Ok(Subscription::new(Box::pin(reader)))
        })();
        futures::future::ready(r).boxed()
    }

    fn join<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
        options: GroupOptions,
    ) -> BoxFuture<'a, Result<Box<dyn Member>>> {
        let r = (|| {
            check_name("topic", topic)?;
            check_name("group", group)?;
            options.validate(topic)?;
            let mut topics = self.inner.lock();
            let t = self.inner.topic(&mut topics, topic);
            t.prune();
            if !t.groups.contains_key(group) {
                let cursor = t.resolve(topic, options.start())?;
                t.groups.insert(
                    group.to_owned(),
                    Group {
                        cursor,
                        pending: BTreeMap::new(),
                    },
                );
            }
            let m: Box<dyn Member> = Box::new(group::LocalMember {
                inner: self.inner.clone(),
                topic: topic.to_owned(),
                group: group.to_owned(),
                id: self.inner.ids.fetch_add(1, Ordering::Relaxed),
                options,
                left: AtomicBool::new(false),
            });
            Ok(m)
        })();
        futures::future::ready(r).boxed()
    }

    fn first_available<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<u64>> {
        let r = (|| {
            check_name("topic", topic)?;
            let mut topics = self.inner.lock();
            let t = self.inner.topic(&mut topics, topic);
            t.prune();
            Ok(t.first_available())
        })();
        futures::future::ready(r).boxed()
    }
}

/// A subscriber's position, a stream of its events.
struct Reader {
    inner: Arc<Inner>,
    topic: String,
    next: u64,
    /// While caught up: a wait for the topic's next change (see [`Topic::waiting`]), made only
    /// when there was nothing to read.
    wait: Option<BoxFuture<'static, bool>>,
    done: bool,
    /// Events copied out under the lock and not yet returned, in offset order (at most
    /// [`READ_AHEAD`]): one lock per run of retained events instead of one per event.
    ahead: VecDeque<Event>,
}

/// Most events a subscriber copies out of its topic at a time.
const READ_AHEAD: usize = 64;

impl Reader {
    /// The next event, an error that ends the stream, or a receiver of the topic's next
    /// change when there is nothing to read yet.
    fn read(&mut self) -> std::result::Result<Result<Event>, watch::Receiver<u64>> {
        let mut topics = self.inner.lock();
        let t = self.inner.topic(&mut topics, &self.topic);
        t.prune();
        let first = t.first_available();
        if self.next < first {
            self.done = true;
            return Ok(Err(Error::Truncated {
                topic: self.topic.clone(),
                requested: self.next,
                first_available: first,
            }));
        }
        if let Some(e) = t.get(self.next) {
            let e = e.clone();
            let from = (self.next + 1 - first) as usize;
            self.ahead
                .extend(t.events.range(from..).take(READ_AHEAD - 1).cloned());
            self.next += 1 + self.ahead.len() as u64;
            return Ok(Ok(e));
        }
        // Nothing yet: the next publish bumps `changed`, which this receiver has not seen.
        t.waiting = true;
        Err(t.changed.subscribe())
    }
}

impl futures::Stream for Reader {
    type Item = Result<Event>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Event>>> {
        use std::task::Poll;
        let this = self.get_mut();
        if let Some(e) = this.ahead.pop_front() {
            return Poll::Ready(Some(Ok(e)));
        }
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(wait) = this.wait.as_mut() {
                match wait.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(open) => {
                        this.wait = None;
                        if !open {
                            this.done = true;
                            return Poll::Ready(None);
                        }
                    }
                }
            }
            match this.read() {
                Ok(item) => return Poll::Ready(Some(item)),
                Err(mut rx) => {
                    this.wait = Some(async move { rx.changed().await.is_ok() }.boxed());
                }
            }
        }
    }
}
