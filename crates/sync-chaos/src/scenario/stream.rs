//! The event stream's fault schedule (`stream`): two publishers, two plain subscribers and three
//! members of one consumer group on one topic; every 3 s one fault in turn: a publisher killed
//! with `kill -9`, the raft leader killed and restarted, a group member killed, a subscriber
//! killed (each replaced by a new process). Then the publishers stop and the group is given
//! time to catch up (a killed member's deliveries come back within the TTL or the ack wait):
//! the harness logs `drained`, by which every acknowledged publish must have reached the group.

use std::time::{Duration, Instant};

use super::harness::{pause, Workers};
use super::script::{bounce_member, secs, Common};
use super::{Ctx, MARGIN, TTL};
use crate::tool;
use crate::worker::{ACK_WAIT, STREAM_GROUP};

pub(crate) fn stream(ctx: &mut Ctx, w: &mut Workers, common: &Common<'_>) -> Result<(), String> {
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
                let leader = ctx.cluster.leader().unwrap_or(0);
                eprintln!("sync-chaos:   killing the raft leader m{}", leader + 1);
                tool::mark_now(&w.dir, "raft_kill", None)?;
                bounce_member(ctx, leader, Duration::from_secs(2))?;
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
