//! Hybrid logical clocks over any [`Time`].
//!
//! A hybrid timestamp is `(wall, logical)`: `wall` follows physical time (never behind the
//! largest wall time seen), `logical` counts events within one `wall` value. Comparing two
//! timestamps orders events causally across nodes (if `a` happened before `b` and `b`'s node
//! learned of `a`, `a < b`), while staying within the clock error of physical time
//! (Kulkarni et al., "Logical Physical Clocks", 2014).

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result, Time};

/// The default maximum offset a [`HybridClock`] accepts from a remote timestamp: 500 ms.
pub const DEFAULT_MAX_OFFSET: Duration = Duration::from_millis(500);

/// A hybrid logical clock timestamp: wall time in nanoseconds since the Unix epoch, then a
/// logical counter. Ordered by `(wall, logical)`; serializable, to travel with messages.
///
/// ```
/// use sync_time::HlcTimestamp;
///
/// let a = HlcTimestamp::new(1_000, 0);
/// let b = HlcTimestamp::new(1_000, 1);
/// let c = HlcTimestamp::new(1_001, 0);
/// assert!(a < b && b < c);
/// assert_eq!(b.to_string(), "1000.1");
/// assert_eq!("1000.1".parse::<HlcTimestamp>()?, b);
/// # Ok::<(), sync_time::Error>(())
/// ```
///
/// # JSON
///
/// Serialized as `{"wall_nanos": 1732000000000000000, "logical": 3}`. Today's `wall_nanos` is
/// above 2^53, which JavaScript (and any parser that reads JSON numbers as `f64`) rounds, so
/// for such readers use the lossless form [`lossless`](crate::lossless), where `wall_nanos` is
/// a decimal string: `{"wall_nanos": "1732000000000000000", "logical": 3}`. Deserializing
/// accepts both forms, so readers need not know which one the writer chose.
///
/// ```
/// use sync_time::HlcTimestamp;
///
/// let t = HlcTimestamp::new(1_732_000_000_000_000_001, 3);
/// let json = serde_json::to_string(&sync_time::lossless::Lossless(t)).unwrap();
/// assert_eq!(json, r#"{"wall_nanos":"1732000000000000001","logical":3}"#);
/// assert_eq!(serde_json::from_str::<HlcTimestamp>(&json).unwrap(), t);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct HlcTimestamp {
    wall_nanos: u64,
    logical: u32,
}

impl HlcTimestamp {
    /// A timestamp from its parts.
    pub const fn new(wall_nanos: u64, logical: u32) -> Self {
        Self {
            wall_nanos,
            logical,
        }
    }

    /// The wall part, in nanoseconds since the Unix epoch.
    pub const fn wall_nanos(&self) -> u64 {
        self.wall_nanos
    }

    /// The wall part as a `SystemTime`.
    pub fn wall(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.wall_nanos)
    }

    /// The logical counter.
    pub const fn logical(&self) -> u32 {
        self.logical
    }

    /// The next timestamp after `self` at the same wall time (or the next nanosecond if the
    /// counter is exhausted, so ordering never breaks). None at the very end of the range.
    fn tick(self) -> Option<Self> {
        match self.logical.checked_add(1) {
            Some(logical) => Some(Self::new(self.wall_nanos, logical)),
            None => Some(Self::new(self.wall_nanos.checked_add(1)?, 0)),
        }
    }

    fn tick_or_overflow(self) -> Result<Self> {
        self.tick().ok_or(Error::TimestampOverflow { after: self })
    }
}

impl fmt::Display for HlcTimestamp {
    /// `wall_nanos.logical`, e.g. `1732000000000000000.3`; [`FromStr`] reads it back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.wall_nanos, self.logical)
    }
}

impl FromStr for HlcTimestamp {
    type Err = Error;

    /// Parses the [`Display`](fmt::Display) form `wall_nanos.logical`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidTimestamp {
            input: s.chars().take(64).collect(),
        };
        let (wall, logical) = s.split_once('.').ok_or_else(bad)?;
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(wall) || !digits(logical) {
            return Err(bad());
        }
        Ok(Self::new(
            wall.parse().map_err(|_| bad())?,
            logical.parse().map_err(|_| bad())?,
        ))
    }
}

/// `wall_nanos` as a JSON number or a decimal string.
#[derive(Deserialize)]
#[serde(untagged)]
enum WallNanos {
    Number(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    wall_nanos: WallNanos,
    logical: u32,
}

impl<'de> Deserialize<'de> for HlcTimestamp {
    /// Accepts `wall_nanos` as a number or as a decimal string (the [`lossless`](crate::lossless)
    /// form).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let f = Fields::deserialize(deserializer)?;
        let wall_nanos = match f.wall_nanos {
            WallNanos::Number(n) => n,
            WallNanos::Text(s) => {
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(serde::de::Error::custom(format!(
                        "wall_nanos {s:?} is not a whole number of nanoseconds"
                    )));
                }
                s.parse().map_err(|_| {
                    serde::de::Error::custom(format!("wall_nanos {s:?} does not fit in a u64"))
                })?
            }
        };
        Ok(Self::new(wall_nanos, f.logical))
    }
}

