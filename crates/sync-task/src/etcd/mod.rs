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
use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;
use sync_etcd::{EtcdClient, EtcdConfig, EtcdConnection, KeySubscription, LeasePool, WatchHub};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::records::{ms_after, new_job_id, ClaimRecord, JobRecord, Keys, ResultRecord};
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

/// Where the job an idempotency key points to is (see `EtcdTask::first_state`).
enum First {
    Held,
    Live,
    Gone,
}

/// How long a job stays held (not claimable) unless the submit that created it releases it: a
/// submit whose process died between its transaction and its return leaves a job that runs this
/// much later. It must outlast the withdrawal of a dropped submit's job (the outcome of its
/// transaction, then one more transaction), and workers' clocks must agree within it.
const SUBMIT_HOLD: Duration = Duration::from_secs(60);

/// The drop guard of a submit in flight: withdraws the job if its transaction created it (or
/// may have) and the submit did not return its handle.
struct SubmitGuard {
    ctx: Arc<Ctx>,
    id: String,
    idem: Option<String>,
    /// The submit transaction's outcome, not taken yet.
    pending: Option<batch::Pending>,
    /// The transaction failed: it may have landed, or may still land late.
    unsure: bool,
}

impl Drop for SubmitGuard {
    fn drop(&mut self) {
        let pending = self.pending.take();
        if pending.is_none() && !self.unsure {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (ctx, id, idem) = (self.ctx.clone(), self.id.clone(), self.idem.take());
        rt.spawn(async move {
            let created = match pending {
                Some(p) => p.await.map(|out| out.succeeded.then_some(out.revision)),
                None => Err(sync_etcd::Error::Timeout {
                    endpoints: String::new(),
                    op: "submit job",
                    after: Duration::ZERO,
                }),
            };
            let job_key = ctx.keys.job(&id);
            match created {
                Ok(None) => {}
                Ok(Some(rev)) => {
                    let guard = Compare::mod_revision(job_key, CompareOp::Equal, rev);
                    withdraw(&ctx, &id, idem.as_deref(), guard).await;
                }
                Err(_) => {
                    // Not known: withdraw it if it is there and untouched since created (still
                    // held), now and once more after a request timeout (it may land late).
                    let untouched = || Compare::version(job_key.clone(), CompareOp::Equal, 1);
                    withdraw(&ctx, &id, idem.as_deref(), untouched()).await;
                    tokio::time::sleep(ctx.client.config().request_timeout).await;
                    withdraw(&ctx, &id, idem.as_deref(), untouched()).await;
                }
            }
        });
    }
}

/// Deletes a held job (its key, payload and idempotency key) if `guard` holds.
async fn withdraw(ctx: &Ctx, id: &str, idem: Option<&str>, guard: Compare) {
    let keys = &ctx.keys;
    let mut ops = vec![
        TxnOp::delete(keys.job(id), None),
        TxnOp::delete(keys.payload(id), None),
    ];
    if let Some(idem) = idem {
        ops.push(TxnOp::txn(
            Txn::new()
                .when([Compare::value(idem, CompareOp::Equal, id)])
                .and_then([TxnOp::delete(idem, None)]),
        ));
    }
    let txn = Txn::new().when([guard]).and_then(ops);
    match ctx.batcher().txn("withdraw job", id, txn, 0).await {
        Ok(out) if out.succeeded => {
            tracing::debug!(job = %id, "job of a dropped or failed submit withdrawn");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(job = %id, error = %e, "could not withdraw the job of a dropped submit: it runs once its hold ends");
        }
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
        let ctx = Ctx {
            view: View::new(
                client.clone(),
                keys.clone(),
                me.clone(),
                options.claim_spread(),
                options.pool(),
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

    /// The connection, to share with other primitives.
    pub fn connection(&self) -> EtcdConnection {
        self.inner.ctx.client.connection()
    }

    /// This handle's worker id (in claims and in `JobStatus::Running`).
    pub fn worker_id(&self) -> &str {
        &self.inner.ctx.me
    }

    /// The options it was made with.
    pub fn options(&self) -> &TaskOptions {
        &self.inner.ctx.options
    }

    /// How many attempts run here right now (at most the pool size).
    pub fn running(&self) -> usize {
        self.inner.ctx.counters.running()
    }

    /// How many jobs this worker holds in memory: its window over the queue (at most
    /// `max(2048, 2 × pool)` pending jobs of its commands, plus those running in the cluster).
    /// Diagnostics: the queue itself can be any size.
    pub fn viewed_jobs(&self) -> usize {
        self.inner.ctx.view.shared().lock().tracked()
    }

    /// The worker's claim path for one job, for the conformance suite (feature `conformance`):
    /// claims job `id` as the dispatcher would (without registering its command), then hands
    /// it back without using up an attempt. Whether it claimed it.
    #[cfg(feature = "conformance")]
    #[doc(hidden)]
    pub async fn claim_and_hand_back(&self, id: &JobId) -> Result<bool> {
        worker::claim_and_hand_back(self.ctx(), id.as_str())
            .await
            .map_err(|e| Error::backend(id.as_str(), e))
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
        ctx.view.set_command(&name, true);
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

    /// Submits a job, all or nothing for the caller: it returns the job's handle, or the job
    /// never runs.
    ///
    /// The transaction that creates the job marks it *held* (not claimable before
    /// [`SUBMIT_HOLD`] from now). When its reply comes, in the same poll that returns the handle
    /// (so no drop can come in between), the submit hands a release to the batcher, which makes
    /// the job claimable at once. If the future is dropped (or fails) before that, its guard
    /// waits on the runtime for the transaction's outcome and withdraws the job if it was
    /// created: no worker claims a held job, so the withdrawal always wins. If the submitting
    /// process dies in between, the job is not lost: it runs once its hold ends.
    async fn submit_inner(&self, job: Job) -> Result<JobHandle> {
        let payload = job.validate()?;
        let name = job.command().to_owned();
        self.check_open(&name)?;
        let ctx = self.ctx();
        let keys = &ctx.keys;
        let payload = serde_json::to_vec(payload).map_err(|e| Error::BadPayload {
            command: name.clone(),
            job: None,
            reason: e.to_string(),
        })?;
        let mut budget_end = None;
        loop {
            let id = new_job_id();
            let mut record = JobRecord::new(&job, payload.len());
            record.held = true;
            record.not_before_ms = ms_after(SUBMIT_HOLD);
            let job_key = keys.job(&id);
            let sub = ctx
                .ends
                .subscribe(&job_key, i64::MAX)
                .await
                .map_err(|e| Error::backend(&name, e))?
                .0;
            let mut when = Vec::new();
            if !job.waits_for_worker() {
                when.push(
                    Compare::create_revision(keys.workers(&name), CompareOp::Greater, 0)
                        .with_prefix(),
                );
            }
            let idem = job.idempotency_key().map(|k| keys.idem(k));
            let mut then = vec![
                TxnOp::put(job_key.clone(), worker::to_json(&record), None),
                TxnOp::put(keys.payload(&id), payload.clone(), None),
            ];
            let mut otherwise = Vec::new();
            if let Some(idem) = &idem {
                when.push(Compare::create_revision(idem.clone(), CompareOp::Equal, 0));
                then.push(TxnOp::put(idem.clone(), id.clone().into_bytes(), None));
                otherwise.push(TxnOp::get(idem.clone(), None));
            }
            let txn = Txn::new().when(when).and_then(then).or_else(otherwise);
            let mut guard = SubmitGuard {
                ctx: ctx.clone(),
                id: id.clone(),
                idem: idem.clone(),
                pending: Some(ctx.batcher().send("submit job", &id, txn, payload.len())),
                unsure: false,
            };
            let out = match guard.pending.as_mut() {
                Some(p) => p.await,
                None => continue,
            };
            guard.pending = None;
            let out = match out {
                Ok(out) => out,
                Err(e) => {
                    // It may have landed: the guard withdraws it if so.
                    guard.unsure = true;
                    return Err(Error::backend(&name, e));
                }
            };
            if out.succeeded {
                // The point of no return: release it (the batcher applies it whether or not
                // anyone waits) and return the handle, in this poll.
                record.held = false;
                record.not_before_ms = 0;
                let release = Txn::new()
                    .when([Compare::mod_revision(
                        job_key.clone(),
                        CompareOp::Equal,
                        out.revision,
                    )])
                    .and_then([TxnOp::put(job_key, worker::to_json(&record), None)]);
                drop(ctx.batcher().send("release job", &id, release, 0));
                self.inner
                    .fresh
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id.clone(), sub);
                Counters::bump(&ctx.counters.submitted);
                tracing::debug!(job = %id, command = %name, "job submitted");
                return Ok(self.handle(JobId::from(id), &name));
            }
            // Nothing was written.
            let first = match out.responses.into_iter().next() {
                Some(TxnOpResponse::Get(g)) => g
                    .kvs()
                    .first()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                _ => None,
            };
            let Some(first) = first else {
                return Err(Error::UnknownCommand { command: name });
            };
            // The key's job may still be held by a submit in flight, which may yet withdraw it:
            // hand it out once released or finished; if it was withdrawn, try again.
            let end =
                *budget_end.get_or_insert_with(|| Instant::now() + ctx.client.default_budget());
            match self.first_state(&first).await? {
                First::Live => {}
                First::Held | First::Gone if Instant::now() < end => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                First::Held | First::Gone => {
                    return Err(Error::Backend {
                        subject: name,
                        retryable: true,
                        source: format!(
                            "the idempotency key's job {first} is still being submitted elsewhere; try again"
                        )
                        .into(),
                    })
                }
            }
            tracing::debug!(job = %first, command = %name, "idempotency key already used: returning the first job");
            return Ok(self.handle(JobId::from(first), &name));
        }
    }

    /// Where the job an idempotency key points to is: held by a submit in flight, live (or
    /// finished), or gone (withdrawn by a dropped submit).
    async fn first_state(&self, id: &str) -> Result<First> {
        let ctx = self.ctx();
        let (job_key, result_key) = (ctx.keys.job(id), ctx.keys.result(id));
        let found = ctx
            .client
            .retry("read job", ctx.client.default_budget(), |mut c| {
                let txn = Txn::new().and_then([
                    TxnOp::get(job_key.clone(), None),
                    TxnOp::get(result_key.clone(), None),
                ]);
                async move {
                    let r = c.txn(txn).await?;
                    let mut gets = r.op_responses().into_iter().map(|r| match r {
                        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
                        _ => None,
                    });
                    Ok((gets.next().flatten(), gets.next().flatten()))
                }
            })
            .await
            .map_err(|e| Error::backend(id, e))?;
        Ok(match found {
            (Some(job), _) => {
                if serde_json::from_slice::<JobRecord>(&job).is_ok_and(|r| r.held) {
                    First::Held
                } else {
                    First::Live
                }
            }
            (None, Some(_)) => First::Live,
            (None, None) => First::Gone,
        })
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
