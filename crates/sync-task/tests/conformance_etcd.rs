//! The task conformance suite on the etcd backend, against the cluster that `cargo xtask test`
//! starts (`SYNC_ETCD_ENDPOINTS`). Without the harness these tests are listed as ignored.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use sync_etcd::{testing, EtcdClient, EtcdConfig};
use sync_task::conformance::Harness;
use sync_task::{EtcdTask, JobId, Task, TaskOptions};

struct EtcdHarness {
    cfg: EtcdConfig,
    admin: EtcdTask,
    client: EtcdClient,
    /// Every handle made, to reach the `EtcdTask` behind an `Arc<dyn Task>`.
    tasks: Mutex<Vec<(Arc<dyn Task>, EtcdTask)>>,
}

impl EtcdHarness {
    fn etcd(&self, t: &Arc<dyn Task>) -> EtcdTask {
        let tasks = self.tasks.lock().unwrap();
        let found = tasks
            .iter()
            .find(|(a, _)| std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(t)));
        found.expect("a handle made by this harness").1.clone()
    }
}

impl EtcdHarness {
    async fn new() -> Self {
        let cfg = testing::config("task");
        let client = testing::connect(cfg.clone()).await;
        let admin = EtcdTask::new(client.connection(), TaskOptions::new()).unwrap();
        EtcdHarness {
            cfg,
            admin,
            client,
            tasks: Mutex::new(Vec::new()),
        }
    }
}

impl Drop for EtcdHarness {
    fn drop(&mut self) {
        let client = self.client.clone();
        // Clean up on a runtime of our own: the test's runtime is shutting down.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(testing::wipe(&client))
        })
        .join();
    }
}

impl Harness for EtcdHarness {
    fn task(&self, mut options: TaskOptions) -> BoxFuture<'_, Arc<dyn Task>> {
        // None of these tests is about crashes: a longer worker lease than the connection's
        // 2 s keeps a slow test machine from losing it (and re-running a job) spuriously.
        if options.ttl().is_none() {
            options = options.with_ttl(Duration::from_secs(10));
        }
        async move {
            let etcd = EtcdTask::connect(self.cfg.clone(), options)
                .await
                .expect("connect a task handle");
            let t: Arc<dyn Task> = Arc::new(etcd.clone());
            self.tasks.lock().unwrap().push((t.clone(), etcd));
            t
        }
        .boxed()
    }

    fn peer<'a>(&'a self, _worker: &'a Arc<dyn Task>) -> BoxFuture<'a, Arc<dyn Task>> {
        self.task(TaskOptions::new())
    }

    fn running(&self, worker: &Arc<dyn Task>) -> usize {
        self.etcd(worker).running()
    }

    fn claim<'a>(&'a self, worker: &'a Arc<dyn Task>, job: &'a JobId) -> BoxFuture<'a, bool> {
        let etcd = self.etcd(worker);
        async move { etcd.claim_and_hand_back(job).await.expect("claim path") }.boxed()
    }

    fn stored_jobs<'a>(&'a self, _worker: &'a Arc<dyn Task>) -> BoxFuture<'a, usize> {
        async move { self.admin.stored_jobs().await.expect("count job keys") }.boxed()
    }

    fn expiry_slack(&self) -> Duration {
        // The retention lease lives up to one bucket (1 s) longer; etcd checks lease expiry
        // every ~500 ms, and a busy cluster revokes expired leases later.
        Duration::from_secs(10)
    }

    fn hands_back(&self) -> bool {
        true
    }
}

sync_task::task_conformance!(
    etcd,
    EtcdHarness::new().await,
    #[ignore = "needs etcd: run `cargo xtask test`"]
);
