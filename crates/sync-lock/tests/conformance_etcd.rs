//! The lock conformance suite on the etcd backend, against the cluster that `cargo xtask test`
//! starts (`SYNC_ETCD_ENDPOINTS`). Without the harness these tests are listed as ignored.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use sync_core::etcd::etcd_client::{GetOptions, SortOrder, SortTarget};
use sync_core::etcd::{testing, EtcdClient, EtcdConfig};
use sync_lock::conformance::Harness;
use sync_lock::{AcquireOptions, EtcdLock, Lock};

const CHILD_VAR: &str = "SYNC_LOCK_CRASH_CHILD";

struct EtcdHarness {
    cfg: EtcdConfig,
    admin: EtcdClient,
}

impl EtcdHarness {
    async fn new() -> Self {
        if let Ok(spec) = std::env::var(CHILD_VAR) {
            child_main(&spec).await;
        }
        let cfg = testing::config("lock");
        let admin = testing::connect(cfg.clone()).await;
        EtcdHarness { cfg, admin }
    }

    fn dir(&self, name: &str) -> String {
        self.admin.keyspace().dir("lock", name)
    }
}

impl Drop for EtcdHarness {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        // Clean up on a runtime of our own: the test's runtime is shutting down.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(testing::wipe(&admin))
        })
        .join();
    }
}

/// The child process of `crash_holder`: acquire, say so, and wait to be killed.
async fn child_main(spec: &str) -> ! {
    let mut parts = spec.splitn(3, '\n');
    let (prefix, ttl, name) = (
        parts.next().unwrap(),
        parts.next().unwrap().parse::<u64>().unwrap(),
        parts.next().unwrap(),
    );
    let cfg = EtcdConfig::new(testing::endpoints()).with_prefix(prefix);
    let lock = EtcdLock::connect(cfg).await.unwrap();
    let g = lock
        .acquire(
            name,
            AcquireOptions::new().with_ttl(Duration::from_secs(ttl)),
        )
        .await
        .unwrap();
    println!("\nHOLDING {}", g.fencing_token());
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    std::future::pending::<()>().await;
    unreachable!()
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
            let dir = self.dir(name);
            let admin = &self.admin;
            admin
                .retry("revoke holder", admin.default_budget(), |mut c| {
                    let dir = dir.clone();
                    async move {
                        let r = c
                            .get(
                                dir,
                                Some(
                                    GetOptions::new()
                                        .with_prefix()
                                        .with_sort(SortTarget::Create, SortOrder::Ascend)
                                        .with_limit(1),
                                ),
                            )
                            .await?;
                        let holder = r.kvs().first().expect("somebody holds the lock").lease();
                        c.lease_revoke(holder).await.map(|_| ())
                    }
                })
                .await
                .expect("revoke the holder's lease");
        }
        .boxed()
    }

    fn entries<'a>(&'a self, name: &'a str) -> BoxFuture<'a, usize> {
        async move { testing::count_keys(&self.admin, &self.dir(name)).await }.boxed()
    }

    fn crash_holder<'a>(&'a self, name: &'a str, ttl: Duration) -> BoxFuture<'a, ()> {
        let spec = format!("{}\n{}\n{}", self.cfg.prefix, ttl.as_secs(), name);
        async move {
            let exe = std::env::current_exe().unwrap();
            let mut child = Command::new(exe)
                .args([
                    "etcd::drop_releases",
                    "--exact",
                    "--include-ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_VAR, spec)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn the holder process");
            let stdout = child.stdout.take().unwrap();
            let line = tokio::task::spawn_blocking(move || {
                BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                    .find(|l| l.contains("HOLDING "))
            });
            let holding = tokio::time::timeout(Duration::from_secs(30), line).await;
            child.kill().expect("SIGKILL the holder"); // SIGKILL on Unix
            child.wait().unwrap();
            let line = holding
                .expect("the holder process did not acquire within 30 s")
                .unwrap();
            assert!(line.is_some(), "the holder process exited without holding");
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

sync_lock::lock_conformance!(
    etcd,
    EtcdHarness::new().await,
    #[ignore = "needs etcd: run `cargo xtask test`"]
);
