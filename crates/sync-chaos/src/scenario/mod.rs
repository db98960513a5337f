//! `sync-chaos run [--quick] [--only SUBSTRING] [--out DIR] [--ntp HOST:PORT]`: the fault
//! scenarios, which `cargo xtask chaos` builds and runs.
//!
//! Starts a 3-member etcd cluster of its own on etcd's default timing ([`Cluster`]: raft
//! elections of 1–2 s, which the lease keeper must ride out and the checkers must allow for),
//! and for each scenario starts workers (this same binary; each logs JSON-lines events with
//! `CLOCK_MONOTONIC` times under `DIR/<scenario>/`), injects faults (`kill -9` of holders,
//! leaders and workers, logged as harness events; etcd members, the raft leader included, killed
//! and restarted; the whole cluster down for longer than the TTL; a proxy that blackholes or
//! resets), then runs the scenario's [checker](crate::check) over the logs. Prints a table,
//! writes `DIR/report.json` (an array of [`Outcome`]s), and tells whether any scenario counted a
//! violation.

mod family;
mod harness;
mod script;
mod stream;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::check::{Outcome, Params};
use crate::cluster::Cluster;
use crate::tool;
use harness::{interrupted, Workers, INTERRUPTED_MESSAGE};

/// The TTL every worker asks for, in milliseconds.
/// 3 s: the shortest TTL that rides out a raft election on etcd's default timing.
const TTL_MS: u64 = 3000;
const TTL: Duration = Duration::from_millis(TTL_MS);

/// A holder's crash overlapping a raft election frees its lock up to TTL + 6 s after the raft
/// leader's death (the new raft leader restarts every lease's countdown, with its election
/// timeout on top; docs/guarantees.md), and that death may come up to TTL + 0.5 s (etcd's expiry
/// tick) after the crash: 2×TTL + 6.5 s.
const MARGIN: Duration = Duration::from_millis(TTL_MS + 7000);

/// The scenarios, in order.
pub const SCENARIOS: [&str; 12] = [
    "raft-kills",
    "mutex",
    "semaphore",
    "rwlock",
    "leader",
    "task",
    "stream",
    "stream-nats",
    "outage",
    "time",
    "partition",
    "bad-input",
];

/// What `sync-chaos run` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Shorter scenarios (the whole run in under 5 minutes).
    pub quick: bool,
    /// Only the scenarios whose name contains this.
    pub only: Option<String>,
    /// Where the logs and `report.json` go.
    pub out: PathBuf,
    /// An honest NTP server (chronyd) for the `time` scenario, beside its own.
    pub ntp: Option<String>,
}

impl Options {
    /// Parses `[--quick] [--only SUBSTRING] [--out DIR] [--ntp HOST:PORT]`.
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options {
            quick: false,
            only: None,
            out: PathBuf::from("target/sync-chaos"),
            ntp: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{a} needs a value"))
            };
            match a.as_str() {
                "--quick" => o.quick = true,
                "--only" => o.only = Some(value()?),
                "--out" => o.out = PathBuf::from(value()?),
                "--ntp" => o.ntp = Some(value()?),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(o)
    }
}

/// How a run ended.
#[derive(Debug)]
pub enum RunError {
    /// A signal arrived; the workers and the cluster are stopped.
    Interrupted,
    /// The harness could not run (the cluster did not start, a directory cannot be written…).
    Failed(String),
}

/// What each scenario's worker processes and fault schedule need.
pub(crate) struct Ctx {
    bin: PathBuf,
    cluster: Cluster,
    quick: bool,
    ntp: Option<String>,
}

impl Ctx {
    fn wait_all_healthy(&mut self, timeout: Duration) -> Result<(), String> {
        let all: Vec<usize> = (0..self.cluster.size()).collect();
        self.cluster.wait_healthy(&all, timeout)
    }
}

/// Runs the scenarios of `opts`, prints the table and writes the report; returns the outcomes.
pub fn run(opts: &Options) -> Result<Vec<Outcome>, RunError> {
    harness::install_signal_handler();
    let started = Instant::now();
    let failed = |e: String| RunError::Failed(e);
    let bin = std::env::current_exe().map_err(|e| failed(format!("cannot find myself: {e}")))?;
    fs::create_dir_all(&opts.out)
        .map_err(|e| failed(format!("cannot create {}: {e}", opts.out.display())))?;
    eprintln!("sync-chaos: starting a 3-member etcd cluster on loopback (etcd's default timing)");
    let cluster = start_cluster()?;
    let mut ctx = Ctx {
        bin,
        cluster,
        quick: opts.quick,
        ntp: opts.ntp.clone(),
    };
    let mut rows = Vec::new();
    for scenario in SCENARIOS {
        if opts.only.as_deref().is_some_and(|o| !scenario.contains(o)) {
            continue;
        }
        let t0 = Instant::now();
        eprintln!("sync-chaos: scenario {scenario}");
        let row = match run_scenario(&mut ctx, &opts.out, scenario) {
            Ok(outcome) => outcome,
            Err(_) if interrupted() => return Err(RunError::Interrupted),
            Err(e) => Outcome {
                scenario: scenario.to_owned(),
                violations: 1,
                details: vec![format!("VIOLATION: the harness failed: {e}")],
                ..Outcome::default()
            },
        };
        eprintln!(
            "sync-chaos: {scenario} done in {:.0} s: {}",
            t0.elapsed().as_secs_f64(),
            row.violations
        );
        rows.push(row);
    }
    drop(ctx);
    let report = opts.out.join("report.json");
    let json = serde_json::to_string_pretty(&rows).map_err(|e| failed(e.to_string()))?;
    fs::write(&report, json + "\n")
        .map_err(|e| failed(format!("cannot write {}: {e}", report.display())))?;
    print!("{}", table(&rows));
    println!(
        "chaos: {} scenarios, {} violations, {:.0} s; report in {}",
        rows.len(),
        rows.iter().map(|r| r.violations).sum::<usize>(),
        started.elapsed().as_secs_f64(),
        report.display()
    );
    Ok(rows)
}

