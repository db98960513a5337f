//! The semaphore and rwlock conformance suites on the in-process backend.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use sync_lock::conformance::SemHarness;
use sync_lock::{AcquireOptions, LocalRwLock, LocalSemaphore, RwLock, Semaphore};

#[derive(Default)]
struct LocalHarness {
    sem: LocalSemaphore,
    rw: LocalRwLock,
}

impl SemHarness for LocalHarness {
    fn semaphore(&self) -> BoxFuture<'_, Arc<dyn Semaphore>> {
        let s: Arc<dyn Semaphore> = Arc::new(self.sem.clone());
        futures::future::ready(s).boxed()
    }

    fn rwlock(&self) -> BoxFuture<'_, Arc<dyn RwLock>> {
        let l: Arc<dyn RwLock> = Arc::new(self.rw.clone());
        futures::future::ready(l).boxed()
    }

    fn sem_entries<'a>(&'a self, name: &'a str) -> BoxFuture<'a, usize> {
        let (held, waiting) = self.sem.status(name);
        futures::future::ready(held + waiting).boxed()
    }

    fn rw_entries<'a>(&'a self, name: &'a str) -> BoxFuture<'a, usize> {
        let (held, waiting) = self.rw.status(name);
        futures::future::ready(held + waiting).boxed()
    }

    fn revoke_sem_holders<'a>(&'a self, name: &'a str) -> BoxFuture<'a, ()> {
        assert!(self.sem.revoke(name), "nobody held {name}");
        futures::future::ready(()).boxed()
    }

    fn revoke_rw_holders<'a>(&'a self, name: &'a str) -> BoxFuture<'a, ()> {
        assert!(self.rw.revoke(name), "nobody held {name}");
        futures::future::ready(()).boxed()
    }

    fn crash_sem_holder<'a>(&'a self, name: &'a str, ttl: Duration) -> BoxFuture<'a, ()> {
        // In one process, a crash is a task that panics while holding the permit.
        let sem = self.sem.clone();
        let name = name.to_owned();
        async move {
            let task = tokio::spawn(async move {
                let _guard = sem
                    .acquire(&name, 1, AcquireOptions::new().with_ttl(ttl))
                    .await
                    .unwrap();
                panic!("simulated crash while holding a permit");
            });
            assert!(task.await.unwrap_err().is_panic());
        }
        .boxed()
    }

    fn crash_rw_holder<'a>(&'a self, name: &'a str, ttl: Duration) -> BoxFuture<'a, ()> {
        // In one process, a crash is a task that panics while writing.
        let rw = self.rw.clone();
        let name = name.to_owned();
        async move {
            let task = tokio::spawn(async move {
                let _guard = rw
                    .write(&name, AcquireOptions::new().with_ttl(ttl))
                    .await
                    .unwrap();
                panic!("simulated crash while writing");
            });
            assert!(task.await.unwrap_err().is_panic());
        }
        .boxed()
    }

    fn crash_bound(&self, _ttl: Duration) -> Duration {
        Duration::from_millis(500)
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(1)
    }
}

sync_lock::semaphore_conformance!(local, LocalHarness::default());
