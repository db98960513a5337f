//! Reading a job and waiting for its end: its record, claim and result read at one revision,
//! and the deletion of its key (in the transaction that writes its result) watched.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{Txn, TxnOp, TxnOpResponse};
use serde_json::Value;
use sync_etcd::{EtcdClient, KeySubscription, WatchHub};
use tokio::time::Instant;

use super::records::{ClaimRecord, JobRecord, Keys, ResultRecord};
use crate::{Error, JobId, JobStatus, Result};

/// Status reads and waits; holds the watch of job ends.
pub(crate) struct Waiter {
    client: EtcdClient,
    keys: Keys,
    /// Deletions of `q/jobs/<id>`: how waiters learn that a job ended.
    ends: WatchHub,
    /// Subscriptions to the end of jobs this handle submitted, taken before the job existed,
    /// so that the first `wait` needs no read before waiting. Bounded; an evicted one only
    /// costs that read.
    fresh: Mutex<Fresh>,
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

impl Waiter {
    pub(crate) fn new(client: EtcdClient, keys: Keys) -> Self {
        Waiter {
            ends: WatchHub::new(client.clone(), keys.jobs()),
            client,
            keys,
            fresh: Default::default(),
        }
    }

    /// Subscribes to the end of job `id` (which may not exist yet).
    pub(crate) async fn subscribe(&self, id: &str) -> sync_etcd::Result<KeySubscription> {
        Ok(self.ends.subscribe(&self.keys.job(id), i64::MAX).await?.0)
    }

    /// Keeps `sub`, taken before job `id` existed, for its first `wait`.
    pub(crate) fn keep(&self, id: String, sub: KeySubscription) {
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
            None => self
                .subscribe(id.as_str())
                .await
                .map_err(|e| Error::backend(id.as_str(), e))?,
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
}
