//! The etcd backend: jobs distributed over every process that registered their command.
//!
//! See [`records`] for the key layout, [`view`] for how a worker learns what it may claim (and
//! why idle workers do not all race for each job), [`worker`] for the claim → run → record cycle,
//! and `docs/task.md` for the lifecycle and what can run twice.

mod batch;
mod records;
mod retention;
mod view;
mod worker;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;
use sync_core::etcd::{EtcdClient, EtcdConfig, KeySubscription, LeasePool, WatchHub};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use self::records::{ClaimRecord, JobRecord, Keys, ResultRecord};
use self::retention::Retention;
use self::view::View;
use self::worker::{Ctx, Stop};
use crate::exec::Counters;
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

struct Inner {
    ctx: Arc<Ctx>,
    /// Subscriptions to the end of jobs this handle submitted, taken before the job existed,
    /// so that the first `wait` needs no read before waiting. Bounded; an evicted one only
    /// costs that read.
    fresh: Mutex<Fresh>,
    /// The dispatcher and the registration keeper, started by the first `register`.
    background: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Default)]
struct Fresh {
    subs: HashMap<String, KeySubscription>,
    order: VecDeque<(Instant, String)>,
}

impl Fresh {
    const MAX: usize = 10_000;
    const AGE: Duration = Duration::from_secs(60);

    fn insert(&mut self, id: String, sub: KeySubscription) {
        let now = Instant::now();
        while let Some((at, old)) = self.order.front() {
            if self.order.len() < Self::MAX && now.duration_since(*at) < Self::AGE {
                break;
            }
            self.subs.remove(old);
            self.order.pop_front();
        }
        self.order.push_back((now, id.clone()));
        self.subs.insert(id, sub);
    }
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
        let ctx = &self.inner.ctx;
        f.debug_struct("EtcdTask")
            .field("endpoints", &ctx.client.endpoints())
            .field("worker", &ctx.me)
            .field("pool", &ctx.options.pool())
            .finish()
    }
}

impl EtcdTask {
    /// Connects to etcd with `config`.
    pub async fn connect(config: EtcdConfig, options: TaskOptions) -> Result<Self> {
        options.validate()?;
        let endpoints = config.endpoints_display();
        let client = EtcdClient::connect(config)
            .await
            .map_err(|e| Error::backend(&endpoints, e))?;
        Self::new(client, options)
    }

