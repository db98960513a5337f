//! The time checker: true time inside the bounds, every lying NTP source rejected.

use super::Outcome;
use crate::event::Event;

/// Time: every `bounds` check contained true time, and every lying source was rejected.
pub fn check_time(out: &mut Outcome, events: &[Event]) {
    let bounds: Vec<&Event> = events.iter().filter(|e| e.ev == "bounds").collect();
    if bounds.is_empty() {
        out.violation("no bounds were checked: the scenario did not run");
    }
    for e in bounds.iter().filter(|e| e.ok != Some(true)) {
        out.violation(format!(
            "bounds did not contain true time: {}",
            e.detail.as_deref().unwrap_or("")
        ));
    }
    let liars: Vec<&Event> = events.iter().filter(|e| e.ev == "liar").collect();
    for e in liars.iter().filter(|e| e.ok != Some(true)) {
        out.violation(format!(
            "a lying server was not rejected: {}",
            e.detail.as_deref().unwrap_or("")
        ));
    }
    for e in events.iter().filter(|e| e.ev == "sync_failed") {
        out.violation(format!(
            "sync failed although honest servers answered: {}",
            e.detail.as_deref().unwrap_or("")
        ));
    }
    out.note(format!(
        "time: {} bounds checks, {} liars judged",
        bounds.len(),
        liars.len()
    ));
}
