//! The fault schedule of each scenario: which workers start, and what is killed, cut or taken
//! down, when.

use std::io::{BufRead, BufReader, Write};
use std::process::ChildStdin;
use std::time::{Duration, Instant};

use super::harness::{pause, Workers};
use super::{Ctx, TTL, TTL_MS};
use crate::tool;

/// The arguments common to every etcd worker, after the command's own.
pub(crate) type Common<'a> = dyn Fn(&[&str]) -> Vec<String> + 'a;

pub(super) fn secs(quick: bool, q: u64, full: u64) -> Duration {
    Duration::from_secs(if quick { q } else { full })
}

/// Logs the harness event `ev` in the scenario's directory.
fn mark(w: &Workers, ev: &str) -> Result<(), String> {
    tool::mark_now(&w.dir, ev, None)
}

/// Kills member `i` (SIGKILL), waits `down`, restarts it and waits until all are healthy.
pub(super) fn bounce_member(ctx: &mut Ctx, i: usize, down: Duration) -> Result<(), String> {
    ctx.cluster.kill(i);
    pause(down)?;
    ctx.cluster.restart(i)?;
    ctx.wait_all_healthy(Duration::from_secs(30))
}

/// A lock holder and a leader that hold on; the raft leader is killed (and restarted after the
/// TTL) until five elections ended within what the lease keeper rides out (at most 10 kills).
/// The checker wants no loss and no revocation in those rounds.
pub(crate) fn raft_kills(
    ctx: &mut Ctx,
    w: &mut Workers,
    common: &Common<'_>,
) -> Result<(), String> {
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
    let started = Instant::now();
    while conclusive < 5 && kills < 10 {
        let Ok(leader) = ctx.cluster.leader() else {
            if started.elapsed() > Duration::from_secs(300) {
                return Err("no raft leader to kill".into());
            }
            pause(Duration::from_millis(200))?;
            continue;
        };
        mark(w, "raft_kill")?;
        let killed_at = Instant::now();
        ctx.cluster.kill(leader);
        kills += 1;
        let elected = loop {
            if ctx.cluster.leader().is_ok_and(|i| i != leader) {
                break killed_at.elapsed();
            }
            if killed_at.elapsed() > Duration::from_secs(20) {
                return Err(format!(
                    "no new raft leader 20 s after killing m{}",
                    leader + 1
                ));
            }
            pause(Duration::from_millis(20))?;
        };
        mark(w, "raft_elected")?;
        if elected <= crate::check::RAFT_CONCLUSIVE {
            conclusive += 1;
        }
        eprintln!(
            "sync-chaos:   killed the raft leader m{}; new leader within {:.2} s",
            leader + 1,
            elected.as_secs_f64()
        );
        pause(TTL + Duration::from_secs(1))?;
        ctx.cluster.restart(leader)?;
        ctx.wait_all_healthy(Duration::from_secs(30))?;
    }
    pause(Duration::from_secs(1))
}

/// 5 processes × many acquisitions of one lock, every other one with sticky acquires (its
/// released lock parked while nobody waits, taken back with the same token); holders killed,
/// members (the raft leader too) killed and restarted.
pub(crate) fn mutex(ctx: &mut Ctx, w: &mut Workers, common: &Common<'_>) -> Result<(), String> {
    let sticky = |n: usize| if n % 2 == 0 { "1" } else { "0" };
    let mut n = 0;
    for _ in 0..5 {
        n += 1;
        w.spawn(
            &format!("lock-{n}"),
            &common(&["lock", "--hold-ms", "5-50", "--sticky", sticky(n)]),
        )?;
    }
    let end = Instant::now() + secs(ctx.quick, 35, 150);
    let mut round = 0;
    while Instant::now() < end {
        pause(Duration::from_secs(3))?;
        match round % 4 {
            0 | 2 => {
                if let Some(who) = w.kill_one("holder", "lock-")? {
                    eprintln!("sync-chaos:   killed holder {who}");
                }
                n += 1;
                w.spawn(
                    &format!("lock-{n}"),
                    &common(&["lock", "--hold-ms", "5-50", "--sticky", sticky(n)]),
                )?;
            }
            1 => {
                let leader = ctx.cluster.leader().unwrap_or(0);
                eprintln!("sync-chaos:   killing the raft leader m{}", leader + 1);
                bounce_member(ctx, leader, Duration::from_secs(2))?;
            }
            _ => {
                let leader = ctx.cluster.leader().unwrap_or(0);
                let follower = (leader + 1 + round % 2) % 3;
                eprintln!("sync-chaos:   killing follower m{}", follower + 1);
                bounce_member(ctx, follower, Duration::from_secs(2))?;
            }
        }
        round += 1;
    }
    pause(Duration::from_secs(2))
}

