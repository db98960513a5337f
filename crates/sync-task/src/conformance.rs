//! The conformance suite: the guarantees every task backend gives, checked the same way.
//!
//! A backend provides a [`Harness`] and runs the whole suite with one macro line:
//!
//! ```text
//! sync_task::task_conformance!(local, LocalHarness::default());
//! ```
//!
//! which expands to one `#[tokio::test]` per guarantee inside a module named for the backend
//! (`local::every_job_runs_once`, …). Extra attributes (such as `#[ignore = "…"]` for tests that
//! need a server) follow the harness expression.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{
    Backoff, Command, CommandError, Error, Failure, Job, JobId, JobStatus, Task, TaskExt,
    TaskOptions, MAX_NAME_LEN,
};

/// What the suite needs from a backend beyond the [`Task`] trait.
pub trait Harness: Send + Sync {
    /// A new handle on the backend under test (for a distributed backend: its own connection,
    /// as another process would have). Jobs submitted through any handle of one harness may run
    /// on any of its handles that registered their command.
    fn task(&self, options: TaskOptions) -> BoxFuture<'_, Arc<dyn Task>>;
    /// Another handle on the same jobs as `worker` (etcd: a new connection, as another process
    /// would have; local: `worker` itself, the only pool that runs its jobs).
    fn peer<'a>(&'a self, worker: &'a Arc<dyn Task>) -> BoxFuture<'a, Arc<dyn Task>>;
    /// How many attempts run on `worker` right now (`LocalTask::running`, `EtcdTask::running`).
    fn running(&self, worker: &Arc<dyn Task>) -> usize;
    /// Runs `worker`'s claim path once for job `job` (what its dispatcher does before an
    /// attempt starts: etcd, the claim transaction under its lease; local, taking a pool slot),
    /// then hands the job back without using up an attempt. Whether it claimed the job. The
    /// suite drops this future at every poll: it must leave no claim behind.
    fn claim<'a>(&'a self, worker: &'a Arc<dyn Task>, job: &'a JobId) -> BoxFuture<'a, bool>;
    /// How many job records the backend of `worker` stores (pending, running, or finished
    /// within their retention).
    fn stored_jobs<'a>(&'a self, worker: &'a Arc<dyn Task>) -> BoxFuture<'a, usize>;
    /// How much longer than its retention a finished job may stay stored.
    fn expiry_slack(&self) -> Duration;
    /// Whether a job still running when its worker's shutdown grace ends is handed back to
    /// other workers (distributed backends) rather than failed.
    fn hands_back(&self) -> bool;
}

/// The timeout that fails a test waiting for something that should happen.
const LONG: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, d: Duration, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(d, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {d:?}: {what}"))
}

/// Polls `cond` until it holds, failing the test after `within`. This waits on an event in the
/// backend, checked by reading its state; it is not a sleep standing in for synchronisation.
async fn eventually<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return;
        }
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A gate that commands wait at until the test opens it.
#[derive(Clone)]
struct Gate(Arc<tokio::sync::watch::Sender<bool>>);

impl Gate {
    fn new() -> Self {
        Gate(Arc::new(tokio::sync::watch::Sender::new(false)))
    }
    fn open(&self) {
        self.0.send_replace(true);
    }
    async fn pass(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// Counts how many times something happened, and lets a test wait for a count.
#[derive(Clone, Default)]
struct Counter(Arc<tokio::sync::watch::Sender<usize>>);

impl Counter {
    fn bump(&self) {
        self.0.send_modify(|n| *n += 1);
    }
    fn get(&self) -> usize {
        *self.0.borrow()
    }
    async fn reach(&self, n: usize) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|c| *c >= n).await;
    }
}

/// Holds the operation under a cancel-at-every-poll sweep so that the check after a drop can
/// drop it for real first. (`sync_core::check::cancel_at_every_poll` pins the operation on its
/// stack and drops only the `Pin<&mut _>`: the operation itself would stay alive, with its drop
/// guards not run, until after the check.)
struct Slot<'a, T>(Mutex<Option<BoxFuture<'a, T>>>);

impl<'a, T> Slot<'a, T> {
    fn new() -> Self {
        Slot(Mutex::new(None))
    }

