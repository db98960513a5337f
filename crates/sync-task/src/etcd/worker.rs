//! The worker: claims jobs of its commands under its lease, runs them on its pool, and records
//! their outcome (or schedules their retry) only while its claim still stands.
//!
//! Every write that ends an attempt compares the claim's create revision with the one the
//! claim transaction made, so a worker that lost its claim (its lease expired, someone deleted
//! the claim) can never overwrite what the job's next worker does.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use serde_json::Value;
use sync_core::signal::LossReason;
use sync_etcd::{EtcdClient, Lease, LeasePool, WatchHub};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::batch::{self, Batcher};
use super::records::{ms_after, now_ms, ClaimRecord, JobRecord, Keys, Outcome, ResultRecord};
use super::retention::Retention;
use super::view::{Next, Pick, View};
use crate::exec::{self, AttemptFailure, Counters, Tracked, Tracker};
use crate::{Command, Failure, Input, JobId, TaskOptions};

/// How far along shutting down the worker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stop {
    Running,
    /// No new claims; running jobs finish.
    Closing,
    /// The grace is over: running jobs are cancelled and handed back.
    HandBack,
}

/// How long a worker leaves a job alone after losing the race to claim it: by then its view
/// shows who has it.
const CLAIM_COOLDOWN: Duration = Duration::from_millis(100);
/// How long it leaves a job alone after an etcd error while claiming it.
const ERROR_COOLDOWN: Duration = Duration::from_millis(500);

/// What the worker's tasks share.
pub(crate) struct Ctx {
    pub(crate) client: EtcdClient,
    pub(crate) keys: Keys,
    pub(crate) options: TaskOptions,
    pub(crate) ttl: Duration,
    pub(crate) me: String,
    pub(crate) view: View,
    /// Deletions of `q/jobs/<id>`: how waiters learn that a job ended.
    pub(crate) ends: WatchHub,
    pub(crate) leases: LeasePool,
    pub(crate) retention: Retention,
    pub(crate) commands: RwLock<HashMap<String, Command>>,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) stop: watch::Sender<Stop>,
    pub(crate) tracker: Arc<Tracker>,
    pub(crate) counters: Counters,
    pub(crate) batcher: std::sync::OnceLock<Batcher>,
}

