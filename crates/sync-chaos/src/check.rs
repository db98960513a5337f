//! The checkers: each reads a scenario's events and counts violations of a guarantee.
//!
//! Time is `CLOCK_MONOTONIC` nanoseconds (see [`crate::event`]). A process killed with
//! `kill -9` logs nothing more; the harness logs a `killed` event (with `target` = its pid)
//! right after the signal, and every interval the process had open ends there.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde::Serialize;

use crate::event::Event;

/// How many violation messages a report keeps (the count is always exact).
const MAX_DETAILS: usize = 25;
/// Scheduling slack added to deadlines that are measured across processes.
const SLACK: Duration = Duration::from_millis(250);

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
        "leader" => check_leader(&mut out, events, params, true),
        "task" => check_tasks(&mut out, events),
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

fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

fn nanos(d: Duration) -> u64 {
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
fn outages(events: &[Event]) -> Vec<(u64, u64)> {
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

/// Mutual exclusion over `enter`/`exit`: no two critical sections overlap, tokens strictly
/// increase from one section to the next, and no client waits longer than TTL + margin while
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
                if b <= a {
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

/// Every job submitted finished successfully (none lost), with the result its payload asks
/// for; duplicate runs (at-least-once) are counted, not violations.
pub fn check_tasks(out: &mut Outcome, events: &[Event]) {
    let submitted: BTreeSet<u64> = events
        .iter()
        .filter(|e| e.ev == "submitted")
        .filter_map(|e| e.job)
        .collect();
    if submitted.is_empty() {
        out.violation("no job was submitted: the scenario did not run");
        return;
    }
    let mut finished: BTreeMap<u64, bool> = BTreeMap::new();
    for e in events.iter().filter(|e| e.ev == "finished") {
        if let Some(j) = e.job {
            let ok = e.ok == Some(true);
            let entry = finished.entry(j).or_insert(ok);
            *entry = *entry || ok;
        }
    }
    let mut runs: BTreeMap<u64, usize> = BTreeMap::new();
    for e in events.iter().filter(|e| e.ev == "done") {
        if let Some(j) = e.job {
            *runs.entry(j).or_default() += 1;
        }
    }
    let mut lost = Vec::new();
    for j in &submitted {
        match finished.get(j) {
            None => lost.push(*j),
            Some(false) => out.violation(format!("job {j} finished without the right result")),
            Some(true) if !runs.contains_key(j) => out.violation(format!(
                "job {j} has a result but no worker logged running it to the end"
            )),
            Some(true) => {}
        }
    }
    if !lost.is_empty() {
        out.violations += lost.len() - 1;
        out.violation(format!(
            "{} jobs lost (submitted, never finished), e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        ));
    }
    let duplicates: usize = runs.values().map(|c| c.saturating_sub(1)).sum();
    let mut starts: BTreeMap<u64, usize> = BTreeMap::new();
    for e in events.iter().filter(|e| e.ev == "start") {
        if let Some(j) = e.job {
            *starts.entry(j).or_default() += 1;
        }
    }
    let restarted = starts.values().filter(|c| **c > 1).count();
    let killed = events.iter().filter(|e| e.ev == "killed").count();
    out.note(format!(
        "task: {} submitted, {} finished, {} duplicate runs to the end (at-least-once), {} jobs started again after a worker died, {} workers killed",
        submitted.len(),
        finished.values().filter(|ok| **ok).count(),
        duplicates,
        restarted,
        killed
    ));
}

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

/// Partition: the checks are those of the lock and the leader; this notes what the cuts did.
pub fn check_partition(out: &mut Outcome, events: &[Event]) {
    let cuts = events.iter().filter(|e| e.ev == "cut").count();
    if cuts == 0 {
        out.violation("the proxy logged no cut: the partition was not injected");
    }
    let lost = events
        .iter()
        .filter(|e| e.ev == "exit" && e.ok == Some(false))
        .count();
    let revoked = events.iter().filter(|e| e.ev == "revoked").count();
    out.note(format!(
        "partition: {cuts} cuts, {lost} locks lost, {revoked} leaderships revoked"
    ));
}

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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn ev(t_ms: u64, pid: u32, ev: &str) -> Event {
        Event {
            t: t_ms * MS,
            pid,
            who: format!("w{pid}"),
            ev: ev.into(),
            ..Default::default()
        }
    }

    fn killed(t_ms: u64, target: u32) -> Event {
        Event {
            who: "harness".into(),
            ..ev(t_ms, 1, "killed")
        }
        .target(target)
    }

    fn run(scenario: &str, mut events: Vec<Event>) -> Outcome {
        events.sort_by_key(|e| e.t);
        check(scenario, &events, Params::default())
    }

    /// Two workers taking turns; `second_enter` is when worker 20 enters after worker 10
    /// (whose section is 100–200 ms).
    fn mutex_log(second_enter: u64, second_token: u64) -> Vec<Event> {
        vec![
            ev(90, 10, "want"),
            ev(95, 20, "want"),
            ev(100, 10, "enter").token(5),
            ev(200, 10, "exit").token(5).ok(true),
            ev(second_enter, 20, "enter").token(second_token),
            ev(second_enter + 50, 20, "exit")
                .token(second_token)
                .ok(true),
        ]
    }

    #[test]
    fn mutex_clean() {
        let o = run("mutex", mutex_log(201, 6));
        assert_eq!(o.violations, 0, "{o:?}");
        assert_eq!(o.runs, 2);
    }

    #[test]
    fn mutex_counts_overlap() {
        let o = run("mutex", mutex_log(150, 6));
        assert_eq!(o.violations, 1, "{o:?}");
        assert!(o.details[0].contains("overlapping"), "{o:?}");
    }

    #[test]
    fn mutex_counts_token_going_back() {
        let o = run("mutex", mutex_log(201, 5));
        assert_eq!(o.violations, 1, "{o:?}");
        assert!(o.details[0].contains("fencing token"), "{o:?}");
    }

    #[test]
    fn mutex_counts_stuck_client() {
        // Free from 200 ms to 200 + TTL + margin + 1 s while worker 20 waited.
        let o = run("mutex", mutex_log(200 + 6_000, 6));
        assert_eq!(o.violations, 1, "{o:?}");
        assert!(o.details[0].contains("free for"), "{o:?}");
    }

    #[test]
    fn mutex_killed_holder_ends_at_kill_and_counts_overlap_before_it() {
        let mut log = vec![
            ev(0, 10, "want"),
            ev(1, 20, "want"),
            ev(10, 10, "enter").token(1),
            killed(500, 10),
            ev(2_600, 20, "enter").token(2),
            ev(2_700, 20, "exit").token(2).ok(true),
        ];
        assert_eq!(run("mutex", log.clone()).violations, 0);
        log[4].t = 400 * MS; // entered before the killed holder was gone
        assert_eq!(run("mutex", log).violations, 1);
    }

    #[test]
    fn mutex_empty_log_is_a_violation() {
        assert_eq!(run("mutex", vec![ev(1, 1, "want")]).violations, 1);
    }

    #[test]
    fn panic_is_counted() {
        let mut log = mutex_log(201, 6);
        log.push(ev(300, 10, "panic").detail("boom"));
        assert_eq!(run("mutex", log).violations, 1);
    }

    fn leader_log() -> Vec<Event> {
        vec![
            ev(0, 10, "campaign"),
            ev(1, 20, "campaign"),
            ev(10, 10, "elected").token(100),
            killed(1_000, 10),
            ev(3_500, 20, "elected").token(105),
            ev(4_000, 20, "resign").token(105),
        ]
    }

    #[test]
    fn leader_clean() {
        let o = run("leader", leader_log());
        assert_eq!(o.violations, 0, "{o:?}");
    }

    #[test]
    fn leader_counts_two_leaders_in_one_term() {
        let mut log = leader_log();
        log.push(ev(3_600, 30, "elected").token(105));
        let o = run("leader", log);
        // Same term twice; the second began while the first led; the term did not increase.
        assert!(
            o.details.iter().any(|d| d.contains("had 2 leaders")),
            "{o:?}"
        );
        assert_eq!(o.violations, 3, "{o:?}");
    }

    #[test]
    fn leader_counts_late_revocation() {
        let log = vec![
            ev(10, 10, "elected").token(100),
            ev(500, 20, "elected").token(101),
            ev(600, 10, "revoked").token(100),
            ev(700, 20, "resign").token(101),
        ];
        let o = run("leader", log);
        assert_eq!(o.violations, 1, "{o:?}");
        assert!(o.details[0].contains("before the previous leader"), "{o:?}");
    }

    #[test]
    fn leader_counts_slow_failover() {
        let mut log = leader_log();
        log[4].t = 1_000 * MS + 3_300 * MS; // TTL 2 s + 1 s + slack exceeded
        log[5].t = 5_000 * MS;
        let o = run("leader", log);
        assert_eq!(o.violations, 1, "{o:?}");
        assert!(o.details[0].contains("failover"), "{o:?}");
    }

    fn task_log() -> Vec<Event> {
        vec![
            ev(1, 1, "submitted").job(0),
            ev(2, 1, "submitted").job(1),
            ev(3, 2, "done").job(0),
            ev(4, 3, "done").job(0),
            ev(5, 3, "done").job(1),
            ev(6, 1, "finished").job(0).ok(true),
            ev(7, 1, "finished").job(1).ok(true),
        ]
    }

    #[test]
    fn tasks_clean_with_a_duplicate_noted() {
        let o = run("task", task_log());
        assert_eq!(o.violations, 0, "{o:?}");
        assert!(o.details[0].contains("1 duplicate"), "{o:?}");
    }

    #[test]
    fn tasks_count_lost_and_wrong() {
        let mut log = task_log();
        log.pop(); // job 1 never finished
        log.push(ev(8, 1, "submitted").job(2));
        log.push(ev(9, 1, "finished").job(2).ok(false));
        let o = run("task", log);
        assert_eq!(o.violations, 2, "{o:?}");
    }

    fn outage_log(told_at: u64, back_grant: u64) -> Vec<Event> {
        let mark = |t: u64, e: &str| Event {
            who: "harness".into(),
            ..ev(t, 1, e)
        };
        vec![
            ev(0, 10, "want"),
            ev(10, 10, "enter").token(1),
            mark(1_000, "cluster_down"),
            ev(told_at, 10, "exit").token(1).ok(false),
            mark(9_000, "cluster_up"),
            ev(9_100, 10, "want"),
            ev(back_grant, 10, "enter").token(9),
            ev(back_grant + 10, 10, "exit").token(9).ok(true),
        ]
    }

    #[test]
    fn outage_clean() {
        let o = run("outage", outage_log(2_600, 11_000));
        assert_eq!(o.violations, 0, "{o:?}");
    }

    #[test]
    fn outage_counts_late_notice_and_no_recovery() {
        let o = run("outage", outage_log(3_500, 11_000));
        assert_eq!(o.violations, 1, "{o:?}");
        let mut log = outage_log(2_600, 11_000);
        log.truncate(6); // never granted again
        let o = run("outage", log);
        assert_eq!(o.violations, 1, "{o:?}");
        assert!(
            o.details.iter().any(|d| d.contains("did not recover")),
            "{o:?}"
        );
    }

    fn raft_log(elections_ms: &[u64], loss_at: Option<(u64, &str)>) -> Vec<Event> {
        let mark = |t: u64, e: &str| Event {
            who: "harness".into(),
            ..ev(t, 1, e)
        };
        let mut log = vec![ev(10, 10, "enter").token(1), ev(20, 20, "elected").token(2)];
        for (i, e) in elections_ms.iter().enumerate() {
            let t = 1_000 + i as u64 * 10_000;
            log.push(mark(t, "raft_kill"));
            log.push(mark(t + e, "raft_elected"));
        }
        if let Some((t, ev_name)) = loss_at {
            let e = if ev_name == "revoked" {
                ev(t, 20, "revoked").token(2)
            } else {
                ev(t, 10, "exit").token(1).ok(false)
            };
            log.push(e);
        }
        log
    }

    #[test]
    fn raft_kills_clean_and_planted_losses() {
        let fast = [1_200, 1_500, 2_000, 1_100, 1_900];
        assert_eq!(run("raft-kills", raft_log(&fast, None)).violations, 0);
        // A loss 3 s after the third kill, whose election took 2 s: caught.
        let o = run("raft-kills", raft_log(&fast, Some((24_000, "exit"))));
        assert_eq!(o.violations, 1, "{o:?}");
        assert!(o.details[0].contains("lock lost"), "{o:?}");
        let o = run("raft-kills", raft_log(&fast, Some((24_000, "revoked"))));
        assert_eq!(o.violations, 1, "{o:?}");
        // The same loss after a 2.9 s election is inconclusive, but then only four rounds
        // count: a sixth, fast round makes it clean.
        let slow = [1_200, 1_500, 2_900, 1_100, 1_900, 1_300];
        let o = run("raft-kills", raft_log(&slow, Some((24_000, "exit"))));
        assert_eq!(o.violations, 0, "{o:?}");
        let o = run("raft-kills", raft_log(&slow[..5], None));
        assert_eq!(o.violations, 1, "{o:?}");
        assert!(o.details[0].contains("too few"), "{o:?}");
        // A loss before any kill is a violation.
        let o = run("raft-kills", raft_log(&fast, Some((500, "exit"))));
        assert_eq!(o.violations, 1, "{o:?}");
    }

    #[test]
    fn time_checker() {
        let clean = vec![
            ev(1, 1, "bounds").ok(true),
            ev(2, 1, "liar").ok(true).detail("skew"),
        ];
        assert_eq!(run("time", clean.clone()).violations, 0);
        let mut bad = clean;
        bad.push(ev(3, 1, "bounds").ok(false));
        bad.push(ev(4, 1, "liar").ok(false));
        bad.push(ev(5, 1, "sync_failed"));
        assert_eq!(run("time", bad).violations, 3);
    }

    #[test]
    fn bad_input_checker() {
        let clean = vec![
            ev(1, 1, "case").ok(true).detail("empty name"),
            ev(2, 1, "keys_left").token(0),
        ];
        assert_eq!(run("bad-input", clean).violations, 0);
        let bad = vec![
            ev(1, 1, "case").ok(false).detail("empty name: Ok"),
            ev(2, 1, "keys_left").token(3),
        ];
        assert_eq!(run("bad-input", bad).violations, 2);
        assert_eq!(run("bad-input", vec![]).violations, 2);
    }

    #[test]
    fn partition_checker() {
        let mut log = mutex_log(201, 6);
        assert_eq!(run("partition", log.clone()).violations, 1, "no cut logged");
        log.push(ev(150, 99, "cut").detail("blackhole"));
        assert_eq!(run("partition", log.clone()).violations, 0);
        log.push(ev(220, 10, "elected").token(7));
        log.push(ev(230, 20, "elected").token(8));
        assert_eq!(run("partition", log).violations, 1);
    }
}
