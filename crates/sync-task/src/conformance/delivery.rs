//! Delivery: every job runs once, on a bounded pool, under the command it was submitted for;
//! the seed's `run`, and the trait used as an object and generically.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sync_core::check::{eventually, within};

use super::{opts, Counter, Gate, Harness, LONG};
use crate::{Command, CommandError, Error, Job, Task, TaskExt, TaskOptions};

/// The seed's shape: `run(Command)` returns the command's output; its error reaches the caller
/// after its attempts, naming the command.
pub async fn seed_run_returns_output_and_errors(h: &dyn Harness) {
    let t = h.task(TaskOptions::new().with_pool(10)).await;
    let out = t
        .run(Command::new("atask", |_| async { Ok(()) }))
        .await
        .unwrap();
    assert_eq!(out, Value::Null);
    let answer = Command::new("answer", |_| async { Ok(json!({"n": 42})) });
    assert_eq!(t.run(answer.clone()).await.unwrap(), json!({"n": 42}));
    assert_eq!(t.run(answer).await.unwrap(), json!({"n": 42}));

    let e = t
        .run(Command::new("fails", |_| async {
            Err::<(), _>(CommandError::permanent("disk full"))
        }))
        .await
        .unwrap_err();
    match &e {
        Error::Failed {
            command,
            attempts,
            message,
            ..
        } => {
            assert_eq!(command, "fails");
            assert_eq!(*attempts, 1);
            assert_eq!(message, "disk full");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    let text = e.to_string();
    assert!(
        text.contains("fails") && text.contains("disk full"),
        "{text}"
    );

    // A retryable error is retried (default: 3 attempts) before it reaches the caller.
    let runs = Counter::default();
    let r = runs.clone();
    let e = t
        .run(Command::new("flaky", move |_| {
            r.bump();
            async { Err::<(), _>(CommandError::msg("try again")) }
        }))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Failed { attempts: 3, .. }),
        "expected 3 attempts: {e:?}"
    );
    assert_eq!(runs.get(), 3);
}

/// Every submitted job runs once (no failures, no crash) and its result reaches the submitter,
/// whichever handle submitted it.
pub async fn every_job_runs_once(h: &dyn Harness) {
    let t = h.task(opts()).await;
    let peer = h.peer(&t).await;
    let runs: Arc<Mutex<HashMap<u64, usize>>> = Default::default();
    let r = runs.clone();
    t.register(Command::typed("double", move |n: u64| {
        *r.lock().unwrap().entry(n).or_default() += 1;
        async move { Ok(n * 2) }
    }))
    .await
    .unwrap();
    let mut handles = Vec::new();
    for n in 0..120u64 {
        let via = if n % 2 == 0 { &t } else { &peer };
        handles.push((n, via.submit(Job::new("double", n)).await.unwrap()));
    }
    for (n, job) in handles {
        let out: u64 = within("job result", LONG, job.wait_as()).await.unwrap();
        assert_eq!(out, n * 2);
    }
    let runs = runs.lock().unwrap();
    assert_eq!(runs.len(), 120, "not every job ran");
    assert!(runs.values().all(|&c| c == 1), "a job ran twice: {runs:?}");
}

/// At most `pool` attempts run at once on a handle, and a busy pool does use all its slots.
pub async fn pool_bound_never_exceeded(h: &dyn Harness) {
    const POOL: usize = 3;
    let t = h.task(TaskOptions::new().with_pool(POOL)).await;
    let inside = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let full = Gate::new();
    let (i, m, f) = (inside.clone(), max.clone(), full.clone());
    t.register(Command::new("bounded", move |_| {
        let (i, m, f) = (i.clone(), m.clone(), f.clone());
        async move {
            let now = i.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            if now == POOL {
                f.open();
            }
            // Hold the slot until the pool has been full once, so the bound is reached.
            f.pass().await;
            tokio::task::yield_now().await;
            i.fetch_sub(1, Ordering::SeqCst);
            Ok(now)
        }
    }))
    .await
    .unwrap();
    let mut jobs = Vec::new();
    for _ in 0..30 {
        jobs.push(t.submit(Job::new("bounded", ())).await.unwrap());
    }
    for job in jobs {
        let seen: usize = within("bounded job", LONG, job.wait_as()).await.unwrap();
        assert!(
            seen <= POOL,
            "{seen} attempts ran at once on a pool of {POOL}"
        );
    }
    assert_eq!(
        max.load(Ordering::SeqCst),
        POOL,
        "the pool bound was exceeded or never reached"
    );
}

