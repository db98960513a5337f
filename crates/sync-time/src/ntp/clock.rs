//! The synchronized clock between syncs, and how a new sync takes over from the last one
//! without moving `now()` backwards or out of the bounds.
//!
//! A sync yields "true time at monotonic instant `mono_ref` lies in `[lo, hi]`". Later, at
//! monotonic instant `m`, with `age = m - mono_ref`:
//!
//! - `earliest = lo + age - φ·age` and `latest = hi + age + φ·age`: the monotonic clock's rate
//!   may differ from true time by up to `φ` (`max_drift_ppm`), so the bounds widen with age.
//!   No network, no wall-clock read: stepping the system clock changes nothing.
//! - A new sync's interval is **intersected** with the previous one carried forward to the new
//!   sync's start: both contain true time, so their intersection does too, and the earliest
//!   bound never moves back (unless the two are disjoint, which means an assumption broke; then
//!   the new one is taken alone).
//! - The estimate `now()` is the midpoint, except after a sync that put the midpoint behind an
//!   estimate already given out: then the estimate does not step back, it **slews**: it runs
//!   at `1 - SLEW` of the monotonic rate from where it was until the midpoint catches up.
//!   While it is ahead of the measured latest bound, the latest bound is widened to it (wider
//!   is always honest).
//! - A high-water mark (one atomic) holds the largest `now()` given out: `now()` never returns
//!   less, on any thread, and `latest` is never less, so every `now()` lies within the bounds
//!   read just before and just after it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::selection::drift;
use crate::bounds::from_unix_nanos;
use crate::TimeBounds;

/// While the estimate is ahead of the midpoint it runs this many parts per million slower than
/// the monotonic clock (10 %): an estimate 1 ms ahead is caught up with in 10 ms.
pub(crate) const SLEW_PPM: u64 = 100_000;

/// One sync's view of true time, in Unix nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SyncedClock {
    /// The monotonic instant the interval refers to (the start of the sync).
    pub(crate) mono_ref: Instant,
    /// True time at `mono_ref` is at least this.
    pub(crate) lo: i128,
    /// True time at `mono_ref` is at most this.
    pub(crate) hi: i128,
    /// Drift rate `φ`, parts per million.
    pub(crate) drift_ppm: u32,
    /// Where the estimate stood when this sync took over: it continues from there at the slewed
    /// rate until the midpoint overtakes it.
    pub(crate) slew_from: Option<(Instant, i128)>,
    /// True time minus the local wall clock at the sync (for status only).
    pub(crate) offset_nanos: i64,
}

impl SyncedClock {
    /// Time since `mono_ref` on the monotonic clock (zero for a reading from before it).
    pub(crate) fn age(&self, m: Instant) -> Duration {
        m.saturating_duration_since(self.mono_ref)
    }

    fn widening(&self, age: Duration) -> i128 {
        nanos(drift(age, self.drift_ppm))
    }

    /// The earliest true time can be at `m`.
    pub(crate) fn earliest(&self, m: Instant) -> i128 {
        let age = self.age(m);
        self.lo + nanos(age) - self.widening(age)
    }

    /// The latest true time can be at `m`, as measured.
    pub(crate) fn measured_latest(&self, m: Instant) -> i128 {
        let age = self.age(m);
        self.hi + nanos(age) + self.widening(age)
    }

    /// The middle of the measured interval at `m`.
    pub(crate) fn midpoint(&self, m: Instant) -> i128 {
        self.lo + (self.hi - self.lo) / 2 + nanos(self.age(m))
    }

    /// The estimate at `m`: the midpoint, or the slewed continuation of the previous estimate
    /// while that is ahead. Never below `earliest(m)`, and non-decreasing in `m`.
    pub(crate) fn estimate(&self, m: Instant) -> i128 {
        let mid = self.midpoint(m);
        match self.slew_from {
            Some((from, value)) => {
                let run = nanos(m.saturating_duration_since(from));
                let slewed = value + run - (run * i128::from(SLEW_PPM)).div_euclid(1_000_000);
                mid.max(slewed)
            }
            None => mid,
        }
    }

    /// The error bound right after the sync: half the interval, rounded up.
    pub(crate) fn error_at_sync(&self) -> Duration {
        duration((self.hi - self.lo + 1) / 2)
    }

