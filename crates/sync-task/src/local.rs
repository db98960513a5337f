//! The in-process backend: commands run on a bounded pool of tokio tasks.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::future::Either;
use futures::FutureExt;
use serde_json::Value;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::exec::{self, Count, Counters, Tracker};
use crate::{
    check_name, Backoff, Command, Error, Failure, Input, Job, JobHandle, JobId, JobStatus, Result,
    Task, TaskOptions, TaskStats,
};

/// Commands run on a bounded pool of tokio tasks in this process: at most
/// [`pool`](TaskOptions::with_pool) attempts at once, the rest wait for a slot. Cheap to clone:
/// clones share the pool, the commands and the jobs.
///
/// Errors returned by a command reach the caller; a command that panics fails its attempt with
/// [`Error::Panicked`] and the pool carries on. Retries, timeouts, idempotency keys and
/// retention work as on every backend; jobs live in this process only.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use sync_task::{Command, Job, LocalTask, Task, TaskOptions};
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// let task = LocalTask::new(TaskOptions::new().with_pool(4))?;
/// let runs = Arc::new(AtomicUsize::new(0));
/// let r = runs.clone();
/// task.register(Command::new("count", move |_| {
///     let r = r.clone();
///     async move { Ok(r.fetch_add(1, Ordering::SeqCst)) }
/// }))
/// .await?;
/// let mut jobs = Vec::new();
/// for _ in 0..100 {
///     jobs.push(task.submit(Job::new("count", ())).await?);
/// }
/// for job in jobs {
///     job.wait().await?;
/// }
/// assert_eq!(runs.load(Ordering::SeqCst), 100);
/// # Ok::<(), sync_task::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct LocalTask {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTask")
            .field("pool", &self.inner.options.pool())
            .field("running", &self.running())
            .finish()
    }
}

impl Default for LocalTask {
    fn default() -> Self {
        Self::build(TaskOptions::default())
    }
}

struct Inner {
    options: TaskOptions,
    slots: Arc<Semaphore>,
    commands: RwLock<HashMap<String, Command>>,
    jobs: Mutex<Jobs>,
    closing: AtomicBool,
    stop: watch::Sender<bool>,
    tracker: Arc<Tracker>,
    next_id: AtomicU64,
    fence: AtomicU64,
    counters: Counters,
}

#[derive(Default)]
struct Jobs {
    records: HashMap<JobId, Arc<Record>>,
    idem: HashMap<String, JobId>,
    expiry: BinaryHeap<Reverse<(Instant, JobId)>>,
    /// Jobs submitted with `wait_for_worker` before their command was registered.
    waiting: HashMap<String, Vec<Queued>>,
}

struct Record {
    command: String,
    /// Where the job is; only its final value is announced through `done`, so a waiter is
    /// woken once.
    status: Mutex<JobStatus>,
    done: watch::Sender<bool>,
    idem: Option<String>,
}

impl Record {
    fn status(&self) -> MutexGuard<'_, JobStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, status: JobStatus) {
        *self.status() = status;
    }

    fn finish(&self, status: JobStatus) {
        self.set(status);
        self.done.send_replace(true);
    }
}

struct Queued {
    id: JobId,
    spec: Spec,
    payload: Value,
    record: Arc<Record>,
}

#[derive(Clone, Copy)]
struct Spec {
    max_attempts: u32,
    backoff: Backoff,
    timeout: Option<Duration>,
    retention: Duration,
}

impl Spec {
    /// The default options of [`Job`], for `run`.
    fn default_run() -> Self {
        Spec {
            max_attempts: crate::options::DEFAULT_MAX_ATTEMPTS,
            backoff: Backoff::default(),
            timeout: None,
            retention: crate::options::DEFAULT_RETENTION,
        }
    }

    fn of(job: &Job) -> Self {
        Spec {
            max_attempts: job.max_attempts(),
            backoff: job.backoff(),
            timeout: job.timeout(),
            retention: job.retention(),
        }
    }
}

impl Inner {
    fn jobs(&self) -> MutexGuard<'_, Jobs> {
        // Every critical section leaves the maps consistent: a poisoned lock is still usable.
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn command(&self, name: &str) -> Option<Command> {
        let commands = self.commands.read().unwrap_or_else(|p| p.into_inner());
        commands.get(name).cloned()
    }

