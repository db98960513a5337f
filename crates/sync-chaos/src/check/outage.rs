//! The whole-cluster outage's checker: everyone told in time, everything works again after.

use std::time::Duration;

use super::intervals::{intervals, outages};
use super::{ms, nanos, Outcome, Params, SLACK};
use crate::event::Event;

/// When the whole cluster goes down, every holder and leader is told within the TTL (the
/// deadline rule), and after it comes back locks and elections work again within TTL + margin
/// + 15 s.
pub fn check_outage(out: &mut Outcome, events: &[Event], p: Params) {
    let outages = outages(events);
    if outages.is_empty() {
        out.violation("no cluster_down mark: the outage was not injected");
        return;
    }
    let told = nanos(p.ttl + SLACK);
    let recover = nanos(p.ttl + p.margin + Duration::from_secs(15));
    let kinds = [
        ("lock holder", "enter", &["exit"][..]),
        ("leader", "elected", &["revoked", "resign"][..]),
    ];
    for (kind, start, ends) in kinds {
        let ivs = intervals(events, start, ends);
        if ivs.is_empty() {
            continue;
        }
        for &(down, up) in &outages {
            let mut open_at_down = 0;
            for i in ivs.iter().filter(|i| i.start < down && i.end > down) {
                open_at_down += 1;
                if i.end > down + told {
                    out.violation(format!(
                        "{kind} {} (pid {}) was told {:.0} ms after the cluster went down (must be within TTL = {:.0} ms)",
                        i.who,
                        i.pid,
                        ms(i.end - down),
                        ms(nanos(p.ttl))
                    ));
                }
            }
            match ivs.iter().find(|i| i.start > up) {
                Some(i) if i.start - up <= recover => out.note(format!(
                    "{kind}: {open_at_down} open when the cluster went down; first grant {:.0} ms after it was back",
                    ms(i.start - up)
                )),
                Some(i) => out.violation(format!(
                    "{kind}: first grant only {:.0} ms after the cluster was back",
                    ms(i.start - up)
                )),
                None => out.violation(format!(
                    "{kind}: nothing granted after the cluster was back: clients did not recover"
                )),
            }
        }
    }
}
