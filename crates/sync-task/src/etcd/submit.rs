//! Submitting: the transaction that creates a job (held until released), idempotency keys, and
//! the guard that withdraws the job of a dropped or failed submit.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use sync_core::signal::LossReason;
use sync_etcd::{EtcdClient, Lease, LeasePool};
use tokio::sync::watch;
use tokio::time::Instant;

use super::batch::{self, SharedBatcher};
use super::records::{new_job_id, to_json, JobRecord, Keys};
use super::waiter::Waiter;
use super::worker::Stop;
use crate::exec::{Count, Counters};
use crate::{Error, Job, Result};

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
    /// The submitter's session: the holds of its submits in flight live on its lease (its own,
    /// not the worker's, which shutdown revokes).
    session: LeasePool,
    ttl: Duration,
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
            let hold_key = s.keys.hold(&id);
            match created {
                Ok(None) => {}
                Ok(Some(rev)) => {
                    let guard = Compare::create_revision(hold_key, CompareOp::Equal, rev);
                    s.withdraw(&id, idem.as_deref(), guard).await;
                }
                Err(_) => {
                    // Not known: withdraw it if its hold is there (the hold key is this
                    // submit's alone, and only a returned submit releases it), now and once
                    // more after a request timeout (it may land late).
                    let held = || Compare::version(hold_key.clone(), CompareOp::Greater, 0);
                    s.withdraw(&id, idem.as_deref(), held()).await;
                    tokio::time::sleep(s.client.config().request_timeout).await;
                    s.withdraw(&id, idem.as_deref(), held()).await;
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
        ttl: Duration,
    ) -> Self {
        Submitter {
            session: LeasePool::new(client.clone()),
            client,
            keys,
            batcher,
            waiter,
            counters,
            stop,
            ttl,
        }
    }

    /// Submits a job, all or nothing for the caller: it returns the job's id, or the job never
    /// runs.
    ///
    /// The transaction that creates the job also puts its *hold* (`q/holds/<id>`) on the
    /// submitter's session lease. A worker may claim a held job but does not start it before
    /// the hold is gone. When the transaction's reply comes, in the same poll that returns the
    /// id (so no drop can come in between), the submit hands the hold's deletion (the
    /// *release*) to the batcher, which sends it at once, in parallel with the workers' claims.
    /// If the future is dropped (or fails) before that, its guard waits on the runtime for the
    /// transaction's outcome and withdraws the job if it was created: it deletes the job with
    /// its hold and any claim, so the withdrawal always wins and nothing runs. If the
    /// submitting process dies in between, the job is not lost: its hold ends with the lease.
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
        let mut lease_tries = 0;
        loop {
            let id = new_job_id();
            let record = JobRecord::new(&job, payload.len());
            let job_key = keys.job(&id);
            let hold_key = keys.hold(&id);
            let lease = self
                .session
                .get(self.ttl)
                .await
                .map_err(|e| Error::backend(&name, e))?;
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
                TxnOp::put(job_key, to_json(&record), None),
                TxnOp::put(keys.payload(&id), payload.clone(), None),
                TxnOp::put(
                    hold_key.clone(),
                    Vec::new(),
                    Some(PutOptions::new().with_lease(lease.id())),
                ),
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
                Err(e) if e.is_lease_not_found() && lease_tries < 2 => {
                    // The session lease is gone at the server (nothing was written): a new one.
                    lease_tries += 1;
                    lease.mark_lost(LossReason::LeaseExpired);
                    self.session.forget(&lease).await;
                    continue;
                }
                Err(e) => {
                    // It may have landed: the guard withdraws it if so.
                    guard.unsure = true;
                    return Err(Error::backend(&name, e));
                }
            };
            if out.succeeded {
                // The point of no return: release it (applied whether or not anyone waits)
                // and return the id, in this poll.
                self.release(&id, hold_key, out.revision, lease);
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

    /// Releases job `id`: deletes its hold (created at revision `rev`, on `lease`). Handed to
    /// the batcher now (synchronously: the caller returns the job's id in this poll); if it
    /// fails, it is sent again until it lands, as long as the lease lives (once the lease is
    /// gone, so is the hold).
    fn release(self: &Arc<Self>, id: &str, hold_key: String, rev: i64, lease: Arc<Lease>) {
        let txn = Txn::new()
            .when([Compare::create_revision(
                hold_key.clone(),
                CompareOp::Equal,
                rev,
            )])
            .and_then([TxnOp::delete(hold_key, None)]);
        let first = self.batcher.send("release job", id, txn.clone(), 0);
        let (this, id) = (self.clone(), id.to_owned());
        tokio::spawn(async move {
            let mut out = first.await;
            let mut pause = Duration::from_millis(100);
            while let Err(e) = out {
                tracing::warn!(job = %id, error = %e, "could not release a submitted job; trying again while the submitter's lease lives");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = lease.signal().fired() => return,
                }
                pause = (pause * 2).min(Duration::from_secs(2));
                out = this.batcher.txn("release job", &id, txn.clone(), 0).await;
            }
        });
    }

    /// Where the job an idempotency key points to is: held by a submit in flight, live (or
    /// finished), or gone (withdrawn by a dropped submit).
    async fn first_state(&self, id: &str) -> Result<First> {
        let keys = [self.keys.hold(id), self.keys.job(id), self.keys.result(id)];
        let found = self
            .client
            .retry("read job", self.client.default_budget(), |mut c| {
                let txn = Txn::new().and_then(
                    keys.iter()
                        .map(|k| TxnOp::get(k.clone(), None))
                        .collect::<Vec<_>>(),
                );
                async move {
                    let r = c.txn(txn).await?;
                    let mut found = r.op_responses().into_iter().map(|r| match r {
                        TxnOpResponse::Get(g) => !g.kvs().is_empty(),
                        _ => false,
                    });
                    Ok((
                        found.next().unwrap_or(false),
                        found.next().unwrap_or(false),
                        found.next().unwrap_or(false),
                    ))
                }
            })
            .await
            .map_err(|e| Error::backend(id, e))?;
        Ok(match found {
            (true, _, _) => First::Held,
            (false, true, _) | (false, false, true) => First::Live,
            (false, false, false) => First::Gone,
        })
    }

    /// Deletes a held job (any claim of it, its key, payload, idempotency key and hold) if
    /// `guard` holds. The hold goes last: a worker that claimed the job sees its claim and the
    /// job go before (or with) the hold, and so never takes the hold's end for a release.
    async fn withdraw(&self, id: &str, idem: Option<&str>, guard: Compare) {
        let keys = &self.keys;
        let mut ops = vec![
            TxnOp::delete(keys.claim(id), None),
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
        ops.push(TxnOp::delete(keys.hold(id), None));
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