    fn check_open(&self, command: &str) -> Result<()> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(Error::shut_down(command));
        }
        Ok(())
    }

    fn new_id(&self) -> JobId {
        local_id(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Drops the records of jobs finished longer than their retention ago.
    fn purge(jobs: &mut Jobs) {
        let now = Instant::now();
        while let Some(Reverse((at, _))) = jobs.expiry.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, id))) = jobs.expiry.pop() else {
                break;
            };
            if let Some(rec) = jobs.records.remove(&id) {
                if let Some(key) = &rec.idem {
                    if jobs.idem.get(key) == Some(&id) {
                        jobs.idem.remove(key);
                    }
                }
            }
        }
    }
}

/// The id of the `n`th local job: `local-` and `n` in lower-case hex. Formatted by hand on the
/// stack (one allocation, for the id itself): `write!` cost more than the rest of a short job.
fn local_id(n: u64) -> JobId {
    const PREFIX: &[u8] = b"local-";
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; PREFIX.len() + 16];
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    // Hex digits of `n`, at least one.
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, b) in buf[PREFIX.len()..PREFIX.len() + digits]
        .iter_mut()
        .enumerate()
    {
        *b = HEX[((n >> (4 * (digits - 1 - i))) & 0xf) as usize];
    }
    JobId::from(std::str::from_utf8(&buf[..PREFIX.len() + digits]).unwrap_or("local"))
}

impl LocalTask {
    /// A pool with these options; fails with [`Error::InvalidOptions`] for a pool of 0.
    pub fn new(options: TaskOptions) -> Result<Self> {
        options.validate()?;
        Ok(Self::build(options))
    }

    fn build(options: TaskOptions) -> Self {
        LocalTask {
            inner: Arc::new(Inner {
                slots: Arc::new(Semaphore::new(options.pool())),
                options,
                commands: Default::default(),
                jobs: Default::default(),
                closing: AtomicBool::new(false),
                stop: watch::Sender::new(false),
                tracker: Default::default(),
                next_id: AtomicU64::new(1),
                fence: AtomicU64::new(0),
                counters: Counters::default(),
            }),
        }
    }

    /// The options it was made with.
    pub fn options(&self) -> &TaskOptions {
        &self.inner.options
    }

    /// How many attempts run right now (at most the pool size).
    pub fn running(&self) -> usize {
        self.inner.counters.running()
    }

    /// The pool's claim path for one job, for the conformance suite (feature `conformance`):
    /// takes a pool slot for job `id` if it is pending, and gives it back at once. Whether it
    /// took one.
    #[cfg(feature = "conformance")]
    #[doc(hidden)]
    pub async fn claim_and_hand_back(&self, id: &JobId) -> Result<bool> {
        let pending = {
            let jobs = self.inner.jobs();
            jobs.records
                .get(id)
                .is_some_and(|r| matches!(*r.status(), JobStatus::Pending { .. }))
        };
        if !pending {
            return Ok(false);
        }
        let slot = self
            .inner
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::ShutDown { command: None })?;
        drop(slot);
        Ok(true)
    }

    /// How many job records it keeps (pending, running, or finished within their retention).
    pub fn stored_jobs(&self) -> usize {
        let mut jobs = self.inner.jobs();
        Inner::purge(&mut jobs);
        jobs.records.len()
    }

    /// What it did so far.
    pub fn stats(&self) -> TaskStats {
        self.inner.counters.snapshot()
    }

    fn handle(&self, id: JobId, command: &str) -> JobHandle {
        JobHandle::new(id, command, Arc::new(self.clone()))
    }

    fn install(&self, command: Command) -> Result<()> {
        check_name("command name", command.name())?;
        self.inner.check_open(command.name())?;
        {
            let commands = self
                .inner
                .commands
                .read()
                .unwrap_or_else(|p| p.into_inner());
            if commands
                .get(command.name())
                .is_some_and(|c| c.same_as(&command))
            {
                return Ok(());
            }
        }
        self.inner
            .commands
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(command.name().to_owned(), command.clone());
        let queued = self.inner.jobs().waiting.remove(command.name());
        for q in queued.into_iter().flatten() {
            self.spawn(
                command.clone(),
                q.id,
                q.payload,
                q.spec,
                Some(q.record),
                None,
            );
        }
        Ok(())
    }

    /// Runs the job on the pool in the background; the returned task ends with its outcome.
    fn spawn(
        &self,
        command: Command,
        id: JobId,
        payload: Value,
        spec: Spec,
        record: Option<Arc<Record>>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> tokio::task::JoinHandle<Result<Value>> {
        tokio::spawn(self.job(command, id, payload, spec, record, permit))
    }

    /// The job as a future that ends with its outcome, counted by the shutdown tracker from
    /// now until it is dropped.
    fn job(
        &self,
        command: Command,
        id: JobId,
        payload: Value,
        spec: Spec,
        record: Option<Arc<Record>>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> impl Future<Output = Result<Value>> + Send + 'static {
        let tracked = self.inner.tracker.enter();
        let inner = self.inner.clone();
        async move {
            let _tracked = tracked;
            drive(inner, command, id, payload, spec, record, permit).await
        }
    }
}

