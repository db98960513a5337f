//! `sync-bench`: runs each benchmark scenario beside its baseline, in the same run, alternating
//! the two, and prints one JSON object per scenario on stdout (the keys of `report.json`).
//!
//! Usually started by `cargo xtask bench`, which starts etcd and chronyd and exports
//! `SYNC_ETCD_ENDPOINTS` and `SYNC_NTP_SERVER`.
//! Usage: `sync-bench [--quick] [--only SUBSTRING]`.

mod event;
mod event_nats;
mod family;
mod leader;
mod lock;
mod stats;
mod task;
mod time;

use std::time::Duration;

use serde::Serialize;

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    scenario: String,
    ours: f64,
    baseline: f64,
    unit: String,
    ratio: f64,
    target: String,
    met: bool,
}

/// Whether smaller or larger figures are better, and the ratio the target allows.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// Latency-like: ours / baseline must be at most this.
    AtMost(f64),
    /// Throughput-like: ours / baseline must be at least this.
    AtLeast(f64),
}

impl Row {
    pub(crate) fn new(scenario: &str, ours: f64, baseline: f64, unit: &str, target: Target) -> Row {
        let ratio = if baseline > 0.0 {
            ours / baseline
        } else {
            f64::INFINITY
        };
        let (target, met) = match target {
            Target::AtMost(x) => (format!("<= {x}x"), ratio <= x),
            Target::AtLeast(x) => (format!(">= {x}x"), ratio >= x),
        };
        Row {
            scenario: scenario.to_owned(),
            ours,
            baseline,
            unit: unit.to_owned(),
            ratio,
            target,
            met,
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
    /// Alternations of ours and the baseline.
    pub(crate) rounds: usize,
}

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
            rounds: 3,
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
        eprintln!("running {name} …");
        match (scenario.run)(budget).await {
            Ok(row) => {
                println!("{}", serde_json::to_string(&row).expect("a row serializes"));
                rows.push(row);
            }
            Err(e) => {
                eprintln!("{name}: failed: {e}");
                failed = true;
            }
        }
    }
    print_table(&rows);
    if failed {
        std::process::exit(1);
    }
}

fn print_table(rows: &[Row]) {
    eprintln!(
        "\n{:<52} {:>12} {:>12} {:>6} {:>8} {:>8} {:>4}",
        "scenario", "ours", "baseline", "unit", "ratio", "target", "met"
    );
    for r in rows {
        eprintln!(
            "{:<52} {:>12.3} {:>12.3} {:>6} {:>8.2} {:>8} {:>4}",
            r.scenario,
            r.ours,
            r.baseline,
            r.unit,
            r.ratio,
            r.target,
            if r.met { "yes" } else { "NO" }
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
