//! The checkers: each reads a scenario's events and counts violations of a guarantee.
//!
//! Time is `CLOCK_MONOTONIC` nanoseconds (see [`crate::event`]). A process killed with
//! `kill -9` logs nothing more; the harness logs a `killed` event (with `target` = its pid)
//! right after the signal, and every interval the process had open ends there.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;

use crate::event::Event;

mod bad_input;
#[cfg(test)]
mod family_tests;
mod holds;
mod intervals;
mod leader;
mod mutex;
mod outage;
mod partition;
mod raft;
mod rwlock;
mod semaphore;
mod stream;
mod task;
#[cfg(test)]
mod tests;
mod time;

pub use bad_input::check_bad_input;
pub use intervals::{intervals, Interval};
pub use leader::check_leader;
pub use mutex::check_mutex;
pub use outage::check_outage;
pub use partition::check_partition;
pub use raft::{check_raft_kills, RAFT_CONCLUSIVE};
pub use rwlock::check_rwlock;
pub use semaphore::check_semaphore;
pub use stream::check_stream;
pub use task::check_tasks;
pub use time::check_time;

/// How many violation messages a report keeps (the count is always exact).
const MAX_DETAILS: usize = 25;
/// Scheduling slack added to deadlines that are measured across processes.
pub(super) const SLACK: Duration = Duration::from_millis(250);

/// A scenario's result, as written to `report.json`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Outcome {
    /// The scenario's name.
    pub scenario: String,
    /// Worker processes that logged events (each start of the worker binary is one run).
    pub runs: usize,
    /// Events read.
    pub events: usize,
    /// Violations counted.
    pub violations: usize,
    /// The violations (first few, prefixed `VIOLATION:`) and what was measured.
    pub details: Vec<String>,
}

impl Outcome {
    /// An empty outcome for `scenario` over `events`.
    pub fn new(scenario: &str, events: &[Event]) -> Self {
        let runs = events
            .iter()
            .filter(|e| e.who != "harness")
            .map(|e| e.pid)
            .collect::<BTreeSet<_>>()
            .len();
        Outcome {
            scenario: scenario.to_owned(),
            runs,
            events: events.len(),
            ..Default::default()
        }
    }

    /// Counts a violation.
    pub fn violation(&mut self, message: impl Into<String>) {
        self.violations += 1;
        if self.details.len() < MAX_DETAILS {
            self.details.push(format!("VIOLATION: {}", message.into()));
        }
    }

    /// Records a measurement.
    pub fn note(&mut self, message: impl Into<String>) {
        self.details.push(message.into());
    }
}

/// The timing the checkers judge against.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// The lease TTL the workers asked for (etcd may grant more; never less).
    pub ttl: Duration,
    /// Added to the TTL for "nobody stuck" and failover checks (covers a raft election).
    pub margin: Duration,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            ttl: Duration::from_secs(2),
            margin: Duration::from_secs(3),
        }
    }
}

/// Runs the checker of `scenario` (names as in `cargo xtask chaos`).
pub fn check(scenario: &str, events: &[Event], params: Params) -> Outcome {
    let mut out = Outcome::new(scenario, events);
    check_panics(&mut out, events);
    match scenario {
        "raft-kills" => check_raft_kills(&mut out, events),
        "mutex" => check_mutex(&mut out, events, params),
        "semaphore" => {
            check_semaphore(&mut out, events, params);
            check_partition(&mut out, events);
        }
        "rwlock" => {
            check_rwlock(&mut out, events, params);
            check_partition(&mut out, events);
        }
        "leader" => check_leader(&mut out, events, params, true),
        "task" => check_tasks(&mut out, events),
        "stream" | "stream-nats" => check_stream(&mut out, events),
        "outage" => {
            check_mutex(&mut out, events, params);
            check_leader(&mut out, events, params, false);
            check_outage(&mut out, events, params);
        }
        "time" => check_time(&mut out, events),
        "partition" => {
            check_mutex(&mut out, events, params);
            check_leader(&mut out, events, params, false);
            check_partition(&mut out, events);
        }
        "bad-input" => check_bad_input(&mut out, events),
        other => out.violation(format!("no checker for scenario {other:?}")),
    }
    out
}

pub(super) fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

pub(super) fn nanos(d: Duration) -> u64 {
    d.as_nanos() as u64
}

/// A panic anywhere is a violation.
pub fn check_panics(out: &mut Outcome, events: &[Event]) {
    for e in events.iter().filter(|e| e.ev == "panic") {
        out.violation(format!(
            "{} (pid {}) panicked: {}",
            e.who,
            e.pid,
            e.detail.as_deref().unwrap_or("")
        ));
    }
}