/// Runs a job's attempts, with backoff between them; records its status if it has a record.
/// `permit` is a pool slot already taken for the first attempt, if any.
async fn drive(
    inner: Arc<Inner>,
    command: Command,
    id: JobId,
    payload: Value,
    spec: Spec,
    record: Option<Arc<Record>>,
    mut permit: Option<OwnedSemaphorePermit>,
) -> Result<Value> {
    let set = |s: &dyn Fn() -> JobStatus| {
        if let Some(r) = &record {
            r.set(s());
        }
    };
    let attempts = AtomicU32::new(0);
    let body = async {
        loop {
            let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
            let slot = match permit.take() {
                Some(p) => p,
                None => match inner.slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return Err(Failure::ShutDown),
                },
            };
            set(&|| JobStatus::Running {
                attempt,
                worker: "local".to_owned(),
            });
            let input = Input {
                job: id.clone(),
                command: command.name_arc(),
                attempt,
                max_attempts: spec.max_attempts,
                fence: inner.fence.fetch_add(1, Ordering::Relaxed) + 1,
                payload: payload.clone(),
            };
            let r = exec::attempt(&command, input, spec.timeout, &inner.counters).await;
            drop(slot);
            match r {
                Ok(v) => return Ok(v),
                Err(f) if f.retry(attempt, spec.max_attempts) => {
                    inner.counters.bump(Count::Retried);
                    // At most MAX_BACKOFF (a year): it fits in a SystemTime and an Instant.
                    let delay = spec.backoff.delay(attempt);
                    let now = SystemTime::now();
                    let not_before = now.checked_add(delay).unwrap_or(now);
                    set(&|| JobStatus::Pending {
                        attempts: attempt,
                        not_before: Some(not_before),
                        last_failure: Some(f.failure.clone()),
                    });
                    tokio::time::sleep(delay).await;
                }
                Err(f) => return Err(f.failure),
            }
        }
    };
    // The shutdown signal is only listened to if the job does not finish in its first poll,
    // so a trivial job costs no registration.
    let stopped = async {
        let mut stop = inner.stop.subscribe();
        if stop.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let result = match futures::future::select(std::pin::pin!(body), std::pin::pin!(stopped)).await
    {
        Either::Left((r, _)) => r,
        Either::Right(((), _)) => Err(Failure::ShutDown),
    };
    let attempts = attempts.load(Ordering::Relaxed);
    match &result {
        Ok(_) => inner.counters.bump(Count::Succeeded),
        Err(_) => inner.counters.bump(Count::Failed),
    }
    if let Some(r) = &record {
        r.finish(match &result {
            Ok(output) => JobStatus::Succeeded {
                attempts,
                output: output.clone(),
            },
            Err(failure) => JobStatus::Failed {
                attempts,
                failure: failure.clone(),
            },
        });
        inner
            .jobs()
            .expiry
            .push(Reverse((Instant::now() + spec.retention, id.clone())));
    }
    result.map_err(|failure| Error::from_failure(command.name(), &id, attempts, failure))
}