impl Ctx {
    pub(crate) fn command(&self, name: &str) -> Option<Command> {
        self.commands
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub(crate) fn stopping(&self) -> Stop {
        *self.stop.borrow()
    }

    /// The group-commit batcher (started on first use, inside the runtime).
    pub(crate) fn batcher(&self) -> &Batcher {
        self.batcher
            .get_or_init(|| Batcher::new(self.client.clone()))
    }

    /// The worker's lease (a new one if the last was lost).
    pub(crate) async fn lease(&self) -> sync_etcd::Result<Arc<Lease>> {
        self.leases.get(self.ttl).await
    }
}

/// Resolves once the stop level reaches `level`.
async fn until(stop: &mut watch::Receiver<Stop>, level: Stop) {
    if stop.wait_for(|s| *s >= level).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Claims jobs while a pool slot is free, until shutdown.
pub(crate) async fn dispatch(ctx: Arc<Ctx>) {
    let mut stop = ctx.stop.subscribe();
    loop {
        let permit = tokio::select! {
            p = ctx.slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = until(&mut stop, Stop::Closing) => return,
        };
        let pick = loop {
            let shared = ctx.view.shared();
            let notified = shared.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next = shared.lock().next(Instant::now());
            let at = match next {
                Next::Claim(p) => break p,
                Next::At(at) => Some(at),
                Next::Idle => None,
            };
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(at.unwrap_or_else(Instant::now)), if at.is_some() => {}
                _ = until(&mut stop, Stop::Closing) => return,
            }
        };
        let tracked = ctx.tracker.enter();
        tokio::spawn(run_job(ctx.clone(), pick, permit, tracked));
    }
}

pub(crate) enum ClaimError {
    /// Someone else changed the job or claimed it first.
    Conflict,
    Etcd(sync_etcd::Error),
}

impl From<sync_etcd::Error> for ClaimError {
    fn from(e: sync_etcd::Error) -> Self {
        ClaimError::Etcd(e)
    }
}

async fn run_job(ctx: Arc<Ctx>, pick: Pick, permit: OwnedSemaphorePermit, _tracked: Tracked) {
    let id = pick.id.clone();
    let cooldown = match work(&ctx, pick).await {
        Ok(()) => None,
        Err(ClaimError::Conflict) => {
            Counters::bump(&ctx.counters.claim_conflicts);
            Some(CLAIM_COOLDOWN)
        }
        Err(ClaimError::Etcd(e)) => {
            tracing::warn!(job = %id, error = %e, "could not claim a job; trying again later");
            Some(ERROR_COOLDOWN)
        }
    };
    ctx.view.shared().lock().release(&id, cooldown);
    drop(permit);
    ctx.view.shared().wake.notify_one();
}

/// How an attempt ended, as seen by the worker.
enum End {
    Done(Result<Value, AttemptFailure>),
    Lost(LossReason),
    HandBack,
}

async fn work(ctx: &Arc<Ctx>, pick: Pick) -> Result<(), ClaimError> {
    let Pick {
        id,
        record,
        mod_rev,
    } = pick;
    let Some(command) = ctx.command(&record.command) else {
        return Ok(());
    };
    let keys = &ctx.keys;
    if record.attempts >= record.max_attempts {
        // The worker of the last attempt was lost: nothing is left to try.
        let unclaimed = vec![
            Compare::mod_revision(keys.job(&id), CompareOp::Equal, mod_rev),
            Compare::create_revision(keys.claim(&id), CompareOp::Equal, 0),
        ];
        let result = result_record(&record, record.attempts, None, Err(Failure::WorkerLost));
        return if finish(ctx, &id, &record, unclaimed, result).await? {
            tracing::warn!(job = %id, command = %record.command, attempts = record.attempts, "job failed: the worker of its last attempt was lost");
            Counters::bump(&ctx.counters.failed);
            Ok(())
        } else {
            Err(ClaimError::Conflict)
        };
    }
    // A claim in flight when the worker starts shutting down is cancelled: dropping it hands
    // back whatever landed.
    let mut stop = ctx.stop.subscribe();
    let claimed = tokio::select! {
        c = claim(ctx, &id, &record, mod_rev) => c?,
        _ = until(&mut stop, Stop::Closing) => return Ok(()),
    };
    let (claim_rev, attempt) = (claimed.rev, claimed.attempt);
    let claim_lost = ctx.view.shared().lock().running(&id, claim_rev);
    tracing::debug!(job = %id, command = %record.command, attempt, "job claimed");

    let attempt_run = async {
        let payload = match serde_json::from_slice(&claimed.payload) {
            Ok(p) => p,
            Err(e) => {
                return Err(AttemptFailure {
                    failure: Failure::BadPayload {
                        message: format!("the stored payload does not parse: {e}"),
                    },
                    permanent: true,
                })
            }
        };
        let input = Input {
            job: JobId::from(id.as_str()),
            command: command.name().into(),
            attempt,
            max_attempts: record.max_attempts,
            fence: claim_rev as u64,
            payload,
        };
        exec::attempt(&command, input, record.timeout(), &ctx.counters).await
    };
    let lease = claimed.lease.clone();
    let end = tokio::select! {
        r = attempt_run => End::Done(r),
        reason = claim_lost.fired() => End::Lost(reason),
        reason = lease.signal().fired() => End::Lost(reason),
        _ = until(&mut stop, Stop::HandBack) => End::HandBack,
    };
    // From here on the attempt's end is written below (or the claim is gone): the guard's
    // hand-back is not needed.
    let mut running = claimed.settle();
    let ours = vec![Compare::create_revision(
        keys.claim(&id),
        CompareOp::Equal,
        claim_rev,
    )];
    let counters = &ctx.counters;
    // Each write below is retried until it is answered, as long as the claim holds: a claim
    // left in place on a live worker's lease would keep the job "running" for ever.
    let answered = |kept: Option<bool>, counter: &AtomicU64| {
        if kept == Some(true) {
            Counters::bump(counter);
        }
        kept == Some(true)
    };
    let kept = match end {
        End::Done(Ok(output)) => {
            let result = result_record(&record, attempt, Some(&ctx.me), Ok(output));
            let kept = while_claimed(&id, &claim_lost, &lease, || {
                finish(ctx, &id, &record, ours.clone(), result.clone())
            })
            .await;
            answered(kept, &counters.succeeded)
        }
        End::Done(Err(f)) if f.retry(attempt, record.max_attempts) => {
            let delay = record.backoff().delay(attempt);
            running.not_before_ms = ms_after(delay);
            running.last_failure = Some(f.failure);
            let kept = while_claimed(&id, &claim_lost, &lease, || {
                hand_back(ctx, &id, &running, ours.clone())
            })
            .await;
            if kept == Some(true) {
                tracing::debug!(job = %id, attempt, ?delay, "attempt failed; retrying after the backoff");
            }
            answered(kept, &counters.retried)
        }
        End::Done(Err(f)) => {
            let result = result_record(&record, attempt, Some(&ctx.me), Err(f.failure));
            let kept = while_claimed(&id, &claim_lost, &lease, || {
                finish(ctx, &id, &record, ours.clone(), result.clone())
            })
            .await;
            answered(kept, &counters.failed)
        }
        End::Lost(reason) => {
            tracing::warn!(job = %id, %reason, "claim lost while running: the attempt was cancelled and the job will run again");
            false
        }
        End::HandBack => {
            // Not the job's fault: the attempt is not used up.
            let back = (*record).clone().released();
            let kept = while_claimed(&id, &claim_lost, &lease, || {
                hand_back(ctx, &id, &back, ours.clone())
            })
            .await;
            if kept == Some(true) {
                tracing::info!(job = %id, "shutting down: running job handed back");
            }
            answered(kept, &counters.handed_back)
        }
    };
    if !kept {
        Counters::bump(&counters.lost);
    }
    Ok(())
}

/// Runs `write` (a transaction that ends an attempt) until it is answered, pausing between
/// tries, as long as the claim holds. `None`: the claim was lost first.
async fn while_claimed<F, Fut>(
    id: &str,
    claim_lost: &sync_core::signal::LossSignal,
    lease: &Lease,
    mut write: F,
) -> Option<bool>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = sync_etcd::Result<bool>>,
{
    let mut pause = Duration::from_millis(100);
    loop {
        match write().await {
            Ok(kept) => return Some(kept),
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "could not record the end of an attempt; trying again while the claim holds");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = claim_lost.fired() => return None,
                    _ = lease.signal().fired() => return None,
                }
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// A claim that was won: the attempt may start. Dropped before [`settle`](Claimed::settle), it
/// hands the job back (without using up an attempt) on the runtime.
pub(crate) struct Claimed {
    ctx: Arc<Ctx>,
    id: String,
    /// The claim's create revision (the attempt's fencing token).
    pub(crate) rev: i64,
    /// Which attempt it is.
    pub(crate) attempt: u32,
    /// The job as the claim rewrote it (its attempt count raised).
    running: Option<JobRecord>,
    /// The job as it was before the claim.
    before: Arc<JobRecord>,
    pub(crate) payload: Vec<u8>,
    pub(crate) lease: Arc<Lease>,
}

impl Claimed {
    /// The attempt's end will be written by the caller: disarms the guard.
    fn settle(mut self) -> JobRecord {
        self.running
            .take()
            .unwrap_or_else(|| (*self.before).clone())
    }

    /// Hands the job back at once (the attempt is not used up).
    #[cfg(feature = "conformance")]
    pub(crate) async fn hand_back(mut self) -> sync_etcd::Result<bool> {
        self.running = None;
        let guard = vec![Compare::create_revision(
            self.ctx.keys.claim(&self.id),
            CompareOp::Equal,
            self.rev,
        )];
        let back = (*self.before).clone().released();
        hand_back(&self.ctx, &self.id, &back, guard).await
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if self.running.is_some() {
            let back = (*self.before).clone().released();
            give_back_in_background(&self.ctx, &self.id, Some(self.rev), back, None);
        }
    }
}

/// A claim whose outcome the hand-back must find out: what it put, on which lease, and its
/// pending outcome (`None`: unknown, look for it).
type Unsure = (ClaimRecord, i64, Option<batch::Pending>);

/// Hands a job back on the runtime (for `Drop`): the claim of create revision `rev` (or, if
/// the claim's outcome is not known yet, the claim `mine` if it landed), restoring `back`. The
/// worker's lease is the safety net if this fails.
fn give_back_in_background(
    ctx: &Arc<Ctx>,
    id: &str,
    rev: Option<i64>,
    back: JobRecord,
    mine: Option<Unsure>,
) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (ctx, id) = (ctx.clone(), id.to_owned());
    rt.spawn(async move {
        let rev = match (rev, mine) {
            (Some(rev), _) => Some(rev),
            (None, Some((claim, lease_id, pending))) => match pending {
                Some(p) => match p.await {
                    Ok(out) => claim_outcome(out, &claim, lease_id).map(|(rev, _)| rev),
                    Err(_) => look(&ctx, &id, &claim, lease_id).await,
                },
                None => look(&ctx, &id, &claim, lease_id).await,
            },
            (None, None) => None,
        };
        let Some(rev) = rev else { return };
        let guard = vec![Compare::create_revision(
            ctx.keys.claim(&id),
            CompareOp::Equal,
            rev,
        )];
        match hand_back(&ctx, &id, &back, guard).await {
            Ok(true) => tracing::debug!(job = %id, "cancelled claim handed back"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "could not hand back a cancelled claim; it goes when the worker's lease does")
            }
        }
    });
}

