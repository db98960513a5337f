//! The etcd backend: jobs distributed over every process that registered their command.
//!
//! It is made of parts that each own their state:
//!
//! - [`submit`]: creating jobs (held until released), idempotency keys, withdrawing the job of
//!   a dropped submit; its transactions go through the group-commit [`batch`]er.
//! - [`waiter`]: a job's status, and waiting for its end (a watch of job deletions; for jobs
//!   this handle submitted, the [`results`] watch, whose event carries the result).
//! - [`view`]: the worker's window over the pending jobs (a paged range watch), which tells it
//!   what it may claim and when (and why idle workers do not all race for each job).
//! - [`worker`]: the claim → run → finish path: [`claim`] (the claim transaction and its
//!   cancel-safety guards), then [`finish`] (the transactions that end an attempt, results on
//!   [`retention`] leases); [`registry`] keeps the worker's registrations on its lease.
//!
//! See [`records`] for the key layout and `docs/task.md` for the lifecycle and what can run
//! twice.

mod batch;
mod claim;
mod finish;
mod records;
mod registry;
mod results;
mod retention;
mod submit;
mod view;
mod waiter;
mod worker;

use std::sync::{Arc, Mutex};

use etcd_client::{Txn, TxnOp, TxnOpResponse};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;
use sync_etcd::{EtcdClient, EtcdConfig, EtcdConnection};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::batch::SharedBatcher;
use self::claim::Claimer;
use self::finish::Finisher;
use self::records::Keys;
use self::registry::{Registry, WorkerLease};
use self::retention::Retention;
use self::submit::Submitter;
use self::view::View;
use self::waiter::Waiter;
use self::worker::{Stop, Worker};
use crate::exec::{Counters, Tracker};
use crate::{
    check_name, Command, Error, Job, JobHandle, JobId, JobStatus, Result, Task, TaskOptions,
    TaskStats,
};

/// Jobs shared by every process connected to the same etcd cluster and key prefix.
///
/// A handle submits jobs and, once it [`register`](Task::register)s commands, is a worker for
/// them: it claims their jobs under its lease (so the jobs of a worker that dies are run again
/// by the others, about a TTL later) and runs at most [`pool`](TaskOptions::with_pool) of them
/// at once. Cheap to clone: clones share one connection, lease, watch and pool.
///
/// ```no_run
/// use sync_task::{Command, EtcdConfig, EtcdTask, Job, Task, TaskOptions};
/// # async fn demo() -> sync_task::Result<()> {
/// let cfg = EtcdConfig::new(["127.0.0.1:2379"]).with_prefix("myapp");
/// // In the worker processes:
/// let worker = EtcdTask::connect(cfg.clone(), TaskOptions::new().with_pool(8)).await?;
/// worker.register(Command::typed("thumbnail", |path: String| async move {
///     Ok(format!("{path}.thumb.png"))
/// })).await?;
/// // Anywhere:
/// let client = EtcdTask::connect(cfg, TaskOptions::new()).await?;
/// let job = client.submit(Job::new("thumbnail", "cat.png").with_max_attempts(5)).await?;
/// let thumb: String = job.wait_as().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EtcdTask {
    inner: Arc<Inner>,
}

/// The parts, and what the handle itself needs to shut them down.
struct Inner {
    client: EtcdClient,
    keys: Keys,
    options: TaskOptions,
    me: String,
    submitter: Arc<Submitter>,
    waiter: Arc<Waiter>,
    view: Arc<View>,
    registry: Arc<Registry>,
    worker: Arc<Worker>,
    #[cfg_attr(not(feature = "conformance"), allow(dead_code))]
    claimer: Arc<Claimer>,
    /// Attempts in progress here (for the shutdown grace).
    tracker: Arc<Tracker>,
    counters: Arc<Counters>,
    stop: watch::Sender<Stop>,
    /// The dispatcher and the registration keeper, started by the first `register`.
    background: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in self
            .background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

impl std::fmt::Debug for EtcdTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = &self.inner;
        f.debug_struct("EtcdTask")
            .field("endpoints", &inner.client.endpoints())
            .field("worker", &inner.me)
            .field("pool", &inner.options.pool())
            .finish()
    }
}

