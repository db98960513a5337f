//! Submitting: the transaction that creates a job (held until released), idempotency keys, and
//! the guard that withdraws the job of a dropped or failed submit.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use sync_etcd::EtcdClient;
use tokio::sync::watch;
use tokio::time::Instant;

use super::batch::{self, SharedBatcher};
use super::records::{ms_after, new_job_id, to_json, JobRecord, Keys};
use super::waiter::Waiter;
use super::worker::Stop;
use crate::exec::{Count, Counters};
use crate::{Error, Job, Result};

/// How long a job stays held (not claimable) unless the submit that created it releases it: a
/// submit whose process died between its transaction and its return leaves a job that runs this
/// much later. It must outlast the withdrawal of a dropped submit's job (the outcome of its
/// transaction, then one more transaction), and workers' clocks must agree within it.
pub(crate) const SUBMIT_HOLD: Duration = Duration::from_secs(60);

/// Where the job an idempotency key points to is (see [`Submitter::first_state`]).
enum First {
    Held,
    Live,
    Gone,
}

/// Creates jobs. Tells the [`Waiter`] about each job it creates (a subscription to its end,
/// taken before the job existed).
pub(crate) struct Submitter {
    client: EtcdClient,
    keys: Keys,
    batcher: SharedBatcher,
    waiter: Arc<Waiter>,
    counters: Arc<Counters>,
    stop: watch::Receiver<Stop>,
}

/// The drop guard of a submit in flight: withdraws the job if its transaction created it (or
/// may have) and the submit did not return its handle.
struct SubmitGuard {
    submitter: Arc<Submitter>,
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
        let (s, id, idem) = (self.submitter.clone(), self.id.clone(), self.idem.take());
        rt.spawn(async move {
            let created = match pending {
                Some(p) => p.await.map(|out| out.succeeded.then_some(out.revision)),
                None => Err(sync_etcd::Error::Timeout {
                    endpoints: String::new(),
                    op: "submit job",
                    after: Duration::ZERO,
                }),
            };
            let job_key = s.keys.job(&id);
            match created {
                Ok(None) => {}
                Ok(Some(rev)) => {
                    let guard = Compare::mod_revision(job_key, CompareOp::Equal, rev);
                    s.withdraw(&id, idem.as_deref(), guard).await;
                }
                Err(_) => {
                    // Not known: withdraw it if it is there and untouched since created (still
                    // held), now and once more after a request timeout (it may land late).
                    let untouched = || Compare::version(job_key.clone(), CompareOp::Equal, 1);
                    s.withdraw(&id, idem.as_deref(), untouched()).await;
                    tokio::time::sleep(s.client.config().request_timeout).await;
                    s.withdraw(&id, idem.as_deref(), untouched()).await;
                }
            }
        });
    }
}

impl Submitter {
    pub(crate) fn new(
        client: EtcdClient,
        keys: Keys,
        batcher: SharedBatcher,
        waiter: Arc<Waiter>,
        counters: Arc<Counters>,
        stop: watch::Receiver<Stop>,
    ) -> Self {
        Submitter {
            client,
            keys,
            batcher,
            waiter,
            counters,
            stop,
        }
    }

    /// Submits a job, all or nothing for the caller: it returns the job's id, or the job never
    /// runs.
    ///
    /// The transaction that creates the job marks it *held* (not claimable before
    /// [`SUBMIT_HOLD`] from now). When its reply comes, in the same poll that returns the id
    /// (so no drop can come in between), the submit hands a release to the batcher, which makes
    /// the job claimable at once. If the future is dropped (or fails) before that, its guard
    /// waits on the runtime for the transaction's outcome and withdraws the job if it was
    /// created: no worker claims a held job, so the withdrawal always wins. If the submitting
    /// process dies in between, the job is not lost: it runs once its hold ends.
    pub(crate) async fn submit(self: &Arc<Self>, job: Job) -> Result<String> {
        let payload = job.validate()?;
        let name = job.command().to_owned();
        if *self.stop.borrow() != Stop::Running {
            return Err(Error::shut_down(&name));
        }
        let keys = &self.keys;
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
            let sub = self
                .waiter
                .subscribe_fresh(&id)
                .await
                .map_err(|e| Error::backend(&name, e))?;
            let mut when = Vec::new();
            if !job.waits_for_worker() {
                when.push(
                    Compare::create_revision(keys.workers(&name), CompareOp::Greater, 0)
                        .with_prefix(),
                );
            }
            let idem = job.idempotency_key().map(|k| keys.idem(k));
            let mut then = vec![
                TxnOp::put(job_key.clone(), to_json(&record), None),
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
                submitter: self.clone(),
                id: id.clone(),
                idem: idem.clone(),
                pending: Some(self.batcher.send("submit job", &id, txn, payload.len())),
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
                // anyone waits) and return the id, in this poll.
                record.held = false;
                record.not_before_ms = 0;
                let release = Txn::new()
                    .when([Compare::mod_revision(
                        job_key.clone(),
                        CompareOp::Equal,
                        out.revision,
                    )])
                    .and_then([TxnOp::put(job_key, to_json(&record), None)]);
                drop(self.batcher.send("release job", &id, release, 0));
                self.waiter.keep(id.clone(), sub);
                self.counters.bump(Count::Submitted);
                tracing::debug!(job = %id, command = %name, "job submitted");
                return Ok(id);
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
                *budget_end.get_or_insert_with(|| Instant::now() + self.client.default_budget());
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
            return Ok(first);
        }
    }

    /// Where the job an idempotency key points to is: held by a submit in flight, live (or
    /// finished), or gone (withdrawn by a dropped submit).
    async fn first_state(&self, id: &str) -> Result<First> {
        let (job_key, result_key) = (self.keys.job(id), self.keys.result(id));
        let found = self
            .client
            .retry("read job", self.client.default_budget(), |mut c| {
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

    /// Deletes a held job (its key, payload and idempotency key) if `guard` holds.
    async fn withdraw(&self, id: &str, idem: Option<&str>, guard: Compare) {
        let keys = &self.keys;
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
        match self.batcher.txn("withdraw job", id, txn, 0).await {
            Ok(out) if out.succeeded => {
                tracing::debug!(job = %id, "job of a dropped or failed submit withdrawn");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "could not withdraw the job of a dropped submit: it runs once its hold ends");
            }
        }
    }
}
