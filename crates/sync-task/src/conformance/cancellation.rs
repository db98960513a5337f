//! Cancellation: a dropped submit, wait or claim (at every poll) leaves nothing behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sync_core::check::{cancel_at_every_poll, eventually, within, Sweep};

use super::{opts, Counter, Gate, Harness, LONG};
use crate::{Command, Job, JobStatus, Task};

/// Cancel safety of `submit`, at every poll: a submit whose future is dropped before it
/// returned leaves nothing (no job, nothing runs); submitting again with the same idempotency
/// key (the next contender) makes exactly one job, which runs once.
pub async fn cancelled_submit_leaves_nothing(h: &dyn Harness) {
    let t = h.task(opts()).await;
    let runs: Arc<Mutex<HashMap<u64, usize>>> = Default::default();
    let r = runs.clone();
    t.register(Command::typed("submitted", move |n: u64| {
        *r.lock().unwrap().entry(n).or_default() += 1;
        async move { Ok(n) }
    }))
    .await
    .unwrap();
    let next = AtomicU32::new(0);
    let key = |n: u32| format!("cancelled-submit-{n}");
    let stored = Arc::new(AtomicUsize::new(h.stored_jobs(&t).await));
    let sweep = cancel_at_every_poll(
        "submit",
        200,
        || {
            let n = next.fetch_add(1, Ordering::SeqCst);
            t.submit(Job::new("submitted", u64::from(n)).with_idempotency_key(key(n)))
        },
        |polls| {
            let (t, runs, stored) = (t.clone(), runs.clone(), stored.clone());
            let n = next.load(Ordering::SeqCst) - 1;
            async move {
                let before = stored.load(Ordering::SeqCst);
                eventually(
                    &format!("a submit dropped after {polls} poll(s) left nothing"),
                    LONG,
                    || async { h.stored_jobs(&t).await == before },
                )
                .await;
                assert_eq!(
                    runs.lock().unwrap().get(&u64::from(n)),
                    None,
                    "the job of a submit dropped after {polls} poll(s) ran"
                );
                let again = t
                    .submit(Job::new("submitted", u64::from(n)).with_idempotency_key(key(n)))
                    .await
                    .unwrap();
                assert_eq!(
                    within("resubmitted job", LONG, again.wait()).await.unwrap(),
                    json!(n)
                );
                assert_eq!(runs.lock().unwrap().get(&u64::from(n)), Some(&1));
                stored.store(h.stored_jobs(&t).await, Ordering::SeqCst);
            }
        },
    )
    .await;
    match sweep {
        Sweep::Completed { output, polls } => {
            eprintln!(
                "submit completed after {polls} poll(s); dropped and checked after each before"
            );
            let job = output.unwrap();
            within("submitted job", LONG, job.wait()).await.unwrap();
            stored.store(h.stored_jobs(&t).await, Ordering::SeqCst);
        }
        other => panic!("submit parked: {other:?}"),
    }
    // A caller's timeout drops a submit while its request is in flight (after it was sent, at
    // any moment until its reply is read): each submit either returned its handle, or left
    // nothing (its job never runs).
    let kept: Arc<Mutex<Vec<u64>>> = Default::default();
    let base = 1_000_000u64;
    for i in 0..80u64 {
        let n = base + i;
        let cut = Duration::from_micros(100 * i);
        if let Ok(r) = tokio::time::timeout(cut, t.submit(Job::new("submitted", n))).await {
            within("a submitted job", LONG, r.unwrap().wait())
                .await
                .unwrap();
            kept.lock().unwrap().push(n);
        }
    }
    let kept = kept.lock().unwrap().clone();
    let expected = stored.load(Ordering::SeqCst) + kept.len();
    eventually(
        "every submit dropped by a timeout left nothing",
        LONG,
        || async { h.stored_jobs(&t).await == expected },
    )
    .await;
    let runs = runs.lock().unwrap();
    let ran: Vec<u64> = {
        let mut v: Vec<u64> = runs.keys().copied().filter(|n| *n >= base).collect();
        v.sort();
        v
    };
    assert_eq!(
        ran,
        kept,
        "jobs ran whose submit was dropped by a timeout (of 80: {} returned a handle)",
        kept.len()
    );
    assert!(runs.values().all(|&c| c == 1), "a job ran twice: {runs:?}");
}

/// Dropping a `wait` (a caller's timeout) leaves the job alone; waiting again gets its result.
pub async fn cancelled_wait_leaves_job_alone(h: &dyn Harness) {
    let t = h.task(opts()).await;
    let gate = Gate::new();
    let runs = Counter::default();
    let (g, r) = (gate.clone(), runs.clone());
    t.register(Command::new("gated", move |_| {
        let (g, r) = (g.clone(), r.clone());
        async move {
            r.bump();
            g.pass().await;
            Ok("through")
        }
    }))
    .await
    .unwrap();
    let job = t.submit(Job::new("gated", ())).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(50), job.wait()).await;
    assert!(
        early.is_err(),
        "the gated job finished before the gate opened"
    );
    gate.open();
    assert_eq!(
        within("result after a dropped wait", LONG, job.wait())
            .await
            .unwrap(),
        json!("through")
    );
    assert_eq!(runs.get(), 1);
}

/// Cancel safety of a worker's claim, at every poll: a claim path dropped after any number of
/// polls leaves the job pending and unclaimed, with no attempt used up; then another worker
/// claims it and runs it as its first attempt.
pub async fn cancelled_claim_leaves_job_claimable(h: &dyn Harness) {
    let a = h.task(opts()).await;
    let job = a
        .submit(Job::new("claimable", 7).with_wait_for_worker(true))
        .await
        .unwrap();
    let id = job.id().clone();
    let unclaimed = || async {
        matches!(
            a.status(&id).await.unwrap(),
            JobStatus::Pending { attempts: 0, .. }
        )
    };
    // The next contender: another worker's whole claim path, which must get the job (once the
    // dropped claim's leftovers, if any, are handed back) and hands it back in turn.
    let contender = h.peer(&a).await;
    let sweep = cancel_at_every_poll(
        "claim",
        200,
        || h.claim(&a, &id),
        |polls| {
            let contender = contender.clone();
            let id = id.clone();
            async move {
                eventually(
                    &format!("another worker claims the job after a claim dropped after {polls} poll(s)"),
                    LONG,
                    || h.claim(&contender, &id),
                )
                .await;
                eventually(
                    &format!("the job is pending and unclaimed after a claim dropped after {polls} poll(s)"),
                    LONG,
                    unclaimed,
                )
                .await;
            }
        },
    )
    .await;
    match sweep {
        Sweep::Completed { output, polls } => {
            eprintln!("the claim path completed after {polls} poll(s); dropped and checked after each before");
            assert!(output, "the claim path did not claim a pending job")
        }
        other => panic!("the claim path parked: {other:?}"),
    }
    eventually("the completed claim handed the job back", LONG, unclaimed).await;
    let next = h.peer(&a).await;
    next.register(Command::new("claimable", |input| async move {
        Ok(json!({"attempt": input.attempt(), "payload": input.payload()}))
    }))
    .await
    .unwrap();
    assert_eq!(
        within("the job, claimed by the next worker", LONG, next.wait(&id))
            .await
            .unwrap(),
        json!({"attempt": 1, "payload": 7})
    );
}
