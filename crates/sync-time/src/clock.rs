//! Where backends read the local clocks: injectable, so tests can step the wall clock.
//!
//! Every backend reads two clocks through a [`ClockSource`]: a monotonic one (never jumps, used
//! to measure elapsed time) and the wall clock (can be stepped by an administrator or a time
//! daemon). The `ntp` backend uses the wall clock only as an arbitrary starting point and
//! extrapolates with the monotonic clock, so a step of the wall clock does not move its
//! `now()`; [`ManualClock`] lets tests prove it.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// The local clocks a backend reads.
pub trait ClockSource: Send + Sync + fmt::Debug + 'static {
    /// A monotonic reading (never goes backwards, unaffected by wall-clock steps).
    fn monotonic(&self) -> Instant;
    /// The local wall clock (may be stepped at any time).
    fn wall(&self) -> SystemTime;
}

/// The real clocks: [`Instant::now`] and [`SystemTime::now`].
///
/// ```
/// use sync_time::{ClockSource, SystemClock};
/// let a = SystemClock.monotonic();
/// assert!(SystemClock.monotonic() >= a);
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl ClockSource for SystemClock {
    fn monotonic(&self) -> Instant {
        Instant::now()
    }
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The real clocks plus manual adjustments, for tests.
///
/// [`advance`](Self::advance) moves both clocks forward without waiting (time passing);
/// [`step_wall`](Self::step_wall) moves only the wall clock, like an administrator running
/// `date -s` or a time daemon stepping the clock.
///
/// ```
/// use std::time::Duration;
/// use sync_time::{ClockSource, ManualClock};
///
/// let clock = ManualClock::new();
/// let (m, w) = (clock.monotonic(), clock.wall());
/// clock.step_wall(-3_600_000_000_000); // one hour back
/// assert!(clock.wall() < w);
/// clock.advance(Duration::from_secs(10));
/// assert!(clock.monotonic() >= m + Duration::from_secs(10));
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    advanced_nanos: AtomicU64,
    wall_step_nanos: AtomicI64,
}

impl ManualClock {
    /// The real clocks, not adjusted yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves both clocks forward by `d`, as if `d` had passed.
    pub fn advance(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.advanced_nanos.fetch_add(nanos, Ordering::SeqCst);
    }

    /// Steps the wall clock alone by `nanos` (negative: backwards).
    pub fn step_wall(&self, nanos: i64) {
        self.wall_step_nanos.fetch_add(nanos, Ordering::SeqCst);
    }
}

impl ClockSource for ManualClock {
    fn monotonic(&self) -> Instant {
        Instant::now() + Duration::from_nanos(self.advanced_nanos.load(Ordering::SeqCst))
    }

    fn wall(&self) -> SystemTime {
        let advanced = Duration::from_nanos(self.advanced_nanos.load(Ordering::SeqCst));
        let step = self.wall_step_nanos.load(Ordering::SeqCst);
        let t = SystemTime::now() + advanced;
        let magnitude = Duration::from_nanos(step.unsigned_abs());
        if step >= 0 {
            t + magnitude
        } else {
            t.checked_sub(magnitude).unwrap_or(t)
        }
    }
}