/// Whether a claim whose outcome is unknown landed: looks now, and once more after a request
/// timeout (it may land late). Its create revision if so.
async fn look(ctx: &Ctx, id: &str, claim: &ClaimRecord, lease_id: i64) -> Option<i64> {
    if let Some(rev) = our_claim(ctx, id, claim, lease_id).await {
        return Some(rev);
    }
    tokio::time::sleep(ctx.client.config().request_timeout).await;
    our_claim(ctx, id, claim, lease_id).await
}

/// The create revision of the claim of job `id` if it is `claim` on our lease.
async fn our_claim(ctx: &Ctx, id: &str, claim: &ClaimRecord, lease_id: i64) -> Option<i64> {
    let key = ctx.keys.claim(id);
    let kv = ctx
        .client
        .retry("read claim", ctx.client.default_budget(), |mut c| {
            let key = key.clone();
            async move { Ok(c.get(key, None).await?.kvs().first().cloned()) }
        })
        .await
        .ok()
        .flatten()?;
    is_ours(&kv, claim, lease_id).then(|| kv.create_revision())
}

fn is_ours(kv: &etcd_client::KeyValue, claim: &ClaimRecord, lease_id: i64) -> bool {
    let same: Option<ClaimRecord> = serde_json::from_slice(kv.value()).ok();
    kv.lease() == lease_id
        && same.is_some_and(|s| s.worker == claim.worker && s.attempt == claim.attempt)
}

