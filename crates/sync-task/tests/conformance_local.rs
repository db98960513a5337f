//! The task conformance suite on the in-process backend.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use sync_task::conformance::Harness;
use sync_task::{JobId, LocalTask, Task, TaskOptions};

#[derive(Default)]
struct LocalHarness {
    tasks: Mutex<Vec<(Arc<dyn Task>, LocalTask)>>,
}

impl LocalHarness {
    fn local(&self, t: &Arc<dyn Task>) -> LocalTask {
        let tasks = self.tasks.lock().unwrap();
        let found = tasks
            .iter()
            .find(|(a, _)| std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(t)));
        found.expect("a handle made by this harness").1.clone()
    }
}

impl Harness for LocalHarness {
    fn task(&self, options: TaskOptions) -> BoxFuture<'_, Arc<dyn Task>> {
        let local = LocalTask::new(options).expect("valid options");
        let t: Arc<dyn Task> = Arc::new(local.clone());
        self.tasks.lock().unwrap().push((t.clone(), local));
        futures::future::ready(t).boxed()
    }

    fn peer<'a>(&'a self, worker: &'a Arc<dyn Task>) -> BoxFuture<'a, Arc<dyn Task>> {
        futures::future::ready(worker.clone()).boxed()
    }

    fn running(&self, worker: &Arc<dyn Task>) -> usize {
        self.local(worker).running()
    }

    fn claim<'a>(&'a self, worker: &'a Arc<dyn Task>, job: &'a JobId) -> BoxFuture<'a, bool> {
        let local = self.local(worker);
        async move { local.claim_and_hand_back(job).await.expect("claim path") }.boxed()
    }

    fn stored_jobs<'a>(&'a self, worker: &'a Arc<dyn Task>) -> BoxFuture<'a, usize> {
        futures::future::ready(self.local(worker).stored_jobs()).boxed()
    }

    fn expiry_slack(&self) -> Duration {
        Duration::from_millis(500)
    }

    fn hands_back(&self) -> bool {
        false
    }
}

sync_task::task_conformance!(local, LocalHarness::default());

mod local_only {
    use super::*;
    use sync_task::{Command, Error, Job};

    #[test]
    fn zero_pool_is_a_typed_error() {
        for pool in [0, sync_task::MAX_POOL + 1] {
            let e = LocalTask::new(TaskOptions::new().with_pool(pool)).unwrap_err();
            assert!(matches!(e, Error::InvalidOptions { .. }), "{e:?}");
        }
        let e = LocalTask::new(TaskOptions::new().with_ttl(Duration::ZERO)).unwrap_err();
        assert!(matches!(e, Error::InvalidOptions { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn open_by_url() {
        let t = sync_task::open("local", TaskOptions::new().with_pool(1))
            .await
            .unwrap();
        assert_eq!(
            t.run(Command::new("x", |_| async { Ok(5) })).await.unwrap(),
            5
        );
        let e = sync_task::open("etcd://127.0.0.1:1", TaskOptions::new().with_pool(0))
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::InvalidOptions { .. } | Error::Config(_)),
            "{e:?}"
        );
        assert!(matches!(
            sync_task::open("zookeeper://x", TaskOptions::new())
                .await
                .unwrap_err(),
            Error::Config(_)
        ));
    }

    #[tokio::test]
    async fn stats_count_what_happened() {
        let t = LocalTask::new(TaskOptions::new().with_pool(2)).unwrap();
        t.register(Command::new("ok", |_| async { Ok(()) }))
            .await
            .unwrap();
        for _ in 0..3 {
            t.submit(Job::new("ok", ()))
                .await
                .unwrap()
                .wait()
                .await
                .unwrap();
        }
        let s = t.stats();
        assert_eq!(
            (s.submitted, s.attempts, s.succeeded, s.failed),
            (3, 3, 3, 0)
        );
        assert_eq!(t.running(), 0);
    }
}
