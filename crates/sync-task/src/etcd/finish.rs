//! The transactions that end an attempt: finishing a job (its result on a retention lease) and
//! putting it back (for a retry, or handed back). Each is guarded by the caller's comparisons,
//! so a worker that lost its claim can never overwrite what the job's next worker does.

use std::sync::Arc;

use etcd_client::{Compare, PutOptions, Txn, TxnOp, TxnOpResponse};
use serde_json::Value;

use super::batch::SharedBatcher;
use super::records::{now_ms, to_json, JobRecord, Keys, Outcome, ResultRecord};
use super::retention::Retention;
use crate::Failure;

/// Writes the end of attempts; owns the retention leases.
#[derive(Clone)]
pub(crate) struct Finisher {
    keys: Keys,
    batcher: SharedBatcher,
    retention: Arc<Retention>,
}

impl Finisher {
    pub(crate) fn new(keys: Keys, batcher: SharedBatcher, retention: Retention) -> Self {
        Finisher {
            keys,
            batcher,
            retention: Arc::new(retention),
        }
    }

    /// Ends the job: deletes it and its claim and writes its result (with the idempotency key)
    /// on a retention lease, if `guard` holds. Returns whether it did.
    pub(crate) async fn finish(
        &self,
        id: &str,
        record: &JobRecord,
        guard: Vec<Compare>,
        result: ResultRecord,
    ) -> sync_etcd::Result<bool> {
        let keys = &self.keys;
        let result_key = keys.result(id);
        let value = to_json(&result);
        let bytes = value.len();
        let mut tries = 0;
        loop {
            tries += 1;
            let lease = self.retention.lease(record.retention()).await?;
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
            let r = self
                .batcher
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
                    self.retention.forget(lease);
                }
                other => return other,
            }
        }
    }

    /// Puts the job back (for a retry, or handed back) and deletes our claim, if `guard` holds.
    /// Returns whether it did.
    pub(crate) async fn hand_back(
        &self,
        id: &str,
        record: &JobRecord,
        guard: Vec<Compare>,
    ) -> sync_etcd::Result<bool> {
        let (job_key, claim_key) = (self.keys.job(id), self.keys.claim(id));
        let value = to_json(record);
        let txn = Txn::new().when(guard).and_then([
            TxnOp::put(job_key, value, None),
            TxnOp::delete(claim_key, None),
        ]);
        Ok(self
            .batcher
            .txn("reschedule job", id, txn, 0)
            .await?
            .succeeded)
    }
}

/// The result record of a job that ends after `attempts` attempts.
pub(crate) fn result_record(
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
