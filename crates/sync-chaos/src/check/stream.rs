//! The event stream's checker: every acknowledged publish reaches every consumer group at least
//! once, and every plain subscriber sees every offset once, in order, with the same event at
//! the same offset as everyone else.
//!
//! The events it reads (one topic per scenario; `token` is an offset, `job` the publisher's own
//! number for the message, unique across the scenario):
//! - `published` (a publisher): the publish was acknowledged at offset `token`; `publish_failed`
//!   (no acknowledgement: the message may or may not be in the stream);
//! - `subscribed` (a plain subscriber run): it starts at offset `token`; then `seen` for every
//!   event delivered to it;
//! - `got` (a group member, `detail` = the group): an event delivered to the group;
//! - `drained` (the harness, `detail` = the group): the group was given time to catch up, and
//!   every publish acknowledged before this event must have reached it.

use std::collections::{BTreeMap, BTreeSet};

use super::Outcome;
use crate::event::Event;

/// Counts lost, reordered, duplicated and disagreeing deliveries.
pub fn check_stream(out: &mut Outcome, events: &[Event]) {
    let acked: BTreeMap<u64, (u64, u64)> = events
        .iter()
        .filter(|e| e.ev == "published")
        .filter_map(|e| Some((e.token?, (e.job?, e.t))))
        .collect();
    if acked.is_empty() {
        out.violation("no publish was acknowledged: the scenario did not run");
        return;
    }
    let acked_count = events.iter().filter(|e| e.ev == "published").count();
    if acked_count != acked.len() {
        out.violation(format!(
            "{} acknowledged publishes share {} offsets: two events were given one offset",
            acked_count,
            acked.len()
        ));
    }
    let mut at_offset = Agreement::default();
    for (&offset, &(job, _)) in &acked {
        at_offset.record(out, offset, job, "the publisher");
    }
    check_subscribers(out, events, &acked, &mut at_offset);
    check_groups(out, events, &acked, &mut at_offset);
    let failed = events.iter().filter(|e| e.ev == "publish_failed").count();
    out.note(format!(
        "{} publishes acknowledged (offsets {}..={}), {failed} failed or unacknowledged",
        acked.len(),
        acked.keys().next().copied().unwrap_or(0),
        acked.keys().next_back().copied().unwrap_or(0),
    ));
}

/// The message each offset holds, as first seen: every later sighting must agree.
#[derive(Default)]
struct Agreement(BTreeMap<u64, u64>);

impl Agreement {
    fn record(&mut self, out: &mut Outcome, offset: u64, job: u64, by: &str) {
        match self.0.get(&offset) {
            None => {
                self.0.insert(offset, job);
            }
            Some(&first) if first != job => out.violation(format!(
                "offset {offset} holds message {first} for one reader, {job} for {by}"
            )),
            Some(_) => {}
        }
    }
}

/// A subscriber run: who, the offset it started at, and (offset, message) as delivered.
type Run = (String, Option<u64>, Vec<(u64, Option<u64>)>);

/// Per subscriber run: strictly increasing offsets (no duplicate, no reordering), and no
/// acknowledged offset missing between its start and the last offset it saw.
fn check_subscribers(
    out: &mut Outcome,
    events: &[Event],
    acked: &BTreeMap<u64, (u64, u64)>,
    agree: &mut Agreement,
) {
    let mut runs: BTreeMap<u32, Run> = BTreeMap::new();
    for e in events {
        match e.ev.as_str() {
            "subscribed" => runs
                .entry(e.pid)
                .or_insert((e.who.clone(), e.token, Vec::new())),
            "seen" => {
                let run = runs
                    .entry(e.pid)
                    .or_insert((e.who.clone(), None, Vec::new()));
                if let Some(offset) = e.token {
                    run.2.push((offset, e.job));
                }
                run
            }
            _ => continue,
        };
    }
    let mut delivered = 0;
    for (who, start, seen) in runs.values() {
        delivered += seen.len();
        for pair in seen.windows(2) {
            let (a, b) = (pair[0].0, pair[1].0);
            if b == a {
                out.violation(format!("{who} saw offset {a} twice in a row"));
            } else if b < a {
                out.violation(format!("{who} saw offset {b} after {a}: out of order"));
            }
        }
        for &(offset, job) in seen {
            if let Some(job) = job {
                agree.record(out, offset, job, who);
            }
        }
        let Some(&(last, _)) = seen.last() else {
            continue;
        };
        let first = start.unwrap_or(seen[0].0);
        let got: BTreeSet<u64> = seen.iter().map(|s| s.0).collect();
        let missing: Vec<u64> = acked
            .range(first..=last)
            .map(|(o, _)| *o)
            .filter(|o| !got.contains(o))
            .collect();
        if !missing.is_empty() {
            out.violations += missing.len() - 1;
            out.violation(format!(
                "{who} skipped {} acknowledged offsets between {first} and {last}, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(10)]
            ));
        }
    }
    out.note(format!(
        "{} subscriber runs saw {delivered} deliveries",
        runs.len()
    ));
}

