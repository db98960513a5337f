//! Retention leases: finished jobs' results are bound to a lease that is never kept alive, so
//! etcd deletes them by itself.
//!
//! One lease serves every result with the same retention written within a bucket of a tenth of
//! the retention (at least 1 s); its TTL is the retention plus one bucket, so a result lives
//! between its retention and its retention plus one bucket. That is one lease grant per bucket
//! instead of one per job.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sync_etcd::{EtcdClient, Result};
use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct Retention {
    client: EtcdClient,
    leases: Mutex<HashMap<u64, (i64, Instant)>>,
}

impl Retention {
    pub(crate) fn new(client: EtcdClient) -> Self {
        Retention {
            client,
            leases: Default::default(),
        }
    }

    /// A lease that lives at least `retention` from now, and at most one bucket more.
    pub(crate) async fn lease(&self, retention: Duration) -> Result<i64> {
        let secs = retention.as_secs().max(1);
        let bucket = (secs / 10).max(1);
        {
            let leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((id, granted)) = leases.get(&secs) {
                if granted.elapsed() < Duration::from_secs(bucket) {
                    return Ok(*id);
                }
            }
        }
        let ttl = i64::try_from(secs + bucket).unwrap_or(i64::MAX);
        // The server starts the countdown when it receives the grant, after this instant.
        let sent = Instant::now();
        let id = self
            .client
            .retry(
                "grant a retention lease",
                self.client.default_budget(),
                |mut c| async move { Ok(c.lease_grant(ttl, None).await?.id()) },
            )
            .await?;
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(secs, (id, sent));
        Ok(id)
    }

    /// Forgets a lease that etcd no longer knows.
    pub(crate) fn forget(&self, id: i64) {
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (l, _)| *l != id);
    }
}
