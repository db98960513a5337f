//! The interval type returned by [`Time::now_bounds`](crate::Time::now_bounds).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A closed interval `[earliest, latest]` of wall-clock time that contains true time.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use sync_time::TimeBounds;
///
/// let t = SystemTime::now();
/// let b = TimeBounds::around(t, Duration::from_millis(5));
/// assert_eq!(b.error(), Duration::from_millis(5));
/// assert_eq!(b.midpoint(), t);
/// assert!(b.contains(t));
/// assert!(b.is_after(t - Duration::from_millis(6)));
/// assert!(b.is_before(t + Duration::from_millis(6)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeBounds {
    earliest: SystemTime,
    latest: SystemTime,
}

impl TimeBounds {
    /// The interval between two instants, in either order.
    pub fn new(a: SystemTime, b: SystemTime) -> Self {
        if a <= b {
            Self {
                earliest: a,
                latest: b,
            }
        } else {
            Self {
                earliest: b,
                latest: a,
            }
        }
    }

    /// `center ± error`.
    pub fn around(center: SystemTime, error: Duration) -> Self {
        Self {
            earliest: center.checked_sub(error).unwrap_or(center),
            latest: center.checked_add(error).unwrap_or(center),
        }
    }

    /// The earliest time true time can be.
    pub fn earliest(&self) -> SystemTime {
        self.earliest
    }

    /// The latest time true time can be.
    pub fn latest(&self) -> SystemTime {
        self.latest
    }

    /// The middle of the interval: the best estimate of true time.
    pub fn midpoint(&self) -> SystemTime {
        self.earliest + self.width() / 2
    }

    /// The half-width of the interval: the error bound around [`midpoint`](Self::midpoint).
    pub fn error(&self) -> Duration {
        self.width() / 2
    }

    /// `latest - earliest`.
    pub fn width(&self) -> Duration {
        self.latest
            .duration_since(self.earliest)
            .unwrap_or(Duration::ZERO)
    }

    /// Whether `t` is inside the interval (ends included).
    pub fn contains(&self, t: SystemTime) -> bool {
        self.earliest <= t && t <= self.latest
    }

    /// Whether the whole interval lies after `t`: `t` has certainly passed.
    pub fn is_after(&self, t: SystemTime) -> bool {
        self.earliest > t
    }

    /// Whether the whole interval lies before `t`: `t` has certainly not arrived.
    pub fn is_before(&self, t: SystemTime) -> bool {
        self.latest < t
    }
}

impl fmt::Display for TimeBounds {
    /// `[1732590000.123456789, 1732590000.125456789] (±1ms)` in Unix seconds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}, {}] (±{:?})",
            UnixSeconds(self.earliest),
            UnixSeconds(self.latest),
            self.error()
        )
    }
}

/// Formats a `SystemTime` as signed Unix seconds with nanoseconds.
pub(crate) struct UnixSeconds(pub(crate) SystemTime);

impl fmt::Display for UnixSeconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.duration_since(UNIX_EPOCH) {
            Ok(d) => write!(f, "{}.{:09}", d.as_secs(), d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                write!(f, "-{}.{:09}", d.as_secs(), d.subsec_nanos())
            }
        }
    }
}

/// Nanoseconds since the Unix epoch, negative before it.
#[cfg_attr(not(feature = "ntp"), allow(dead_code))] // used by the ntp backend
pub(crate) fn to_unix_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// The inverse of [`to_unix_nanos`], saturating at what `SystemTime` can hold.
#[cfg_attr(not(feature = "ntp"), allow(dead_code))] // used by the ntp backend
pub(crate) fn from_unix_nanos(nanos: i128) -> SystemTime {
    let magnitude = nanos.unsigned_abs();
    let secs = u64::try_from(magnitude / 1_000_000_000).unwrap_or(u64::MAX);
    let d = Duration::new(secs, (magnitude % 1_000_000_000) as u32);
    if nanos >= 0 {
        UNIX_EPOCH.checked_add(d).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH.checked_sub(d).unwrap_or(UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_orders_its_ends_and_midpoint_is_inside() {
        let t = UNIX_EPOCH + Duration::from_secs(100);
        let b = TimeBounds::new(t + Duration::from_secs(2), t);
        assert_eq!(b.earliest(), t);
        assert_eq!(b.latest(), t + Duration::from_secs(2));
        assert_eq!(b.midpoint(), t + Duration::from_secs(1));
        assert_eq!(b.error(), Duration::from_secs(1));
        assert!(b.contains(t) && b.contains(b.latest()));
        assert!(!b.is_after(t) && b.is_after(t - Duration::from_nanos(1)));
        assert_eq!(b.to_string(), "[100.000000000, 102.000000000] (±1s)");
    }

    #[test]
    fn unix_nanos_round_trip_both_sides_of_the_epoch() {
        for n in [0i128, 1, -1, 1_700_000_000_123_456_789, -5_000_000_001] {
            assert_eq!(to_unix_nanos(from_unix_nanos(n)), n);
        }
    }
}
