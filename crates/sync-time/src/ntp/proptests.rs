//! Property tests of the selection and of the served clock, with scripted replies (random
//! delays, offsets, failures, kisses, liars alone or colluding) and a manual monotonic clock
//! (random advances and drift, re-syncs racing with readers). No network.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::clock::Served;
use super::query::{Answer, ServerOutcome};
use super::quorum::select;
use super::selection::Sample;
use crate::bounds::to_unix_nanos;
use crate::{Error, SourceVerdict, Verification};

const PPM: u32 = 500;
const MS: i128 = 1_000_000;

/// How one scripted server answers one sync. True time is offset 0.
#[derive(Debug, Clone)]
enum Script {
    /// A valid sample whose interval contains 0: `position` places 0 within it.
    Honest {
        delay_us: u64,
        root_delay_us: u64,
        root_dispersion_us: u64,
        position: f64,
    },
    /// A valid sample seconds away from true time, with a small error.
    Liar { delay_us: u64, below: bool },
    /// No valid sample.
    Failed,
    /// Not asked (kiss-of-death).
    KissedOff,
}

fn script() -> impl Strategy<Value = Script> {
    prop_oneof![
        3 => (0..20_000u64, 0..10_000u64, 0..5_000u64, 0.0..=1.0f64).prop_map(
            |(delay_us, root_delay_us, root_dispersion_us, position)| Script::Honest {
                delay_us,
                root_delay_us,
                root_dispersion_us,
                position,
            }
        ),
        2 => (0..5_000u64, any::<bool>()).prop_map(|(delay_us, below)| Script::Liar { delay_us, below }),
        1 => Just(Script::Failed),
        1 => Just(Script::KissedOff),
    ]
}

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

/// The outcomes of one sync. Liars that collude all say +5 s; the others each say a different
/// time, seconds apart, so that no two of them overlap.
fn outcomes(scripts: &[Script], colluding: bool) -> Vec<ServerOutcome> {
    let mut liars = 0i64;
    scripts
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let answer = match *s {
                Script::Honest {
                    delay_us,
                    root_delay_us,
                    root_dispersion_us,
                    position,
                } => {
                    let mut sample = Sample {
                        offset_nanos: 0,
                        delay: us(delay_us),
                        root_delay: us(root_delay_us),
                        root_dispersion: us(root_dispersion_us),
                        since_anchor: Duration::ZERO,
                    };
                    let e = sample.error(PPM).as_nanos() as f64;
                    sample.offset_nanos = ((2.0 * position - 1.0) * e) as i64;
                    Answer::Sampled(sample, 1)
                }
                Script::Liar { delay_us, below } => {
                    liars += 1;
                    let distance = if colluding { 5 } else { 5 * liars };
                    let sign = if below && !colluding { -1 } else { 1 };
                    Answer::Sampled(
                        Sample {
                            offset_nanos: sign * distance * 1_000_000_000,
                            delay: us(delay_us),
                            root_delay: Duration::ZERO,
                            root_dispersion: Duration::ZERO,
                            since_anchor: Duration::ZERO,
                        },
                        1,
                    )
                }
                Script::Failed => Answer::Failed(Arc::new(Error::Timeout {
                    server: format!("s{i}"),
                    timeout: Duration::from_secs(1),
                })),
                Script::KissedOff => Answer::KissedOff {
                    error: Arc::new(Error::KissOfDeath {
                        server: format!("s{i}"),
                        code: "DENY".into(),
                    }),
                    code: "DENY".into(),
                    retry_in: None,
                },
            };
            ServerOutcome {
                name: format!("s{i}"),
                address: None,
                answer,
            }
        })
        .collect()
}

