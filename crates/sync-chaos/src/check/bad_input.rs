//! The bad-input checker: typed errors, no panic, no key left behind.

use super::Outcome;
use crate::event::Event;

/// Bad input: each case gave the expected typed error (no panic, no success), and no key was
/// left behind.
pub fn check_bad_input(out: &mut Outcome, events: &[Event]) {
    let cases: Vec<&Event> = events.iter().filter(|e| e.ev == "case").collect();
    if cases.is_empty() {
        out.violation("no bad-input case ran");
    }
    for e in cases.iter().filter(|e| e.ok != Some(true)) {
        out.violation(format!(
            "bad input not refused with the expected typed error: {}",
            e.detail.as_deref().unwrap_or("")
        ));
    }
    let keys: Vec<&Event> = events.iter().filter(|e| e.ev == "keys_left").collect();
    if keys.is_empty() {
        out.violation("the keyspace was not listed after the bad-input cases");
    }
    for e in keys.iter().filter(|e| e.token != Some(0)) {
        out.violation(format!(
            "{} keys left behind: {}",
            e.token.unwrap_or(0),
            e.detail.as_deref().unwrap_or("")
        ));
    }
    out.note(format!("bad input: {} cases", cases.len()));
}
