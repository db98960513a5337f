//! The harness's own commands (`sync-chaos kill|mark|check`), which the scenarios also call
//! in-process: `kill -9` logged as a harness event, harness marks, and the checker over a
//! scenario's logs.

use std::path::Path;
use std::time::Duration;

use rand::Rng;

use crate::check::{self, Params};
use crate::event::{self, Log};
use crate::worker::Args;

/// The pids among `among` whose last `enter`/`elected` has no later end.
fn holding(dir: &Path, role: &str, among: &[u32]) -> Result<Vec<u32>, String> {
    let (events, _) = event::read_dir(dir).map_err(|e| e.to_string())?;
    let (start, ends): (&str, &[&str]) = match role {
        "holder" => ("enter", &["exit"]),
        "leader" => ("elected", &["revoked", "resign"]),
        "any" => return Ok(Vec::new()),
        other => return Err(format!("unknown role {other:?} (holder, leader, any)")),
    };
    Ok(check::intervals(&events, start, ends)
        .into_iter()
        .filter(|i| i.end_ev == "end of log" && among.contains(&i.pid))
        .map(|i| i.pid)
        .collect())
}

/// `kill`: SIGKILL to `--pid`, or to the current `--role holder|leader` among `--among`
/// (else a random one of them); logs `killed` (target = pid) right after the signal and prints
/// the pid.
pub fn kill(a: &Args) -> Result<(), String> {
    let dir = a.dir()?;
    let role = a.or("role", "");
    let pid: u32 = match a.opt("pid") {
        Some(p) => p.parse().map_err(|_| format!("--pid {p:?}"))?,
        None => {
            let among: Vec<u32> = a
                .get("among")?
                .split(',')
                .filter_map(|p| p.parse().ok())
                .collect();
            victim(&dir, a.or("role", "holder"), &among)?
        }
    };
    kill_logged(&dir, pid, role)?;
    println!("{pid}");
    Ok(())
}

/// The process to kill among `among`: the current `role` (`holder`, `leader`) holder if the
/// logs in `dir` show one, else a random one of them.
pub fn victim(dir: &Path, role: &str, among: &[u32]) -> Result<u32, String> {
    if among.is_empty() {
        return Err("no pid to choose from".into());
    }
    let held = holding(dir, role, among)?;
    let pool = if held.is_empty() { among } else { &held };
    Ok(pool[rand::thread_rng().gen_range(0..pool.len())])
}

/// SIGKILL to `pid`, then a harness event `killed` (target = pid, detail = `role`) in `dir`:
/// every interval the process had open ends there.
pub fn kill_logged(dir: &Path, pid: u32, role: &str) -> Result<(), String> {
    let log = Log::open(dir, "harness").map_err(|e| e.to_string())?;
    let target = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("kill -9 {pid}: {e}"))?;
    log.write(log.event("killed").target(pid).detail(role.to_owned()));
    Ok(())
}

/// `mark`: logs a harness event `--ev` (e.g. `cluster_down`) now.
pub fn mark(a: &Args) -> Result<(), String> {
    mark_now(&a.dir()?, a.get("ev")?, a.opt("detail"))
}

/// Logs the harness event `ev` (with `detail`, if any) in `dir` now.
pub fn mark_now(dir: &Path, ev: &str, detail: Option<&str>) -> Result<(), String> {
    let log = Log::open(dir, "harness").map_err(|e| e.to_string())?;
    let mut e = log.event(ev);
    if let Some(d) = detail {
        e = e.detail(d.to_owned());
    }
    log.write(e);
    Ok(())
}

/// `check`: runs the scenario's checker over the logs in `--dir` and prints the outcome as one
/// JSON line.
pub fn check(a: &Args) -> Result<(), String> {
    let params = Params {
        ttl: a.ttl()?,
        margin: Duration::from_millis(a.num("margin-ms", 3000)?),
    };
    let outcome = judge(&a.dir()?, a.get("scenario")?, params)?;
    println!(
        "{}",
        serde_json::to_string(&outcome).map_err(|e| e.to_string())?
    );
    Ok(())
}

/// Runs the checker of `scenario` over the logs in `dir`.
pub fn judge(dir: &Path, scenario: &str, params: Params) -> Result<check::Outcome, String> {
    let (events, bad) = event::read_dir(dir).map_err(|e| e.to_string())?;
    let mut outcome = check::check(scenario, &events, params);
    if bad > 0 {
        outcome.note(format!("{bad} log lines unreadable (cut short by kill -9)"));
    }
    Ok(outcome)
}