impl Task for LocalTask {
    fn register(&self, command: Command) -> BoxFuture<'_, Result<()>> {
        futures::future::ready(self.install(command)).boxed()
    }

    /// All or nothing: the job is made when the future is first polled, in that poll, so a
    /// future dropped unpolled makes nothing.
    fn submit(&self, job: Job) -> BoxFuture<'_, Result<JobHandle>> {
        let submit = move || {
            let payload = job.validate()?.clone();
            let name = job.command();
            self.inner.check_open(name)?;
            let command = self.inner.command(name);
            if command.is_none() && !job.waits_for_worker() {
                return Err(Error::UnknownCommand {
                    command: name.to_owned(),
                });
            }
            let spec = Spec::of(&job);
            let mut jobs = self.inner.jobs();
            Inner::purge(&mut jobs);
            if let Some(key) = job.idempotency_key() {
                if let Some(id) = jobs.idem.get(key) {
                    let command = jobs.records[id].command.clone();
                    return Ok(self.handle(id.clone(), &command));
                }
            }
            let id = self.inner.new_id();
            let record = Arc::new(Record {
                command: name.to_owned(),
                status: Mutex::new(JobStatus::Pending {
                    attempts: 0,
                    not_before: None,
                    last_failure: None,
                }),
                done: watch::Sender::new(false),
                idem: job.idempotency_key().map(str::to_owned),
            });
            jobs.records.insert(id.clone(), record.clone());
            if let Some(key) = job.idempotency_key() {
                jobs.idem.insert(key.to_owned(), id.clone());
            }
            self.inner.counters.bump(Count::Submitted);
            match command {
                Some(command) => {
                    drop(jobs);
                    // Take a free slot now if there is one; else the job waits for one.
                    let permit = self.inner.slots.clone().try_acquire_owned().ok();
                    self.spawn(command, id.clone(), payload, spec, Some(record), permit);
                }
                None => jobs
                    .waiting
                    .entry(name.to_owned())
                    .or_default()
                    .push(Queued {
                        id: id.clone(),
                        spec,
                        payload,
                        record,
                    }),
            }
            Ok(self.handle(id, name))
        };
        futures::future::lazy(move |_| submit()).boxed()
    }

    fn status<'a>(&'a self, job: &'a JobId) -> BoxFuture<'a, Result<JobStatus>> {
        let mut jobs = self.inner.jobs();
        Inner::purge(&mut jobs);
        let record = job
            .is_well_formed()
            .then(|| jobs.records.get(job))
            .flatten();
        let status = match record {
            Some(r) => Ok(r.status().clone()),
            None => Err(Error::NotFound { job: job.clone() }),
        };
        futures::future::ready(status).boxed()
    }

    fn wait<'a>(&'a self, job: &'a JobId) -> BoxFuture<'a, Result<Value>> {
        async move {
            let record = {
                let mut jobs = self.inner.jobs();
                Inner::purge(&mut jobs);
                job.is_well_formed()
                    .then(|| jobs.records.get(job).cloned())
                    .flatten()
            };
            let record = record.ok_or_else(|| Error::NotFound { job: job.clone() })?;
            let mut done = record.done.subscribe();
            let _ = done.wait_for(|d| *d).await;
            let status = record.status().clone();
            status
                .outcome(&record.command, job)
                .unwrap_or_else(|| Err(Error::shut_down(&record.command)))
        }
        .boxed()
    }

    /// Registers `command` and runs it once on the pool, without keeping a job record. The
    /// caller waits for a free slot before the job is handed to the pool, as with a semaphore
    /// in front of `tokio::spawn`.
    fn run(&self, command: Command) -> BoxFuture<'_, Result<Value>> {
        async move {
            self.install(command.clone())?;
            let permit = self
                .inner
                .slots
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Error::shut_down(command.name()))?;
            let id = self.inner.new_id();
            let name = command.name_arc();
            let spec = Spec::default_run();
            let mut job = Box::pin(self.job(command, id, Value::Null, spec, None, Some(permit)));
            // The job's first poll runs here, in the caller's task, holding its slot: a job that
            // finishes in it (a short one) costs no task of its own and no wake-up. One that
            // does not is handed to the pool as a task, so that it runs on, as any spawned job,
            // if this future is dropped; the task's first poll registers its own wakers.
            // A panic outside the command (which `drive` catches) ends it as a failed spawned
            // task would.
            let first = std::future::poll_fn(|cx| {
                Poll::Ready(std::panic::catch_unwind(AssertUnwindSafe(|| {
                    job.as_mut().poll(cx)
                })))
            })
            .await;
            match first {
                Ok(Poll::Ready(r)) => r,
                Ok(Poll::Pending) => match tokio::spawn(job).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::shut_down(&name)),
                },
                Err(_) => Err(Error::shut_down(&name)),
            }
        }
        .boxed()
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<()>> {
        async move {
            let inner = &self.inner;
            inner.closing.store(true, Ordering::SeqCst);
            let waiting: Vec<Queued> = inner.jobs().waiting.drain().flat_map(|(_, v)| v).collect();
            for q in waiting {
                q.record.finish(JobStatus::Failed {
                    attempts: 0,
                    failure: Failure::ShutDown,
                });
                inner
                    .jobs()
                    .expiry
                    .push(Reverse((Instant::now() + q.spec.retention, q.id.clone())));
            }
            let grace = inner.options.shutdown_grace();
            if !inner.tracker.wait_idle(grace).await {
                tracing::warn!(
                    running = inner.tracker.count(),
                    ?grace,
                    "local task: jobs still running after the shutdown grace; cancelling them"
                );
                inner.stop.send_replace(true);
                inner.tracker.wait_idle(Duration::from_secs(5)).await;
            }
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering::SeqCst;

    use futures::StreamExt;
    use serde_json::json;
    use tokio::sync::Notify;

    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);

    #[test]
    fn ids_are_local_and_hex() {
        for n in [
            0,
            1,
            9,
            10,
            15,
            16,
            255,
            256,
            0xdead_beef,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let id = local_id(n);
            assert_eq!(id.as_str(), format!("local-{n:x}"));
            assert!(id.is_well_formed(), "{id}");
        }
    }

    /// A command that counts its starts, waits for `gate`, then counts its ends in `done`.
    fn gated(
        name: &str,
        gate: &Arc<Notify>,
        started: &Arc<AtomicUsize>,
        done: &Arc<watch::Sender<usize>>,
    ) -> Command {
        let (g, s, d) = (gate.clone(), started.clone(), done.clone());
        Command::new(name, move |_| {
            let (g, s, d) = (g.clone(), s.clone(), d.clone());
            async move {
                s.fetch_add(1, SeqCst);
                g.notified().await;
                d.send_modify(|n| *n += 1);
                Ok(())
            }
        })
    }

    /// A `run` whose job does not finish in the poll that starts it hands the job to the pool:
    /// dropping the caller's future then leaves the job running to its end, and its slot is
    /// given back.
    #[tokio::test]
    async fn run_dropped_after_its_job_started_leaves_the_job_running() {
        let t = LocalTask::new(TaskOptions::new().with_pool(1)).unwrap();
        let (gate, started) = (Arc::new(Notify::new()), Arc::new(AtomicUsize::new(0)));
        let done = Arc::new(watch::Sender::new(0));
        let mut ended = done.subscribe();
        {
            let mut run = t.run(gated("slow", &gate, &started, &done));
            assert!(futures::poll!(&mut run).is_pending());
            assert_eq!(started.load(SeqCst), 1, "the job started in the first poll");
        }
        gate.notify_one();
        tokio::time::timeout(LIMIT, ended.wait_for(|n| *n == 1))
            .await
            .expect("the dropped run's job finished")
            .unwrap();
        let next = tokio::time::timeout(LIMIT, t.run(Command::new("next", |_| async { Ok(3) })))
            .await
            .expect("the pool's only slot was given back");
        assert_eq!(next.unwrap(), json!(3));
        assert_eq!(t.running(), 0);
    }

    /// `shutdown` waits for a `run` job that moved from its caller to the pool.
    #[tokio::test]
    async fn shutdown_waits_for_a_run_job_on_the_pool() {
        let t = LocalTask::new(TaskOptions::new().with_pool(2)).unwrap();
        let (gate, started) = (Arc::new(Notify::new()), Arc::new(AtomicUsize::new(0)));
        let done = Arc::new(watch::Sender::new(0));
        let mut run = t.run(gated("slow", &gate, &started, &done));
        assert!(futures::poll!(&mut run).is_pending());
        drop(run);
        gate.notify_one();
        tokio::time::timeout(LIMIT, t.shutdown())
            .await
            .expect("shutdown ended")
            .unwrap();
        assert_eq!(*done.borrow(), 1, "shutdown returned before the job ended");
    }

    /// Jobs that finish in their first poll (in the caller) and jobs that move to the pool
    /// share one bound: never more than `pool` attempts at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_keeps_the_pool_bound_in_the_caller_and_on_the_pool() {
        const POOL: usize = 3;
        let t = LocalTask::new(TaskOptions::new().with_pool(POOL)).unwrap();
        let (now, most, moved) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (n, m, v) = (now.clone(), most.clone(), moved.clone());
        let cmd = Command::new("count", move |input| {
            let (n, m, v) = (n.clone(), m.clone(), v.clone());
            async move {
                let c = n.fetch_add(1, SeqCst) + 1;
                m.fetch_max(c, SeqCst);
                // Every other job is not done in its first poll, so it moves to the pool.
                if input.fencing_token() % 2 == 0 {
                    v.fetch_add(1, SeqCst);
                    tokio::task::yield_now().await;
                }
                n.fetch_sub(1, SeqCst);
                Ok(())
            }
        });
        let runs: Vec<_> = futures::stream::iter(0..400)
            .map(|_| t.run(cmd.clone()))
            .buffer_unordered(64)
            .collect()
            .await;
        assert!(runs.iter().all(Result::is_ok), "{runs:?}");
        assert_eq!(moved.load(SeqCst), 200);
        let most = most.load(SeqCst);
        assert!((1..=POOL).contains(&most), "{most} attempts ran at once");
        assert_eq!(t.running(), 0);
    }
}
