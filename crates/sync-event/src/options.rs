//! Options of a backend handle (retention, limits) and of a consumer group.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{Error, Result, Start};

/// The longest accepted retention age and ack wait: 10 years.
pub const MAX_AGE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The largest accepted count retention, and the local backend's default (it bounds memory).
pub const MAX_EVENTS: u64 = 1 << 40;
/// The most deliveries a group may make of one event.
pub const MAX_DELIVERIES: u32 = 1000;
/// The local backend's default limit of one event's size (payload plus headers): 1 MiB.
pub const LOCAL_MAX_EVENT_BYTES: usize = 1 << 20;
/// The local backend's default count retention per topic (it bounds memory).
pub const LOCAL_DEFAULT_MAX_EVENTS: u64 = 100_000;

/// How long a topic keeps its events: the oldest are dropped once there are more than
/// `max_events`, or once they are older than `max_age`.
///
/// ```
/// use std::time::Duration;
/// use sync_event::Retention;
/// let r = Retention::new().with_max_events(1000).with_max_age(Duration::from_secs(3600));
/// assert_eq!(r.max_events(), Some(1000));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    max_events: Option<u64>,
    max_age: Option<Duration>,
}

impl Retention {
    /// No limit (the local backend still caps the count at
    /// [`LOCAL_DEFAULT_MAX_EVENTS`] unless told otherwise).
    pub fn new() -> Self {
        Self::default()
    }
    /// Keeps at most `n` events (1 ..= [`MAX_EVENTS`]).
    pub fn with_max_events(mut self, n: u64) -> Self {
        self.max_events = Some(n);
        self
    }
    /// Drops events older than `age` (1 ms ..= [`MAX_AGE`]).
    pub fn with_max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }
    /// The count limit.
    pub fn max_events(&self) -> Option<u64> {
        self.max_events
    }
    /// The age limit.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if let Some(n) = self.max_events {
            if n == 0 || n > MAX_EVENTS {
                return Err(Error::options(format!(
                    "retention max_events is {n}; use 1 ..= {MAX_EVENTS}"
                )));
            }
        }
        if let Some(a) = self.max_age {
            if a < Duration::from_millis(1) || a > MAX_AGE {
                return Err(Error::options(format!(
                    "retention max_age is {a:?}; use 1ms ..= {MAX_AGE:?}"
                )));
            }
        }
        Ok(())
    }
}

/// Options of a backend handle: default and per-topic retention, the largest event.
///
/// ```
/// use sync_event::{EventOptions, Retention};
/// let o = EventOptions::new()
///     .with_retention(Retention::new().with_max_events(10_000))
///     .with_topic_retention("audit", Retention::new().with_max_events(1_000_000));
/// assert_eq!(o.retention_for("audit").max_events(), Some(1_000_000));
/// assert_eq!(o.retention_for("other").max_events(), Some(10_000));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventOptions {
    retention: Retention,
    topics: BTreeMap<String, Retention>,
    max_event_bytes: Option<usize>,
}

impl EventOptions {
    /// Defaults: no retention limit beyond the backend's own, the backend's size limit.
    pub fn new() -> Self {
        Self::default()
    }
    /// The retention of every topic without its own.
    pub fn with_retention(mut self, r: Retention) -> Self {
        self.retention = r;
        self
    }
    /// The retention of `topic`. Every handle on a topic should use the same retention (etcd:
    /// publishers enforce it, so the strictest publisher wins).
    pub fn with_topic_retention(mut self, topic: impl Into<String>, r: Retention) -> Self {
        self.topics.insert(topic.into(), r);
        self
    }
    /// Refuses events larger than `bytes` (payload plus headers); at most the backend's own
    /// limit.
    pub fn with_max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = Some(bytes);
        self
    }
    /// The retention of `topic`.
    pub fn retention_for(&self, topic: &str) -> Retention {
        self.topics.get(topic).copied().unwrap_or(self.retention)
    }
    /// The size limit asked for, if any.
    pub fn max_event_bytes(&self) -> Option<usize> {
        self.max_event_bytes
    }

    /// Checks every setting; `backend_limit` is the backend's own size limit. Returns the
    /// effective size limit.
    pub(crate) fn validate(&self, backend_limit: usize) -> Result<usize> {
        self.retention.validate()?;
        for (topic, r) in &self.topics {
            crate::check_name("topic", topic)?;
            r.validate()?;
        }
        match self.max_event_bytes {
            None => Ok(backend_limit),
            Some(b) if b == 0 || b > backend_limit => Err(Error::options(format!(
                "max_event_bytes is {b}; this backend accepts 1 ..= {backend_limit}"
            ))),
            Some(b) => Ok(b),
        }
    }
}

