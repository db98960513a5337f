//! The semaphore's checker: never more holders than permits, fencing tokens unique, a free
//! permit (a killed holder's too) taken within TTL + margin while someone waits.

use std::collections::HashMap;

use super::holds::{holds, steps, unserved_waits};
use super::{ms, Outcome, Params};
use crate::event::Event;

/// The permits the workers asked for, from their `config` events (detail `permits N`).
fn permits(out: &mut Outcome, events: &[Event]) -> Option<usize> {
    let mut seen: Vec<usize> = events
        .iter()
        .filter(|e| e.ev == "config")
        .filter_map(|e| e.detail.as_deref()?.strip_prefix("permits ")?.parse().ok())
        .collect();
    seen.sort_unstable();
    seen.dedup();
    match seen[..] {
        [n] => Some(n),
        [] => {
            out.violation("no worker logged its permit count: the scenario did not run");
            None
        }
        _ => {
            out.violation(format!(
                "the workers disagree on the permit count: {seen:?}"
            ));
            None
        }
    }
}

/// At most N holders at every instant (a killed holder holding until its lease could first
/// have expired), every grant with its own token, and no client waiting longer than TTL +
/// margin while a permit was free.
pub fn check_semaphore(out: &mut Outcome, events: &[Event], p: Params) {
    let Some(n) = permits(out, events) else {
        return;
    };
    let holds = holds(events, p);
    if holds.is_empty() {
        out.violation("no permit was taken: the scenario did not run");
        return;
    }
    let steps = steps(&holds, |_| true);
    let mut over_since: Option<u64> = None;
    let mut max_holders = 0;
    for &(t, k) in &steps {
        max_holders = max_holders.max(k);
        match (over_since, k > n) {
            (None, true) => over_since = Some(t),
            (Some(since), false) => {
                let who: Vec<String> = holds
                    .iter()
                    .filter(|h| h.iv.start < t && h.iv.end > since)
                    .map(|h| format!("{} (token {:?})", h.iv.who, h.iv.token))
                    .collect();
                out.violation(format!(
                    "more than {n} holders of a {n}-permit semaphore for {:.1} ms: {}",
                    ms(t - since),
                    who.join(", ")
                ));
                over_since = None;
            }
            _ => {}
        }
    }
    let mut tokens: HashMap<u64, &str> = HashMap::new();
    for h in &holds {
        if let Some(t) = h.iv.token {
            if let Some(other) = tokens.insert(t, &h.iv.who) {
                out.violation(format!(
                    "fencing token {t} granted twice: to {other} and to {}",
                    h.iv.who
                ));
            }
        }
    }
    let longest = unserved_waits(out, events, &steps, n, p, "a permit was free");
    let lost = holds
        .iter()
        .filter(|h| h.iv.end_ev == "exit" && h.iv.end_ok == Some(false))
        .count();
    let killed = holds.iter().filter(|h| h.iv.end_ev == "killed").count();
    let errors = events.iter().filter(|e| e.ev == "error").count();
    out.note(format!(
        "semaphore: {n} permits, {} holds, at most {max_holders} at once, {lost} lost, {killed} holders killed, {errors} acquire errors, longest wait with a permit free {:.0} ms",
        holds.len(),
        ms(longest)
    ));
}
