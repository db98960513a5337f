//! The leader conformance suite on the etcd backend, against the cluster that `cargo xtask test`
//! starts (`SYNC_ETCD_ENDPOINTS`). Without the harness these tests are listed as ignored.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use sync_etcd::testing::{self, WipeOnDrop};
use sync_etcd::{EtcdClient, EtcdConfig};
use sync_leader::conformance::Harness;
use sync_leader::{ElectOptions, EtcdLeader, Leader};

const CHILD_VAR: &str = "SYNC_LEADER_CRASH_CHILD";

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
        let cfg = testing::config("leader");
        let admin = testing::connect(cfg.clone()).await;
        EtcdHarness {
            cfg,
            _cleanup: WipeOnDrop(admin.clone()),
            admin,
        }
    }

    fn dir(&self, group: &str) -> String {
        self.admin.keyspace().dir("election", group)
    }

    /// The leader's key and lease.
    async fn head(&self, group: &str) -> (Vec<u8>, i64) {
        let keys = testing::keys_under(&self.admin, &self.dir(group)).await;
        let head = keys.first().expect("somebody leads");
        (head.key.clone().into_bytes(), head.lease)
    }
}

/// The child process of `crash_leader`: get elected, say so, and wait to be killed.
async fn child_main(spec: &str) -> ! {
    let (cfg, ttl, words) = testing::parse_child_spec(spec);
    let (group, id) = (words[0].as_str(), words[1].as_str());
    let election = EtcdLeader::connect(cfg).await.unwrap();
    let e = election
        .elect(id, ElectOptions::new().with_group(group).with_ttl(ttl))
        .await
        .unwrap();
    testing::hold_until_killed("ELECTED ", e.term()).await
}

impl Harness for EtcdHarness {
    fn client(&self) -> BoxFuture<'_, Arc<dyn Leader>> {
        async move {
            let l: Arc<dyn Leader> = Arc::new(
                EtcdLeader::connect(self.cfg.clone())
                    .await
                    .expect("connect another client"),
            );
            l
        }
        .boxed()
    }

    fn revoke_lease<'a>(&'a self, group: &'a str) -> BoxFuture<'a, ()> {
        async move {
            let (_, lease) = self.head(group).await;
            assert_ne!(lease, 0, "the leader key is not bound to a lease");
            let admin = &self.admin;
            admin
                .retry(
                    "revoke the leader's lease",
                    admin.default_budget(),
                    |mut c| async move { c.lease_revoke(lease).await.map(|_| ()) },
                )
                .await
                .expect("revoke the leader's lease");
        }
        .boxed()
    }

    fn delete_leader_key<'a>(&'a self, group: &'a str) -> BoxFuture<'a, ()> {
        async move {
            let (key, _) = self.head(group).await;
            let admin = &self.admin;
            let deleted = admin
                .retry("delete the leader key", admin.default_budget(), |mut c| {
                    let key = key.clone();
                    async move { c.delete(key, None).await.map(|r| r.deleted()) }
                })
                .await
                .expect("delete the leader key");
            assert_eq!(deleted, 1, "the leader key was gone already");
        }
        .boxed()
    }

    fn candidates<'a>(&'a self, group: &'a str) -> BoxFuture<'a, usize> {
        async move { testing::count_keys(&self.admin, &self.dir(group)).await }.boxed()
    }

    fn crash_leader<'a>(
        &'a self,
        group: &'a str,
        id: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, u64> {
        let spec = testing::child_spec(&self.cfg.prefix, ttl, &[group, id]);
        async move {
            // Any test of this binary becomes the leader when CHILD_VAR is set (see `new`).
            let (mut child, term) =
                testing::spawn_self("etcd::invalid_names_rejected", CHILD_VAR, &spec, "ELECTED ")
                    .await;
            child.kill().expect("SIGKILL the leader");
            child.wait().expect("reap the leader");
            term.parse().expect("a term")
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
}

sync_leader::leader_conformance!(
    etcd,
    EtcdHarness::new().await,
    #[ignore = "needs etcd: run `cargo xtask test`"]
);