    /// Puts `op` in the slot; the returned future polls it.
    fn fill(&self, op: BoxFuture<'a, T>) -> SlotFuture<'_, 'a, T> {
        *self.0.lock().unwrap() = Some(op);
        SlotFuture(self)
    }

    /// Drops the operation now.
    fn drop_now(&self) {
        let op = self.0.lock().unwrap().take();
        drop(op);
    }
}

struct SlotFuture<'s, 'a, T>(&'s Slot<'a, T>);

impl<T> std::future::Future for SlotFuture<'_, '_, T> {
    type Output = T;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<T> {
        match (self.0).0.lock().unwrap().as_mut() {
            Some(op) => op.as_mut().poll(cx),
            None => std::task::Poll::Pending,
        }
    }
}

/// Bumps a counter when dropped: shows that a cancelled command's future was dropped.
struct DropFlag(Counter);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.bump();
    }
}

fn opts() -> TaskOptions {
    TaskOptions::new().with_pool(4)
}

fn fast(job: Job) -> Job {
    job.with_backoff(Backoff::new(
        Duration::from_millis(10),
        Duration::from_millis(50),
    ))
}

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

/// A command that keeps failing ends in the failed state after its last attempt, with its last
/// error, reported by `wait` (typed) and by `status`.
pub async fn final_failed_state_after_last_attempt(h: &dyn Harness) {
    let t = h.task(opts()).await;
    let runs = Counter::default();
    let r = runs.clone();
    t.register(Command::new("always-fails", move |input| {
        r.bump();
        async move { Err::<(), _>(CommandError::msg(format!("boom {}", input.attempt()))) }
    }))
    .await
    .unwrap();
    let job = t
        .submit(fast(Job::new("always-fails", ())).with_max_attempts(2))
        .await
        .unwrap();
    let e = within("failed job", LONG, job.wait()).await.unwrap_err();
    match &e {
        Error::Failed {
            command,
            job: id,
            attempts,
            message,
        } => {
            assert_eq!(command, "always-fails");
            assert_eq!(id, job.id());
            assert_eq!(*attempts, 2);
            assert_eq!(message, "boom 2");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(e.is_retryable());
    assert!(e.to_string().contains(job.id().as_str()), "{e}");
    assert_eq!(runs.get(), 2);
    match job.status().await.unwrap() {
        JobStatus::Failed {
            attempts: 2,
            failure: Failure::Error { message },
        } => assert_eq!(message, "boom 2"),
        other => panic!("unexpected status {other:?}"),
    }
}

/// A panicking command fails its attempt with `Panicked` (retried like an error); the pool
/// survives and runs the next job.
pub async fn panic_becomes_error(h: &dyn Harness) {
    let t = h.task(TaskOptions::new().with_pool(1)).await;
    let runs = Counter::default();
    let r = runs.clone();
    t.register(Command::new("panics", move |input| {
        r.bump();
        async move {
            if input.attempt() < 2 {
                panic!("kaboom in attempt {}", input.attempt());
            }
            Ok::<_, CommandError>(input.attempt())
        }
    }))
    .await
    .unwrap();
    t.register(Command::new(
        "panics-early",
        |_| -> futures::future::Ready<Result<(), CommandError>> {
            panic!("kaboom before any future")
        },
    ))
    .await
    .unwrap();
    // Retried after the panic, then succeeds.
    let job = t.submit(fast(Job::new("panics", ()))).await.unwrap();
    assert_eq!(within("retried", LONG, job.wait()).await.unwrap(), json!(2));
    assert_eq!(runs.get(), 2);
    // The last attempt panics: typed error with the message.
    let job = t
        .submit(Job::new("panics-early", ()).with_max_attempts(1))
        .await
        .unwrap();
    match within("panicked", LONG, job.wait()).await.unwrap_err() {
        Error::Panicked {
            command, message, ..
        } => {
            assert_eq!(command, "panics-early");
            assert!(message.contains("kaboom before any future"), "{message}");
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    let e = t
        .run(Command::new("panics-in-run", |_| async {
            if true {
                panic!("kaboom in run");
            }
            Ok(())
        }))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Panicked { .. }), "{e:?}");
    // The pool (of one) still works.
    let ok = t.run(Command::new("after", |_| async { Ok(7) })).await;
    assert_eq!(ok.unwrap(), json!(7));
}

/// Failed attempts are retried after exponentially growing pauses; the command sees its
/// attempt number, and a fencing token that increases from one attempt to the next.
pub async fn retries_with_exponential_backoff(h: &dyn Harness) {
    let t = h.task(opts()).await;
    let times: Arc<Mutex<Vec<(u32, Instant)>>> = Default::default();
    let fences: Arc<Mutex<Vec<u64>>> = Default::default();
    let (tm, fc) = (times.clone(), fences.clone());
    t.register(Command::new("third-time-lucky", move |input| {
        tm.lock().unwrap().push((input.attempt(), Instant::now()));
        fc.lock().unwrap().push(input.fencing_token());
        async move {
            if input.attempt() < 3 {
                Err(CommandError::msg("not yet"))
            } else {
                Ok(input.attempt())
            }
        }
    }))
    .await
    .unwrap();
    let backoff = Backoff::new(Duration::from_millis(150), Duration::from_secs(5));
    let job = t
        .submit(
            Job::new("third-time-lucky", ())
                .with_max_attempts(4)
                .with_backoff(backoff),
        )
        .await
        .unwrap();
    assert_eq!(
        within("retried job", LONG, job.wait()).await.unwrap(),
        json!(3)
    );
    let times = times.lock().unwrap().clone();
    let attempts: Vec<u32> = times.iter().map(|(a, _)| *a).collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    let gap1 = times[1].1 - times[0].1;
    let gap2 = times[2].1 - times[1].1;
    assert!(gap1 >= backoff.delay(1), "first pause {gap1:?}");
    assert!(gap2 >= backoff.delay(2), "second pause {gap2:?}");
    let fences = fences.lock().unwrap().clone();
    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens do not increase from one attempt to the next: {fences:?}"
    );
    assert!(matches!(
        job.status().await.unwrap(),
        JobStatus::Succeeded { attempts: 3, .. }
    ));
}

/// An error marked permanent is not retried.
pub async fn permanent_error_not_retried(h: &dyn Harness) {
    let t = h.task(opts()).await;
    let runs = Counter::default();
    let r = runs.clone();
    t.register(Command::new("no-such-user", move |_| {
        r.bump();
        async { Err::<(), _>(CommandError::permanent("user 7 does not exist")) }
    }))
    .await
    .unwrap();
    let job = t
        .submit(fast(Job::new("no-such-user", ())).with_max_attempts(5))
        .await
        .unwrap();
    let e = within("failed job", LONG, job.wait()).await.unwrap_err();
    assert!(matches!(e, Error::Failed { attempts: 1, .. }), "{e:?}");
    assert_eq!(runs.get(), 1);
}

/// An attempt that runs past the job's timeout is cancelled (its future dropped) and counts as
/// failed; the last one fails the job with `TimedOut`.
pub async fn timeout_cancels_attempt(h: &dyn Harness) {
    let t = h.task(opts()).await;
    let (started, dropped) = (Counter::default(), Counter::default());
    let (s, d) = (started.clone(), dropped.clone());
    t.register(Command::new("hangs", move |_| {
        s.bump();
        let flag = DropFlag(d.clone());
        async move {
            let _flag = flag;
            std::future::pending::<()>().await;
            Ok(())
        }
    }))
    .await
    .unwrap();
    let timeout = Duration::from_millis(200);
    let job = t
        .submit(
            fast(Job::new("hangs", ()))
                .with_max_attempts(2)
                .with_timeout(timeout),
        )
        .await
        .unwrap();
    match within("timed-out job", LONG, job.wait()).await.unwrap_err() {
        Error::TimedOut {
            attempts, after, ..
        } => {
            assert_eq!(attempts, 2);
            assert_eq!(after, timeout);
        }
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert_eq!(started.get(), 2);
    within("cancelled futures dropped", LONG, dropped.reach(2)).await;
}

/// Submitting again with the idempotency key of a live (or retained) job returns that job; the
/// command runs once.
pub async fn idempotency_key_returns_first_job(h: &dyn Harness) {
    let t = h.task(opts()).await;
    let peer = h.peer(&t).await;
    let runs = Counter::default();
    let gate = Gate::new();
    let (r, g) = (runs.clone(), gate.clone());
    t.register(Command::typed("charge", move |cents: u64| {
        r.bump();
        let g = g.clone();
        async move {
            g.pass().await;
            Ok(format!("charged {cents}"))
        }
    }))
    .await
    .unwrap();
    let key = "order-1001/charge";
    let first = t
        .submit(Job::new("charge", 500).with_idempotency_key(key))
        .await
        .unwrap();
    let again = peer
        .submit(Job::new("charge", 999).with_idempotency_key(key))
        .await
        .unwrap();
    assert_eq!(
        again.id(),
        first.id(),
        "a duplicate submission made a new job"
    );
    gate.open();
    assert_eq!(
        within("charged", LONG, again.wait()).await.unwrap(),
        json!("charged 500")
    );
    // Still the same job once it finished (within its retention).
    let late = t
        .submit(Job::new("charge", 1).with_idempotency_key(key))
        .await
        .unwrap();
    assert_eq!(late.id(), first.id());
    assert_eq!(late.wait().await.unwrap(), json!("charged 500"));
    assert_eq!(runs.get(), 1);
    // Another key is another job.
    let other = t
        .submit(Job::new("charge", 2).with_idempotency_key("order-1002/charge"))
        .await
        .unwrap();
    assert_ne!(other.id(), first.id());
    assert_eq!(other.wait().await.unwrap(), json!("charged 2"));
}

/// A job's status and outcome can be asked for later by id, from another handle.
pub async fn status_and_wait_by_id(h: &dyn Harness) {
    let t = h.task(opts()).await;
    let peer = h.peer(&t).await;
    let gate = Gate::new();
    let started = Counter::default();
    let (g, s) = (gate.clone(), started.clone());
    t.register(Command::typed("slow-echo", move |v: Value| {
        let (g, s) = (g.clone(), s.clone());
        async move {
            s.bump();
            g.pass().await;
            Ok(v)
        }
    }))
    .await
    .unwrap();
    let job = t
        .submit(Job::new("slow-echo", json!({"k": [1, 2]})))
        .await
        .unwrap();
    let id: JobId = job.id().clone();
    within("job started", LONG, started.reach(1)).await;
    eventually("status shows the attempt running", LONG, || async {
        matches!(
            peer.status(&id).await.unwrap(),
            JobStatus::Running { attempt: 1, .. }
        )
    })
    .await;
    gate.open();
    assert_eq!(
        within("wait by id", LONG, peer.wait(&id)).await.unwrap(),
        json!({"k": [1, 2]})
    );
    match peer.status(&id).await.unwrap() {
        JobStatus::Succeeded { attempts, output } => {
            assert_eq!(attempts, 1);
            assert_eq!(output, json!({"k": [1, 2]}));
        }
        other => panic!("unexpected status {other:?}"),
    }
    for unknown in ["0123456789abcdef", "a/b", "", "../../x"] {
        let id = JobId::from(unknown);
        let e = peer.status(&id).await.unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{unknown:?}: {e:?}");
        let e = peer.wait(&id).await.unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{unknown:?}: {e:?}");
    }
}

/// A finished job is dropped after its retention: its status is `NotFound`, the backend no
/// longer stores it, and its idempotency key is free again.
pub async fn finished_jobs_expire(h: &dyn Harness) {
    let t = h.task(opts()).await;
    t.register(Command::new("short-lived", |_| async { Ok("done") }))
        .await
        .unwrap();
    let retention = Duration::from_secs(1);
    let job = t
        .submit(
            Job::new("short-lived", ())
                .with_retention(retention)
                .with_idempotency_key("once"),
        )
        .await
        .unwrap();
    assert_eq!(job.wait().await.unwrap(), json!("done"));
    let finished = Instant::now();
    assert!(
        h.stored_jobs(&t).await > 0,
        "the result was not kept at all"
    );
    assert!(job.status().await.unwrap().is_finished());
    let bound = retention + h.expiry_slack();
    eventually("the finished job expired", bound + LONG, || async {
        h.stored_jobs(&t).await == 0
    })
    .await;
    assert!(
        finished.elapsed() <= bound,
        "the job was dropped {:?} after it finished, later than retention + slack ({bound:?})",
        finished.elapsed()
    );
    assert!(matches!(
        job.status().await.unwrap_err(),
        Error::NotFound { .. }
    ));
    let fresh = t
        .submit(Job::new("short-lived", ()).with_idempotency_key("once"))
        .await
        .unwrap();
    assert_ne!(fresh.id(), job.id(), "the idempotency key outlived its job");
    fresh.wait().await.unwrap();
}

/// Submitting a command nobody registered is a typed error, unless the job may wait for a
/// worker: then it runs once one registers.
pub async fn unknown_command_is_typed_error(h: &dyn Harness) {
    let t = h.task(opts()).await;
    let e = t.submit(Job::new("nobody-does-this", 1)).await.unwrap_err();
    match &e {
        Error::UnknownCommand { command } => assert_eq!(command, "nobody-does-this"),
        other => panic!("expected UnknownCommand, got {other:?}"),
    }
    assert!(e.to_string().contains("nobody-does-this"));
    let e = t.call::<Value, _>("nobody-does-this", 1).await.unwrap_err();
    assert!(matches!(e, Error::UnknownCommand { .. }), "{e:?}");
    assert_eq!(h.stored_jobs(&t).await, 0, "a rejected job was stored");

    let job = t
        .submit(Job::new("late-worker", 20).with_wait_for_worker(true))
        .await
        .unwrap();
    assert!(matches!(
        job.status().await.unwrap(),
        JobStatus::Pending { attempts: 0, .. }
    ));
    t.register(Command::typed(
        "late-worker",
        |n: u32| async move { Ok(n + 1) },
    ))
    .await
    .unwrap();
    assert_eq!(
        within("late job", LONG, job.wait()).await.unwrap(),
        json!(21)
    );
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Resize {
    width: u32,
    height: u32,
}

/// A payload the command cannot deserialise fails the job at once with `BadPayload`; a payload
/// that cannot be serialised is rejected at submission.
pub async fn bad_payload_is_typed_error(h: &dyn Harness) {
    let t = h.task(opts()).await;
    let runs = Counter::default();
    let r = runs.clone();
    t.register(Command::typed("resize", move |p: Resize| {
        r.bump();
        async move { Ok(p.width * p.height) }
    }))
    .await
    .unwrap();
    let job = t
        .submit(Job::new("resize", json!({"width": "wide"})).with_max_attempts(3))
        .await
        .unwrap();
    match within("bad payload", LONG, job.wait()).await.unwrap_err() {
        Error::BadPayload {
            command,
            job: Some(id),
            reason,
        } => {
            assert_eq!(command, "resize");
            assert_eq!(&id, job.id());
            assert!(
                reason.contains("width") || reason.contains("invalid"),
                "{reason}"
            );
        }
        other => panic!("expected BadPayload, got {other:?}"),
    }
    assert_eq!(runs.get(), 0, "the command ran on a payload it cannot read");
    assert!(matches!(
        job.status().await.unwrap(),
        JobStatus::Failed {
            attempts: 1,
            failure: Failure::BadPayload { .. }
        }
    ));
    // A good payload still works, and the output can be read back typed.
    let area: u32 = t
        .call(
            "resize",
            Resize {
                width: 3,
                height: 4,
            },
        )
        .await
        .unwrap();
    assert_eq!(area, 12);
    // Not serialisable at all (a map with non-string keys).
    let unserialisable: HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
    let e = t
        .submit(Job::new("resize", unserialisable))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::BadPayload { job: None, .. }), "{e:?}");
    // Output that does not deserialise into what the caller asks for.
    let job = t
        .submit(Job::new(
            "resize",
            Resize {
                width: 1,
                height: 1,
            },
        ))
        .await
        .unwrap();
    let e = job.wait_as::<String>().await.unwrap_err();
    assert!(matches!(e, Error::BadPayload { job: Some(_), .. }), "{e:?}");
}

/// Empty, oversized and NUL-containing command names and idempotency keys, and impossible
/// options, are typed errors; nothing is stored.
pub async fn invalid_input_rejected(h: &dyn Harness) {
    let t = h.task(opts()).await;
    let long = "x".repeat(MAX_NAME_LEN + 1);
    for bad in ["", long.as_str(), "a\0b"] {
        let e = t
            .register(Command::new(bad, |_| async { Ok(()) }))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "{e:?}");
        assert!(!e.is_retryable());
        assert!(e.to_string().len() < 300, "error message too long: {e}");
        let e = t.submit(Job::new(bad, ())).await.unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "{e:?}");
        let e = t
            .run(Command::new(bad, |_| async { Ok(()) }))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "{e:?}");
    }
    t.register(Command::new("valid", |_| async { Ok(()) }))
        .await
        .unwrap();
    let e = t
        .submit(Job::new("valid", ()).with_idempotency_key(""))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidName {
                what: "idempotency key",
                ..
            }
        ),
        "{e:?}"
    );
    let bad_options = [
        Job::new("valid", ()).with_max_attempts(0),
        Job::new("valid", ()).with_retention(Duration::from_millis(10)),
        Job::new("valid", ()).with_timeout(Duration::ZERO),
        Job::new("valid", ())
            .with_backoff(Backoff::new(Duration::from_secs(2), Duration::from_secs(1))),
    ];
    for job in bad_options {
        let e = t.submit(job.clone()).await.unwrap_err();
        assert!(matches!(e, Error::InvalidOptions { .. }), "{job:?}: {e:?}");
        assert!(e.to_string().contains("valid"), "{e}");
    }
    assert_eq!(h.stored_jobs(&t).await, 0, "a rejected job was stored");
    // The longest valid name, and non-ASCII names, work.
    let longest = "y".repeat(MAX_NAME_LEN);
    assert_eq!(
        t.run(Command::new(longest, |_| async { Ok(1) }))
            .await
            .unwrap(),
        json!(1)
    );
    assert_eq!(
        t.run(Command::new("名前/ünïcode 🚀", |_| async { Ok(2) }))
            .await
            .unwrap(),
        json!(2)
    );
}

