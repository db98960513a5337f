//! The leader's checker: one leader per term, terms end before the next begins, failover.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::intervals::{intervals, Interval};
use super::{ms, nanos, Outcome, Params, SLACK};
use crate::event::Event;

/// Leadership over `elected` → `revoked`/`resign`: one leader per term, a term ends (its
/// holder is told, or resigns, or is killed) before the next begins, terms increase, and (if
/// `failover`) a killed leader's successor is elected within TTL + 1 s (+ scheduling slack).
pub fn check_leader(out: &mut Outcome, events: &[Event], p: Params, failover: bool) {
    let terms = intervals(events, "elected", &["revoked", "resign"]);
    if terms.is_empty() {
        if events.iter().any(|e| e.ev == "campaign") {
            out.violation("candidates campaigned but nobody was ever elected");
        }
        return;
    }
    let mut by_term: BTreeMap<u64, BTreeSet<u32>> = BTreeMap::new();
    for t in &terms {
        if let Some(term) = t.token {
            by_term.entry(term).or_default().insert(t.pid);
        }
    }
    for (term, pids) in &by_term {
        if pids.len() > 1 {
            out.violation(format!("term {term} had {} leaders: {pids:?}", pids.len()));
        }
    }
    let mut max_end = 0u64;
    let mut prev_term: Option<u64> = None;
    for t in &terms {
        if t.start < max_end {
            out.violation(format!(
                "{} (pid {}) began term {:?} {:.1} ms before the previous leader was told (revoked) or resigned",
                t.who,
                t.pid,
                t.token,
                ms(max_end - t.start)
            ));
        }
        if let (Some(a), Some(b)) = (prev_term, t.token) {
            if b <= a {
                out.violation(format!("term did not increase: {b} after {a}"));
            }
        }
        max_end = max_end.max(t.end);
        prev_term = t.token.or(prev_term);
    }
    let revoked = terms.iter().filter(|t| t.end_ev == "revoked").count();
    let killed: Vec<&Interval> = terms.iter().filter(|t| t.end_ev == "killed").collect();
    let mut failovers = Vec::new();
    for k in &killed {
        if let Some(next) = terms.iter().find(|t| t.start > k.end) {
            failovers.push(next.start - k.end);
        } else {
            out.note(format!(
                "leader pid {} was killed at the end; no successor to time",
                k.pid
            ));
        }
    }
    let limit = nanos(p.ttl + Duration::from_secs(1) + SLACK);
    if failover {
        for f in &failovers {
            if *f > limit {
                out.violation(format!(
                    "failover took {:.0} ms after the leader was killed (target TTL + 1 s = {:.0} ms)",
                    ms(*f),
                    ms(nanos(p.ttl + Duration::from_secs(1)))
                ));
            }
        }
    }
    let max = failovers.iter().max().copied().unwrap_or(0);
    let mean = if failovers.is_empty() {
        0
    } else {
        failovers.iter().sum::<u64>() / failovers.len() as u64
    };
    out.note(format!(
        "leader: {} terms, {} revoked, {} leaders killed, failover mean {:.0} ms max {:.0} ms",
        terms.len(),
        revoked,
        killed.len(),
        ms(mean),
        ms(max)
    ));
}
