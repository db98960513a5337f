//! What the semaphore's and the read-write lock's checkers share: holds that outlive a kill,
//! counts of holders over time, and waits left unserved while there was room.

use std::collections::HashMap;

use super::intervals::{intervals, outages, Interval};
use super::{ms, nanos, Outcome, Params};
use crate::event::Event;

/// A hold (`enter` to `exit`, its kill, or the end of the log) with its mode (the `enter`
/// event's detail: `permit`, `read`, `write`).
#[derive(Debug, Clone)]
pub(super) struct Hold {
    pub(super) iv: Interval,
    pub(super) mode: String,
}

/// Every hold, sorted by start. A holder killed with `kill -9` keeps its key until its lease
/// expires, and that cannot be sooner than the lease keeper's loss margin after the kill (a
/// keeper that had not reported a loss by then vouched for at least that much): so its hold
/// counts until `kill + loss_margin(ttl)`, and a grant to someone else inside that window
/// would be a permit or an exclusion that the backend gave away early.
pub(super) fn holds(events: &[Event], p: Params) -> Vec<Hold> {
    let modes: HashMap<(u32, u64), &str> = events
        .iter()
        .filter(|e| e.ev == "enter")
        .map(|e| ((e.pid, e.t), e.detail.as_deref().unwrap_or("")))
        .collect();
    let after_kill = nanos(sync_etcd::loss_margin(p.ttl));
    intervals(events, "enter", &["exit"])
        .into_iter()
        .map(|mut iv| {
            if iv.end_ev == "killed" {
                iv.end += after_kill;
            }
            let mode = modes.get(&(iv.pid, iv.start)).copied().unwrap_or("");
            Hold {
                mode: mode.to_owned(),
                iv,
            }
        })
        .collect()
}

/// How many holds matching `count` are open over time: `(t, n)` steps, ends before starts at
/// the same instant (a hand-over is not an overlap).
pub(super) fn steps(holds: &[Hold], count: impl Fn(&Hold) -> bool) -> Vec<(u64, usize)> {
    let mut edges: Vec<(u64, i8)> = Vec::new();
    for h in holds.iter().filter(|h| count(h)) {
        edges.push((h.iv.start, 1));
        edges.push((h.iv.end, -1));
    }
    edges.sort();
    let mut n: i64 = 0;
    let mut out: Vec<(u64, usize)> = Vec::new();
    for (t, d) in edges {
        n += i64::from(d);
        let n = n.max(0) as usize;
        match out.last_mut() {
            Some(last) if last.0 == t => last.1 = n,
            _ => out.push((t, n)),
        }
    }
    out
}

/// Counts a violation for every stretch longer than TTL + margin (outside whole-cluster
/// outages) in which fewer than `room` holds were open while a client waited; returns the
/// longest such stretch with a waiter, in nanoseconds.
///
/// A stretch is measured from its start or from the latest `kill -9` in it, whichever is later:
/// a killed waiter's key keeps its place in the queue (ahead of the others, if it was first)
/// until its lease expires, exactly as a killed holder's key keeps its permit, so each kill
/// may legitimately cost up to TTL + margin again. (Without this, three kills in a row, the
/// first of a holder and the next two of the waiters at the head of the queue, one of them
/// across a raft election, stalled a rwlock run for 14.2 s, each step within its bound.)
pub(super) fn unserved_waits(
    out: &mut Outcome,
    events: &[Event],
    steps: &[(u64, usize)],
    room: usize,
    p: Params,
    what: &str,
) -> u64 {
    let waits = intervals(events, "want", &["enter", "error"]);
    let outages = outages(events);
    let kills: Vec<u64> = events
        .iter()
        .filter(|e| e.ev == "killed")
        .map(|e| e.t)
        .collect();
    let limit = nanos(p.ttl + p.margin);
    let mut longest = 0;
    let mut free_since: Option<u64> = None;
    let last = events.last().map_or(0, |e| e.t);
    let mut stretches = Vec::new();
    for &(t, n) in steps {
        match (free_since, n < room) {
            (None, true) => free_since = Some(t),
            (Some(s), false) => {
                stretches.push((s, t));
                free_since = None;
            }
            _ => {}
        }
    }
    if let Some(s) = free_since {
        stretches.push((s, last));
    }
    for (a, b) in stretches {
        let a = kills
            .iter()
            .copied()
            .filter(|&k| k > a && k < b)
            .max()
            .unwrap_or(a);
        let waited = waits
            .iter()
            .map(|w| w.end.min(b).saturating_sub(w.start.max(a)))
            .max()
            .unwrap_or(0);
        longest = longest.max(waited);
        let in_outage = outages.iter().any(|&(d, u)| d < b && a < u + limit);
        if waited > limit && !in_outage {
            out.violation(format!(
                "{what} for {:.0} ms (since it began or the last kill -9) while a client waited {:.0} ms of it (limit TTL + margin = {:.0} ms)",
                ms(b - a),
                ms(waited),
                ms(limit)
            ));
        }
    }
    longest
}
