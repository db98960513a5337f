//! The lock conformance suite on the etcd backend, against the cluster that `cargo xtask test`
//! starts (`SYNC_ETCD_ENDPOINTS`). Without the harness these tests are listed as ignored.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use sync_etcd::testing::{self, WipeOnDrop};
use sync_etcd::{EtcdClient, EtcdConfig};
use sync_lock::conformance::Harness;
use sync_lock::{AcquireOptions, EtcdLock, Lock};

const CHILD_VAR: &str = "SYNC_LOCK_CRASH_CHILD";

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
        let cfg = testing::config("lock");
        let admin = testing::connect(cfg.clone()).await;
        EtcdHarness {
            cfg,
            _cleanup: WipeOnDrop(admin.clone()),
            admin,
        }
    }

    fn dir(&self, name: &str) -> String {
        self.admin.keyspace().dir("lock", name)
    }
}

/// The child process of `crash_holder`: acquire, say so, and wait to be killed.
async fn child_main(spec: &str) -> ! {
    let (cfg, ttl, words) = testing::parse_child_spec(spec);
    let lock = EtcdLock::connect(cfg).await.unwrap();
    let g = lock
        .acquire(&words[0], AcquireOptions::new().with_ttl(ttl))
        .await
        .unwrap();
    testing::hold_until_killed("HOLDING ", g.fencing_token()).await
}

impl Harness for EtcdHarness {
    fn client(&self) -> BoxFuture<'_, Arc<dyn Lock>> {
        async move {
            let l: Arc<dyn Lock> = Arc::new(
                EtcdLock::connect(self.cfg.clone())
                    .await
                    .expect("connect a second client"),
            );
            l
        }
        .boxed()
    }

    fn revoke_holder<'a>(&'a self, name: &'a str) -> BoxFuture<'a, ()> {
        async move {
            let keys = testing::keys_under(&self.admin, &self.dir(name)).await;
            let holder = keys.first().expect("somebody holds the lock");
            testing::revoke(&self.admin, holder.lease).await;
        }
        .boxed()
    }

    fn entries<'a>(&'a self, name: &'a str) -> BoxFuture<'a, usize> {
        async move { testing::count_keys(&self.admin, &self.dir(name)).await }.boxed()
    }

    fn crash_holder<'a>(&'a self, name: &'a str, ttl: Duration) -> BoxFuture<'a, ()> {
        let spec = testing::child_spec(&self.cfg.prefix, ttl, &[name]);
        async move {
            // Any test of this binary becomes the holder when CHILD_VAR is set (see `new`).
            let (mut child, _token) =
                testing::spawn_self("etcd::drop_releases", CHILD_VAR, &spec, "HOLDING ").await;
            child.kill().expect("SIGKILL the holder");
            child.wait().expect("reap the holder");
        }
        .boxed()
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(2)
    }

    fn crash_bound(&self, ttl: Duration) -> Duration {
        // etcd checks lease expiry every ~500 ms and may need a leader election on top.
        ttl + Duration::from_secs(3)
    }

    fn loss_bound(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn parks_sticky_locks(&self) -> bool {
        true
    }
}

sync_lock::lock_conformance!(
    etcd,
    EtcdHarness::new().await,
    #[ignore = "needs etcd: run `cargo xtask test`"]
);
