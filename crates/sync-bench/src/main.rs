//! `sync-bench`: runs each benchmark scenario beside its baseline, in the same run, alternating
//! the two, in [`ROUNDS`] rounds, and prints one JSON object per scenario on stdout (the keys
//! of `report.json`): the median ratio, each round's ratio and their spread, and a status that
//! says `within noise` when the spread crosses the target.
//!
//! Usually started by `cargo xtask bench`, which starts etcd and chronyd and exports
//! `SYNC_ETCD_ENDPOINTS` and `SYNC_NTP_SERVER`.
//! Usage: `sync-bench [--quick] [--only SUBSTRING] [--scaling]`; `--scaling` runs the scaling
//! series instead of the scenarios ([`scaling`]: how cost grows with clients and workers) and
//! prints their points (objects with `series`, not `scenario`).

mod event;
mod event_nats;
mod family;
mod leader;
mod lock;
mod scaling;
mod stats;
mod task;
mod time;

use std::time::Duration;

use serde::Serialize;

/// One row of the report: a scenario's figures, the median of its rounds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    scenario: String,
    /// Our figure (the median of the rounds' figures).
    ours: f64,
    /// The baseline's figure, measured in the same rounds (their median).
    baseline: f64,
    unit: String,
    /// The median of the rounds' ratios (each round's ours ÷ that round's baseline).
    ratio: f64,
    /// Each round's ratio, in the order they ran.
    ratios: Vec<f64>,
    /// The smallest and the largest of `ratios`.
    spread: [f64; 2],
    target: String,
    /// `met` (every round met the target), `within noise` (some did, some did not: the spread
    /// crosses the target) or `missed` (no round met it).
    status: String,
    /// Whether `status` is `met`.
    met: bool,
    #[serde(skip)]
    goal: Target,
}

/// Whether smaller or larger figures are better, and the ratio the target allows.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// Latency-like: ours / baseline must be at most this.
    AtMost(f64),
    /// Throughput-like: ours / baseline must be at least this.
    AtLeast(f64),
}

impl Target {
    fn meets(self, ratio: f64) -> bool {
        match self {
            Target::AtMost(x) => ratio <= x,
            Target::AtLeast(x) => ratio >= x,
        }
    }

    fn describe(self) -> String {
        match self {
            Target::AtMost(x) => format!("<= {x}x"),
            Target::AtLeast(x) => format!(">= {x}x"),
        }
    }
}

/// The median of `values` (the mean of the middle two for an even count); NaN when empty.
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Row {
    /// One round's figures.
    pub(crate) fn new(scenario: &str, ours: f64, baseline: f64, unit: &str, target: Target) -> Row {
        let ratio = if baseline > 0.0 {
            ours / baseline
        } else {
            f64::INFINITY
        };
        let met = target.meets(ratio);
        Row {
            scenario: scenario.to_owned(),
            ours,
            baseline,
            unit: unit.to_owned(),
            ratio,
            ratios: vec![ratio],
            spread: [ratio, ratio],
            target: target.describe(),
            status: if met { "met" } else { "missed" }.to_owned(),
            met,
            goal: target,
        }
    }

    /// The row of several rounds of one scenario: the medians, each round's ratio, their
    /// spread, and whether the target was met in every round, in some, or in none.
    fn combine(rounds: &[Row]) -> Row {
        let first = &rounds[0];
        let ratios: Vec<f64> = rounds.iter().map(|r| r.ratio).collect();
        let pick = |f: fn(&Row) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
        let met = ratios.iter().filter(|&&r| first.goal.meets(r)).count();
        let status = match met {
            n if n == ratios.len() => "met",
            0 => "missed",
            _ => "within noise",
        };
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Row {
            scenario: first.scenario.clone(),
            ours: pick(|r| r.ours),
            baseline: pick(|r| r.baseline),
            unit: first.unit.clone(),
            ratio: median(&ratios),
            ratios,
            spread: [lo, hi],
            target: first.target.clone(),
            status: status.to_owned(),
            met: status == "met",
            goal: first.goal,
        }
    }
}

/// How long each scenario runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    /// Samples per latency measurement, per side.
    pub(crate) samples: usize,
    /// Duration of each throughput measurement, per side.
    pub(crate) duration: Duration,
    /// Alternations of ours and the baseline inside one round of a scenario (the runner
    /// itself runs every scenario [`ROUNDS`] times and reports the median).
    pub(crate) rounds: usize,
}

