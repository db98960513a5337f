//! The worker: claims jobs of its commands under its lease, runs them on its pool, and records
//! their outcome (or schedules their retry) only while its claim still stands.
//!
//! Every write that ends an attempt compares the claim's create revision with the one the
//! claim transaction made, so a worker that lost its claim (its lease expired, someone deleted
//! the claim) can never overwrite what the job's next worker does.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use serde_json::Value;
use sync_core::etcd::{EtcdClient, Lease, LeasePool, WatchHub};
use sync_core::signal::LossReason;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::batch::Batcher;
use super::records::{now_ms, ClaimRecord, JobRecord, Keys, Outcome, ResultRecord};
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
    pub(crate) async fn lease(&self) -> sync_core::etcd::Result<Arc<Lease>> {
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

enum ClaimError {
    /// Someone else changed the job or claimed it first.
    Conflict,
    Etcd(sync_core::etcd::Error),
}

impl From<sync_core::etcd::Error> for ClaimError {
    fn from(e: sync_core::etcd::Error) -> Self {
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

async fn work(ctx: &Ctx, pick: Pick) -> Result<(), ClaimError> {
    let Pick {
        id,
        record,
        mod_rev,
    } = pick;
    let Some(command) = ctx.command(&record.command) else {
        return Ok(());
    };
    let keys = &ctx.keys;
    let (job_key, claim_key) = (keys.job(&id), keys.claim(&id));
    let unclaimed = [
        Compare::mod_revision(job_key.clone(), CompareOp::Equal, mod_rev),
        Compare::create_revision(claim_key.clone(), CompareOp::Equal, 0),
    ];
    if record.attempts >= record.max_attempts {
        // The worker of the last attempt was lost: nothing is left to try.
        let result = result_record(&record, record.attempts, None, Err(Failure::WorkerLost));
        return if finish(ctx, &id, &record, unclaimed.to_vec(), result).await? {
            tracing::warn!(job = %id, command = %record.command, attempts = record.attempts, "job failed: the worker of its last attempt was lost");
            Counters::bump(&ctx.counters.failed);
            Ok(())
        } else {
            Err(ClaimError::Conflict)
        };
    }
    let lease = ctx.lease().await?;
    let attempt = record.attempts + 1;
    let mut running = (*record).clone();
    running.attempts = attempt;
    let claim = ClaimRecord {
        worker: ctx.me.clone(),
        attempt,
        started_ms: now_ms(),
    };
    let sent = Instant::now();
    let claimed = claim_txn(ctx, &id, &unclaimed, &claim, &running, &lease).await;
    ctx.view
        .shared()
        .lock()
        .claim_took(sent.elapsed(), claimed.is_ok());
    let (claim_rev, payload) = claimed?;
    Counters::bump(&ctx.counters.claims);
    Counters::bump(&ctx.counters.attempts);
    let claim_lost = ctx.view.shared().lock().running(&id, claim_rev);
    tracing::debug!(job = %id, command = %record.command, attempt, "job claimed");

    let mut stop = ctx.stop.subscribe();
    let attempt_run = async {
        let payload = match serde_json::from_slice(&payload) {
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
        exec::attempt(&command, input, record.timeout()).await
    };
    let end = tokio::select! {
        r = attempt_run => End::Done(r),
        reason = claim_lost.fired() => End::Lost(reason),
        reason = lease.signal().fired() => End::Lost(reason),
        _ = until(&mut stop, Stop::HandBack) => End::HandBack,
    };
    let ours = vec![Compare::create_revision(
        claim_key.clone(),
        CompareOp::Equal,
        claim_rev,
    )];
    let counters = &ctx.counters;
    let kept = match end {
        End::Done(Ok(output)) => {
            let result = result_record(&record, attempt, Some(&ctx.me), Ok(output));
            let kept = finish(ctx, &id, &record, ours, result).await?;
            if kept {
                Counters::bump(&counters.succeeded);
            }
            kept
        }
        End::Done(Err(f)) if f.retry(attempt, record.max_attempts) => {
            let delay = record.backoff().delay(attempt);
            running.not_before_ms = now_ms() + delay.as_millis() as u64;
            running.last_failure = Some(f.failure);
            let kept = hand_back(ctx, &id, &running, ours).await?;
            if kept {
                Counters::bump(&counters.retried);
                tracing::debug!(job = %id, attempt, ?delay, "attempt failed; retrying after the backoff");
            }
            kept
        }
        End::Done(Err(f)) => {
            let result = result_record(&record, attempt, Some(&ctx.me), Err(f.failure));
            let kept = finish(ctx, &id, &record, ours, result).await?;
            if kept {
                Counters::bump(&counters.failed);
            }
            kept
        }
        End::Lost(reason) => {
            tracing::warn!(job = %id, %reason, "claim lost while running: the attempt was cancelled and the job will run again");
            false
        }
        End::HandBack => {
            // Not the job's fault: the attempt is not used up.
            running.attempts = attempt - 1;
            running.not_before_ms = 0;
            let kept = hand_back(ctx, &id, &running, ours).await?;
            if kept {
                Counters::bump(&counters.handed_back);
                tracing::info!(job = %id, "shutting down: running job handed back");
            }
            kept
        }
    };
    if !kept {
        Counters::bump(&counters.lost);
    }
    Ok(())
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

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Our records hold strings, numbers and JSON values only: serialising them cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Puts the claim (on the worker's lease) and the job with its attempt count raised, if the job
/// is unchanged and unclaimed, and reads the payload. Returns the claim's create revision and
/// the payload.
async fn claim_txn(
    ctx: &Ctx,
    id: &str,
    unclaimed: &[Compare],
    claim: &ClaimRecord,
    running: &JobRecord,
    lease: &Lease,
) -> Result<(i64, Vec<u8>), ClaimError> {
    let (job_key, claim_key) = (ctx.keys.job(id), ctx.keys.claim(id));
    let payload_key = ctx.keys.payload(id);
    let (claim_v, job_v) = (to_json(claim), to_json(running));
    let lease_id = lease.id();
    let txn = Txn::new()
        .when(unclaimed.to_vec())
        .and_then([
            TxnOp::put(
                claim_key.clone(),
                claim_v,
                Some(PutOptions::new().with_lease(lease_id)),
            ),
            TxnOp::put(job_key, job_v, None),
            TxnOp::get(payload_key.clone(), None),
        ])
        // A retry after an attempt that landed but whose reply was lost: read ours.
        .or_else([TxnOp::get(claim_key, None), TxnOp::get(payload_key, None)]);
    let out = ctx.batcher().txn("claim job", id, txn).await?;
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
    let claimed = if out.succeeded {
        Some((out.revision, payload(0)))
    } else {
        let ours = gets.first().cloned().flatten().and_then(|kv| {
            let same: Option<ClaimRecord> = serde_json::from_slice(kv.value()).ok();
            (kv.lease() == lease_id
                && same.is_some_and(|s| s.worker == claim.worker && s.attempt == claim.attempt))
            .then(|| kv.create_revision())
        });
        ours.map(|rev| (rev, payload(1)))
    };
    claimed.ok_or(ClaimError::Conflict)
}

/// Ends the job: deletes it and its claim and writes its result (with the idempotency key) on
/// a retention lease, if `guard` holds. Returns whether it did.
async fn finish(
    ctx: &Ctx,
    id: &str,
    record: &JobRecord,
    guard: Vec<Compare>,
    result: ResultRecord,
) -> sync_core::etcd::Result<bool> {
    let keys = &ctx.keys;
    let result_key = keys.result(id);
    let value = to_json(&result);
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
            .txn("record job result", id, txn)
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
            Err(sync_core::etcd::Error::Etcd { source, .. })
                if tries < 3 && source.to_string().contains("lease not found") =>
            {
                ctx.retention.forget(lease);
            }
            other => return other,
        }
    }
}

/// Puts the job back (for a retry, or handed back at shutdown) and deletes our claim, if
/// `guard` holds. Returns whether it did.
async fn hand_back(
    ctx: &Ctx,
    id: &str,
    record: &JobRecord,
    guard: Vec<Compare>,
) -> sync_core::etcd::Result<bool> {
    let (job_key, claim_key) = (ctx.keys.job(id), ctx.keys.claim(id));
    let value = to_json(record);
    let txn = Txn::new().when(guard).and_then([
        TxnOp::put(job_key, value, None),
        TxnOp::delete(claim_key, None),
    ]);
    Ok(ctx
        .batcher()
        .txn("reschedule job", id, txn)
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
            Ok::<_, sync_core::etcd::Error>(lease)
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
pub(crate) async fn put_registrations(ctx: &Ctx, lease: &Lease) -> sync_core::etcd::Result<()> {
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
pub(crate) async fn delete_registrations(ctx: &Ctx) -> sync_core::etcd::Result<()> {
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