/// Options of a consumer group member.
///
/// ```
/// use std::time::Duration;
/// use sync_event::GroupOptions;
/// let g = GroupOptions::new()
///     .with_ack_wait(Duration::from_secs(10))
///     .with_max_deliveries(3)
///     .with_dead_letter("orders.dead");
/// assert_eq!(g.dead_letter_for("orders"), "orders.dead");
/// assert_eq!(GroupOptions::new().dead_letter_for("orders"), "orders.dead-letter");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupOptions {
    ack_wait: Duration,
    max_deliveries: u32,
    dead_letter: Option<String>,
    start: Start,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            ack_wait: Duration::from_secs(30),
            max_deliveries: 5,
            dead_letter: None,
            start: Start::Earliest,
        }
    }
}

impl GroupOptions {
    /// Defaults: ack wait 30 s, 5 deliveries, dead letters to `<topic>.dead-letter`, a new
    /// group starts at the earliest event.
    pub fn new() -> Self {
        Self::default()
    }
    /// How long a member may hold an event before it goes to another member (1 ms ..=
    /// [`MAX_AGE`]).
    pub fn with_ack_wait(mut self, d: Duration) -> Self {
        self.ack_wait = d;
        self
    }
    /// How many deliveries an event gets before it goes to the dead-letter topic (1 ..=
    /// [`MAX_DELIVERIES`]).
    pub fn with_max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n;
        self
    }
    /// The dead-letter topic.
    pub fn with_dead_letter(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter = Some(topic.into());
        self
    }
    /// Where a group that has no position yet starts (ignored once it has one).
    pub fn with_start(mut self, start: Start) -> Self {
        self.start = start;
        self
    }
    /// The ack wait.
    pub fn ack_wait(&self) -> Duration {
        self.ack_wait
    }
    /// The retry limit.
    pub fn max_deliveries(&self) -> u32 {
        self.max_deliveries
    }
    /// Where a new group starts.
    pub fn start(&self) -> Start {
        self.start
    }
    /// The dead-letter topic for `topic`.
    pub fn dead_letter_for(&self, topic: &str) -> String {
        self.dead_letter
            .clone()
            .unwrap_or_else(|| format!("{topic}.dead-letter"))
    }

    pub(crate) fn validate(&self, topic: &str) -> Result<()> {
        if self.ack_wait < Duration::from_millis(1) || self.ack_wait > MAX_AGE {
            return Err(Error::options(format!(
                "ack_wait is {:?}; use 1ms ..= {MAX_AGE:?}",
                self.ack_wait
            )));
        }
        if self.max_deliveries == 0 || self.max_deliveries > MAX_DELIVERIES {
            return Err(Error::options(format!(
                "max_deliveries is {}; use 1 ..= {MAX_DELIVERIES}",
                self.max_deliveries
            )));
        }
        let dl = self.dead_letter_for(topic);
        crate::check_name("dead-letter topic", &dl)?;
        if dl == topic {
            return Err(Error::options(format!(
                "the dead-letter topic of {topic:?} is the topic itself; name another"
            )));
        }
        Ok(())
    }
}