/// A claim transaction handed to the batcher; dropped before its outcome was taken, it hands
/// back whatever landed.
struct PendingClaim {
    ctx: Arc<Ctx>,
    id: String,
    claim: ClaimRecord,
    lease_id: i64,
    before: Arc<JobRecord>,
    reply: Option<batch::Pending>,
}

impl Drop for PendingClaim {
    fn drop(&mut self) {
        if let Some(pending) = self.reply.take() {
            let back = (*self.before).clone().released();
            give_back_in_background(
                &self.ctx,
                &self.id,
                None,
                back,
                Some((self.claim.clone(), self.lease_id, Some(pending))),
            );
        }
    }
}

/// The worker's claim path for job `id` last seen at `mod_rev`: puts the claim (on the
/// worker's lease) and the job with its attempt count raised, if the job is unchanged and
/// unclaimed, and reads the payload. Cancel-safe: dropped at any point, it leaves no claim
/// behind (what landed is handed back, without using up an attempt).
pub(crate) async fn claim(
    ctx: &Arc<Ctx>,
    id: &str,
    record: &Arc<JobRecord>,
    mod_rev: i64,
) -> Result<Claimed, ClaimError> {
    let lease = ctx.lease().await?;
    let attempt = record.attempts + 1;
    let mut running = (**record).clone();
    running.attempts = attempt;
    running.held = false;
    let claim = ClaimRecord {
        worker: ctx.me.clone(),
        attempt,
        started_ms: now_ms(),
    };
    let (job_key, claim_key) = (ctx.keys.job(id), ctx.keys.claim(id));
    let payload_key = ctx.keys.payload(id);
    let lease_id = lease.id();
    let txn = Txn::new()
        .when([
            Compare::mod_revision(job_key.clone(), CompareOp::Equal, mod_rev),
            Compare::create_revision(claim_key.clone(), CompareOp::Equal, 0),
        ])
        .and_then([
            TxnOp::put(
                claim_key.clone(),
                to_json(&claim),
                Some(PutOptions::new().with_lease(lease_id)),
            ),
            TxnOp::put(job_key, to_json(&running), None),
            TxnOp::get(payload_key.clone(), None),
        ])
        // A retry after an attempt that landed but whose reply was lost: read ours.
        .or_else([TxnOp::get(claim_key, None), TxnOp::get(payload_key, None)]);
    let sent = Instant::now();
    let reply = ctx.batcher().send(
        "claim job",
        id,
        txn,
        usize::try_from(record.payload_bytes).unwrap_or(usize::MAX),
    );
    let mut pending = PendingClaim {
        ctx: ctx.clone(),
        id: id.to_owned(),
        claim,
        lease_id,
        before: record.clone(),
        reply: Some(reply),
    };
    let out = match pending.reply.as_mut() {
        Some(reply) => reply.await,
        None => return Err(ClaimError::Conflict),
    };
    // The outcome is in hand: from here on, `Claimed` is the guard.
    pending.reply = None;
    let claimed = match out {
        Ok(out) => claim_outcome(out, &pending.claim, lease_id),
        Err(e) => {
            ctx.view.shared().lock().claim_took(sent.elapsed(), false);
            // It may have landed: the guard looks and hands back what it finds.
            give_back_in_background(
                ctx,
                id,
                None,
                (**record).clone().released(),
                Some((pending.claim.clone(), lease_id, None)),
            );
            return Err(ClaimError::Etcd(e));
        }
    };
    ctx.view
        .shared()
        .lock()
        .claim_took(sent.elapsed(), claimed.is_some());
    let (rev, payload) = claimed.ok_or(ClaimError::Conflict)?;
    Counters::bump(&ctx.counters.claims);
    Ok(Claimed {
        ctx: ctx.clone(),
        id: id.to_owned(),
        rev,
        attempt,
        running: Some(running),
        before: record.clone(),
        payload,
        lease,
    })
}

