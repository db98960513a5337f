//! The event stream's fault schedule (`stream`): two publishers, two plain subscribers and three
//! members of one consumer group on one topic; every 3 s one fault in turn: a publisher killed
//! with `kill -9`, the raft leader killed and restarted, a group member killed, a subscriber
//! killed (each replaced by a new process). Then the publishers stop and the group is given
//! time to catch up (a killed member's deliveries come back within the TTL or the ack wait):
//! the harness logs `drained`, by which every acknowledged publish must have reached the group.
//! `stream-nats` runs the same schedule on the `nats` backend, killing NATS nodes instead.

use std::time::{Duration, Instant};

use super::harness::{pause, Workers};
use super::script::{bounce_member, secs, Common};
use super::{Ctx, MARGIN, TTL};
use crate::tool;
use crate::worker::{ACK_WAIT, STREAM_GROUP};

pub(crate) fn stream(ctx: &mut Ctx, w: &mut Workers, common: &Common<'_>) -> Result<(), String> {
    schedule(ctx, w, common, &mut |ctx, w| {
        let leader = ctx.cluster.leader().unwrap_or(0);
        eprintln!("sync-chaos:   killing the raft leader m{}", leader + 1);
        tool::mark_now(&w.dir, "raft_kill", None)?;
        bounce_member(ctx, leader, Duration::from_secs(2))
    })
}

/// The same schedule on the `nats` backend (`stream-nats`): the workers get `--nats`, and the
/// fault in place of the raft leader's is a NATS node killed with `kill -9` and restarted 2 s
/// later, the three nodes in turn (so the topic's stream leader and the group's consumer
/// leader are among them). Needs the 3-node cluster `cargo xtask chaos` starts
/// (`SYNC_NATS_URLS`, `SYNC_NATS_NODES`, `SYNC_NATS_DIR`), and fails without it.
pub(crate) fn stream_nats(
    ctx: &mut Ctx,
    w: &mut Workers,
    common: &Common<'_>,
) -> Result<(), String> {
    let missing = ["SYNC_NATS_URLS", "SYNC_NATS_NODES", "SYNC_NATS_DIR"]
        .into_iter()
        .filter(|v| std::env::var(v).map_or(true, |s| s.trim().is_empty()))
        .collect::<Vec<_>>();
    if !missing.is_empty() {
        return Err(format!(
            "stream-nats needs the NATS cluster, but {} not set: run it through `cargo xtask chaos`, which starts one",
            missing.join(", ")
        ));
    }
    let urls = std::env::var("SYNC_NATS_URLS").unwrap_or_default();
    let nodes = sync_event::nats::testing::nodes();
    if nodes.is_empty() {
        return Err("SYNC_NATS_NODES names no node".into());
    }
    let with_nats = |extra: &[&str]| -> Vec<String> {
        let mut v = common(extra);
        v.extend(["--nats".to_owned(), urls.clone()]);
        v
    };
    let mut turn = 0;
    schedule(ctx, w, &with_nats, &mut |_ctx, w| {
        let node = &nodes[turn % nodes.len()];
        turn += 1;
        eprintln!("sync-chaos:   killing NATS node {}", node.name);
        tool::mark_now(&w.dir, "nats_kill", Some(&node.name))?;
        harness_step(&format!("kill -9 of {}", node.name), || node.kill9())?;
        pause(Duration::from_secs(2))?;
        harness_step(&format!("restart of {}", node.name), || {
            node.restart(Duration::from_secs(30))
        })
    })
}

/// Runs a helper of `sync_event::nats::testing` (which panics when it fails, as test helpers
/// do) and turns its panic into the harness's error.
fn harness_step(what: &str, f: impl FnOnce()) -> Result<(), String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let why = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("{what} failed: {why}")
    })
}

/// The schedule both variants share; `cluster_fault` is the fault of the server side (every
/// fourth round).
fn schedule(
    ctx: &mut Ctx,
    w: &mut Workers,
    common: &Common<'_>,
    cluster_fault: &mut dyn FnMut(&mut Ctx, &Workers) -> Result<(), String>,
) -> Result<(), String> {
    let (mut pubs, mut subs, mut members) = (0, 0, 0);
    let spawn = |w: &mut Workers, role: &str, n: &mut u32| -> Result<(), String> {
        *n += 1;
        w.spawn(
            &format!("{role}-{n}"),
            &common(&[&format!("stream-{role}")]),
        )
        .map(|_| ())
    };
    for _ in 0..3 {
        spawn(w, "member", &mut members)?;
    }
    for _ in 0..2 {
        spawn(w, "subscribe", &mut subs)?;
        spawn(w, "publish", &mut pubs)?;
    }
    let end = Instant::now() + secs(ctx.quick, 40, 150);
    let mut round = 0;
    while Instant::now() < end {
        pause(Duration::from_secs(3))?;
        let (role, n) = match round % 4 {
            0 => ("publish", &mut pubs),
            1 => {
                cluster_fault(ctx, w)?;
                round += 1;
                continue;
            }
            2 => ("member", &mut members),
            _ => ("subscribe", &mut subs),
        };
        if let Some(who) = w.kill_one("any", &format!("{role}-"))? {
            eprintln!("sync-chaos:   killed {who}");
        }
        spawn(w, role, n)?;
        round += 1;
    }
    // Publishers stop; whatever they had acknowledged must reach the group.
    w.kill_prefix("publish-")?;
    pause(TTL + ACK_WAIT + MARGIN)?;
    tool::mark_now(&w.dir, "drained", Some(STREAM_GROUP))
}