/// The lossless JSON form of [`HlcTimestamp`]: `wall_nanos` as a decimal string, so that
/// parsers that read numbers as `f64` (JavaScript's `JSON.parse`) do not round it.
///
/// Use the wrapper [`Lossless`](lossless::Lossless), or `#[serde(with = "sync_time::lossless")]`
/// on a field:
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use sync_time::HlcTimestamp;
///
/// #[derive(Serialize, Deserialize)]
/// struct Message {
///     #[serde(with = "sync_time::lossless")]
///     stamp: HlcTimestamp,
/// }
///
/// let m = Message { stamp: HlcTimestamp::new(9_007_199_254_740_993, 0) }; // 2^53 + 1
/// let json = serde_json::to_string(&m).unwrap();
/// assert_eq!(json, r#"{"stamp":{"wall_nanos":"9007199254740993","logical":0}}"#);
/// assert_eq!(serde_json::from_str::<Message>(&json).unwrap().stamp, m.stamp);
/// ```
pub mod lossless {
    use super::*;

    /// An [`HlcTimestamp`] that serializes in the lossless form.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
    pub struct Lossless(pub HlcTimestamp);

    #[derive(Serialize)]
    struct Fields {
        wall_nanos: String,
        logical: u32,
    }

    /// Serializes `t` with `wall_nanos` as a decimal string.
    pub fn serialize<S: Serializer>(
        t: &HlcTimestamp,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        Fields {
            wall_nanos: t.wall_nanos.to_string(),
            logical: t.logical,
        }
        .serialize(serializer)
    }

    /// Deserializes either form.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<HlcTimestamp, D::Error> {
        HlcTimestamp::deserialize(deserializer)
    }

    impl Serialize for Lossless {
        fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
            serialize(&self.0, serializer)
        }
    }

    impl<'de> Deserialize<'de> for Lossless {
        fn deserialize<D: Deserializer<'de>>(
            deserializer: D,
        ) -> std::result::Result<Self, D::Error> {
            deserialize(deserializer).map(Lossless)
        }
    }
}

/// A hybrid logical clock driven by any [`Time`] (usually an NTP-synchronized one).
///
/// [`now`](Self::now) stamps a local event or a message to send; [`update`](Self::update)
/// merges the timestamp of a received message and returns a timestamp after both. Timestamps
/// from one clock strictly increase.
///
/// `update` rejects a remote timestamp more than [`max_offset`](Self::max_offset) ahead of
/// local physical time with [`Error::ClockOffsetTooLarge`], so one node with a wild clock cannot
/// drag everyone's clocks into the future.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use sync_time::{HybridClock, LocalTime};
///
/// let a = HybridClock::new(Arc::new(LocalTime::new()));
/// let b = HybridClock::new(Arc::new(LocalTime::new())).with_max_offset(Duration::from_millis(250));
///
/// let sent = a.now()?;            // a sends a message stamped `sent`
/// let received = b.update(sent)?; // b receives it
/// assert!(received > sent);
/// assert!(b.now()? > received);
/// # Ok::<(), sync_time::Error>(())
/// ```
#[derive(Debug)]
pub struct HybridClock<T: Time + ?Sized = dyn Time> {
    time: Arc<T>,
    last: Mutex<HlcTimestamp>,
    max_offset: Duration,
}

impl<T: Time + ?Sized> HybridClock<T> {
    /// A clock over `time`, with [`DEFAULT_MAX_OFFSET`].
    pub fn new(time: Arc<T>) -> Self {
        Self {
            time,
            last: Mutex::new(HlcTimestamp::default()),
            max_offset: DEFAULT_MAX_OFFSET,
        }
    }

    /// Sets the maximum offset accepted from a remote timestamp.
    pub fn with_max_offset(mut self, max_offset: Duration) -> Self {
        self.max_offset = max_offset;
        self
    }

    /// The maximum offset accepted from a remote timestamp.
    pub fn max_offset(&self) -> Duration {
        self.max_offset
    }

    /// The underlying physical time source.
    pub fn time(&self) -> &Arc<T> {
        &self.time
    }

