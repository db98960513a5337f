//! The task queue's checker: no job lost, every result right, duplicates counted.

use std::collections::{BTreeMap, BTreeSet};

use super::Outcome;
use crate::event::Event;

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
