//! The read-write lock's checker: a writer alone, readers sharing, tokens ordered around
//! writers, nobody stuck while the lock is free.

use super::holds::{holds, steps, unserved_waits, Hold};
use super::{ms, Outcome, Params};
use crate::event::Event;

/// No writer's hold overlaps any other hold (a killed holder holding until its lease could
/// first have expired); readers did share (at least two at once, or the scenario proved
/// nothing); every grant after a writer's carries a larger token and every grant before it a
/// smaller one; nobody waits longer than TTL + margin while nobody holds.
pub fn check_rwlock(out: &mut Outcome, events: &[Event], p: Params) {
    let holds = holds(events, p);
    if holds.is_empty() {
        out.violation("nothing was held: the scenario did not run");
        return;
    }
    let is_write = |h: &Hold| h.mode == "write";
    let writes = holds.iter().filter(|h| is_write(h)).count();
    if writes == 0 {
        out.violation("no writer held: the scenario did not run");
    }
    for (i, w) in holds.iter().enumerate().filter(|(_, h)| is_write(h)) {
        for (j, o) in holds.iter().enumerate() {
            if i != j && o.iv.start < w.iv.end && w.iv.start < o.iv.end {
                // Report each overlapping pair once.
                if is_write(o) && j < i {
                    continue;
                }
                out.violation(format!(
                    "writer {} (token {:?}) overlapped {} {} (token {:?}) for {:.1} ms",
                    w.iv.who,
                    w.iv.token,
                    o.mode,
                    o.iv.who,
                    o.iv.token,
                    ms(w.iv.end.min(o.iv.end) - w.iv.start.max(o.iv.start))
                ));
            }
        }
    }
    // Holds are sorted by start: a writer's token must exceed every earlier grant's and stay
    // below every later grant's.
    let tokens: Vec<Option<u64>> = holds.iter().map(|h| h.iv.token).collect();
    let mut before = vec![0u64; holds.len()];
    let mut after = vec![u64::MAX; holds.len()];
    for i in 1..holds.len() {
        before[i] = before[i - 1].max(tokens[i - 1].unwrap_or(0));
    }
    for i in (0..holds.len().saturating_sub(1)).rev() {
        after[i] = after[i + 1].min(tokens[i + 1].unwrap_or(u64::MAX));
    }
    for (i, w) in holds.iter().enumerate().filter(|(_, h)| is_write(h)) {
        let Some(t) = w.iv.token else { continue };
        if before[i] >= t || after[i] <= t {
            out.violation(format!(
                "writer {} got token {t}, out of order with the grants around it (largest before {}, smallest after {})",
                w.iv.who, before[i], after[i]
            ));
        }
    }
    let readers = steps(&holds, |h| h.mode == "read");
    let max_readers = readers.iter().map(|s| s.1).max().unwrap_or(0);
    if max_readers < 2 {
        out.violation(format!(
            "readers never shared the lock (at most {max_readers} at once): the scenario proved nothing"
        ));
    }
    let all = steps(&holds, |_| true);
    let longest = unserved_waits(out, events, &all, 1, p, "the lock was free");
    let lost = holds
        .iter()
        .filter(|h| h.iv.end_ev == "exit" && h.iv.end_ok == Some(false))
        .count();
    let killed = holds.iter().filter(|h| h.iv.end_ev == "killed").count();
    let errors = events.iter().filter(|e| e.ev == "error").count();
    out.note(format!(
        "rwlock: {} holds ({writes} writes), at most {max_readers} readers at once, {lost} lost, {killed} holders killed, {errors} acquire errors, longest wait while free {:.0} ms",
        holds.len(),
        ms(longest)
    ));
}