/// Rounds of every scenario; the report gives the median ratio and the spread.
const ROUNDS: usize = 3;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == leader::CHILD_ARG) {
        leader::child_main().await;
    }
    if args.iter().any(|a| a == task::WORKER_ARG) {
        task::worker_main().await;
    }

    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    if args.iter().any(|a| a == "--scaling") {
        let ok = scaling::run(quick, only.as_deref()).await;
        std::process::exit(if ok { 0 } else { 1 });
    }
    let budget = if quick {
        Budget {
            samples: 100,
            duration: Duration::from_millis(700),
            rounds: 1,
        }
    } else {
        Budget {
            samples: 1000,
            duration: Duration::from_secs(4),
            rounds: 1,
        }
    };
    let endpoints = std::env::var("SYNC_ETCD_ENDPOINTS").ok();
    let ntp_server = std::env::var("SYNC_NTP_SERVER").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let mut failed = false;
    let mut rows = Vec::new();
    let all = lock::scenarios()
        .into_iter()
        .chain(family::scenarios())
        .chain(event::scenarios())
        .chain(leader::scenarios())
        .chain(task::scenarios())
        .chain(time::scenarios());
    for (name, scenario) in all {
        if !wanted(name) {
            continue;
        }
        if scenario.needs_etcd && endpoints.is_none() {
            eprintln!("{name}: skipped, SYNC_ETCD_ENDPOINTS is not set (run `cargo xtask bench`)");
            failed = true;
            continue;
        }
        if scenario.needs_ntp && ntp_server.is_none() {
            eprintln!("{name}: skipped, SYNC_NTP_SERVER is not set (run `cargo xtask bench`)");
            failed = true;
            continue;
        }
        let mut rounds = Vec::with_capacity(ROUNDS);
        for round in 1..=ROUNDS {
            eprintln!("running {name} (round {round} of {ROUNDS}) …");
            match (scenario.run)(budget).await {
                Ok(row) => rounds.push(row),
                Err(e) => {
                    eprintln!("{name}: failed in round {round}: {e}");
                    failed = true;
                    break;
                }
            }
        }
        if rounds.len() == ROUNDS {
            let row = Row::combine(&rounds);
            println!("{}", serde_json::to_string(&row).expect("a row serializes"));
            rows.push(row);
        }
    }
    print_table(&rows);
    if failed {
        std::process::exit(1);
    }
}

fn print_table(rows: &[Row]) {
    eprintln!(
        "\n{:<52} {:>12} {:>12} {:>6} {:>8} {:>15} {:>8} {:>12}",
        "scenario", "ours", "baseline", "unit", "ratio", "spread", "target", "status"
    );
    for r in rows {
        eprintln!(
            "{:<52} {:>12.3} {:>12.3} {:>6} {:>8.2} {:>15} {:>8} {:>12}",
            r.scenario,
            r.ours,
            r.baseline,
            r.unit,
            r.ratio,
            format!("{:.2}–{:.2}", r.spread[0], r.spread[1]),
            r.target,
            r.status
        );
    }
}

/// A scenario: a name, whether it needs etcd or the NTP server, and the function that
/// measures it.
pub(crate) struct Scenario {
    pub(crate) needs_etcd: bool,
    pub(crate) needs_ntp: bool,
    pub(crate) run: fn(Budget) -> futures::future::BoxFuture<'static, Result<Row, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rounds(ratios: &[f64], target: Target) -> Row {
        let rows: Vec<Row> = ratios
            .iter()
            .map(|&r| Row::new("s", r, 1.0, "ms", target))
            .collect();
        Row::combine(&rows)
    }

    #[test]
    fn the_median_of_the_rounds_is_reported_with_its_spread() {
        let r = rounds(&[1.4, 0.9, 1.1], Target::AtMost(1.5));
        assert_eq!((r.ratio, r.spread), (1.1, [0.9, 1.4]));
        assert_eq!(r.ratios, [1.4, 0.9, 1.1]);
        assert_eq!((r.status.as_str(), r.met), ("met", true));
    }

    #[test]
    fn a_spread_across_the_target_is_within_noise_not_met() {
        // The median meets the target, one round does not.
        let r = rounds(&[0.9, 1.2, 0.95], Target::AtMost(1.0));
        assert_eq!(r.ratio, 0.95);
        assert_eq!((r.status.as_str(), r.met), ("within noise", false));
        let r = rounds(&[0.7, 0.85, 0.9], Target::AtLeast(0.8));
        assert_eq!((r.status.as_str(), r.met), ("within noise", false));
    }

    #[test]
    fn no_round_meeting_the_target_is_missed() {
        let r = rounds(&[2.0, 3.0, 2.5], Target::AtMost(1.5));
        assert_eq!((r.ratio, r.status.as_str(), r.met), (2.5, "missed", false));
    }

    #[test]
    fn a_zero_baseline_is_an_infinite_ratio_not_a_panic() {
        let rows = [
            Row::new("s", 1.0, 0.0, "ms", Target::AtMost(1.0)),
            Row::new("s", 1.0, 1.0, "ms", Target::AtMost(1.0)),
            Row::new("s", 1.0, 0.0, "ms", Target::AtMost(1.0)),
        ];
        let r = Row::combine(&rows);
        assert!(r.ratio.is_infinite());
        assert_eq!(r.status, "within noise");
        assert!(median(&[]).is_nan());
        assert_eq!(median(&[1.0, 3.0]), 2.0);
    }
}