/// Per group: every publish acknowledged before the group's `drained` event was delivered to
/// one of its members at least once; redeliveries are counted, not violations.
fn check_groups(
    out: &mut Outcome,
    events: &[Event],
    acked: &BTreeMap<u64, (u64, u64)>,
    agree: &mut Agreement,
) {
    let mut got: BTreeMap<&str, BTreeMap<u64, usize>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.ev == "got") {
        let (Some(group), Some(offset)) = (e.detail.as_deref(), e.token) else {
            continue;
        };
        *got.entry(group).or_default().entry(offset).or_default() += 1;
        if let Some(job) = e.job {
            agree.record(out, offset, job, &e.who);
        }
    }
    let drained: Vec<(&str, u64)> = events
        .iter()
        .filter(|e| e.ev == "drained")
        .filter_map(|e| Some((e.detail.as_deref()?, e.t)))
        .collect();
    if drained.is_empty() && !got.is_empty() {
        out.violation("groups were consumed but never drained: delivery cannot be judged");
    }
    for (group, until) in drained {
        let seen = got.get(group);
        let lost: Vec<u64> = acked
            .iter()
            .filter(|(_, (_, t))| *t <= until)
            .map(|(o, _)| *o)
            .filter(|o| !seen.is_some_and(|s| s.contains_key(o)))
            .collect();
        if !lost.is_empty() {
            out.violations += lost.len() - 1;
            out.violation(format!(
                "group {group}: {} acknowledged events never delivered, e.g. offsets {:?}",
                lost.len(),
                &lost[..lost.len().min(10)]
            ));
        }
        let redelivered: usize = seen
            .map(|s| s.values().map(|n| n.saturating_sub(1)).sum())
            .unwrap_or(0);
        out.note(format!(
            "group {group}: {} distinct events delivered, {redelivered} redeliveries (at least once)",
            seen.map_or(0, |s| s.len())
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::ev;
    use super::*;

    fn publish(t: u64, offset: u64, job: u64) -> Event {
        ev(t, 1, "published").token(offset).job(job)
    }

    fn seen(t: u64, pid: u32, offset: u64, job: u64) -> Event {
        ev(t, pid, "seen").token(offset).job(job)
    }

    fn got(t: u64, pid: u32, offset: u64, job: u64) -> Event {
        ev(t, pid, "got").token(offset).job(job).detail("g")
    }

    fn drained(t: u64) -> Event {
        Event {
            who: "harness".into(),
            ..ev(t, 2, "drained")
        }
        .detail("g")
    }

    /// Three events at offsets 10, 12, 15 (offsets need not be dense), a subscriber from 10
    /// and a group of two members that sees all three (one twice).
    fn clean() -> Vec<Event> {
        vec![
            publish(1, 10, 100),
            publish(2, 12, 101),
            publish(3, 15, 102),
            ev(0, 30, "subscribed").token(10),
            seen(4, 30, 10, 100),
            seen(5, 30, 12, 101),
            seen(6, 30, 15, 102),
            got(4, 40, 10, 100),
            got(5, 41, 12, 101),
            got(6, 40, 15, 102),
            got(7, 41, 15, 102),
            drained(10),
        ]
    }

    fn says(out: &Outcome, what: &str) -> bool {
        out.details
            .iter()
            .any(|d| d.starts_with("VIOLATION") && d.contains(what))
    }

    fn run(events: Vec<Event>) -> Outcome {
        let mut events = events;
        events.sort_by_key(|e| e.t);
        let mut out = Outcome::new("stream", &events);
        check_stream(&mut out, &events);
        out
    }

    #[test]
    fn a_clean_log_passes_and_counts_redeliveries() {
        let out = run(clean());
        assert_eq!(out.violations, 0, "{:?}", out.details);
        assert!(out.details.iter().any(|d| d.contains("1 redeliveries")));
    }

    #[test]
    fn a_planted_gap_is_counted() {
        let mut log = clean();
        log.retain(|e| !(e.ev == "seen" && e.token == Some(12)));
        let out = run(log);
        assert_eq!(out.violations, 1, "{:?}", out.details);
        assert!(says(&out, "skipped 1"), "{:?}", out.details);
    }

    #[test]
    fn a_planted_reorder_and_a_duplicate_are_counted() {
        let mut log = clean();
        for e in log.iter_mut().filter(|e| e.ev == "seen") {
            // 10, 12, 15 become 10, 15, 12 in delivery order.
            if e.token == Some(12) {
                e.t = 7;
            }
        }
        let out = run(log);
        assert_eq!(out.violations, 1, "{:?}", out.details);
        assert!(says(&out, "out of order"), "{:?}", out.details);

        let mut log = clean();
        log.push(seen(7, 30, 15, 102));
        let out = run(log);
        assert_eq!(out.violations, 1, "{:?}", out.details);
        assert!(says(&out, "twice"), "{:?}", out.details);
    }

    #[test]
    fn a_planted_loss_in_a_group_is_counted_and_late_publishes_are_not() {
        let mut log = clean();
        log.retain(|e| !(e.ev == "got" && e.token == Some(12)));
        // Published after the drain: not yet owed to the group.
        log.push(publish(11, 20, 103));
        let out = run(log);
        assert_eq!(out.violations, 1, "{:?}", out.details);
        assert!(says(&out, "never delivered"), "{:?}", out.details);
    }

    #[test]
    fn two_messages_at_one_offset_are_counted() {
        let mut log = clean();
        for e in log
            .iter_mut()
            .filter(|e| e.ev == "got" && e.token == Some(12))
        {
            e.job = Some(999);
        }
        let out = run(log);
        assert_eq!(out.violations, 1, "{:?}", out.details);
        assert!(says(&out, "holds message"), "{:?}", out.details);
    }

    #[test]
    fn an_empty_log_is_a_violation() {
        assert_eq!(run(Vec::new()).violations, 1);
    }
}