proptest! {
    /// Whatever the servers do: a selected interval rests on at least `required` servers that
    /// answered and overlap it; with an honest majority of those that answered, true time is in
    /// it and exactly the honest servers are selected; without `required` honest answers and
    /// with liars that do not collude, nothing is believed (issue 10, finding 6); with the
    /// default quorum, the status calls the result a majority (or one server's word when only
    /// one is configured).
    #[test]
    fn selection_needs_a_quorum_and_an_honest_majority_finds_true_time(
        scripts in prop::collection::vec(script(), 1..=7),
        colluding in any::<bool>(),
        min_agreeing in prop::option::of(1usize..=7),
    ) {
        let n = scripts.len();
        let required = min_agreeing.map_or(n / 2 + 1, |k| k.min(n));
        let outcomes = outcomes(&scripts, colluding);
        let selection = select(&outcomes, PPM, required);
        let honest = scripts.iter().filter(|s| matches!(s, Script::Honest { .. })).count();
        let liars = scripts.iter().filter(|s| matches!(s, Script::Liar { .. })).count();
        let answered = honest + liars;
        let selected = selection
            .sources
            .iter()
            .filter(|s| matches!(s.verdict, SourceVerdict::Selected { .. }))
            .count();

        if let Ok((interval, agreeing)) = &selection.result {
            prop_assert!(*agreeing >= required && answered >= required);
            prop_assert_eq!(*agreeing, selected);
            if min_agreeing.is_none() {
                let v = Verification::from_counts(*agreeing, n);
                prop_assert!(v.is_majority() || (n == 1 && v == Verification::Unverified { configured: 1 }), "{:?}", v);
            }
            if honest >= required && 2 * honest > answered {
                prop_assert!(interval.lo <= 0 && 0 <= interval.hi, "{:?}", interval);
            }
        }
        if honest >= required && 2 * honest > answered {
            let (interval, _) = selection.result.as_ref().expect("an honest quorum agrees");
            prop_assert!(interval.lo <= 0 && 0 <= interval.hi);
            for (s, script) in selection.sources.iter().zip(&scripts) {
                match script {
                    Script::Honest { .. } => prop_assert!(matches!(s.verdict, SourceVerdict::Selected { .. }), "{:?}", s.verdict),
                    Script::Liar { .. } => prop_assert!(matches!(s.verdict, SourceVerdict::FalseTicker { .. }), "{:?}", s.verdict),
                    Script::Failed => prop_assert!(matches!(s.verdict, SourceVerdict::Failed(_)), "{:?}", s.verdict),
                    Script::KissedOff => prop_assert!(matches!(s.verdict, SourceVerdict::KissedOff { .. }), "{:?}", s.verdict),
                }
            }
        }
        if honest < required && required >= 2 && !colluding {
            prop_assert!(selection.result.is_err(), "believed {} honest of {} required", honest, required);
        }
        if answered == 0 {
            prop_assert!(selection.result.is_err());
        }
    }
}

/// One re-sync of the scripted clock.
#[derive(Debug, Clone)]
struct Resync {
    /// How long before its installation the sync started (its anchor), ms.
    started_ms: u64,
    /// True time minus the interval's low end, and its high end minus true time, ns (for an
    /// honest sync; both can be zero).
    below_ns: i64,
    above_ns: i64,
    /// Moves the whole interval off true time (a lie or a broken assumption), ns.
    lie_ns: i64,
}

#[derive(Debug, Clone)]
enum Op {
    /// Time passes, ms.
    Advance(u64),
    /// A re-sync.
    Resync(Resync),
    /// A reader: `now_bounds()`, `gap` ms, `now()`, `gap` ms, `now_bounds()`; a re-sync may
    /// take over between the moment `now()` reads the monotonic clock and the moment it reads
    /// the state.
    Read {
        gaps: (u64, u64),
        racing: Option<Resync>,
    },
}

fn resync(honest: bool) -> impl Strategy<Value = Resync> {
    let lie = if honest {
        Just(0i64).boxed()
    } else {
        prop_oneof![Just(0i64), -2_000 * MS as i64..2_000 * MS as i64].boxed()
    };
    (0..60u64, 0..40 * MS as i64, 0..40 * MS as i64, lie).prop_map(
        |(started_ms, below_ns, above_ns, lie_ns)| Resync {
            started_ms,
            below_ns,
            above_ns,
            lie_ns,
        },
    )
}

fn op(honest: bool) -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..3_000u64).prop_map(Op::Advance),
        3 => resync(honest).prop_map(Op::Resync),
        4 => ((0..5u64, 0..5u64), prop::option::of(resync(honest)))
            .prop_map(|(gaps, racing)| Op::Read { gaps, racing }),
    ]
}