    /// Uses an existing connection (shared with other primitives).
    pub fn new(client: EtcdClient, options: TaskOptions) -> Result<Self> {
        options.validate()?;
        let keys = Keys::new(client.keyspace());
        let me = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        let ttl = options.ttl().unwrap_or(client.config().ttl);
        let ctx = Ctx {
            view: View::new(
                client.clone(),
                keys.clone(),
                me.clone(),
                options.claim_spread(),
            ),
            ends: WatchHub::new(client.clone(), keys.jobs()),
            leases: LeasePool::new(client.clone()),
            retention: Retention::new(client.clone()),
            commands: RwLock::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(options.pool())),
            stop: watch::Sender::new(Stop::Running),
            tracker: Default::default(),
            counters: Counters::default(),
            batcher: Default::default(),
            client,
            keys,
            options,
            ttl,
            me,
        };
        Ok(EtcdTask {
            inner: Arc::new(Inner {
                ctx: Arc::new(ctx),
                fresh: Default::default(),
                background: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The connection.
    pub fn client(&self) -> &EtcdClient {
        &self.inner.ctx.client
    }

    /// This handle's worker id (in claims and in `JobStatus::Running`).
    pub fn worker_id(&self) -> &str {
        &self.inner.ctx.me
    }

    /// The options it was made with.
    pub fn options(&self) -> &TaskOptions {
        &self.inner.ctx.options
    }

    /// How many attempts run here right now.
    pub fn running(&self) -> usize {
        self.inner.ctx.options.pool() - self.inner.ctx.slots.available_permits()
    }

    /// What it did so far; `claim_conflicts` measures how often workers raced for one job.
    pub fn stats(&self) -> TaskStats {
        self.inner.ctx.counters.snapshot()
    }

    /// How many job keys are stored under the prefix: jobs, claims, payloads, results and
    /// idempotency keys (not worker registrations). Finished jobs leave it after their retention.
    pub async fn stored_jobs(&self) -> Result<usize> {
        let ctx = self.ctx();
        let k = &ctx.keys;
        let ranges = [k.jobs(), k.claims(), k.payloads(), k.results(), k.idems()];
        ctx.client
            .retry("count job keys", ctx.client.default_budget(), |mut c| {
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

    fn ctx(&self) -> &Arc<Ctx> {
        &self.inner.ctx
    }

    fn handle(&self, id: JobId, command: &str) -> JobHandle {
        JobHandle::new(id, command, Arc::new(self.clone()))
    }

    fn check_open(&self, command: &str) -> Result<()> {
        if self.ctx().stopping() != Stop::Running {
            return Err(Error::shut_down(command));
        }
        Ok(())
    }

    async fn register_inner(&self, command: Command) -> Result<()> {
        let name = command.name().to_owned();
        check_name("command name", &name)?;
        self.check_open(&name)?;
        let ctx = self.ctx();
        {
            let mut commands = ctx.commands.write().unwrap_or_else(|p| p.into_inner());
            if commands.get(&name).is_some_and(|c| c.same_as(&command)) {
                return Ok(());
            }
            commands.insert(name.clone(), command);
        }
        ctx.view
            .start()
            .await
            .map_err(|e| Error::backend(&name, e))?;
        self.start_worker();
        loop {
            let lease = ctx.lease().await.map_err(|e| Error::backend(&name, e))?;
            worker::put_registrations(ctx, &lease)
                .await
                .map_err(|e| Error::backend(&name, e))?;
            // If the lease was lost meanwhile, the keeper may have registered on a new one
            // before our put landed on the old one: put again.
            if !lease.is_lost() {
                break;
            }
        }
        ctx.view.shared().lock().set_command(&name, true);
        ctx.view.shared().wake.notify_one();
        tracing::debug!(command = %name, worker = %ctx.me, "command registered");
        Ok(())
    }

    fn start_worker(&self) {
        let mut bg = self
            .inner
            .background
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if bg.is_empty() {
            bg.push(tokio::spawn(worker::dispatch(self.ctx().clone())));
            bg.push(tokio::spawn(worker::keep_registered(self.ctx().clone())));
        }
    }

    async fn submit_inner(&self, job: Job) -> Result<JobHandle> {
        let payload = job.validate()?.clone();
        let name = job.command().to_owned();
        self.check_open(&name)?;
        let ctx = self.ctx();
        let keys = &ctx.keys;
        let id = format!("{:032x}", rand::random::<u128>());
        let record = JobRecord::new(&job);
        let bad = |e: serde_json::Error| Error::BadPayload {
            command: name.clone(),
            job: None,
            reason: e.to_string(),
        };
        let value = serde_json::to_vec(&record).map_err(bad)?;
        let payload = serde_json::to_vec(&payload).map_err(bad)?;
        let mut when = Vec::new();
        let mut then = vec![
            TxnOp::put(keys.job(&id), value, None),
            TxnOp::put(keys.payload(&id), payload, None),
        ];
        let mut otherwise = Vec::new();
        let sub = ctx
            .ends
            .subscribe(&keys.job(&id), i64::MAX)
            .await
            .map_err(|e| Error::backend(&name, e))?
            .0;
        if !job.waits_for_worker() {
            when.push(
                Compare::create_revision(keys.workers(&name), CompareOp::Greater, 0).with_prefix(),
            );
        }
        let idem = job.idempotency_key().map(|k| keys.idem(k));
        if let Some(idem) = &idem {
            when.push(Compare::create_revision(idem.clone(), CompareOp::Equal, 0));
            then.push(TxnOp::put(idem.clone(), id.clone().into_bytes(), None));
            otherwise.push(TxnOp::get(idem.clone(), None));
        }
        let existing = ctx
            .client
            .retry("submit job", ctx.client.default_budget(), |mut c| {
                let txn = Txn::new()
                    .when(when.clone())
                    .and_then(then.clone())
                    .or_else(otherwise.clone());
                async move {
                    let resp = c.txn(txn).await?;
                    if resp.succeeded() {
                        return Ok(Ok(resp.header().map(|h| h.revision())));
                    }
                    let first = match resp.op_responses().into_iter().next() {
                        Some(TxnOpResponse::Get(g)) => g.kvs().first().cloned(),
                        _ => None,
                    };
                    Ok(match first {
                        Some(kv) => Err(Some(String::from_utf8_lossy(kv.value()).into_owned())),
                        None => Err(None),
                    })
                }
            })
            .await
            .map_err(|e| Error::backend(&name, e))?;
        match existing {
            Ok(_) => {
                self.inner
                    .fresh
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id.clone(), sub);
                Counters::bump(&ctx.counters.submitted);
                tracing::debug!(job = %id, command = %name, "job submitted");
                Ok(self.handle(JobId::from(id), &name))
            }
            Err(Some(first)) => {
                tracing::debug!(job = %first, command = %name, "idempotency key already used: returning the first job");
                Ok(self.handle(JobId::from(first), &name))
            }
            Err(None) => Err(Error::UnknownCommand { command: name }),
        }
    }

    /// Reads the job, its claim and its result at one revision: its command and status.
    async fn read(&self, id: &JobId) -> Result<Option<(String, JobStatus)>> {
        let ctx = self.ctx();
        let keys = &ctx.keys;
        let (job_key, claim_key, result_key) = (
            keys.job(id.as_str()),
            keys.claim(id.as_str()),
            keys.result(id.as_str()),
        );
        let kvs = ctx
            .client
            .retry("read job", ctx.client.default_budget(), |mut c| {
                let txn = Txn::new().and_then([
                    TxnOp::get(result_key.clone(), None),
                    TxnOp::get(job_key.clone(), None),
                    TxnOp::get(claim_key.clone(), None),
                ]);
                async move {
                    let resp = c.txn(txn).await?;
                    Ok(resp
                        .op_responses()
                        .into_iter()
                        .map(|r| match r {
                            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
                            _ => None,
                        })
                        .collect::<Vec<_>>())
                }
            })
            .await
            .map_err(|e| Error::backend(id.as_str(), e))?;
        let get = |i: usize| kvs.get(i).cloned().flatten();
        let corrupt = |what: &str, e: serde_json::Error| Error::Backend {
            subject: id.to_string(),
            retryable: false,
            source: format!("the {what} record of job {id} does not parse: {e}").into(),
        };
        if let Some(r) = get(0) {
            let r: ResultRecord = serde_json::from_slice(&r).map_err(|e| corrupt("result", e))?;
            return Ok(Some((r.command.clone(), r.status())));
        }
        let Some(j) = get(1) else { return Ok(None) };
        let j: JobRecord = serde_json::from_slice(&j).map_err(|e| corrupt("job", e))?;
        if let Some(c) = get(2) {
            let c: ClaimRecord = serde_json::from_slice(&c).map_err(|e| corrupt("claim", e))?;
            let running = JobStatus::Running {
                attempt: c.attempt,
                worker: c.worker,
            };
            return Ok(Some((j.command, running)));
        }
        let pending = j.pending_status();
        Ok(Some((j.command, pending)))
    }

    async fn wait_inner(&self, id: &JobId) -> Result<Value> {
        if !id.is_well_formed() {
            return Err(Error::NotFound { job: id.clone() });
        }
        let ctx = self.ctx();
        let key = ctx.keys.job(id.as_str());
        let fresh = self
            .inner
            .fresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .subs
            .remove(id.as_str());
        let mut sub = match fresh {
            Some(mut sub) => {
                // Subscribed before the job existed: nothing can have been missed, so wait
                // for its end (or a recheck) before reading.
                let _ = sub.next().await;
                sub
            }
            // Subscribe first, then read: a deletion after the subscription reaches us, one
            // before it shows in the read. (The job's key is deleted in the transaction that
            // writes its result.)
            None => {
                ctx.ends
                    .subscribe(&key, i64::MAX)
                    .await
                    .map_err(|e| Error::backend(id.as_str(), e))?
                    .0
            }
        };
        loop {
            let (command, status) = self
                .read(id)
                .await?
                .ok_or_else(|| Error::NotFound { job: id.clone() })?;
            if let Some(outcome) = status.outcome(&command, id) {
                return outcome;
            }
            // Deleted: read the result. Recheck: the watch was re-created, read again.
            let _ = sub.next().await;
        }
    }

    async fn shutdown_inner(&self) -> Result<()> {
        let ctx = self.ctx();
        if ctx.stopping() != Stop::Running {
            return Ok(());
        }
        ctx.stop.send_replace(Stop::Closing);
        ctx.view.shared().lock().clear_commands();
        if let Err(e) = worker::delete_registrations(ctx).await {
            tracing::warn!(worker = %ctx.me, error = %e, "could not delete the worker's registrations; its lease will");
        }
        let grace = ctx.options.shutdown_grace();
        if !ctx.tracker.wait_idle(grace).await {
            tracing::warn!(
                worker = %ctx.me,
                running = ctx.tracker.count(),
                ?grace,
                "jobs still running after the shutdown grace: handing them back"
            );
            ctx.stop.send_replace(Stop::HandBack);
            ctx.tracker.wait_idle(ctx.client.default_budget()).await;
        }
        let started = !self
            .inner
            .background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        if started {
            match ctx.lease().await {
                Ok(lease) => {
                    if let Err(e) = lease.revoke().await {
                        tracing::warn!(worker = %ctx.me, error = %e, "could not revoke the worker's lease; it will expire");
                    }
                }
                Err(e) => {
                    tracing::warn!(worker = %ctx.me, error = %e, "could not revoke the worker's lease; it will expire")
                }
            }
        }
        tracing::debug!(worker = %ctx.me, "worker shut down");
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
            self.read(id)
                .await?
                .map(|(_, status)| status)
                .ok_or_else(|| Error::NotFound { job: id.clone() })
        }
        .boxed()
    }

    fn wait<'a>(&'a self, id: &'a JobId) -> BoxFuture<'a, Result<Value>> {
        self.wait_inner(id).boxed()
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<()>> {
        self.shutdown_inner().boxed()
    }
}
