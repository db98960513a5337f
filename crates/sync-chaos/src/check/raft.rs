//! The raft-leader kills' checker: no loss in a round whose election the lease keeper rides out.

use std::time::Duration;

use super::{ms, nanos, Outcome};
use crate::event::Event;

/// An election seen (by polling) to end within this is one the lease keeper rides out: its
/// `RIDE_OUT` (2.7 s) less a renewal interval, a retry and a round trip.
pub const RAFT_CONCLUSIVE: Duration =
    Duration::from_millis(sync_etcd::RIDE_OUT.as_millis() as u64 - 400);

/// Raft-leader kills on etcd's default timing: the holder and the leader got in before the first
/// kill, and no lock was lost (`exit` not ok) and no leadership revoked in a round whose election
/// ended within [`RAFT_CONCLUSIVE`]; there were at least five such rounds. A loss in a round
/// whose election took longer is the deadline rule doing its job on a loaded machine: noted.
pub fn check_raft_kills(out: &mut Outcome, events: &[Event]) {
    let mut rounds: Vec<(u64, Option<u64>)> = Vec::new();
    for e in events {
        match e.ev.as_str() {
            "raft_kill" => rounds.push((e.t, None)),
            "raft_elected" => {
                if let Some(r) = rounds.last_mut() {
                    r.1.get_or_insert(e.t);
                }
            }
            _ => {}
        }
    }
    let Some(&(first_kill, _)) = rounds.first() else {
        out.violation("no raft_kill mark: the raft leader was never killed");
        return;
    };
    for (what, ev) in [("the lock holder", "enter"), ("the leader", "elected")] {
        if !events.iter().any(|e| e.ev == ev && e.t < first_kill) {
            out.violation(format!(
                "{what} never got in before the first raft-leader kill"
            ));
        }
    }
    let conclusive = |r: &(u64, Option<u64>)| {
        r.1.is_some_and(|elected| elected - r.0 <= nanos(RAFT_CONCLUSIVE))
    };
    let losses = events
        .iter()
        .filter(|e| (e.ev == "exit" && e.ok == Some(false)) || e.ev == "revoked");
    for loss in losses {
        let what = if loss.ev == "revoked" {
            "leadership revoked"
        } else {
            "lock lost"
        };
        let detail = loss.detail.as_deref().unwrap_or("");
        match rounds.iter().rposition(|r| r.0 <= loss.t) {
            None => out.violation(format!(
                "{what} before any raft-leader kill ({} pid {}): {detail}",
                loss.who, loss.pid
            )),
            Some(i) if conclusive(&rounds[i]) => out.violation(format!(
                "{what} {:.0} ms after raft-leader kill {} although the election ended within \
                 {:.0} ms: {detail}",
                ms(loss.t - rounds[i].0),
                i + 1,
                ms(rounds[i].1.unwrap_or(0) - rounds[i].0)
            )),
            Some(i) => out.note(format!(
                "{what} after raft-leader kill {} whose election took {}: inconclusive ({detail})",
                i + 1,
                rounds[i].1.map_or("too long".to_owned(), |e| format!(
                    "{:.0} ms",
                    ms(e - rounds[i].0)
                ))
            )),
        }
    }
    let good = rounds.iter().filter(|r| conclusive(r)).count();
    if good < 5 {
        out.violation(format!(
            "only {good} of {} raft elections ended within {:.0} ms: too few to show anything",
            rounds.len(),
            ms(nanos(RAFT_CONCLUSIVE))
        ));
    }
    let times: Vec<String> = rounds
        .iter()
        .map(|r| {
            r.1.map_or("-".to_owned(), |e| format!("{:.0}", ms(e - r.0)))
        })
        .collect();
    out.note(format!(
        "raft-kills: {} kills, elections (ms) [{}], {good} within {:.0} ms",
        rounds.len(),
        times.join(", "),
        ms(nanos(RAFT_CONCLUSIVE))
    ));
}