/// The scripted world: a monotonic clock in whole milliseconds since `base`, and true time,
/// which runs `drift_ppm` faster (or slower) than it.
struct World {
    base: Instant,
    m: u64,
    t0: i128,
    drift_ppm: i128,
    last_anchor: u64,
}

impl World {
    fn mono(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    /// True time at monotonic `ms`, exactly (whole ms times whole ppm is whole ns).
    fn truth(&self, ms: u64) -> i128 {
        let ms = i128::from(ms);
        self.t0 + ms * MS + ms * self.drift_ppm
    }

    fn resync(&mut self, served: &Served, r: &Resync) {
        let anchor = self.m.saturating_sub(r.started_ms).max(self.last_anchor);
        self.last_anchor = anchor;
        let truth = self.truth(anchor) + i128::from(r.lie_ns);
        let interval = (
            truth - i128::from(r.below_ns),
            truth + i128::from(r.above_ns),
        );
        let installed = self.mono(self.m);
        served.install(self.mono(anchor), interval, PPM, 0, || installed);
    }
}

fn run(ops: &[Op], drift_ppm: i128, honest: bool) -> Result<(), TestCaseError> {
    let served = Served::default();
    let mut w = World {
        base: Instant::now(),
        m: 0,
        t0: to_unix_nanos(std::time::SystemTime::now()),
        drift_ppm,
        last_anchor: 0,
    };
    w.resync(
        &served,
        &Resync {
            started_ms: 0,
            below_ns: 5 * MS as i64,
            above_ns: 5 * MS as i64,
            lie_ns: 0,
        },
    );
    let mut last_now = i128::MIN;
    let contains = |b: crate::TimeBounds, t: i128| {
        to_unix_nanos(b.earliest()) <= t && t <= to_unix_nanos(b.latest())
    };
    for op in ops {
        match op {
            Op::Advance(ms) => w.m += ms,
            Op::Resync(r) => w.resync(&served, r),
            Op::Read { gaps, racing } => {
                let before = served.bounds(w.mono(w.m)).expect("synced");
                if honest {
                    prop_assert!(contains(before, w.truth(w.m)), "truth outside {}", before);
                }
                w.m += gaps.0;
                let read_at = w.m;
                if let Some(r) = racing {
                    w.m += 1;
                    w.resync(&served, r);
                }
                let now = served.now(w.mono(read_at)).expect("synced");
                w.m += gaps.1;
                let after = served.bounds(w.mono(w.m)).expect("synced");
                if honest {
                    prop_assert!(contains(after, w.truth(w.m)), "truth outside {}", after);
                }
                prop_assert!(now >= last_now, "now() went back {} ns", last_now - now);
                last_now = now;
                prop_assert!(
                    to_unix_nanos(before.earliest()) <= now && now <= to_unix_nanos(after.latest()),
                    "now() {} outside {} / {}",
                    now,
                    before,
                    after
                );
            }
        }
    }
    Ok(())
}

proptest! {
    /// Honest re-syncs (each interval contains true time) at random moments, of random widths,
    /// started a random time before they take over, some racing with a reader, and a
    /// monotonic clock that drifts up to `max_drift_ppm`: the bounds always contain true time,
    /// `now()` never goes backwards and lies within the bounds read just before and just after
    /// it (issue 10, finding 5).
    #[test]
    fn served_clock_contains_true_time_and_now_is_monotonic_and_bounded(
        ops in prop::collection::vec(op(true), 1..60),
        drift_ppm in -i128::from(PPM)..=i128::from(PPM),
    ) {
        run(&ops, drift_ppm, true)?;
    }

    /// The same with re-syncs that lie (intervals up to 2 s off true time, contradicting the
    /// previous ones): the bounds may then miss true time (an assumption broke), but `now()`
    /// still never goes backwards and still lies within the bounds read around it.
    #[test]
    fn now_is_monotonic_and_bounded_even_when_syncs_contradict(
        ops in prop::collection::vec(op(false), 1..60),
        drift_ppm in -i128::from(PPM)..=i128::from(PPM),
    ) {
        run(&ops, drift_ppm, false)?;
    }
}