    /// The bounds at `m`, with `latest` raised to the estimate and to `floor` (the largest
    /// `now()` given out) when they are ahead of it.
    fn bounds(&self, m: Instant, floor: i128) -> (i128, i128) {
        let latest = self.measured_latest(m).max(self.estimate(m)).max(floor);
        (self.earliest(m), latest)
    }
}

/// What `install` did with a new interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Merge {
    /// The first sync.
    First,
    /// Intersected with the previous interval carried forward.
    Intersected,
    /// Disjoint from the previous interval carried forward: one of the two is false (a server
    /// lied, or the monotonic clock drifted faster than `max_drift_ppm`). The new one was
    /// taken alone.
    Contradicted,
}

/// The clock that `now()` and `now_bounds()` read: the current sync plus the high-water mark.
#[derive(Debug)]
pub(crate) struct Served {
    synced: RwLock<Option<SyncedClock>>,
    /// The largest `now()` given out, Unix nanoseconds (`i64::MIN`: none yet).
    high_water: AtomicI64,
}

impl Default for Served {
    fn default() -> Self {
        Self {
            synced: RwLock::new(None),
            high_water: AtomicI64::new(i64::MIN),
        }
    }
}

impl Served {
    /// The current sync, if any.
    pub(crate) fn synced(&self) -> Option<SyncedClock> {
        *self.synced.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// `now()` at monotonic reading `m`, in Unix nanoseconds: the estimate, or the largest value
    /// given out before if that is more. `None` before the first sync.
    pub(crate) fn now(&self, m: Instant) -> Option<i128> {
        let estimate = clamp_i64(self.synced()?.estimate(m));
        let before = self.high_water.fetch_max(estimate, Ordering::SeqCst);
        Some(i128::from(before.max(estimate)))
    }

    /// `now_bounds()` at monotonic reading `m`.
    pub(crate) fn bounds(&self, m: Instant) -> Option<TimeBounds> {
        let synced = self.synced()?;
        let floor = i128::from(self.high_water.load(Ordering::SeqCst));
        let (earliest, latest) = synced.bounds(m, floor);
        Some(TimeBounds::new(
            from_unix_nanos(earliest),
            from_unix_nanos(latest),
        ))
    }

    /// Takes over a new sync: `[lo, hi]` contains true time at monotonic instant `mono_ref`,
    /// when the local wall clock read `wall_at_ref` (for the status' offset).
    /// Reads the monotonic clock (through `mono`) under the write lock, so that every reader
    /// that saw the previous sync read its clock earlier.
    pub(crate) fn install(
        &self,
        mono_ref: Instant,
        (lo, hi): (i128, i128),
        drift_ppm: u32,
        wall_at_ref: i128,
        mono: impl FnOnce() -> Instant,
    ) -> (SyncedClock, Merge) {
        let mut guard = self.synced.write().unwrap_or_else(PoisonError::into_inner);
        let taken_over = mono();
        let previous = *guard;
        let (lo, hi, merge) = match previous {
            None => (lo, hi, Merge::First),
            Some(old) => {
                let (old_lo, old_hi) = (old.earliest(mono_ref), old.measured_latest(mono_ref));
                let (both_lo, both_hi) = (lo.max(old_lo), hi.min(old_hi));
                if both_lo <= both_hi {
                    (both_lo, both_hi, Merge::Intersected)
                } else {
                    (lo, hi, Merge::Contradicted)
                }
            }
        };
        // The estimate continues from the larger of where the previous sync had it and what
        // was given out; readers of the previous sync read their clocks before `taken_over`.
        let high = i128::from(self.high_water.load(Ordering::SeqCst));
        let slew_from = previous.map(|old| (taken_over, old.estimate(taken_over).max(high)));
        let synced = SyncedClock {
            mono_ref,
            lo,
            hi,
            drift_ppm,
            slew_from,
            offset_nanos: clamp_i64(lo + (hi - lo) / 2 - wall_at_ref),
        };
        *guard = Some(synced);
        (synced, merge)
    }
}

fn nanos(d: Duration) -> i128 {
    d.as_nanos() as i128
}

fn duration(nanos: i128) -> Duration {
    Duration::from_nanos(u64::try_from(nanos.max(0)).unwrap_or(u64::MAX))
}

/// Unix nanoseconds as `i64` (years 1678 to 2262), saturating.
fn clamp_i64(n: i128) -> i64 {
    i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i128 = 1_000_000;

    fn served_at(base: Instant, lo: i128, hi: i128) -> Served {
        let served = Served::default();
        served.install(base, (lo, hi), 500, 0, || base);
        served
    }

    #[test]
    fn extrapolates_on_the_monotonic_clock_and_widens_with_age() {
        let base = Instant::now();
        let t0 = 1_000 * 1_000 * MS;
        let served = served_at(base, t0 - 3 * MS, t0 + 3 * MS);
        let later = base + Duration::from_secs(60);
        // 3 ms + 500 ppm × 60 s = 3 ms + 30 ms.
        let b = served.bounds(later).unwrap();
        assert_eq!(b.earliest(), from_unix_nanos(t0 + 60_000 * MS - 33 * MS));
        assert_eq!(b.latest(), from_unix_nanos(t0 + 60_000 * MS + 33 * MS));
        assert_eq!(served.now(later), Some(t0 + 60_000 * MS));
        // A monotonic reading from before the sync (a racing reader) does not go negative,
        // and does not take `now()` back either.
        assert_eq!(served.now(base), Some(t0 + 60_000 * MS));
    }

    #[test]
    fn a_narrower_sync_is_intersected_and_now_slews_instead_of_stepping_back() {
        let base = Instant::now();
        let t0 = 1_000 * 1_000 * MS;
        // Wide first sync: [t0 - 10 ms, t0 + 10 ms], estimate t0.
        let served = served_at(base, t0 - 10 * MS, t0 + 10 * MS);
        let m1 = base + Duration::from_millis(1);
        let n1 = served.now(m1).unwrap();
        assert_eq!(n1, t0 + MS);
        // Narrow second sync, at the low end: true time is in [t0 - 9 ms, t0 - 8 ms] at m1.
        let (_, merge) = served.install(m1, (t0 - 9 * MS, t0 - 8 * MS), 0, 0, || m1);
        assert_eq!(merge, Merge::Intersected);
        // Its midpoint (t0 - 8.5 ms) is 9.5 ms behind what was given out: no step back.
        assert_eq!(served.now(m1), Some(n1));
        let b = served.bounds(m1).unwrap();
        assert_eq!(b.earliest(), from_unix_nanos(t0 - 9 * MS));
        assert_eq!(
            b.latest(),
            from_unix_nanos(n1),
            "latest widened to the estimate"
        );
        // 10 ms later the estimate advanced 9 ms (slewing at 10 %), still ahead.
        let m2 = m1 + Duration::from_millis(10);
        assert_eq!(served.now(m2), Some(n1 + 9 * MS));
        // After 95 ms the midpoint caught up: the estimate is the midpoint again.
        let m3 = m1 + Duration::from_millis(100);
        assert_eq!(served.now(m3), Some(t0 - 8 * MS - MS / 2 + 100 * MS));
        let b = served.bounds(m3).unwrap();
        assert_eq!(b.latest(), from_unix_nanos(t0 - 8 * MS + 100 * MS));
    }

    #[test]
    fn a_disjoint_sync_is_taken_alone_and_still_never_steps_back() {
        let base = Instant::now();
        let t0 = 1_000 * 1_000 * MS;
        let served = served_at(base, t0 - MS, t0 + MS);
        let n = served.now(base).unwrap();
        // The new interval lies 1 s earlier: taken alone, the estimate slews down.
        let (synced, merge) =
            served.install(base, (t0 - 1_001 * MS, t0 - 999 * MS), 500, 0, || base);
        assert_eq!(merge, Merge::Contradicted);
        assert_eq!((synced.lo, synced.hi), (t0 - 1_001 * MS, t0 - 999 * MS));
        assert_eq!(served.now(base), Some(n));
        let b = served.bounds(base).unwrap();
        assert!(b.contains(from_unix_nanos(t0 - 1_000 * MS)) && b.contains(from_unix_nanos(n)));
        // Later than 1 s: a forward jump is a plain step.
        served.install(base, (t0 + 5_000 * MS, t0 + 5_002 * MS), 500, 0, || base);
        assert_eq!(served.now(base), Some(t0 + 5_001 * MS));
    }
}
