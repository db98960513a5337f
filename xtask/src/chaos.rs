//! `cargo xtask chaos [--quick] [--only SUBSTRING]`: the fault scenarios of the brief (§7).
//!
//! Starts the services, builds the `sync-chaos` worker binary, and for each scenario starts
//! workers (each logs JSON-lines events with `CLOCK_MONOTONIC` times under
//! `target/sync-chaos/<scenario>/`), injects faults (`kill -9` of holders, leaders and workers
//! through `sync-chaos kill`, which logs the kill; etcd members, the raft leader included, killed
//! and restarted; the whole cluster down for longer than the TTL; a proxy that blackholes or
//! resets), then runs `sync-chaos check` over the logs. Prints a table, writes
//! `target/sync-chaos/report.json`, and fails if any scenario counted a violation.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::services::{Services, Timing};
use crate::{process, testrun, tools, Result};

/// The TTL every worker asks for, in milliseconds.
/// 3 s: the shortest TTL that rides out a raft election on etcd's default timing.
const TTL_MS: u64 = 3000;
const TTL: Duration = Duration::from_millis(TTL_MS);

/// The scenarios, in order.
const SCENARIOS: [&str; 8] = [
    "raft-kills",
    "mutex",
    "leader",
    "task",
    "outage",
    "time",
    "partition",
    "bad-input",
];

struct Ctx<'a> {
    bin: PathBuf,
    root: PathBuf,
    services: &'a mut Services,
    quick: bool,
}

/// The worker processes of one scenario; whatever is left is killed on drop.
struct Workers {
    bin: PathBuf,
    dir: PathBuf,
    children: Vec<(String, Child)>,
}

impl Workers {
    fn new(ctx: &Ctx<'_>, dir: &Path) -> Workers {
        Workers {
            bin: ctx.bin.clone(),
            dir: dir.to_path_buf(),
            children: Vec::new(),
        }
    }

