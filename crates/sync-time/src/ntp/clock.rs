//! The synchronized clock between syncs: the last sync's estimate, carried forward on the
//! monotonic clock.
//!
//! A sync yields "true time at monotonic instant `mono_ref` is `time_ref ± error`". Later, at
//! monotonic instant `m`:
//!
//! - `now = time_ref + (m - mono_ref)`: no network, no wall-clock read, so stepping the system
//!   clock changes nothing;
//! - `error(m) = error + φ·(m - mono_ref)`: the monotonic clock's rate may differ from true time
//!   by up to `φ` (`max_drift_ppm`), so the bounds widen linearly with age.

use std::time::{Duration, Instant, SystemTime};

use super::selection::drift;
use crate::TimeBounds;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SyncedClock {
    /// The monotonic instant the estimate refers to (the start of the sync).
    pub(crate) mono_ref: Instant,
    /// Best estimate of true time at `mono_ref`.
    pub(crate) time_ref: SystemTime,
    /// Error bound at `mono_ref`.
    pub(crate) error: Duration,
    /// Drift rate `φ`, parts per million.
    pub(crate) drift_ppm: u32,
    /// True time minus the local wall clock, at the sync (for status only).
    pub(crate) offset_nanos: i64,
}

impl SyncedClock {
    /// Time since the estimate, on the monotonic clock.
    pub(crate) fn age(&self, mono_now: Instant) -> Duration {
        mono_now.saturating_duration_since(self.mono_ref)
    }

    /// Best estimate of true time at `mono_now`.
    pub(crate) fn now(&self, mono_now: Instant) -> SystemTime {
        self.time_ref + self.age(mono_now)
    }

    /// Error bound at `mono_now`: `error + φ·age`.
    pub(crate) fn error_at(&self, mono_now: Instant) -> Duration {
        self.error + drift(self.age(mono_now), self.drift_ppm)
    }

    /// `now ± error` at `mono_now`.
    pub(crate) fn bounds(&self, mono_now: Instant) -> TimeBounds {
        TimeBounds::around(self.now(mono_now), self.error_at(mono_now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn extrapolates_on_the_monotonic_clock_and_widens_with_age() {
        let mono_ref = Instant::now();
        let clock = SyncedClock {
            mono_ref,
            time_ref: UNIX_EPOCH + Duration::from_secs(1_000),
            error: Duration::from_millis(3),
            drift_ppm: 500,
            offset_nanos: 0,
        };
        let later = mono_ref + Duration::from_secs(60);
        assert_eq!(clock.now(later), UNIX_EPOCH + Duration::from_secs(1_060));
        // 3 ms + 500 ppm × 60 s = 3 ms + 30 ms.
        assert_eq!(clock.error_at(later), Duration::from_millis(33));
        let b = clock.bounds(later);
        assert_eq!(b.earliest(), UNIX_EPOCH + Duration::from_millis(1_059_967));
        assert_eq!(b.latest(), UNIX_EPOCH + Duration::from_millis(1_060_033));
        // A monotonic reading from before the sync (a racing reader) does not go negative.
        assert_eq!(clock.now(mono_ref), clock.time_ref);
    }
}
