//! The in-process backend: commands run on a bounded pool of tokio tasks.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
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
        use std::io::Write;
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Formatted on the stack: one allocation per id.
        let mut buf = [0u8; 32];
        let mut w = &mut buf[..];
        let _ = write!(w, "local-{n:x}");
        let len = 32 - w.len();
        JobId::from(std::str::from_utf8(&buf[..len]).unwrap_or("local"))
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
        let tracked = self.inner.tracker.enter();
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let _tracked = tracked;
            drive(inner, command, id, payload, spec, record, permit).await
        })
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
            match self
                .spawn(command, id, Value::Null, spec, None, Some(permit))
                .await
            {
                Ok(r) => r,
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