    /// Starts `sync-chaos <args> --dir DIR --who WHO`, stderr to `WHO.stderr` in the dir.
    fn spawn(&mut self, who: &str, args: &[String]) -> Result<u32> {
        let err = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{who}.stderr")))
            .map_err(|e| e.to_string())?;
        let child = Command::new(&self.bin)
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .args(["--who", who])
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        let pid = child.id();
        self.children.push((who.to_owned(), child));
        Ok(pid)
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(_, c)| c.id()).collect()
    }

    fn pids_of(&self, prefix: &str) -> Vec<u32> {
        self.children
            .iter()
            .filter(|(w, _)| w.starts_with(prefix))
            .map(|(_, c)| c.id())
            .collect()
    }

    /// `kill -9` through `sync-chaos kill` (which logs it): the current `role` holder among the
    /// workers whose name starts with `prefix` (or a random one). Returns the victim's name.
    fn kill_one(&mut self, role: &str, prefix: &str) -> Result<Option<String>> {
        let among = self.pids_of(prefix);
        if among.is_empty() {
            return Ok(None);
        }
        let list = among
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let out = Command::new(&self.bin)
            .args(["kill", "--role", role, "--among", &list, "--dir"])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        let pid: u32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| {
                format!(
                    "sync-chaos kill: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            })?;
        Ok(self.reap(pid))
    }

    /// Waits for the killed `pid` and forgets it; returns its name.
    fn reap(&mut self, pid: u32) -> Option<String> {
        let i = self.children.iter().position(|(_, c)| c.id() == pid)?;
        let (who, mut child) = self.children.remove(i);
        let _ = child.wait();
        Some(who)
    }

    /// Kills every worker through `sync-chaos kill` (so their last sections end in the log).
    fn kill_all(&mut self) {
        for pid in self.pids() {
            let _ = Command::new(&self.bin)
                .args(["kill", "--pid", &pid.to_string(), "--dir"])
                .arg(&self.dir)
                .stdout(Stdio::null())
                .status();
            self.reap(pid);
        }
    }

    /// Waits up to `limit` for the worker `pid` to exit by itself; whether it did.
    fn wait_exit(&mut self, pid: u32, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline && !process::interrupted() {
            if let Some(i) = self.children.iter().position(|(_, c)| c.id() == pid) {
                if matches!(self.children[i].1.try_wait(), Ok(Some(_))) {
                    self.children.remove(i);
                    return true;
                }
            } else {
                return true;
            }
            thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs for `d`, unless interrupted. The harness's fault schedule, not synchronisation.
fn pause(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if process::interrupted() {
            return Err("interrupted".into());
        }
        thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
    }
    Ok(())
}

pub(crate) fn run(root: &Path, args: &[String]) -> Result<bool> {
    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let started = Instant::now();
    let tools = tools::ensure(true)?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |t| root.join(t));
    eprintln!("xtask chaos: building the sync-chaos worker");
    let mut build = testrun::cargo_command();
    build
        .args([
            "build",
            "--quiet",
            "--package",
            "sync-chaos",
            "--bin",
            "sync-chaos",
        ])
        .current_dir(root);
    let status = process::run_foreground(&mut build).map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("building sync-chaos failed ({status})"));
    }
    let bin = target.join("debug").join("sync-chaos");
    let out_dir = target.join("sync-chaos");
    fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    eprintln!("xtask chaos: starting a 3-member etcd cluster and chronyd on loopback");
    // etcd's default timing, as users run it: raft elections of 1–2 s, which the lease keeper
    // must ride out (TTL ≥ 3 s) and the checkers must allow for.
    let mut services = Services::start_with(&tools, 3, Timing::EtcdDefault)?;
    let mut ctx = Ctx {
        bin,
        root: out_dir.clone(),
        services: &mut services,
        quick,
    };
    let mut rows = Vec::new();
    for scenario in SCENARIOS {
        if only.as_deref().is_some_and(|o| !scenario.contains(o)) {
            continue;
        }
        let t0 = Instant::now();
        eprintln!("xtask chaos: scenario {scenario}");
        let row = match run_scenario(&mut ctx, scenario) {
            Ok(json) => json,
            Err(e) if e == "interrupted" => return Err(e),
            Err(e) => format!(
                "{{\"scenario\":\"{scenario}\",\"runs\":0,\"events\":0,\"violations\":1,\"details\":[{}]}}",
                json_string(&format!("VIOLATION: the harness failed: {e}"))
            ),
        };
        eprintln!(
            "xtask chaos: {scenario} done in {:.0} s: {}",
            t0.elapsed().as_secs_f64(),
            field(&row, "violations").unwrap_or_default()
        );
        rows.push(row);
    }
    drop(services);
    let report = out_dir.join("report.json");
    fs::write(&report, format!("[\n{}\n]\n", rows.join(",\n")))
        .map_err(|e| format!("cannot write {}: {e}", report.display()))?;
    let mut total = 0u64;
    println!(
        "{:<12} {:>6} {:>8} {:>11}",
        "scenario", "runs", "events", "violations"
    );
    for row in &rows {
        let v: u64 = field(row, "violations")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        total += v;
        println!(
            "{:<12} {:>6} {:>8} {:>11}",
            field(row, "scenario").unwrap_or_default().trim_matches('"'),
            field(row, "runs").unwrap_or_default(),
            field(row, "events").unwrap_or_default(),
            v
        );
    }
    for row in &rows {
        println!(
            "  {}: {}",
            field(row, "scenario").unwrap_or_default().trim_matches('"'),
            details(row)
        );
    }
    println!(
        "chaos: {} scenarios, {total} violations, {:.0} s; report in {}",
        rows.len(),
        started.elapsed().as_secs_f64(),
        report.display()
    );
    Ok(total == 0)
}

/// The raw JSON value of a top-level `"key":` in one of the checker's lines.
fn field(row: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\":");
    let start = row.find(&pat)? + pat.len();
    let rest = &row[start..];
    if let Some(inner) = rest.strip_prefix('"') {
        let end = inner.find('"')?;
        Some(format!("\"{}\"", &inner[..end]))
    } else {
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        Some(rest[..end].to_owned())
    }
}

