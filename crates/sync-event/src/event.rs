//! The data that flows: messages in, events out, deliveries to group members.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, Result};

/// Headers of an event: string keys to string values, in key order.
pub type Headers = BTreeMap<String, String>;

/// What a publisher sends: a payload of raw bytes and headers.
///
/// ```
/// use sync_event::Message;
/// let m = Message::new(b"hello".to_vec()).with_header("kind", "greeting");
/// assert_eq!(m.payload(), b"hello");
/// let j = Message::json(&serde_json::json!({"id": 7})).unwrap();
/// assert_eq!(j.payload(), br#"{"id":7}"#);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// The payload.
    pub payload: Vec<u8>,
    /// The headers.
    pub headers: Headers,
}

impl Message {
    /// A message with `payload` and no headers.
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        Message {
            payload: payload.into(),
            headers: Headers::new(),
        }
    }

    /// A message whose payload is `value` as JSON (header `content-type: application/json`).
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        let payload = serde_json::to_vec(value).map_err(|e| Error::BadPayload {
            offset: None,
            reason: e.to_string(),
        })?;
        Ok(Message::new(payload).with_header("content-type", "application/json"))
    }

    /// Adds (or replaces) a header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Payload plus headers, in bytes: what the backends' size limits count.
    pub fn size(&self) -> usize {
        self.payload.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

impl From<Vec<u8>> for Message {
    fn from(payload: Vec<u8>) -> Self {
        Message::new(payload)
    }
}

impl From<&[u8]> for Message {
    fn from(payload: &[u8]) -> Self {
        Message::new(payload.to_vec())
    }
}

impl From<&str> for Message {
    fn from(payload: &str) -> Self {
        Message::new(payload.as_bytes().to_vec())
    }
}

/// An event as readers see it: its topic, offset, publish time, headers and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// The topic.
    pub topic: String,
    /// Its offset: strictly increasing within the topic, the same for every reader.
    pub offset: u64,
    /// When the backend stored it (the publisher's wall clock).
    pub published_at: SystemTime,
    /// The headers.
    pub headers: Headers,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Event {
    /// Builds an event (for backends).
    pub fn new(
        topic: impl Into<String>,
        offset: u64,
        published_at: SystemTime,
        message: Message,
    ) -> Self {
        Event {
            topic: topic.into(),
            offset,
            published_at,
            headers: message.headers,
            payload: message.payload,
        }
    }

    /// The payload deserialised from JSON; [`Error::BadPayload`] if it does not fit `T`.
    ///
    /// ```
    /// use sync_event::{Event, Message};
    /// let e = Event::new("t", 1, std::time::SystemTime::now(), Message::json(&(1, "a")).unwrap());
    /// let (n, s): (u32, String) = e.json().unwrap();
    /// assert_eq!((n, s.as_str()), (1, "a"));
    /// assert!(e.json::<bool>().is_err());
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.payload).map_err(|e| Error::BadPayload {
            offset: Some(self.offset),
            reason: e.to_string(),
        })
    }
}

/// Where a subscription (or a new consumer group) starts.
///
/// Not named `From`, which would shadow the prelude's `From` trait in every module that
/// imports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Start {
    /// The oldest event the topic retains.
    #[default]
    Earliest,
    /// Only events published after the subscription started.
    Latest,
    /// The event at this offset and after; [`Error::Truncated`] if it was dropped by retention.
    Offset(u64),
    /// The first event published at or after this time; [`Error::Truncated`] if events from
    /// that time on may have been dropped by retention.
    Time(SystemTime),
}

/// An event handed to one member of a consumer group, to [`ack`](crate::Member::ack) or
/// [`nack`](crate::Member::nack).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery {
    /// The event.
    pub event: Event,
    /// Which delivery of this event to the group this is: 1 for the first, 2 after one nack or
    /// expired ack wait, and so on.
    pub attempt: u32,
    /// The backend's token for this claim (etcd: the claim key's revision).
    pub tag: u64,
}

impl Delivery {
    /// Builds a delivery (for backends).
    pub fn new(event: Event, attempt: u32, tag: u64) -> Self {
        Delivery {
            event,
            attempt,
            tag,
        }
    }
}

/// Header names the dead-letter topic's events carry besides the original headers.
pub mod dead_letter {
    /// The topic the event was first published to.
    pub const TOPIC: &str = "sync-event-dead-letter-topic";
    /// Its offset there.
    pub const OFFSET: &str = "sync-event-dead-letter-offset";
    /// The group that gave up on it.
    pub const GROUP: &str = "sync-event-dead-letter-group";
    /// How many deliveries were made.
    pub const DELIVERIES: &str = "sync-event-dead-letter-deliveries";
}
