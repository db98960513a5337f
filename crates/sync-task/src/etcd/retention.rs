//! Retention leases: finished jobs' results are bound to a lease that is never kept alive, so
//! etcd deletes them by itself.
//!
//! One lease serves every result with the same retention written within a bucket of a tenth of
//! the retention (at least 1 s); its TTL is the retention plus one bucket, so a result lives
//! between its retention and its retention plus one bucket. That is one lease grant per bucket
//! instead of one per job. Grants are single-flight: when a bucket's lease ages out while many
//! attempts finish at once, the first grants the new lease and the others wait for it (each
//! granting its own cost a raft write now and a revocation when it expired: up to a pool's worth
//! per bucket, 0.1–0.25 grants per job in the 3-worker bench).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sync_etcd::{EtcdClient, Result};
use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct Retention {
    client: EtcdClient,
    leases: Mutex<HashMap<u64, (i64, Instant)>>,
    /// Held while a lease is granted, so that one grant serves everyone who missed the cache.
    granting: tokio::sync::Mutex<()>,
}

impl Retention {
    pub(crate) fn new(client: EtcdClient) -> Self {
        Retention {
            client,
            leases: Default::default(),
            granting: Default::default(),
        }
    }

    /// A lease that lives at least `retention` from now, and at most one bucket more.
    pub(crate) async fn lease(&self, retention: Duration) -> Result<i64> {
        let secs = retention.as_secs().max(1);
        let bucket = (secs / 10).max(1);
        if let Some(id) = self.cached(secs, bucket) {
            return Ok(id);
        }
        // Dropped while waiting or granting: the next caller grants (a lease granted meanwhile
        // expires by itself).
        let _granting = self.granting.lock().await;
        if let Some(id) = self.cached(secs, bucket) {
            return Ok(id);
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

    /// The lease of retention `secs` granted less than a `bucket` ago, if any.
    fn cached(&self, secs: u64, bucket: u64) -> Option<i64> {
        let leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        leases
            .get(&secs)
            .filter(|(_, granted)| granted.elapsed() < Duration::from_secs(bucket))
            .map(|(id, _)| *id)
    }

    /// Forgets a lease that etcd no longer knows.
    pub(crate) fn forget(&self, id: i64) {
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (l, _)| *l != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Many attempts finishing at once when no lease is cached share one grant (each used to
    /// grant its own: a raft write now, a revocation later).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs etcd: cargo xtask etcd up"]
    async fn concurrent_finishes_share_one_grant() {
        let client =
            sync_etcd::testing::connect(sync_etcd::testing::config("retention-single-flight"))
                .await;
        let retention = Arc::new(Retention::new(client.clone()));
        for round in 0..3 {
            // A retention of its own each round, so that nothing is cached.
            let d = Duration::from_secs(600 + round);
            let ids = futures::future::join_all((0..32).map(|_| {
                let r = retention.clone();
                async move { r.lease(d).await }
            }))
            .await;
            let ids: std::collections::HashSet<i64> =
                ids.into_iter().map(|r| r.expect("grant")).collect();
            for id in &ids {
                sync_etcd::testing::revoke(&client, *id).await;
            }
            assert_eq!(
                ids.len(),
                1,
                "round {round}: 32 finishes granted {} leases",
                ids.len()
            );
        }
    }
}