/// The `details` array, unbracketed, for the summary.
fn details(row: &str) -> String {
    row.find("\"details\":[")
        .map(|i| {
            let rest = &row[i + "\"details\":[".len()..];
            rest[..rest.rfind(']').unwrap_or(rest.len())].to_owned()
        })
        .unwrap_or_default()
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn run_scenario(ctx: &mut Ctx<'_>, scenario: &str) -> Result<String> {
    let dir = ctx.root.join(scenario);
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
    }
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let prefix = format!("chaos/{scenario}-{nanos}");
    let endpoints = ctx.services.member_endpoints().join(",");
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
    let mut workers = Workers::new(ctx, &dir);
    match scenario {
        "raft-kills" => raft_kills(ctx, &mut workers, &common)?,
        "mutex" => mutex(ctx, &mut workers, &common)?,
        "leader" => leader(ctx, &mut workers, &common)?,
        "task" => task(ctx, &mut workers, &common)?,
        "outage" => outage(ctx, &mut workers, &common)?,
        "time" => {
            let ntp = ctx
                .services
                .env()
                .into_iter()
                .find(|(k, _)| k == "SYNC_NTP_SERVER")
                .map(|(_, v)| v)
                .unwrap_or_default();
            let rounds = if ctx.quick { "2" } else { "5" };
            let pid = workers.spawn(
                "time",
                &[
                    "time".into(),
                    "--ntp".into(),
                    ntp,
                    "--rounds".into(),
                    rounds.into(),
                ],
            )?;
            if !workers.wait_exit(pid, Duration::from_secs(180)) {
                workers.kill_all();
            }
        }
        "partition" => partition(ctx, &mut workers, &common)?,
        "bad-input" => {
            let pid = workers.spawn("bad-input", &common(&["bad-input"]))?;
            if !workers.wait_exit(pid, Duration::from_secs(180)) {
                workers.kill_all();
            }
        }
        other => return Err(format!("unknown scenario {other}")),
    }
    workers.kill_all();
    drop(workers);
    let out = Command::new(&ctx.bin)
        .args([
            "check",
            "--scenario",
            scenario,
            "--ttl-ms",
            &TTL_MS.to_string(),
            // A holder's crash overlapping a raft election frees its lock up to TTL + 6 s
            // after the raft leader's death (the new raft leader restarts every lease's
            // countdown, with its election timeout on top; docs/guarantees.md), and that death
            // may come up to TTL + 0.5 s (etcd's expiry tick) after the crash: 2×TTL + 6.5 s.
            "--margin-ms",
            &(TTL_MS + 7000).to_string(),
            "--dir",
        ])
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || !line.starts_with('{') {
        return Err(format!(
            "sync-chaos check failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(line)
}

type Common<'a> = dyn Fn(&[&str]) -> Vec<String> + 'a;

fn secs(quick: bool, q: u64, full: u64) -> Duration {
    Duration::from_secs(if quick { q } else { full })
}

/// Kills member `i` (SIGKILL), waits `down`, restarts it and waits until all are healthy.
fn bounce_member(ctx: &mut Ctx<'_>, i: usize, down: Duration) -> Result<()> {
    ctx.services.kill_member(i)?;
    pause(down)?;
    ctx.services.restart_member(i)?;
    ctx.services
        .wait_healthy(&[0, 1, 2], Duration::from_secs(30))
}

/// A lock holder and a leader that hold on; the raft leader is killed (and restarted after the
/// TTL) until five elections ended within what the lease keeper rides out (at most 10 kills).
/// The checker wants no loss and no revocation in those rounds.
fn raft_kills(ctx: &mut Ctx<'_>, w: &mut Workers, common: &Common<'_>) -> Result<()> {
    w.spawn(
        "holder",
        &common(&["lock", "--name", "held", "--hold-ms", "3600000-3600000"]),
    )?;
    w.spawn(
        "leader",
        &common(&["leader", "--group", "held", "--hold-ms", "3600000-3600000"]),
    )?;
    pause(Duration::from_secs(3))?;
    let (mut conclusive, mut kills) = (0, 0);
    while conclusive < 5 && kills < 10 {
        let Some(leader) = ctx.services.leader_index()? else {
            pause(Duration::from_millis(200))?;
            continue;
        };
        mark(ctx, &w.dir, "raft_kill")?;
        let killed_at = Instant::now();
        ctx.services.kill_member(leader)?;
        kills += 1;
        let elected = loop {
            if let Some(i) = ctx.services.leader_index()? {
                if i != leader {
                    break killed_at.elapsed();
                }
            }
            if killed_at.elapsed() > Duration::from_secs(20) {
                return Err(format!(
                    "no new raft leader 20 s after killing m{}",
                    leader + 1
                ));
            }
            pause(Duration::from_millis(20))?;
        };
        mark(ctx, &w.dir, "raft_elected")?;
        if elected <= RAFT_CONCLUSIVE {
            conclusive += 1;
        }
        eprintln!(
            "xtask chaos:   killed the raft leader m{}; new leader within {:.2} s",
            leader + 1,
            elected.as_secs_f64()
        );
        pause(TTL + Duration::from_secs(1))?;
        ctx.services.restart_member(leader)?;
        ctx.services
            .wait_healthy(&[0, 1, 2], Duration::from_secs(30))?;
    }
    pause(Duration::from_secs(1))
}

/// An election seen to end within this (polled, so an upper bound) is one the lease keeper must
/// ride out without a loss: its `RIDE_OUT` (2.7 s) less a renewal interval, a retry and a round
/// trip. The checker uses the same figure.
const RAFT_CONCLUSIVE: Duration = Duration::from_millis(2300);

/// 5 processes × many acquisitions of one lock; holders killed, members (the raft leader too)
/// killed and restarted.
fn mutex(ctx: &mut Ctx<'_>, w: &mut Workers, common: &Common<'_>) -> Result<()> {
    let mut n = 0;
    for _ in 0..5 {
        n += 1;
        w.spawn(
            &format!("lock-{n}"),
            &common(&["lock", "--hold-ms", "5-50"]),
        )?;
    }
    let end = Instant::now() + secs(ctx.quick, 35, 150);
    let mut round = 0;
    while Instant::now() < end {
        pause(Duration::from_secs(3))?;
        match round % 4 {
            0 | 2 => {
                if let Some(who) = w.kill_one("holder", "lock-")? {
                    eprintln!("xtask chaos:   killed holder {who}");
                }
                n += 1;
                w.spawn(
                    &format!("lock-{n}"),
                    &common(&["lock", "--hold-ms", "5-50"]),
                )?;
            }
            1 => {
                let leader = ctx.services.leader_index()?.unwrap_or(0);
                eprintln!("xtask chaos:   killing the raft leader m{}", leader + 1);
                bounce_member(ctx, leader, Duration::from_secs(2))?;
            }
            _ => {
                let leader = ctx.services.leader_index()?.unwrap_or(0);
                let follower = (leader + 1 + round % 2) % 3;
                eprintln!("xtask chaos:   killing follower m{}", follower + 1);
                bounce_member(ctx, follower, Duration::from_secs(2))?;
            }
        }
        round += 1;
    }
    pause(Duration::from_secs(2))
}

/// 5 candidates; the leader is killed again and again.
fn leader(ctx: &mut Ctx<'_>, w: &mut Workers, common: &Common<'_>) -> Result<()> {
    let mut n = 0;
    for _ in 0..5 {
        n += 1;
        w.spawn(
            &format!("cand-{n}"),
            &common(&["leader", "--hold-ms", "1500-4000"]),
        )?;
    }
    let end = Instant::now() + secs(ctx.quick, 30, 120);
    while Instant::now() < end {
        pause(Duration::from_secs(4))?;
        if let Some(who) = w.kill_one("leader", "cand-")? {
            eprintln!("xtask chaos:   killed {who}");
        }
        n += 1;
        w.spawn(
            &format!("cand-{n}"),
            &common(&["leader", "--hold-ms", "1500-4000"]),
        )?;
    }
    pause(Duration::from_secs(TTL_MS / 1000 + 2))
}

/// Jobs over 3 workers; workers killed mid-job until the submitter has every result.
fn task(ctx: &mut Ctx<'_>, w: &mut Workers, common: &Common<'_>) -> Result<()> {
    let mut n = 0;
    for _ in 0..3 {
        n += 1;
        w.spawn(
            &format!("worker-{n}"),
            &common(&["task-worker", "--pool", "4"]),
        )?;
    }
    let jobs = if ctx.quick { "2000" } else { "10000" };
    let submitter = w.spawn("submit", &common(&["task-submit", "--jobs", jobs]))?;
    let end = Instant::now() + secs(ctx.quick, 120, 900);
    let mut kills = 0;
    while Instant::now() < end {
        if w.wait_exit(submitter, Duration::from_millis(1500)) {
            break;
        }
        if kills < if ctx.quick { 10 } else { 60 } {
            if let Some(who) = w.kill_one("any", "worker-")? {
                eprintln!("xtask chaos:   killed {who}");
            }
            kills += 1;
            n += 1;
            w.spawn(
                &format!("worker-{n}"),
                &common(&["task-worker", "--pool", "4"]),
            )?;
        }
    }
    Ok(())
}

/// Every member down for longer than the TTL, then back.
fn outage(ctx: &mut Ctx<'_>, w: &mut Workers, common: &Common<'_>) -> Result<()> {
    for i in 1..=3 {
        w.spawn(
            &format!("lock-{i}"),
            &common(&["lock", "--hold-ms", "300-900"]),
        )?;
        w.spawn(
            &format!("cand-{i}"),
            &common(&["leader", "--hold-ms", "2000-5000"]),
        )?;
    }
    let cycles = if ctx.quick { 1 } else { 3 };
    for _ in 0..cycles {
        pause(Duration::from_secs(5))?;
        mark(ctx, &w.dir, "cluster_down")?;
        eprintln!("xtask chaos:   the whole cluster goes down");
        for i in 0..3 {
            ctx.services.kill_member(i)?;
        }
        pause(TTL * 2 + Duration::from_secs(1))?;
        for i in 0..3 {
            ctx.services.restart_member(i)?;
        }
        ctx.services
            .wait_healthy(&[0, 1, 2], Duration::from_secs(60))?;
        mark(ctx, &w.dir, "cluster_up")?;
        eprintln!("xtask chaos:   the cluster is back");
        pause(Duration::from_secs(10))?;
    }
    Ok(())
}

fn mark(ctx: &Ctx<'_>, dir: &Path, ev: &str) -> Result<()> {
    let ok = Command::new(&ctx.bin)
        .args(["mark", "--ev", ev, "--dir"])
        .arg(dir)
        .status()
        .map_err(|e| e.to_string())?
        .success();
    if ok {
        Ok(())
    } else {
        Err(format!("sync-chaos mark {ev} failed"))
    }
}

/// A lock holder and a candidate reach the cluster only through a proxy that blackholes or
/// resets; others reach it directly.
fn partition(ctx: &mut Ctx<'_>, w: &mut Workers, common: &Common<'_>) -> Result<()> {
    let upstream = ctx.services.member_endpoints()[0].clone();
    let mut proxy = Command::new(&ctx.bin)
        .args(["proxy", "--who", "proxy", "--upstream", &upstream, "--dir"])
        .arg(&w.dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| e.to_string())?;
    let result = (|| -> Result<()> {
        let mut out = BufReader::new(proxy.stdout.take().ok_or("no proxy stdout")?);
        let mut line = String::new();
        out.read_line(&mut line).map_err(|e| e.to_string())?;
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .ok_or_else(|| format!("the proxy said {line:?}"))?
            .to_owned();
        let mut stdin = proxy.stdin.take().ok_or("no proxy stdin")?;
        let via = |args: &[&str]| -> Vec<String> {
            let mut v = common(args);
            if let Some(i) = v.iter().position(|a| a == "--endpoints") {
                v[i + 1] = addr.clone();
            }
            v
        };
        w.spawn("lock-proxied", &via(&["lock", "--hold-ms", "1000-3000"]))?;
        w.spawn("cand-proxied", &via(&["leader", "--hold-ms", "4000-8000"]))?;
        pause(Duration::from_secs(1))?;
        for i in 1..=2 {
            w.spawn(
                &format!("lock-{i}"),
                &common(&["lock", "--hold-ms", "50-300"]),
            )?;
            w.spawn(
                &format!("cand-{i}"),
                &common(&["leader", "--hold-ms", "500-1500"]),
            )?;
        }
        let cycles = if ctx.quick { 3 } else { 8 };
        for c in 0..cycles {
            pause(Duration::from_secs(2))?;
            let mode = if c % 2 == 0 { "blackhole" } else { "reset" };
            eprintln!("xtask chaos:   proxy {mode}");
            send(&mut stdin, &mut out, mode)?;
            pause(TTL + Duration::from_secs(2))?;
            send(&mut stdin, &mut out, "heal")?;
        }
        pause(Duration::from_secs(3))?;
        send(&mut stdin, &mut out, "quit").or(Ok(()))
    })();
    let _ = proxy.kill();
    let _ = proxy.wait();
    result
}

fn send(stdin: &mut ChildStdin, out: &mut impl BufRead, command: &str) -> Result<()> {
    writeln!(stdin, "{command}").map_err(|e| format!("proxy: {e}"))?;
    stdin.flush().map_err(|e| format!("proxy: {e}"))?;
    if command == "quit" {
        return Ok(());
    }
    let mut line = String::new();
    out.read_line(&mut line)
        .map_err(|e| format!("proxy: {e}"))?;
    if line.trim() == format!("ok {command}") {
        Ok(())
    } else {
        Err(format!("the proxy answered {line:?} to {command}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_of_a_checker_line() {
        let row = r#"{"scenario":"mutex","runs":7,"events":120,"violations":2,"details":["VIOLATION: a, b","x"]}"#;
        assert_eq!(field(row, "scenario").unwrap(), "\"mutex\"");
        assert_eq!(field(row, "violations").unwrap(), "2");
        assert_eq!(field(row, "events").unwrap(), "120");
        assert_eq!(details(row), r#""VIOLATION: a, b","x""#);
        assert_eq!(json_string("a\"b\n"), r#""a\"b\n""#);
    }
}
