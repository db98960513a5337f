//! Reading a job and waiting for its end: its record, claim and result read at one revision,
//! and the deletion of its key (in the transaction that writes its result) watched. A job this
//! handle submitted is waited for on the result watch instead ([`ResultWatch`]): its end comes
//! with its result, no read needed.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{Txn, TxnOp, TxnOpResponse};
use serde_json::Value;
use sync_etcd::{EtcdClient, KeySubscription, WatchHub};
use tokio::time::Instant;

use super::records::{ClaimRecord, JobRecord, Keys, ResultRecord};
use super::results::{ResultEvent, ResultSubscription, ResultWatch};
use crate::{Error, JobId, JobStatus, Result};

/// Status reads and waits; holds the watch of job ends.
pub(crate) struct Waiter {
    client: EtcdClient,
    keys: Keys,
    /// Deletions of `q/jobs/<id>`: how waiters learn that a job ended.
    ends: WatchHub,
    /// Result puts: how a `wait` on a job this handle submitted learns its end and result.
    results: ResultWatch,
    /// Subscriptions to the result of jobs this handle submitted, taken before the job existed,
    /// so that the first `wait` needs no read, before or after waiting. Bounded; an evicted one
    /// only costs those reads.
    fresh: Mutex<Fresh>,
}

#[derive(Default)]
struct Fresh {
    subs: HashMap<String, ResultSubscription>,
    order: VecDeque<(Instant, String)>,
}

impl Fresh {
    const MAX: usize = 10_000;
    const AGE: Duration = Duration::from_secs(60);

    fn insert(&mut self, id: String, sub: ResultSubscription) {
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

impl Waiter {
    pub(crate) fn new(client: EtcdClient, keys: Keys) -> Self {
        Waiter {
            ends: WatchHub::new(client.clone(), keys.jobs()),
            results: ResultWatch::new(client.clone(), keys.results()),
            client,
            keys,
            fresh: Default::default(),
        }
    }

    /// Subscribes to the result of job `id`, before the job exists (so no end can be missed).
    pub(crate) async fn subscribe_fresh(&self, id: &str) -> sync_etcd::Result<ResultSubscription> {
        self.results.subscribe(&self.keys.result(id)).await
    }

    /// Subscribes to the end of job `id` (which may exist already: read it afterwards). A job's
    /// key is never reused, so every delete of it is its end: the subscription takes them all
    /// (as if the key was seen at revision 0; the hub's replay of earlier ones is not needed,
    /// the caller reads afterwards).
    async fn subscribe(&self, id: &str) -> sync_etcd::Result<KeySubscription> {
        Ok(self.ends.subscribe(&self.keys.job(id), 0).await?.0)
    }

    /// Keeps `sub`, taken before job `id` existed, for its first `wait`.
    pub(crate) fn keep(&self, id: String, sub: ResultSubscription) {
        self.fresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, sub);
    }

    /// Reads the job, its claim and its result at one revision: its command and status.
    pub(crate) async fn read(&self, id: &JobId) -> Result<Option<(String, JobStatus)>> {
        let keys = &self.keys;
        let (job_key, claim_key, result_key) = (
            keys.job(id.as_str()),
            keys.claim(id.as_str()),
            keys.result(id.as_str()),
        );
        let kvs = self
            .client
            .retry("read job", self.client.default_budget(), |mut c| {
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

    /// Waits for job `id` to end: its output, or the error of its last attempt.
    pub(crate) async fn wait(&self, id: &JobId) -> Result<Value> {
        if !id.is_well_formed() {
            return Err(Error::NotFound { job: id.clone() });
        }
        let fresh = self
            .fresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .subs
            .remove(id.as_str());
        if let Some(sub) = fresh {
            return self.wait_fresh(id, sub).await;
        }
        // Subscribe first, then read: a deletion after the subscription reaches us, one before
        // it shows in the read. (The job's key is deleted in the transaction that writes its
        // result.)
        let mut sub = self
            .subscribe(id.as_str())
            .await
            .map_err(|e| Error::backend(id.as_str(), e))?;
        loop {
            if let Some(outcome) = self.read_outcome(id).await? {
                return outcome;
            }
            // Deleted: read the result. Recheck: the watch was re-created, read again.
            let _ = sub.next().await;
        }
    }

    /// Waits for the end of job `id`, submitted by this handle, on `sub`, taken before the job
    /// existed: nothing can have been missed, so it waits before reading, and the event that
    /// ends the job carries its result. (A submitted job can end only with a result: only a
    /// submit that did not return withdraws its job.)
    async fn wait_fresh(&self, id: &JobId, mut sub: ResultSubscription) -> Result<Value> {
        loop {
            match sub.next().await {
                ResultEvent::Ended(value) => match serde_json::from_slice::<ResultRecord>(&value) {
                    Ok(r) => {
                        let command = r.command.clone();
                        if let Some(outcome) = r.status().outcome(&command, id) {
                            return outcome;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(job = %id, error = %e, "a result record in a watch event does not parse; reading it");
                    }
                },
                ResultEvent::EndedRead | ResultEvent::Recheck => {}
            }
            if let Some(outcome) = self.read_outcome(id).await? {
                return outcome;
            }
        }
    }

    /// Reads job `id`: its outcome if it ended.
    async fn read_outcome(&self, id: &JobId) -> Result<Option<Result<Value>>> {
        let (command, status) = self
            .read(id)
            .await?
            .ok_or_else(|| Error::NotFound { job: id.clone() })?;
        Ok(status.outcome(&command, id))
    }
}
