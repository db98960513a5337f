//! From samples to bounds: the error formula, the best sample per server, and the interval
//! intersection across servers that leaves false tickers out.
//!
//! All intervals here are *offsets*, in nanoseconds, of true time from the sync's anchor clock
//! (see `query.rs`), at the moment the sync started: the same reference for every server, so
//! they can be intersected directly.

use std::time::Duration;

/// Timestamp resolution allowance: `sntpc` works in whole microseconds (our transmit and
/// receive timestamps are truncated to 1 µs, the offset too), so each sample is off by less
/// than 2 µs from rounding alone.
pub(crate) const RESOLUTION: Duration = Duration::from_micros(2);

/// One valid reply from one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    /// Server time minus the anchor clock, nanoseconds (the NTP offset θ).
    pub(crate) offset_nanos: i64,
    /// Round trip minus the server's processing time (the NTP delay δ).
    pub(crate) delay: Duration,
    /// The server's root delay (its round trip to the reference clock).
    pub(crate) root_delay: Duration,
    /// The server's root dispersion (its own accumulated error).
    pub(crate) root_dispersion: Duration,
    /// Monotonic time from the start of the sync until this reply was in hand.
    pub(crate) since_anchor: Duration,
}

impl Sample {
    /// This sample's error bound with drift rate `drift_ppm`; see [`error_bound`].
    pub(crate) fn error(&self, drift_ppm: u32) -> Duration {
        error_bound(
            self.delay,
            self.root_delay,
            self.root_dispersion,
            self.since_anchor,
            drift_ppm,
        )
    }

    /// `[θ - ε, θ + ε]`.
    pub(crate) fn interval(&self, drift_ppm: u32) -> Interval {
        let e = nanos(self.error(drift_ppm));
        let theta = i128::from(self.offset_nanos);
        Interval {
            lo: theta - e,
            hi: theta + e,
        }
    }
}

/// The error bound of one sample, as documented on [`NtpOptions`](crate::NtpOptions):
///
/// `ε = δ/2 + root_delay/2 + root_dispersion + φ·age + RESOLUTION`
///
/// - `δ/2`: the reply's one-way delays are unknown, but each is between 0 and `δ`, so the
///   midpoint estimate is off by at most `δ/2`;
/// - `root_delay/2 + root_dispersion`: the server's own distance from its reference (RFC 5905
///   "root distance"), which the server vouches for;
/// - `φ·age`: how far our monotonic clock may have drifted since the moment the estimate refers
///   to (`φ` = `drift_ppm` parts per million);
/// - [`RESOLUTION`]: timestamp rounding.
pub(crate) fn error_bound(
    delay: Duration,
    root_delay: Duration,
    root_dispersion: Duration,
    age: Duration,
    drift_ppm: u32,
) -> Duration {
    delay.div_ceil_2()
        + root_delay.div_ceil_2()
        + root_dispersion
        + drift(age, drift_ppm)
        + RESOLUTION
}

/// `φ·age`, rounded up: how far a clock drifting at most `drift_ppm` can stray in `age`.
pub(crate) fn drift(age: Duration, drift_ppm: u32) -> Duration {
    // On the `now_bounds()` path: stay in u64 (no 128-bit division) unless it would overflow,
    // which takes years of age.
    let product = u64::try_from(age.as_nanos())
        .ok()
        .and_then(|ns| ns.checked_mul(u64::from(drift_ppm)));
    let ns = match product {
        Some(p) => p.div_ceil(1_000_000),
        None => {
            let p = age.as_nanos() * u128::from(drift_ppm);
            u64::try_from(p.div_ceil(1_000_000)).unwrap_or(u64::MAX)
        }
    };
    Duration::from_nanos(ns)
}

trait HalfUp {
    fn div_ceil_2(self) -> Duration;
}

impl HalfUp for Duration {
    fn div_ceil_2(self) -> Duration {
        let ns = self.as_nanos().div_ceil(2);
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

pub(crate) fn nanos(d: Duration) -> i128 {
    d.as_nanos() as i128
}

/// The minimum-delay sample: the one least disturbed by queueing on the path, hence with the
/// tightest error bound (NTP's clock filter, reduced to its essence).
pub(crate) fn best_by_delay(samples: &[Sample]) -> Option<Sample> {
    samples.iter().min_by_key(|s| s.delay).copied()
}

/// A closed interval of offsets, nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Interval {
    pub(crate) lo: i128,
    pub(crate) hi: i128,
}

impl Interval {
    fn overlaps(&self, other: &Interval) -> bool {
        self.lo <= other.hi && other.lo <= self.hi
    }
}

/// What the intersection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Agreement {
    /// The interval that contains true time if at most `falsetickers_assumed` sources are
    /// wrong.
    pub(crate) interval: Interval,
    /// Per input interval: does it overlap the agreed interval (a true chimer)?
    pub(crate) truechimers: Vec<bool>,
    /// How many false tickers the algorithm had to allow for.
    pub(crate) falsetickers_assumed: usize,
}