/// What a claim transaction's outcome says: the claim's create revision and the payload, if the
/// claim is ours.
fn claim_outcome(
    out: batch::Outcome,
    claim: &ClaimRecord,
    lease_id: i64,
) -> Option<(i64, Vec<u8>)> {
    let gets: Vec<Option<etcd_client::KeyValue>> = out
        .responses
        .into_iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g.kvs().first().cloned()),
            _ => None,
        })
        .collect();
    let payload = |i: usize| {
        gets.get(i)
            .cloned()
            .flatten()
            .map(|kv| kv.value().to_vec())
            .unwrap_or_else(|| b"null".to_vec())
    };
    if out.succeeded {
        Some((out.revision, payload(0)))
    } else {
        let ours = gets
            .first()
            .cloned()
            .flatten()
            .filter(|kv| is_ours(kv, claim, lease_id))
            .map(|kv| kv.create_revision());
        ours.map(|rev| (rev, payload(1)))
    }
}

/// The worker's claim path for one job, for the conformance suite: claims job `id` as the
/// dispatcher would, then hands it back at once. Returns whether it claimed it.
#[cfg(feature = "conformance")]
pub(crate) async fn claim_and_hand_back(
    ctx: &Arc<Ctx>,
    id: &str,
) -> Result<bool, sync_etcd::Error> {
    let key = ctx.keys.job(id);
    let kv = ctx
        .client
        .retry("read job", ctx.client.default_budget(), |mut c| {
            let key = key.clone();
            async move { Ok(c.get(key, None).await?.kvs().first().cloned()) }
        })
        .await?;
    let Some(kv) = kv else { return Ok(false) };
    let Ok(record) = serde_json::from_slice::<JobRecord>(kv.value()) else {
        return Ok(false);
    };
    match claim(ctx, id, &Arc::new(record), kv.mod_revision()).await {
        Ok(claimed) => claimed.hand_back().await,
        Err(ClaimError::Conflict) => Ok(false),
        Err(ClaimError::Etcd(e)) => Err(e),
    }
}

