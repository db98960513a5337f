//! Reading event logs: the intervals a process spent in a state, and the harness's outages.

use std::collections::HashMap;

use crate::event::Event;

/// An interval a process spent in some state (holding a lock, leading, waiting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    /// The process.
    pub pid: u32,
    /// Its role.
    pub who: String,
    /// The token or term of the start event.
    pub token: Option<u64>,
    /// When it began.
    pub start: u64,
    /// When it ended.
    pub end: u64,
    /// The event that ended it (`killed` for a kill, `end of log` if nothing did).
    pub end_ev: String,
    /// The `ok` of the ending event.
    pub end_ok: Option<bool>,
}

/// The intervals from each `start` event of a process to its next `ends` event (or its kill,
/// or the end of the log). `events` must be sorted by time.
pub fn intervals(events: &[Event], start: &str, ends: &[&str]) -> Vec<Interval> {
    let last = events.last().map_or(0, |e| e.t);
    let mut open: HashMap<u32, Interval> = HashMap::new();
    let mut done = Vec::new();
    for e in events {
        if e.ev == "killed" {
            if let Some(mut i) = e.target.and_then(|p| open.remove(&p)) {
                i.end = e.t;
                i.end_ev = "killed".into();
                done.push(i);
            }
        } else if e.ev == start {
            if let Some(mut prev) = open.remove(&e.pid) {
                prev.end = e.t;
                prev.end_ev = format!("next {start}");
                done.push(prev);
            }
            open.insert(
                e.pid,
                Interval {
                    pid: e.pid,
                    who: e.who.clone(),
                    token: e.token,
                    start: e.t,
                    end: last,
                    end_ev: "end of log".into(),
                    end_ok: None,
                },
            );
        } else if ends.contains(&e.ev.as_str()) {
            if let Some(mut i) = open.remove(&e.pid) {
                i.end = e.t;
                i.end_ev = e.ev.clone();
                i.end_ok = e.ok;
                done.push(i);
            }
        }
    }
    done.extend(open.into_values());
    done.sort_by_key(|i| (i.start, i.pid));
    done
}

/// `(down, up)` pairs from the harness's `cluster_down`/`cluster_up` marks.
pub(super) fn outages(events: &[Event]) -> Vec<(u64, u64)> {
    let last = events.last().map_or(0, |e| e.t);
    let mut v = Vec::new();
    let mut down = None;
    for e in events {
        match e.ev.as_str() {
            "cluster_down" => down = Some(e.t),
            "cluster_up" => {
                if let Some(d) = down.take() {
                    v.push((d, e.t));
                }
            }
            _ => {}
        }
    }
    if let Some(d) = down {
        v.push((d, last));
    }
    v
}
