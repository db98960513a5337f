use sync_core::name::NameError;

/// Result of event operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong with a publish, a subscription or a consumer group.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A topic or group name is not acceptable.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        /// `"topic"` or `"group"`.
        what: &'static str,
        /// The name, shortened if long.
        name: String,
        /// Why.
        #[source]
        reason: NameError,
    },
    /// Options out of range (a zero ack wait, zero deliveries, an absurd retention, …).
    #[error("invalid options: {reason}")]
    InvalidOptions {
        /// Why, with the accepted range.
        reason: String,
    },
    /// The event (payload plus headers) is larger than this backend accepts. Nothing was
    /// published.
    #[error("event for topic {topic:?} is {size} bytes; the {backend} backend accepts at most {limit} bytes (payload plus headers; {limit_from}); split it or store it elsewhere and publish a reference")]
    TooLarge {
        /// The topic.
        topic: String,
        /// The event's size in bytes (payload plus headers).
        size: usize,
        /// The backend's limit in bytes.
        limit: usize,
        /// The backend (`"local"`, `"etcd"`, …).
        backend: &'static str,
        /// Where the limit comes from (the backend's constant, the server's setting less what
        /// is kept for framing, or [`EventOptions::with_max_event_bytes`](crate::EventOptions::with_max_event_bytes)).
        limit_from: String,
    },
    /// The start asked for lies before the oldest event the topic still retains: the events in
    /// between were dropped by retention. Nothing is skipped silently: subscribe again from
    /// `first_available` (or [`Start::Earliest`](crate::Start::Earliest)) to accept the loss.
    #[error("topic {topic:?}: offset {requested} is older than retention; the first available offset is {first_available}")]
    Truncated {
        /// The topic.
        topic: String,
        /// The offset asked for (for a start by time, the first offset that may have been
        /// dropped).
        requested: u64,
        /// The oldest offset still retained (the next offset to be published if the topic is
        /// empty).
        first_available: u64,
    },
    /// A payload could not be serialised or deserialised as JSON.
    #[error("bad JSON payload{}: {reason}", offset_suffix(.offset))]
    BadPayload {
        /// The event's offset, when deserialising one.
        offset: Option<u64>,
        /// What serde said.
        reason: String,
    },
    /// An ack or nack came too late: the delivery's claim ran out (its ack wait passed, or the
    /// member's lease was lost) and the event was or will be delivered again.
    #[error("topic {topic:?}, group {group:?}: the delivery of offset {offset} is no longer held by this member (its ack wait passed or its lease was lost); it is redelivered")]
    DeliveryLost {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
        /// The event's offset.
        offset: u64,
    },
    /// The handle (or the group member) was closed.
    #[error("the event handle was closed")]
    Closed,
    /// A backend URL or configuration is not acceptable.
    #[error("configuration: {0}")]
    Config(String),
    /// The backend did not answer within its deadline, or failed; retrying may help.
    #[error("{op} failed on {endpoint}: {source}; check the backend is reachable")]
    Unavailable {
        /// What was being done.
        op: &'static str,
        /// Where (endpoints).
        endpoint: String,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
}

fn offset_suffix(offset: &Option<u64>) -> String {
    offset
        .map(|o| format!(" at offset {o}"))
        .unwrap_or_default()
}

impl Error {
    /// Whether trying the same call again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::DeliveryLost { .. })
    }

    pub(crate) fn invalid_name(what: &'static str, name: &str, reason: NameError) -> Self {
        Error::InvalidName {
            what,
            name: sync_core::name::display_name(name),
            reason,
        }
    }

    pub(crate) fn options(reason: impl Into<String>) -> Self {
        Error::InvalidOptions {
            reason: reason.into(),
        }
    }

    #[allow(dead_code)]
    pub(crate) fn unavailable(
        op: &'static str,
        endpoint: &str,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Unavailable {
            op,
            endpoint: endpoint.to_owned(),
            source: source.into(),
        }
    }
}

/// Where a size limit comes from: the options when they set one, else the backend's `default`.
pub(crate) fn limit_from(options: &crate::EventOptions, default: &str) -> String {
    match options.max_event_bytes() {
        Some(_) => "set by EventOptions::with_max_event_bytes".to_owned(),
        None => default.to_owned(),
    }
}