fn result_record(
    record: &JobRecord,
    attempts: u32,
    worker: Option<&str>,
    outcome: Result<Value, Failure>,
) -> ResultRecord {
    ResultRecord {
        command: record.command.clone(),
        attempts,
        worker: worker.map(str::to_owned),
        finished_ms: now_ms(),
        outcome: match outcome {
            Ok(output) => Outcome::Succeeded { output },
            Err(failure) => Outcome::Failed { failure },
        },
    }
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Our records hold strings, numbers and JSON values only: serialising them cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Ends the job: deletes it and its claim and writes its result (with the idempotency key) on
/// a retention lease, if `guard` holds. Returns whether it did.
async fn finish(
    ctx: &Ctx,
    id: &str,
    record: &JobRecord,
    guard: Vec<Compare>,
    result: ResultRecord,
) -> sync_etcd::Result<bool> {
    let keys = &ctx.keys;
    let result_key = keys.result(id);
    let value = to_json(&result);
    let bytes = value.len();
    let mut tries = 0;
    loop {
        tries += 1;
        let lease = ctx.retention.lease(record.retention()).await?;
        let mut ops = vec![
            TxnOp::delete(keys.job(id), None),
            TxnOp::delete(keys.claim(id), None),
            TxnOp::delete(keys.payload(id), None),
            TxnOp::put(
                result_key.clone(),
                value.clone(),
                Some(PutOptions::new().with_lease(lease)),
            ),
        ];
        if let Some(k) = &record.idempotency_key {
            ops.push(TxnOp::put(
                keys.idem(k),
                id.as_bytes().to_vec(),
                Some(PutOptions::new().with_lease(lease)),
            ));
        }
        let txn = Txn::new()
            .when(guard.clone())
            .and_then(ops)
            .or_else([TxnOp::get(result_key.clone(), None)]);
        let r = ctx
            .batcher()
            .txn("record job result", id, txn, bytes * 2)
            .await
            .map(|out| {
                // A retry after an attempt that landed but whose reply was lost finds ours.
                out.succeeded
                    || match out.responses.into_iter().next() {
                        Some(TxnOpResponse::Get(g)) => g.kvs().first().is_some_and(|kv| {
                            serde_json::from_slice::<ResultRecord>(kv.value()).is_ok_and(|r| {
                                result.worker.is_some()
                                    && r.worker == result.worker
                                    && r.attempts == result.attempts
                            })
                        }),
                        _ => false,
                    }
            });
        match r {
            Err(sync_etcd::Error::Etcd { source, .. })
                if tries < 3 && source.to_string().contains("lease not found") =>
            {
                ctx.retention.forget(lease);
            }
            other => return other,
        }
    }
}

/// Puts the job back (for a retry, or handed back) and deletes our claim, if `guard` holds.
/// Returns whether it did.
async fn hand_back(
    ctx: &Ctx,
    id: &str,
    record: &JobRecord,
    guard: Vec<Compare>,
) -> sync_etcd::Result<bool> {
    let (job_key, claim_key) = (ctx.keys.job(id), ctx.keys.claim(id));
    let value = to_json(record);
    let txn = Txn::new().when(guard).and_then([
        TxnOp::put(job_key, value, None),
        TxnOp::delete(claim_key, None),
    ]);
    Ok(ctx
        .batcher()
        .txn("reschedule job", id, txn, 0)
        .await?
        .succeeded)
}

/// Keeps the worker's registrations (`workers/<command>/<worker>`) on its current lease: after
/// a lease is lost, puts them again on the new one.
pub(crate) async fn keep_registered(ctx: Arc<Ctx>) {
    let mut stop = ctx.stop.subscribe();
    loop {
        let registered = async {
            let lease = ctx.lease().await?;
            put_registrations(&ctx, &lease).await?;
            Ok::<_, sync_etcd::Error>(lease)
        };
        let lease = tokio::select! {
            r = registered => r,
            _ = until(&mut stop, Stop::Closing) => return,
        };
        match lease {
            Ok(lease) => tokio::select! {
                reason = lease.signal().fired() => {
                    tracing::warn!(worker = %ctx.me, %reason, "worker lease lost: running jobs were cancelled; registering again on a new lease");
                }
                _ = until(&mut stop, Stop::Closing) => return,
            },
            Err(e) => {
                tracing::warn!(worker = %ctx.me, error = %e, "cannot register the worker yet");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = until(&mut stop, Stop::Closing) => return,
                }
            }
        }
    }
}