/// `shutdown` stops new work at once but lets running jobs finish; afterwards the handle's
/// register, submit and run fail with `ShutDown`, while reads still work.
pub async fn shutdown_lets_running_jobs_finish(h: &dyn Harness) {
    let t = h.task(opts().with_shutdown_grace(LONG)).await;
    let gate = Gate::new();
    let started = Counter::default();
    let (g, s) = (gate.clone(), started.clone());
    t.register(Command::new("finishing", move |_| {
        let (g, s) = (g.clone(), s.clone());
        async move {
            s.bump();
            g.pass().await;
            Ok("finished")
        }
    }))
    .await
    .unwrap();
    let job = t.submit(Job::new("finishing", ())).await.unwrap();
    within("job started", LONG, started.reach(1)).await;
    let stopping = Arc::new(AtomicBool::new(false));
    let shutdown = {
        let (t, stopping) = (t.clone(), stopping.clone());
        tokio::spawn(async move {
            let r = t.shutdown().await;
            stopping.store(true, Ordering::SeqCst);
            r
        })
    };
    eventually("new work refused once shutdown began", LONG, || async {
        matches!(
            t.register(Command::new("probe", |_| async { Ok(()) }))
                .await,
            Err(Error::ShutDown { .. })
        )
    })
    .await;
    let e = t.submit(Job::new("finishing", ())).await.unwrap_err();
    assert!(matches!(e, Error::ShutDown { .. }), "{e:?}");
    assert!(
        !stopping.load(Ordering::SeqCst),
        "shutdown returned while a job was still running"
    );
    let e = t
        .register(Command::new("late", |_| async { Ok(()) }))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ShutDown { .. }), "{e:?}");
    let e = t
        .run(Command::new("late", |_| async { Ok(()) }))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ShutDown { .. }), "{e:?}");
    gate.open();
    within("shutdown after the job finished", LONG, shutdown)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        within("finished job", LONG, job.wait()).await.unwrap(),
        json!("finished")
    );
    assert!(t.status(job.id()).await.unwrap().is_finished());
    assert_eq!(started.get(), 1);
}