/// Starts the cluster, trying again (on other ports) if a member does not come up.
fn start_cluster() -> Result<Cluster, RunError> {
    let mut attempt = 1;
    loop {
        match Cluster::start(3) {
            Ok(c) => return Ok(c),
            Err(_) if interrupted() => return Err(RunError::Interrupted),
            Err(e) if attempt >= 3 => return Err(RunError::Failed(e)),
            Err(e) => eprintln!("sync-chaos: the cluster did not start ({e}); trying again"),
        }
        attempt += 1;
    }
}

/// The summary: one line per scenario, then each scenario's details.
fn table(rows: &[Outcome]) -> String {
    let mut out = format!(
        "{:<12} {:>6} {:>8} {:>11}\n",
        "scenario", "runs", "events", "violations"
    );
    for r in rows {
        out += &format!(
            "{:<12} {:>6} {:>8} {:>11}\n",
            r.scenario, r.runs, r.events, r.violations
        );
    }
    for r in rows {
        let details: Vec<String> = r
            .details
            .iter()
            .map(|d| serde_json::to_string(d).unwrap_or_default())
            .collect();
        out += &format!("  {}: {}\n", r.scenario, details.join(","));
    }
    out
}

fn run_scenario(ctx: &mut Ctx, out: &Path, scenario: &str) -> Result<Outcome, String> {
    let dir = out.join(scenario);
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
    }
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let prefix = format!("chaos/{scenario}-{nanos}");
    let endpoints = ctx.cluster.endpoints().join(",");
    let common = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend([
            "--endpoints".into(),
            endpoints.clone(),
            "--prefix".into(),
            prefix.clone(),
            "--ttl-ms".into(),
            TTL_MS.to_string(),
        ]);
        v
    };
    let mut workers = Workers::new(&ctx.bin, &dir);
    match scenario {
        "raft-kills" => script::raft_kills(ctx, &mut workers, &common)?,
        "mutex" => script::mutex(ctx, &mut workers, &common)?,
        "semaphore" => family::semaphore(ctx, &mut workers, &common)?,
        "rwlock" => family::rwlock(ctx, &mut workers, &common)?,
        "leader" => script::leader(ctx, &mut workers, &common)?,
        "task" => script::task(ctx, &mut workers, &common)?,
        "stream" => stream::stream(ctx, &mut workers, &common)?,
        "stream-nats" => stream::stream_nats(ctx, &mut workers, &common)?,
        "outage" => script::outage(ctx, &mut workers, &common)?,
        "time" => script::time(ctx, &mut workers)?,
        "partition" => script::partition(ctx, &mut workers, &common)?,
        "bad-input" => script::bad_input(&mut workers, &common)?,
        other => return Err(format!("unknown scenario {other}")),
    }
    if interrupted() {
        return Err(INTERRUPTED_MESSAGE.into());
    }
    workers.kill_all();
    drop(workers);
    let params = Params {
        ttl: TTL,
        margin: MARGIN,
    };
    tool::judge(&dir, scenario, params).map_err(|e| format!("checking {scenario}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_the_flags_xtask_passes() {
        let o = Options::parse(&args("--quick --only mu --out /tmp/x --ntp 127.0.0.1:9")).unwrap();
        assert!(o.quick);
        assert_eq!(o.only.as_deref(), Some("mu"));
        assert_eq!(o.out, PathBuf::from("/tmp/x"));
        assert_eq!(o.ntp.as_deref(), Some("127.0.0.1:9"));
        assert!(Options::parse(&args("--only")).is_err());
        assert!(Options::parse(&args("--slow")).is_err());
    }

    #[test]
    fn table_lists_counts_then_details() {
        let rows = vec![Outcome {
            scenario: "mutex".into(),
            runs: 7,
            events: 120,
            violations: 2,
            details: vec!["VIOLATION: a \"b\"".into(), "x".into()],
        }];
        let t = table(&rows);
        assert!(
            t.contains("mutex             7      120           2\n"),
            "{t}"
        );
        assert!(
            t.ends_with("  mutex: \"VIOLATION: a \\\"b\\\"\",\"x\"\n"),
            "{t}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&rows).unwrap()).unwrap();
        assert_eq!(json[0]["violations"], 2);
        assert_eq!(json[0]["scenario"], "mutex");
    }
}
