//! The worker: claims jobs of its commands (from its [`View`]), runs them on its pool, and
//! records their outcome (or schedules their retry) only while its claim still stands.
//!
//! Every write that ends an attempt compares the claim's create revision with the one the
//! claim transaction made, so a worker that lost its claim (its lease expired, someone deleted
//! the claim) can never overwrite what the job's next worker does.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp};
use serde_json::Value;
use sync_core::signal::LossReason;
use sync_etcd::Lease;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::batch::MAX_BATCH;
use super::claim::{ClaimError, Claimer, PendingClaim, ToClaim};
use super::finish::{result_record, Finisher};
use super::records::ms_after;
use super::registry::Registry;
use super::view::{Pick, View};
use crate::exec::{self, AttemptFailure, Count, Counters, Tracked, Tracker};
use crate::{Failure, Input, JobId};
use tracing::Instrument;

/// How far along shutting down the worker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stop {
    Running,
    /// No new claims; running jobs finish.
    Closing,
    /// The grace is over: running jobs are cancelled and handed back.
    HandBack,
}

/// Resolves once the stop level reaches `level`.
pub(crate) async fn until(stop: &mut watch::Receiver<Stop>, level: Stop) {
    if stop.wait_for(|s| *s >= level).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// How long a worker leaves a job alone after losing the race to claim it: by then its view
/// shows who has it.
const CLAIM_COOLDOWN: Duration = Duration::from_millis(100);
/// How long it leaves a job alone after an etcd error while claiming it.
const ERROR_COOLDOWN: Duration = Duration::from_millis(500);
/// The most jobs claimed in one request.
const MAX_CLAIM_GROUP: usize = MAX_BATCH;
/// How long a claim of a held job (its submit in flight) waits for the release before it is
/// handed back; the job is then claimed again once its hold is gone (released, withdrawn, or
/// ended with the submitter's lease). A release normally comes within one commit.
const HOLD_WAIT: Duration = Duration::from_secs(2);

/// The claim → run → finish path: takes jobs from the view, claims them, runs them on the
/// pool, and writes how each attempt ended.
pub(crate) struct Worker {
    me: String,
    view: Arc<View>,
    claimer: Arc<Claimer>,
    finisher: Finisher,
    registry: Arc<Registry>,
    slots: Arc<Semaphore>,
    stop: watch::Receiver<Stop>,
    tracker: Arc<Tracker>,
    counters: Arc<Counters>,
}

/// How the wait of a claim of a held job for its release ended.
enum Hold {
    Released,
    /// Not in time, or the worker is shutting down: hand the claim back.
    GiveBack,
    /// The claim is gone (the job was withdrawn, or the claim or lease was lost).
    Gone,
}

/// How an attempt ended, as seen by the worker.
enum End {
    Done(Result<Value, AttemptFailure>),
    Lost(LossReason),
    HandBack,
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        me: String,
        view: Arc<View>,
        claimer: Arc<Claimer>,
        finisher: Finisher,
        registry: Arc<Registry>,
        pool: usize,
        stop: watch::Receiver<Stop>,
        tracker: Arc<Tracker>,
        counters: Arc<Counters>,
    ) -> Self {
        Worker {
            me,
            view,
            claimer,
            finisher,
            registry,
            slots: Arc::new(Semaphore::new(pool)),
            stop,
            tracker,
            counters,
        }
    }

    /// Claims jobs while a pool slot is free, until shutdown. The jobs claimable at the same
    /// moment (as many as there are free slots, up to a batch) are claimed together, in one
    /// request.
    pub(crate) async fn dispatch(self: Arc<Self>) {
        let mut stop = self.stop.clone();
        loop {
            let permit = tokio::select! {
                p = self.slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = until(&mut stop, Stop::Closing) => return,
            };
            let pick = tokio::select! {
                p = self.view.pick() => p,
                _ = until(&mut stop, Stop::Closing) => return,
            };
            let mut group = vec![(pick, permit, self.tracker.enter())];
            while group.len() < MAX_CLAIM_GROUP {
                let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                    break;
                };
                let Some(pick) = self.view.try_pick() else {
                    break;
                };
                group.push((pick, permit, self.tracker.enter()));
            }
            tokio::spawn(self.clone().claim_group(group));
        }
    }

    /// Claims a group of picked jobs in one request, then runs each on its own task.
    async fn claim_group(self: Arc<Self>, group: Vec<(Pick, OwnedSemaphorePermit, Tracked)>) {
        // A job whose last attempt's worker was lost is not claimed but finished.
        let (lost, group): (Vec<_>, Vec<_>) = group
            .into_iter()
            .partition(|(p, ..)| p.record.attempts >= p.record.max_attempts);
        for (pick, permit, tracked) in lost {
            tokio::spawn(self.clone().run_job(pick, None, permit, tracked));
        }
        if group.is_empty() {
            return;
        }
        let lease = match self.claimer.lease().await {
            Ok(lease) => lease,
            Err(e) => {
                for (pick, permit, _tracked) in group {
                    tracing::warn!(job = %pick.id, error = %e, "could not claim a job; trying again later");
                    self.view.release(&pick.id, Some(ERROR_COOLDOWN));
                    drop(permit);
                }
                self.view.wake();
                return;
            }
        };
        let jobs: Vec<ToClaim<'_>> = group
            .iter()
            .map(|(p, ..)| (p.id.as_str(), &p.record, p.mod_rev))
            .collect();
        let claims = self.claimer.send_claims(&lease, &jobs);
        for ((pick, permit, tracked), claim) in group.into_iter().zip(claims) {
            tokio::spawn(self.clone().run_job(pick, Some(claim), permit, tracked));
        }
    }

    async fn run_job(
        self: Arc<Self>,
        pick: Pick,
        claim: Option<PendingClaim>,
        permit: OwnedSemaphorePermit,
        _tracked: Tracked,
    ) {
        let id = pick.id.clone();
        let cooldown = match self.work(pick, claim).await {
            Ok(()) => None,
            Err(ClaimError::Conflict) => {
                self.counters.bump(Count::ClaimConflict);
                Some(CLAIM_COOLDOWN)
            }
            Err(ClaimError::Etcd(e)) => {
                tracing::warn!(job = %id, error = %e, "could not claim a job; trying again later");
                Some(ERROR_COOLDOWN)
            }
        };
        self.view.release(&id, cooldown);
        drop(permit);
        self.view.wake();
    }

    /// One job: its claim's outcome (`None`: the job's last worker was lost, finish it), then
    /// the attempt and how it ended.
    async fn work(&self, pick: Pick, claim: Option<PendingClaim>) -> Result<(), ClaimError> {
        let Pick {
            id,
            record,
            mod_rev,
        } = pick;
        let Some(command) = self.registry.command(&record.command) else {
            return Ok(());
        };
        let claim_key = self.claimer.keys().claim(&id);
        if record.attempts >= record.max_attempts {
            // The worker of the last attempt was lost: nothing is left to try.
            let unclaimed = vec![
                Compare::mod_revision(self.claimer.keys().job(&id), CompareOp::Equal, mod_rev),
                Compare::create_revision(claim_key, CompareOp::Equal, 0),
                // Not while its submit may still withdraw it.
                Compare::create_revision(self.claimer.keys().hold(&id), CompareOp::Equal, 0),
            ];
            let result = result_record(&record, record.attempts, None, Err(Failure::WorkerLost));
            return if self
                .finisher
                .finish(&id, &record, unclaimed, result)
                .await?
            {
                tracing::warn!(job = %id, command = %record.command, attempts = record.attempts, "job failed: the worker of its last attempt was lost");
                self.counters.bump(Count::Failed);
                Ok(())
            } else {
                Err(ClaimError::Conflict)
            };
        }
        // A claim in flight when the worker starts shutting down is cancelled: dropping it hands
        // back whatever landed.
        let mut stop = self.stop.clone();
        let Some(claim) = claim else {
            // Not claimed (its attempts are not used up): claim it alone.
            return Err(ClaimError::Conflict);
        };
        let claimed = tokio::select! {
            c = claim
                .outcome()
                .instrument(sync_core::telemetry::span("claim", "etcd", &id)) => c?,
            _ = until(&mut stop, Stop::Closing) => return Ok(()),
        };
        let (claim_rev, attempt) = (claimed.rev, claimed.attempt);
        let claim_lost = self.view.running(&id, claim_rev);
        tracing::debug!(job = %id, command = %record.command, attempt, held = claimed.held, "job claimed");
        if claimed.held {
            // Claimed while its submit was in flight (in parallel with the release): start
            // only once the submit released it. Otherwise the claim is handed back (dropped)
            // without using up the attempt, or was deleted with the withdrawn job.
            let lease = claimed.lease.clone();
            let hold = tokio::select! {
                biased;
                _ = claim_lost.fired() => Hold::Gone,
                _ = lease.signal().fired() => Hold::Gone,
                _ = until(&mut stop, Stop::Closing) => Hold::GiveBack,
                released = self.view.hold_ended(&id, claim_rev) => {
                    if released { Hold::Released } else { Hold::Gone }
                }
                _ = tokio::time::sleep(HOLD_WAIT) => {
                    tracing::debug!(job = %id, "the job's submit did not release it in time: handing it back until its hold ends");
                    self.view.await_hold(&id);
                    Hold::GiveBack
                }
            };
            match hold {
                Hold::Released => {}
                // Dropping the claim hands it back (the attempt is not used up).
                Hold::GiveBack => return Ok(()),
                // The claim went (with the withdrawn job, or with our lease): nothing to undo.
                Hold::Gone => {
                    claimed.settle();
                    return Ok(());
                }
            }
        }

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
            exec::attempt(&command, input, record.timeout(), &self.counters).await
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
            self.claimer.keys().claim(&id),
            CompareOp::Equal,
            claim_rev,
        )];
        let counters = &self.counters;
        let finisher = &self.finisher;
        // Each write below is retried until it is answered, as long as the claim holds: a claim
        // left in place on a live worker's lease would keep the job "running" for ever.
        let answered = |kept: Option<bool>, count: Count| {
            if kept == Some(true) {
                counters.bump(count);
            }
            kept == Some(true)
        };
        let kept = match end {
            End::Done(Ok(output)) => {
                let result = result_record(&record, attempt, Some(&self.me), Ok(output));
                let kept = while_claimed(&id, &claim_lost, &lease, || {
                    finisher.finish(&id, &record, ours.clone(), result.clone())
                })
                .await;
                answered(kept, Count::Succeeded)
            }
            End::Done(Err(f)) if f.retry(attempt, record.max_attempts) => {
                let delay = record.backoff().delay(attempt);
                running.not_before_ms = ms_after(delay);
                running.last_failure = Some(f.failure);
                let kept = while_claimed(&id, &claim_lost, &lease, || {
                    finisher.hand_back(&id, &running, ours.clone())
                })
                .await;
                if kept == Some(true) {
                    tracing::debug!(job = %id, attempt, ?delay, "attempt failed; retrying after the backoff");
                }
                answered(kept, Count::Retried)
            }
            End::Done(Err(f)) => {
                let result = result_record(&record, attempt, Some(&self.me), Err(f.failure));
                let kept = while_claimed(&id, &claim_lost, &lease, || {
                    finisher.finish(&id, &record, ours.clone(), result.clone())
                })
                .await;
                answered(kept, Count::Failed)
            }
            End::Lost(reason) => {
                tracing::warn!(job = %id, %reason, "claim lost while running: the attempt was cancelled and the job will run again");
                false
            }
            End::HandBack => {
                // Not the job's fault: the attempt is not used up.
                let back = (*record).clone();
                let kept = while_claimed(&id, &claim_lost, &lease, || {
                    finisher.hand_back(&id, &back, ours.clone())
                })
                .await;
                if kept == Some(true) {
                    tracing::info!(job = %id, "shutting down: running job handed back");
                }
                answered(kept, Count::HandedBack)
            }
        };
        if !kept {
            counters.bump(Count::Lost);
        }
        Ok(())
    }
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