/// A job still running when the shutdown grace ends is cancelled (its future dropped): handed
/// back to other workers without using up an attempt on distributed backends, failed with
/// `ShutDown` otherwise.
pub async fn shutdown_after_grace_cancels_running_jobs(h: &dyn Harness) {
    let grace = Duration::from_millis(300);
    let t = h.task(opts().with_shutdown_grace(grace)).await;
    let (started, dropped) = (Counter::default(), Counter::default());
    let (s, d) = (started.clone(), dropped.clone());
    t.register(Command::new("endless", move |_| {
        s.bump();
        let flag = DropFlag(d.clone());
        async move {
            let _flag = flag;
            std::future::pending::<()>().await;
            Ok("never")
        }
    }))
    .await
    .unwrap();
    let job = t.submit(Job::new("endless", ())).await.unwrap();
    within("job started", LONG, started.reach(1)).await;
    let begun = Instant::now();
    within("shutdown past its grace", LONG, t.shutdown())
        .await
        .unwrap();
    assert!(
        begun.elapsed() >= grace,
        "shutdown did not wait for its grace"
    );
    within("cancelled future dropped", LONG, dropped.reach(1)).await;
    if h.hands_back() {
        let peer = h.peer(&t).await;
        eventually("job handed back", LONG, || async {
            matches!(
                peer.status(job.id()).await.unwrap(),
                JobStatus::Pending { attempts: 0, .. }
            )
        })
        .await;
        let next = h.task(opts()).await;
        next.register(Command::new("endless", |input| async move {
            Ok(format!(
                "finished by the next worker, attempt {}",
                input.attempt()
            ))
        }))
        .await
        .unwrap();
        assert_eq!(
            within("handed-back job finished", LONG, next.wait(job.id()))
                .await
                .unwrap(),
            json!("finished by the next worker, attempt 1")
        );
    } else {
        match within("cancelled job", LONG, job.wait()).await.unwrap_err() {
            Error::ShutDown { command } => assert_eq!(command.as_deref(), Some("endless")),
            other => panic!("expected ShutDown, got {other:?}"),
        }
    }
    assert_eq!(started.get(), 1);
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

/// Nothing a caller passes panics a task or leaves a job stuck: a backoff of `Duration::MAX`
/// saturates (the retry is scheduled far ahead, not at once, and the job is pending, not stuck
/// running); a `Duration::MAX` timeout, the longest retention and `u32::MAX` attempts run
/// normally; a shutdown with an unbounded grace returns once nothing runs.
pub async fn extreme_options_never_panic_or_stick(h: &dyn Harness) {
    let t = h.task(opts()).await;
    let runs = Counter::default();
    let r = runs.clone();
    t.register(Command::new("fails-slowly-retried", move |_| {
        r.bump();
        async { Err::<(), _>(CommandError::msg("not now")) }
    }))
    .await
    .unwrap();
    let job = t
        .submit(
            Job::new("fails-slowly-retried", ())
                .with_max_attempts(2)
                .with_backoff(Backoff::new(Duration::MAX, Duration::MAX)),
        )
        .await
        .unwrap();
    let far = std::time::SystemTime::now() + Duration::from_secs(300 * 24 * 3600);
    eventually(
        "the failed attempt's retry is scheduled far ahead (pending, not stuck running, not retried at once)",
        LONG,
        || async {
            matches!(
                job.status().await.unwrap(),
                JobStatus::Pending { attempts: 1, not_before: Some(at), .. } if at > far
            )
        },
    )
    .await;
    assert_eq!(runs.get(), 1, "the retry did not wait for its backoff");

    t.register(Command::new("extreme-ok", |input| async move {
        Ok(input.attempt())
    }))
    .await
    .unwrap();
    let job = t
        .submit(
            Job::new("extreme-ok", ())
                .with_timeout(Duration::MAX)
                .with_retention(crate::MAX_RETENTION)
                .with_max_attempts(u32::MAX)
                .with_backoff(Backoff::new(Duration::ZERO, Duration::MAX)),
        )
        .await
        .unwrap();
    assert_eq!(
        within("job with extreme options", LONG, job.wait())
            .await
            .unwrap(),
        json!(1)
    );

    let s = h.task(opts().with_shutdown_grace(Duration::MAX)).await;
    s.register(Command::new("before-shutdown", |_| async { Ok(()) }))
        .await
        .unwrap();
    s.submit(Job::new("before-shutdown", ()))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    within("shutdown with an unbounded grace", LONG, s.shutdown())
        .await
        .unwrap();
}

/// A payload above the size limit is refused at once (before anything is sent), with an error
/// that is not retryable; nothing is stored.
pub async fn oversized_payload_is_refused_at_once(h: &dyn Harness) {
    let t = h.task(opts()).await;
    t.register(Command::typed(
        "sized",
        |s: String| async move { Ok(s.len()) },
    ))
    .await
    .unwrap();
    for bytes in [1_677_722usize, 2_621_440] {
        let big = "x".repeat(bytes);
        let started = Instant::now();
        let e = within("oversized submit", LONG, t.submit(Job::new("sized", big)))
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a {bytes}-byte payload was refused only after {:?}: {e}",
            started.elapsed()
        );
        assert!(!e.is_retryable(), "{bytes}-byte payload: {e:?}");
    }
    assert_eq!(h.stored_jobs(&t).await, 0, "a refused job was stored");
}