/// The pool counts attempts that run: none on an idle handle (whatever it holds while it waits
/// for work), then one per attempt in progress.
pub async fn running_counts_attempts_that_run(h: &dyn Harness) {
    let t = h.task(TaskOptions::new().with_pool(3)).await;
    let gate = Gate::new();
    let started = Counter::default();
    let (g, st) = (gate.clone(), started.clone());
    t.register(Command::new("gated-run", move |_| {
        let (g, st) = (g.clone(), st.clone());
        async move {
            st.bump();
            g.pass().await;
            Ok(())
        }
    }))
    .await
    .unwrap();
    t.register(Command::new("quick-run", |_| async { Ok(()) }))
        .await
        .unwrap();
    t.call::<Value, _>("quick-run", ()).await.unwrap();
    eventually("an idle handle runs nothing", LONG, || async {
        h.running(&t) == 0
    })
    .await;
    let a = t.submit(Job::new("gated-run", 1)).await.unwrap();
    let b = t.submit(Job::new("gated-run", 2)).await.unwrap();
    within("two attempts started", LONG, started.reach(2)).await;
    assert_eq!(h.running(&t), 2, "two attempts run");
    gate.open();
    within("gated jobs", LONG, a.wait()).await.unwrap();
    within("gated jobs", LONG, b.wait()).await.unwrap();
    eventually("an idle handle runs nothing again", LONG, || async {
        h.running(&t) == 0
    })
    .await;
}

/// Many commands submitted at once all complete, spread over the whole pool, and the attempt
/// counter of a run-once job says 1.
pub async fn many_jobs_spread_over_pool(h: &dyn Harness) {
    const POOL: usize = 5;
    let t = h.task(TaskOptions::new().with_pool(POOL)).await;
    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    let inside = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let (i, m) = (inside.clone(), max.clone());
    t.register(Command::new("spread", move |input| {
        a.fetch_max(input.attempt(), Ordering::SeqCst);
        let (i, m) = (i.clone(), m.clone());
        async move {
            let now = i.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            // Some work, so that jobs overlap.
            tokio::time::sleep(Duration::from_millis(20)).await;
            i.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    }))
    .await
    .unwrap();
    let jobs: Vec<_> = futures::future::join_all((0..60).map(|_| t.submit(Job::new("spread", ()))))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for job in &jobs {
        within("spread job", LONG, job.wait()).await.unwrap();
    }
    let max = max.load(Ordering::SeqCst);
    assert!(max <= POOL, "{max} ran at once on a pool of {POOL}");
    assert!(max >= 2, "60 jobs on a pool of {POOL} never overlapped");
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

/// Command names that share a prefix, or differ only by an encoded character, are separate.
pub async fn commands_do_not_interfere(h: &dyn Harness) {
    let t = h.task(opts()).await;
    let names = ["a", "a/b", "ab", "a%2Fb", "a b", "a/", "ä", "a/b/c"];
    for n in names {
        t.register(Command::new(n, move |_| async move { Ok(n) }))
            .await
            .unwrap();
    }
    let mut jobs = Vec::new();
    for n in names {
        jobs.push((n, t.submit(Job::new(n, ())).await.unwrap()));
    }
    for (n, job) in jobs {
        assert_eq!(job.command(), n);
        assert_eq!(within("job", LONG, job.wait()).await.unwrap(), json!(n));
    }
}

/// Registering a command again replaces its code for the jobs that run afterwards.
pub async fn register_replaces_command(h: &dyn Harness) {
    let t = h.task(opts()).await;
    t.register(Command::new("version", |_| async { Ok(1) }))
        .await
        .unwrap();
    assert_eq!(t.call::<u32, _>("version", ()).await.unwrap(), 1);
    t.register(Command::new("version", |_| async { Ok(2) }))
        .await
        .unwrap();
    assert_eq!(t.call::<u32, _>("version", ()).await.unwrap(), 2);
}

async fn generic_call(t: &impl Task, n: u32) -> u32 {
    t.call("inc", n).await.unwrap()
}

/// `Arc<dyn Task>`, `Box<dyn Task>`, generic code over `impl Task`, and `TaskExt` all work.
pub async fn dyn_and_generic_use(h: &dyn Harness) {
    let t: Arc<dyn Task> = h.task(opts()).await;
    t.register(Command::typed("inc", |n: u32| async move { Ok(n + 1) }))
        .await
        .unwrap();
    assert_eq!(generic_call(&t, 1).await, 2);
    let boxed: Box<dyn Task> = Box::new(t.clone());
    assert_eq!(generic_call(&boxed, 2).await, 3);
    let job = boxed.submit(Job::new("inc", 41)).await.unwrap();
    assert_eq!(job.wait_as::<u32>().await.unwrap(), 42);
    assert!(format!("{job:?}").contains("inc"));
}
