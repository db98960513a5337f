//! The semaphore and rwlock conformance suites on the etcd backend, against the cluster that
//! `cargo xtask test` starts (`SYNC_ETCD_ENDPOINTS`). Without it these tests are ignored.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use sync_etcd::testing::{self, WipeOnDrop};
use sync_etcd::{EtcdClient, EtcdConfig};
use sync_lock::conformance::SemHarness;
use sync_lock::{AcquireOptions, EtcdRwLock, EtcdSemaphore, RwLock, Semaphore};

const CHILD_VAR: &str = "SYNC_SEMAPHORE_CRASH_CHILD";

struct EtcdHarness {
    cfg: EtcdConfig,
    admin: EtcdClient,
    _cleanup: WipeOnDrop,
}

impl EtcdHarness {
    async fn new() -> Self {
        if let Ok(spec) = std::env::var(CHILD_VAR) {
            child_main(&spec).await;
        }
        let cfg = testing::config("semaphore");
        let admin = testing::connect(cfg.clone()).await;
        EtcdHarness {
            cfg,
            _cleanup: WipeOnDrop(admin.clone()),
            admin,
        }
    }

    /// A child process that holds `name` of `kind` (see `child_main`), killed with SIGKILL.
    fn crash<'a>(&'a self, kind: &str, name: &str, ttl: Duration) -> BoxFuture<'a, ()> {
        let spec = testing::child_spec(&self.cfg.prefix, ttl, &[kind, name]);
        async move {
            // Any test of this binary becomes the holder when CHILD_VAR is set (see `new`).
            let (mut child, _token) = testing::spawn_self(
                "etcd::sem_fencing_tokens_increase",
                CHILD_VAR,
                &spec,
                "HOLDING ",
            )
            .await;
            child.kill().expect("SIGKILL the holder");
            child.wait().expect("reap the holder");
        }
        .boxed()
    }
}

/// The child process of `crash_sem_holder` and `crash_rw_holder`: take the permit (kind
/// `semaphore`) or write (kind `rwlock`), say so, and wait to be killed.
async fn child_main(spec: &str) -> ! {
    let (cfg, ttl, words) = testing::parse_child_spec(spec);
    let (kind, name) = (words[0].as_str(), words[1].as_str());
    let o = AcquireOptions::new().with_ttl(ttl);
    let g = match kind {
        "semaphore" => {
            let sem = EtcdSemaphore::connect(cfg).await.unwrap();
            sem.acquire(name, 1, o).await.unwrap()
        }
        "rwlock" => {
            let rw = EtcdRwLock::connect(cfg).await.unwrap();
            rw.write(name, o).await.unwrap()
        }
        other => panic!("unknown kind {other}"),
    };
    testing::hold_until_killed("HOLDING ", g.fencing_token()).await
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

    fn revoke_rw_holders<'a>(&'a self, name: &'a str) -> BoxFuture<'a, ()> {
        let dir = self.admin.keyspace().dir("rwlock", name);
        async move {
            // The holders are the keys ahead of the first writer's, or that writer alone.
            let keys = testing::keys_under(&self.admin, &dir).await;
            let is_writer = |k: &testing::KeyInfo| k.key[dir.len()..].starts_with("w-");
            let holders = match keys.first() {
                None => panic!("nobody holds rwlock {name}"),
                Some(first) if is_writer(first) => &keys[..1],
                Some(_) => {
                    let end = keys.iter().position(is_writer).unwrap_or(keys.len());
                    &keys[..end]
                }
            };
            let mut leases: Vec<i64> = holders.iter().map(|k| k.lease).collect();
            leases.sort_unstable();
            leases.dedup();
            for lease in leases {
                testing::revoke(&self.admin, lease).await;
            }
        }
        .boxed()
    }

    fn crash_sem_holder<'a>(&'a self, name: &'a str, ttl: Duration) -> BoxFuture<'a, ()> {
        self.crash("semaphore", name, ttl)
    }

    fn crash_rw_holder<'a>(&'a self, name: &'a str, ttl: Duration) -> BoxFuture<'a, ()> {
        self.crash("rwlock", name, ttl)
    }

    fn crash_bound(&self, ttl: Duration) -> Duration {
        // etcd checks lease expiry every ~500 ms and may need a leader election on top.
        ttl + Duration::from_secs(3)
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
