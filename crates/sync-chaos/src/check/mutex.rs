//! The lock's checker: mutual exclusion, fencing tokens, nobody stuck.

use super::intervals::{intervals, outages, Interval};
use super::{ms, nanos, Outcome, Params};
use crate::event::Event;

/// Mutual exclusion over `enter`/`exit`: no two critical sections overlap, tokens strictly
/// increase from one section to the next (a process may enter again with its own token: a
/// sticky take-back of its parked lock, with nobody between), and no client waits longer than TTL + margin while
/// the lock is free (outside whole-cluster outages).
pub fn check_mutex(out: &mut Outcome, events: &[Event], p: Params) {
    let sections = intervals(events, "enter", &["exit"]);
    let waits = intervals(events, "want", &["enter", "error"]);
    let outages = outages(events);
    if sections.is_empty() {
        out.violation("no critical section was entered: the scenario did not run");
        return;
    }
    let limit = nanos(p.ttl + p.margin);
    let mut max_end = 0u64;
    let mut last: Option<&Interval> = None;
    let mut longest_gap = 0u64;
    for s in &sections {
        if let Some(prev) = last {
            if s.start < max_end {
                out.violation(format!(
                    "overlapping critical sections: {} (pid {}, token {:?}) entered {:.1} ms before the previous holder's section ended",
                    s.who,
                    s.pid,
                    s.token,
                    ms(max_end - s.start)
                ));
            }
            if let (Some(a), Some(b)) = (prev.token, s.token) {
                // Equal only for a sticky take-back: the same process, nobody between.
                if b < a || (b == a && s.pid != prev.pid) {
                    out.violation(format!(
                        "fencing token did not increase: {} (pid {}) entered with {b} after {a}",
                        s.who, s.pid
                    ));
                }
            }
            if s.start > max_end {
                let (gap_start, gap_end) = (max_end, s.start);
                longest_gap = longest_gap.max(gap_end - gap_start);
                let in_outage = outages
                    .iter()
                    .any(|&(d, u)| d < gap_end && gap_start < u + limit);
                let stuck = waits.iter().any(|w| {
                    let (a, b) = (w.start.max(gap_start), w.end.min(gap_end));
                    b > a && b - a > limit
                });
                if stuck && !in_outage {
                    out.violation(format!(
                        "the lock was free for {:.0} ms while a client waited (limit TTL + margin = {:.0} ms)",
                        ms(gap_end - gap_start),
                        ms(limit)
                    ));
                }
            }
        }
        max_end = max_end.max(s.end);
        last = Some(s);
    }
    let lost = sections
        .iter()
        .filter(|s| s.end_ev == "exit" && s.end_ok == Some(false))
        .count();
    let killed = sections.iter().filter(|s| s.end_ev == "killed").count();
    let errors = events.iter().filter(|e| e.ev == "error").count();
    out.note(format!(
        "lock: {} sections, {} lost, {} holders killed, {} acquire errors, longest free gap {:.0} ms",
        sections.len(),
        lost,
        killed,
        errors,
        ms(longest_gap)
    ));
}