/// Marzullo-style intersection, as in NTP's selection algorithm (RFC 5905 §11.2.1).
///
/// For `f = 0, 1, …` while `n - f` is still a majority of the `n` intervals and at least
/// `min_agreeing`: find the lowest and highest points covered by at least `n - f` intervals.
/// The first `f` for which `low <= high` wins, and `[low, high]` is the result: if at most `f`
/// intervals are wrong, true time is covered by at least `n - f` correct ones, so it lies in
/// `[low, high]`. Intervals that do not overlap `[low, high]` are false tickers.
///
/// `None` when no majority of at least `min_agreeing` overlaps (e.g. two servers that
/// disagree: nobody can tell which one is right).
pub(crate) fn intersect(intervals: &[Interval], min_agreeing: usize) -> Option<Agreement> {
    let n = intervals.len();
    let need_at_least = (n / 2 + 1).max(min_agreeing);
    if n == 0 || n < need_at_least {
        return None;
    }
    // Endpoints: +1 entering an interval, -1 leaving it. Intervals are closed, so at equal
    // values an interval is entered before another is left, in both scan directions.
    let mut ascending: Vec<(i128, i32)> = intervals
        .iter()
        .flat_map(|iv| [(iv.lo, 1), (iv.hi, -1)])
        .collect();
    ascending.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut descending: Vec<(i128, i32)> = intervals
        .iter()
        .flat_map(|iv| [(iv.hi, 1), (iv.lo, -1)])
        .collect();
    descending.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));

    for f in 0..=(n - need_at_least) {
        let need = (n - f) as i32;
        let first_covered = |ends: &[(i128, i32)]| {
            let mut count = 0;
            ends.iter().find_map(|&(x, step)| {
                count += step;
                (count >= need).then_some(x)
            })
        };
        let (Some(low), Some(high)) = (first_covered(&ascending), first_covered(&descending))
        else {
            continue;
        };
        if low <= high {
            let interval = Interval { lo: low, hi: high };
            return Some(Agreement {
                interval,
                truechimers: intervals.iter().map(|iv| iv.overlaps(&interval)).collect(),
                falsetickers_assumed: f,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(lo: i128, hi: i128) -> Interval {
        Interval { lo, hi }
    }

    #[test]
    fn error_bound_is_the_documented_formula() {
        // δ = 3 ms, root delay 10 ms, root dispersion 5 ms, 2 s since the sync started at
        // 500 ppm: 1.5 + 5 + 5 + 1 ms + 2 µs.
        let e = error_bound(
            Duration::from_millis(3),
            Duration::from_millis(10),
            Duration::from_millis(5),
            Duration::from_secs(2),
            500,
        );
        assert_eq!(e, Duration::from_micros(12_502));
        // Odd nanoseconds round up, never down.
        assert_eq!(
            error_bound(
                Duration::from_nanos(3),
                Duration::ZERO,
                Duration::ZERO,
                Duration::ZERO,
                500
            ),
            Duration::from_nanos(2) + RESOLUTION
        );
        assert_eq!(
            drift(Duration::from_secs(100), 500),
            Duration::from_millis(50)
        );
        assert_eq!(drift(Duration::from_nanos(1), 1), Duration::from_nanos(1));
        // Past u64 range of age × ppm: the 128-bit path, same rounding.
        let long = Duration::from_secs(100 * 365 * 24 * 3600);
        assert_eq!(
            drift(long, 500),
            Duration::from_secs(100 * 365 * 24 * 36 / 20)
        );
    }

    #[test]
    fn best_sample_is_the_minimum_delay_one() {
        let s = |offset_nanos, delay_us| Sample {
            offset_nanos,
            delay: Duration::from_micros(delay_us),
            root_delay: Duration::ZERO,
            root_dispersion: Duration::ZERO,
            since_anchor: Duration::ZERO,
        };
        let best = best_by_delay(&[s(900, 80), s(100, 20), s(500, 50)]).unwrap();
        assert_eq!(best.offset_nanos, 100);
        assert_eq!(best_by_delay(&[]), None);
    }

    #[test]
    fn all_agreeing_intervals_intersect_tightly() {
        let a = intersect(&[iv(0, 10), iv(2, 12), iv(4, 9)], 1).unwrap();
        assert_eq!(a.interval, iv(4, 9));
        assert_eq!(a.truechimers, [true, true, true]);
        assert_eq!(a.falsetickers_assumed, 0);
        // Touching ends count as overlap (closed intervals).
        assert_eq!(
            intersect(&[iv(0, 5), iv(5, 9)], 1).unwrap().interval,
            iv(5, 5)
        );
    }

    #[test]
    fn a_liar_far_away_is_a_falseticker() {
        let a = intersect(&[iv(0, 10), iv(5_000, 5_010), iv(2, 12)], 1).unwrap();
        assert_eq!(a.interval, iv(2, 10));
        assert_eq!(a.truechimers, [true, false, true]);
        assert_eq!(a.falsetickers_assumed, 1);
        // Five sources, two liars on different sides.
        let a = intersect(
            &[iv(-100, -90), iv(0, 10), iv(1, 11), iv(3, 8), iv(90, 100)],
            1,
        )
        .unwrap();
        assert_eq!(a.interval, iv(3, 8));
        assert_eq!(a.truechimers, [false, true, true, true, false]);
    }

    #[test]
    fn no_majority_means_no_agreement() {
        assert_eq!(intersect(&[iv(0, 1), iv(5, 6)], 1), None);
        assert_eq!(intersect(&[iv(0, 1), iv(5, 6), iv(10, 11)], 1), None);
        assert_eq!(intersect(&[], 1), None);
        // One source: trusted alone.
        assert_eq!(intersect(&[iv(3, 4)], 1).unwrap().interval, iv(3, 4));
    }

    /// Tiny deterministic xorshift, so the property checks need no dependency.
    fn rng(mut seed: u64) -> impl FnMut(i128) -> i128 {
        move |m: i128| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % (m as u64)) as i128
        }
    }

    #[test]
    fn result_contains_truth_when_liars_are_a_minority_apart() {
        // True time is 0: honest intervals contain it; liars (a minority) are far away.
        let mut next = rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..2_000 {
            let n = 1 + next(7) as usize;
            let liars = next(n.div_ceil(2) as i128) as usize; // < n/2
            let mut ivs = Vec::new();
            for i in 0..n {
                if i < liars {
                    let c = (300 + next(1_000)) * if next(2) == 0 { -1 } else { 1 };
                    let e = next(50);
                    ivs.push(iv(c - e, c + e));
                } else {
                    ivs.push(iv(-next(100), next(100)));
                }
            }
            let a = intersect(&ivs, 1).expect("an honest majority always agrees");
            assert!(a.interval.lo <= 0 && 0 <= a.interval.hi, "{ivs:?} -> {a:?}");
            for (i, chimer) in a.truechimers.iter().enumerate() {
                assert_eq!(*chimer, i >= liars, "{ivs:?} -> {a:?}");
            }
        }
    }

    #[test]
    fn result_contains_truth_whenever_the_assumed_falsetickers_suffice() {
        // Liars anywhere, even overlapping honest intervals. An honest majority always yields an
        // agreement; it contains true time whenever the real number of intervals missing it is
        // no more than the number the algorithm allowed for (a liar that overlaps everyone can
        // narrow the result undetectably: that is the limit of any such algorithm).
        let mut next = rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..5_000 {
            let n = 1 + next(7) as usize;
            let liars = next(n.div_ceil(2) as i128) as usize;
            let mut ivs = Vec::new();
            for i in 0..n {
                if i < liars {
                    let c = next(400) - 200;
                    let e = next(100);
                    ivs.push(iv(c - e, c + e));
                } else {
                    ivs.push(iv(-next(100), next(100)));
                }
            }
            let a = intersect(&ivs, 1).expect("an honest majority always agrees");
            let wrong = ivs.iter().filter(|v| !(v.lo <= 0 && 0 <= v.hi)).count();
            if wrong <= a.falsetickers_assumed {
                assert!(a.interval.lo <= 0 && 0 <= a.interval.hi, "{ivs:?} -> {a:?}");
            }
        }
    }
}
