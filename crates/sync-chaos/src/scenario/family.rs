//! The fault schedule of the lock family beyond the mutex (`semaphore`, `rwlock`): workers that
//! take and give back in a loop, one of them through a proxy; holders killed with `kill -9`, the
//! raft leader killed, the proxied worker's link blackholed for longer than the TTL.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, ChildStdout};
use std::time::{Duration, Instant};

use super::harness::{pause, Workers};
use super::script::{bounce_member, secs, send, Common};
use super::{Ctx, TTL};
use crate::tool;

/// Permits of the semaphore scenario's name: fewer than its workers, so that they queue.
const PERMITS: &str = "3";

/// 6 workers on a 3-permit semaphore.
pub(crate) fn semaphore(ctx: &mut Ctx, w: &mut Workers, common: &Common<'_>) -> Result<(), String> {
    let args = ["semaphore", "--permits", PERMITS, "--hold-ms", "20-300"];
    family(ctx, w, common, "sem-", &args)
}

/// 6 workers on one read-write lock, one hold in four a write: readers share, writers queue.
pub(crate) fn rwlock(ctx: &mut Ctx, w: &mut Workers, common: &Common<'_>) -> Result<(), String> {
    let args = ["rwlock", "--write-every", "4", "--hold-ms", "20-300"];
    family(ctx, w, common, "rw-", &args)
}

/// The proxy a worker reaches the cluster through, driven over its stdin.
struct Link {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
    addr: String,
}

impl Link {
    fn start(w: &Workers, upstream: &str) -> Result<Link, String> {
        let mut child = w.spawn_piped(&["proxy", "--who", "proxy", "--upstream", upstream])?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the proxy has no stdin or stdout".into());
        };
        let mut link = Link {
            child,
            stdin,
            out: BufReader::new(stdout),
            addr: String::new(),
        };
        let mut line = String::new();
        link.out.read_line(&mut line).map_err(|e| e.to_string())?;
        link.addr = line
            .trim()
            .strip_prefix("listening ")
            .ok_or_else(|| format!("the proxy said {line:?}"))?
            .to_owned();
        Ok(link)
    }

    fn send(&mut self, command: &str) -> Result<(), String> {
        send(&mut self.stdin, &mut self.out, command)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = self.send("quit");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Five workers `<prefix>N` running `args` directly and one through a proxy, holding 3–6 s at a
/// time; every 3 s one fault in turn: the current holder killed (and a new worker started), the
/// raft leader killed and restarted, a holder killed again, the proxied link blackholed for
/// TTL + 2 s.
fn family(
    ctx: &mut Ctx,
    w: &mut Workers,
    common: &Common<'_>,
    prefix: &str,
    args: &[&str],
) -> Result<(), String> {
    let mut link = Link::start(w, &ctx.cluster.endpoints()[0])?;
    let mut proxied = common(args);
    if let Some(i) = proxied.iter().position(|a| a == "--endpoints") {
        proxied[i + 1] = link.addr.clone();
    }
    // Long holds, so that a blackhole usually cuts a hold (not only a wait) short.
    proxied.extend(["--hold-ms".into(), "3000-6000".into()]);
    w.spawn(&format!("{prefix}proxied"), &proxied)?;
    let mut n = 0;
    for _ in 0..5 {
        n += 1;
        w.spawn(&format!("{prefix}{n}"), &common(args))?;
    }
    let end = Instant::now() + secs(ctx.quick, 40, 150);
    let mut round = 0;
    while Instant::now() < end {
        pause(Duration::from_secs(3))?;
        match round % 4 {
            0 | 2 => {
                if let Some(who) = w.kill_one("holder", prefix)? {
                    eprintln!("sync-chaos:   killed holder {who}");
                    if who.ends_with("proxied") {
                        w.spawn(&format!("{prefix}proxied"), &proxied)?;
                        continue;
                    }
                }
                n += 1;
                w.spawn(&format!("{prefix}{n}"), &common(args))?;
            }
            1 => {
                let leader = ctx.cluster.leader().unwrap_or(0);
                eprintln!("sync-chaos:   killing the raft leader m{}", leader + 1);
                tool::mark_now(&w.dir, "raft_kill", None)?;
                bounce_member(ctx, leader, Duration::from_secs(2))?;
            }
            _ => {
                eprintln!("sync-chaos:   proxy blackhole");
                link.send("blackhole")?;
                pause(TTL + Duration::from_secs(2))?;
                link.send("heal")?;
            }
        }
        round += 1;
    }
    pause(Duration::from_secs(2))
}