/// A timeout below a millisecond is rounded up to whole milliseconds, the same on every backend
/// (never down to zero).
pub async fn sub_millisecond_timeout_rounds_up(h: &dyn Harness) {
    let t = h.task(opts()).await;
    t.register(Command::new("never-ends", |_| async {
        std::future::pending::<()>().await;
        Ok(())
    }))
    .await
    .unwrap();
    let job = t
        .submit(
            Job::new("never-ends", ())
                .with_max_attempts(1)
                .with_timeout(Duration::from_micros(999)),
        )
        .await
        .unwrap();
    match within("timed-out job", LONG, job.wait()).await.unwrap_err() {
        Error::TimedOut { after, .. } => assert_eq!(after, Duration::from_millis(1)),
        other => panic!("expected TimedOut, got {other:?}"),
    }
}

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
    let slot = Slot::new();
    let sweep = crate::__core::check::cancel_at_every_poll(
        "submit",
        200,
        || {
            let n = next.fetch_add(1, Ordering::SeqCst);
            slot.fill(t.submit(Job::new("submitted", u64::from(n)).with_idempotency_key(key(n))))
        },
        |polls| {
            slot.drop_now();
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
        crate::__core::check::Sweep::Completed { output, polls } => {
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
    let slot = Slot::new();
    let sweep = crate::__core::check::cancel_at_every_poll(
        "claim",
        200,
        || slot.fill(h.claim(&a, &id)),
        |polls| {
            slot.drop_now();
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
        crate::__core::check::Sweep::Completed { output, polls } => {
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

/// Expands to one test per guarantee of the suite, in a module named for the backend.
#[macro_export]
macro_rules! task_conformance {
    ($backend:ident, $make:expr $(, #[$attr:meta])* $(,)?) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            use $crate::conformance as __suite;
            $crate::__core::conformance_cases!(__suite, $make, [$(#[$attr])*];
                seed_run_returns_output_and_errors,
                every_job_runs_once,
                pool_bound_never_exceeded,
                final_failed_state_after_last_attempt,
                panic_becomes_error,
                retries_with_exponential_backoff,
                permanent_error_not_retried,
                timeout_cancels_attempt,
                idempotency_key_returns_first_job,
                status_and_wait_by_id,
                finished_jobs_expire,
                unknown_command_is_typed_error,
                bad_payload_is_typed_error,
                invalid_input_rejected,
                shutdown_lets_running_jobs_finish,
                shutdown_after_grace_cancels_running_jobs,
                cancelled_wait_leaves_job_alone,
                commands_do_not_interfere,
                register_replaces_command,
                dyn_and_generic_use,
                many_jobs_spread_over_pool,
                extreme_options_never_panic_or_stick,
                oversized_payload_is_refused_at_once,
                sub_millisecond_timeout_rounds_up,
                cancelled_submit_leaves_nothing,
                running_counts_attempts_that_run,
                cancelled_claim_leaves_job_claimable,
            );
        }
    };
}