    /// The latest timestamp this clock issued.
    pub fn last(&self) -> HlcTimestamp {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A timestamp for a local event or an outgoing message, after every earlier one.
    ///
    /// Fails with [`Error::TimestampOverflow`] only if an earlier [`update`](Self::update)
    /// took the clock to the very end of the range.
    pub fn now(&self) -> Result<HlcTimestamp> {
        let physical = self.physical_nanos()?;
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let next = if physical > last.wall_nanos {
            HlcTimestamp::new(physical, 0)
        } else {
            last.tick_or_overflow()?
        };
        *last = next;
        Ok(next)
    }

    /// Merges a received timestamp: returns a timestamp after both `remote` and everything
    /// this clock issued before.
    ///
    /// Fails with [`Error::ClockOffsetTooLarge`] (and leaves the clock unchanged) when `remote`
    /// is more than [`max_offset`](Self::max_offset) ahead of local physical time, and with
    /// [`Error::TimestampOverflow`] when no timestamp after `remote` exists (a remote at the
    /// end of the range, accepted only with a huge `max_offset`).
    pub fn update(&self, remote: HlcTimestamp) -> Result<HlcTimestamp> {
        let physical = self.physical_nanos()?;
        let max = u64::try_from(self.max_offset.as_nanos()).unwrap_or(u64::MAX);
        if remote.wall_nanos > physical.saturating_add(max) {
            return Err(Error::ClockOffsetTooLarge {
                remote,
                ahead: Duration::from_nanos(remote.wall_nanos - physical),
                max_offset: self.max_offset,
            });
        }
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let wall = physical.max(last.wall_nanos).max(remote.wall_nanos);
        let next = if wall == last.wall_nanos && wall == remote.wall_nanos {
            HlcTimestamp::new(wall, last.logical.max(remote.logical)).tick_or_overflow()?
        } else if wall == last.wall_nanos {
            last.tick_or_overflow()?
        } else if wall == remote.wall_nanos {
            remote.tick_or_overflow()?
        } else {
            HlcTimestamp::new(wall, 0)
        };
        *last = next;
        Ok(next)
    }

    fn physical_nanos(&self) -> Result<u64> {
        let now = self.time.now()?;
        let since = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Error::ClockBeforeEpoch)?;
        Ok(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LocalTime, ManualClock};

    fn clock_with(manual: &Arc<ManualClock>) -> HybridClock<LocalTime> {
        HybridClock::new(Arc::new(LocalTime::new().with_clock(manual.clone())))
    }

    #[test]
    fn timestamps_strictly_increase_even_when_the_clock_steps_back() {
        let manual = Arc::new(ManualClock::new());
        let hlc = clock_with(&manual);
        let a = hlc.now().unwrap();
        manual.step_wall(-10_000_000_000);
        let b = hlc.now().unwrap();
        let c = hlc.now().unwrap();
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(
            b.wall_nanos(),
            a.wall_nanos(),
            "wall part holds while behind"
        );
        assert_eq!((b.logical(), c.logical()), (1, 2));
    }

    #[test]
    fn update_follows_a_remote_ahead_and_orders_after_it() {
        let manual = Arc::new(ManualClock::new());
        let hlc = clock_with(&manual);
        let local = hlc.now().unwrap();
        let remote = HlcTimestamp::new(local.wall_nanos() + 100_000_000, 7);
        let merged = hlc.update(remote).unwrap();
        assert_eq!(merged, HlcTimestamp::new(remote.wall_nanos(), 8));
        assert!(hlc.now().unwrap() > merged);
        // A remote equal to our last: the larger counter wins, plus one.
        let last = hlc.last();
        let merged = hlc
            .update(HlcTimestamp::new(last.wall_nanos(), last.logical() + 5))
            .unwrap();
        assert_eq!(merged.logical(), last.logical() + 6);
    }

    #[test]
    fn update_rejects_a_remote_beyond_max_offset_and_keeps_the_clock() {
        let manual = Arc::new(ManualClock::new());
        let hlc = clock_with(&manual).with_max_offset(Duration::from_millis(100));
        let before = hlc.now().unwrap();
        let remote = HlcTimestamp::new(before.wall_nanos() + 5_000_000_000, 0);
        let err = hlc.update(remote).unwrap_err();
        match &err {
            Error::ClockOffsetTooLarge {
                ahead, max_offset, ..
            } => {
                assert!(*ahead > Duration::from_secs(4));
                assert_eq!(*max_offset, Duration::from_millis(100));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("max_offset"));
        assert_eq!(hlc.last(), before);
        // Within the offset: accepted.
        let near = HlcTimestamp::new(before.wall_nanos() + 50_000_000, 0);
        assert!(hlc.update(near).unwrap() > near);
    }

    #[test]
    fn counter_overflow_moves_to_the_next_nanosecond() {
        let t = HlcTimestamp::new(5, u32::MAX).tick();
        assert_eq!(t, Some(HlcTimestamp::new(6, 0)));
        assert_eq!(HlcTimestamp::new(u64::MAX, u32::MAX).tick(), None);
    }

    #[test]
    fn display_and_from_str_round_trip_and_reject_junk() {
        for t in [
            HlcTimestamp::new(0, 0),
            HlcTimestamp::new(u64::MAX, u32::MAX),
            HlcTimestamp::new(1_732_000_000_000_000_001, 7),
        ] {
            assert_eq!(t.to_string().parse::<HlcTimestamp>().unwrap(), t);
        }
        for bad in [
            "",
            ".",
            "1",
            "1.",
            ".1",
            "1.2.3",
            "-1.0",
            "+1.0",
            "1.-0",
            "a.b",
            "18446744073709551616.0",
            "1.4294967296",
            " 1.0",
        ] {
            assert!(
                matches!(
                    bad.parse::<HlcTimestamp>(),
                    Err(Error::InvalidTimestamp { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_clock_before_1970_is_a_typed_error() {
        let manual = Arc::new(ManualClock::new());
        manual.step_wall(i64::MIN / 2);
        let hlc = clock_with(&manual);
        assert!(matches!(hlc.now(), Err(Error::ClockBeforeEpoch)));
    }
}