impl EtcdTask {
    /// Connects to etcd with `config`.
    pub async fn connect(config: EtcdConfig, options: TaskOptions) -> Result<Self> {
        options.validate()?;
        let endpoints = config.endpoints_display();
        let connection = EtcdConnection::connect(config)
            .await
            .map_err(|e| Error::backend(&endpoints, e))?;
        Self::new(connection, options)
    }

    /// Uses an existing connection (shared with other primitives).
    pub fn new(connection: EtcdConnection, options: TaskOptions) -> Result<Self> {
        options.validate()?;
        let client = EtcdClient::of(&connection).clone();
        let keys = Keys::new(client.keyspace());
        let me = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        let ttl = options.ttl().unwrap_or(client.config().ttl);
        crate::options::check_ttl(ttl)?;
        let stop = watch::Sender::new(Stop::Running);
        let counters = Arc::new(Counters::default());
        let tracker = Arc::new(Tracker::default());
        let batcher = SharedBatcher::new(client.clone());
        let lease = Arc::new(WorkerLease::new(client.clone(), ttl));
        let view = Arc::new(View::new(
            client.clone(),
            keys.clone(),
            me.clone(),
            options.claim_spread(),
            options.pool(),
        ));
        let waiter = Arc::new(Waiter::new(client.clone(), keys.clone()));
        let submitter = Arc::new(Submitter::new(
            client.clone(),
            keys.clone(),
            batcher.clone(),
            waiter.clone(),
            counters.clone(),
            stop.subscribe(),
            ttl,
        ));
        let registry = Arc::new(Registry::new(
            client.clone(),
            keys.clone(),
            me.clone(),
            lease.clone(),
        ));
        let finisher = Finisher::new(
            keys.clone(),
            batcher.clone(),
            Retention::new(client.clone()),
        );
        let claimer = Arc::new(Claimer::new(
            client.clone(),
            keys.clone(),
            me.clone(),
            batcher,
            lease,
            finisher.clone(),
            view.clone(),
            counters.clone(),
        ));
        let worker = Arc::new(Worker::new(
            me.clone(),
            view.clone(),
            claimer.clone(),
            finisher,
            registry.clone(),
            options.pool(),
            stop.subscribe(),
            tracker.clone(),
            counters.clone(),
        ));
        Ok(EtcdTask {
            inner: Arc::new(Inner {
                client,
                keys,
                options,
                me,
                submitter,
                waiter,
                view,
                registry,
                worker,
                claimer,
                tracker,
                counters,
                stop,
                background: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The connection, to share with other primitives.
    pub fn connection(&self) -> EtcdConnection {
        self.inner.client.connection()
    }

    /// This handle's worker id (in claims and in `JobStatus::Running`).
    pub fn worker_id(&self) -> &str {
        &self.inner.me
    }

    /// The options it was made with.
    pub fn options(&self) -> &TaskOptions {
        &self.inner.options
    }

    /// How many attempts run here right now (at most the pool size).
    pub fn running(&self) -> usize {
        self.inner.counters.running()
    }

    /// How many jobs this worker holds in memory: its window over the queue (at most
    /// `max(2048, 2 × pool)` pending jobs of its commands, plus those running in the cluster).
    /// Diagnostics: the queue itself can be any size.
    pub fn viewed_jobs(&self) -> usize {
        self.inner.view.tracked()
    }

    /// The worker's claim path for one job, for the conformance suite (feature `conformance`):
    /// claims job `id` as the dispatcher would (without registering its command), then hands
    /// it back without using up an attempt. Whether it claimed it.
    #[cfg(feature = "conformance")]
    #[doc(hidden)]
    pub async fn claim_and_hand_back(&self, id: &JobId) -> Result<bool> {
        self.inner
            .claimer
            .claim_and_hand_back(id.as_str())
            .await
            .map_err(|e| Error::backend(id.as_str(), e))
    }

    /// What it did so far; `claim_conflicts` measures how often workers raced for one job.
    pub fn stats(&self) -> TaskStats {
        self.inner.counters.snapshot()
    }

    /// How many job keys are stored under the prefix: jobs, claims, submit holds, payloads,
    /// results and idempotency keys (not worker registrations). Finished jobs leave it after their retention.
    pub async fn stored_jobs(&self) -> Result<usize> {
        let (client, k) = (&self.inner.client, &self.inner.keys);
        let ranges = [
            k.jobs(),
            k.claims(),
            k.holds(),
            k.payloads(),
            k.results(),
            k.idems(),
        ];
        client
            .retry("count job keys", client.default_budget(), |mut c| {
                let ops: Vec<TxnOp> = ranges
                    .iter()
                    .map(|r| {
                        TxnOp::get(
                            r.clone(),
                            Some(
                                etcd_client::GetOptions::new()
                                    .with_prefix()
                                    .with_count_only(),
                            ),
                        )
                    })
                    .collect();
                async move {
                    let resp = c.txn(Txn::new().and_then(ops)).await?;
                    Ok(resp
                        .op_responses()
                        .into_iter()
                        .map(|r| match r {
                            TxnOpResponse::Get(g) => g.count() as usize,
                            _ => 0,
                        })
                        .sum())
                }
            })
            .await
            .map_err(|e| Error::backend("stored jobs", e))
    }

    fn handle(&self, id: JobId, command: &str) -> JobHandle {
        JobHandle::new(id, command, Arc::new(self.clone()))
    }

    fn stopping(&self) -> Stop {
        *self.inner.stop.borrow()
    }

    async fn register_inner(&self, command: Command) -> Result<()> {
        let name = command.name().to_owned();
        check_name("command name", &name)?;
        if self.stopping() != Stop::Running {
            return Err(Error::shut_down(&name));
        }
        let inner = &self.inner;
        if !inner.registry.insert(command) {
            return Ok(());
        }
        inner
            .view
            .start()
            .await
            .map_err(|e| Error::backend(&name, e))?;
        self.start_worker();
        inner
            .registry
            .register()
            .await
            .map_err(|e| Error::backend(&name, e))?;
        inner.view.set_command(&name, true);
        tracing::debug!(command = %name, worker = %inner.me, "command registered");
        Ok(())
    }

    fn start_worker(&self) {
        let inner = &self.inner;
        let mut bg = inner.background.lock().unwrap_or_else(|p| p.into_inner());
        if bg.is_empty() {
            bg.push(tokio::spawn(inner.worker.clone().dispatch()));
            bg.push(tokio::spawn(
                inner.registry.clone().keep(inner.stop.subscribe()),
            ));
        }
    }

    async fn submit_inner(&self, job: Job) -> Result<JobHandle> {
        let name = job.command().to_owned();
        let id = self.inner.submitter.submit(job).await?;
        Ok(self.handle(JobId::from(id), &name))
    }

    async fn shutdown_inner(&self) -> Result<()> {
        let inner = &self.inner;
        if self.stopping() != Stop::Running {
            return Ok(());
        }
        inner.stop.send_replace(Stop::Closing);
        inner.view.clear_commands();
        if let Err(e) = inner.registry.unregister().await {
            tracing::warn!(worker = %inner.me, error = %e, "could not delete the worker's registrations; its lease will");
        }
        let grace = inner.options.shutdown_grace();
        if !inner.tracker.wait_idle(grace).await {
            tracing::warn!(
                worker = %inner.me,
                running = inner.tracker.count(),
                ?grace,
                "jobs still running after the shutdown grace: handing them back"
            );
            inner.stop.send_replace(Stop::HandBack);
            inner.tracker.wait_idle(inner.client.default_budget()).await;
        }
        let started = !inner
            .background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        if started {
            inner.registry.revoke().await;
        }
        tracing::debug!(worker = %inner.me, "worker shut down");
        Ok(())
    }
}

impl Task for EtcdTask {
    fn register(&self, command: Command) -> BoxFuture<'_, Result<()>> {
        self.register_inner(command).boxed()
    }

    fn submit(&self, job: Job) -> BoxFuture<'_, Result<JobHandle>> {
        self.submit_inner(job).boxed()
    }

    fn status<'a>(&'a self, id: &'a JobId) -> BoxFuture<'a, Result<JobStatus>> {
        async move {
            if !id.is_well_formed() {
                return Err(Error::NotFound { job: id.clone() });
            }
            self.inner
                .waiter
                .read(id)
                .await?
                .map(|(_, status)| status)
                .ok_or_else(|| Error::NotFound { job: id.clone() })
        }
        .boxed()
    }

    fn wait<'a>(&'a self, id: &'a JobId) -> BoxFuture<'a, Result<Value>> {
        async move { self.inner.waiter.wait(id).await }.boxed()
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<()>> {
        self.shutdown_inner().boxed()
    }
}
