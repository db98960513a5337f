//! The semaphore and rwlock conformance suites on the etcd backend, against the cluster that
//! `cargo xtask test` starts (`SYNC_ETCD_ENDPOINTS`). Without it these tests are ignored.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use sync_etcd::testing::{self, WipeOnDrop};
use sync_etcd::{EtcdClient, EtcdConfig};
use sync_lock::conformance::SemHarness;
use sync_lock::{EtcdRwLock, EtcdSemaphore, RwLock, Semaphore};

struct EtcdHarness {
    cfg: EtcdConfig,
    admin: EtcdClient,
    _cleanup: WipeOnDrop,
}

impl EtcdHarness {
    async fn new() -> Self {
        let cfg = testing::config("semaphore");
        let admin = testing::connect(cfg.clone()).await;
        EtcdHarness {
            cfg,
            _cleanup: WipeOnDrop(admin.clone()),
            admin,
        }
    }
}

impl SemHarness for EtcdHarness {
    fn semaphore(&self) -> BoxFuture<'_, Arc<dyn Semaphore>> {
        async move {
            let s: Arc<dyn Semaphore> = Arc::new(
                EtcdSemaphore::connect(self.cfg.clone())
                    .await
                    .expect("connect a semaphore client"),
            );
            s
        }
        .boxed()
    }

    fn rwlock(&self) -> BoxFuture<'_, Arc<dyn RwLock>> {
        async move {
            let l: Arc<dyn RwLock> = Arc::new(
                EtcdRwLock::connect(self.cfg.clone())
                    .await
                    .expect("connect a rwlock client"),
            );
            l
        }
        .boxed()
    }

    fn sem_entries<'a>(&'a self, name: &'a str) -> BoxFuture<'a, usize> {
        let dir = self.admin.keyspace().dir("semaphore", name);
        async move { testing::count_keys(&self.admin, &dir).await }.boxed()
    }

    fn rw_entries<'a>(&'a self, name: &'a str) -> BoxFuture<'a, usize> {
        let dir = self.admin.keyspace().dir("rwlock", name);
        async move { testing::count_keys(&self.admin, &dir).await }.boxed()
    }

    fn revoke_sem_holders<'a>(&'a self, name: &'a str) -> BoxFuture<'a, ()> {
        let dir = self.admin.keyspace().dir("semaphore", name);
        async move {
            let keys = testing::keys_under(&self.admin, &dir).await;
            assert!(!keys.is_empty(), "nobody holds semaphore {name}");
            // Holders of one client share its session's lease: revoke each lease once.
            let mut leases: Vec<i64> = keys.iter().map(|k| k.lease).collect();
            leases.sort_unstable();
            leases.dedup();
            for lease in leases {
                testing::revoke(&self.admin, lease).await;
            }
        }
        .boxed()
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(2)
    }
}

sync_lock::semaphore_conformance!(
    etcd,
    EtcdHarness::new().await,
    #[ignore = "needs etcd: run `cargo xtask test`"]
);