/// Puts `workers/<command>/<me>` for every registered command, on `lease`.
pub(crate) async fn put_registrations(ctx: &Ctx, lease: &Lease) -> sync_etcd::Result<()> {
    let names: Vec<String> = ctx
        .commands
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .cloned()
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let ops: Vec<TxnOp> = names
        .iter()
        .map(|n| {
            TxnOp::put(
                ctx.keys.worker(n, &ctx.me),
                ctx.me.clone(),
                Some(PutOptions::new().with_lease(lease.id())),
            )
        })
        .collect();
    ctx.client
        .retry("register worker", ctx.client.default_budget(), |mut c| {
            let txn = Txn::new().and_then(ops.clone());
            async move { c.txn(txn).await.map(|_| ()) }
        })
        .await
}

/// Deletes the worker's registrations (at shutdown).
pub(crate) async fn delete_registrations(ctx: &Ctx) -> sync_etcd::Result<()> {
    let names: Vec<String> = ctx
        .commands
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .cloned()
        .collect();
    let ops: Vec<TxnOp> = names
        .iter()
        .map(|n| TxnOp::delete(ctx.keys.worker(n, &ctx.me), None))
        .collect();
    if ops.is_empty() {
        return Ok(());
    }
    ctx.client
        .retry("unregister worker", ctx.client.default_budget(), |mut c| {
            let txn = Txn::new().and_then(ops.clone());
            async move { c.txn(txn).await.map(|_| ()) }
        })
        .await
}