/// 5 candidates; the leader is killed again and again.
pub(crate) fn leader(ctx: &mut Ctx, w: &mut Workers, common: &Common<'_>) -> Result<(), String> {
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
            eprintln!("sync-chaos:   killed {who}");
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
pub(crate) fn task(ctx: &mut Ctx, w: &mut Workers, common: &Common<'_>) -> Result<(), String> {
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
        pause(Duration::ZERO)?;
        if kills < if ctx.quick { 10 } else { 60 } {
            if let Some(who) = w.kill_one("any", "worker-")? {
                eprintln!("sync-chaos:   killed {who}");
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
pub(crate) fn outage(ctx: &mut Ctx, w: &mut Workers, common: &Common<'_>) -> Result<(), String> {
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
        mark(w, "cluster_down")?;
        eprintln!("sync-chaos:   the whole cluster goes down");
        for i in 0..ctx.cluster.size() {
            ctx.cluster.kill(i);
        }
        pause(TTL * 2 + Duration::from_secs(1))?;
        for i in 0..ctx.cluster.size() {
            ctx.cluster.start_member(i)?;
        }
        ctx.wait_all_healthy(Duration::from_secs(60))?;
        mark(w, "cluster_up")?;
        eprintln!("sync-chaos:   the cluster is back");
        pause(Duration::from_secs(10))?;
    }
    Ok(())
}

/// Lying NTP servers beside honest ones (chronyd among them, if given); the worker exits by
/// itself.
pub(crate) fn time(ctx: &mut Ctx, w: &mut Workers) -> Result<(), String> {
    let rounds = if ctx.quick { "2" } else { "5" };
    let mut args: Vec<String> = vec!["time".into(), "--rounds".into(), rounds.into()];
    if let Some(ntp) = &ctx.ntp {
        args.extend(["--ntp".into(), ntp.clone()]);
    }
    let pid = w.spawn("time", &args)?;
    if !w.wait_exit(pid, Duration::from_secs(180)) {
        pause(Duration::ZERO)?;
        w.kill_all();
    }
    Ok(())
}

/// Invalid names, options and configurations; the worker exits by itself.
pub(crate) fn bad_input(w: &mut Workers, common: &Common<'_>) -> Result<(), String> {
    let pid = w.spawn("bad-input", &common(&["bad-input"]))?;
    if !w.wait_exit(pid, Duration::from_secs(180)) {
        pause(Duration::ZERO)?;
        w.kill_all();
    }
    Ok(())
}

/// A lock holder and a candidate reach the cluster only through a proxy that blackholes or
/// resets; others reach it directly.
pub(crate) fn partition(ctx: &mut Ctx, w: &mut Workers, common: &Common<'_>) -> Result<(), String> {
    let upstream = ctx.cluster.endpoints()[0].clone();
    let mut proxy = w.spawn_piped(&["proxy", "--who", "proxy", "--upstream", &upstream])?;
    let result = (|| -> Result<(), String> {
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
            eprintln!("sync-chaos:   proxy {mode}");
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

pub(super) fn send(
    stdin: &mut ChildStdin,
    out: &mut impl BufRead,
    command: &str,
) -> Result<(), String> {
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
