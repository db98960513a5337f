//! The lock conformance suite on the in-process backend.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use sync_lock::conformance::Harness;
use sync_lock::{AcquireOptions, LocalLock, Lock};

#[derive(Default)]
struct LocalHarness {
    lock: LocalLock,
}

impl Harness for LocalHarness {
    fn client(&self) -> BoxFuture<'_, Arc<dyn Lock>> {
        let l: Arc<dyn Lock> = Arc::new(self.lock.clone());
        futures::future::ready(l).boxed()
    }

    fn revoke_holder<'a>(&'a self, name: &'a str) -> BoxFuture<'a, ()> {
        assert!(self.lock.revoke(name), "nobody held {name}");
        futures::future::ready(()).boxed()
    }

    fn entries<'a>(&'a self, name: &'a str) -> BoxFuture<'a, usize> {
        let s = self.lock.status(name);
        futures::future::ready(usize::from(s.held) + s.waiters).boxed()
    }

    fn crash_holder<'a>(&'a self, name: &'a str, ttl: Duration) -> BoxFuture<'a, ()> {
        // In one process, a crash is a task that panics while holding the lock.
        let lock = self.lock.clone();
        let name = name.to_owned();
        async move {
            let task = tokio::spawn(async move {
                let _guard = lock
                    .acquire(&name, AcquireOptions::new().with_ttl(ttl))
                    .await
                    .unwrap();
                panic!("simulated crash while holding the lock");
            });
            assert!(task.await.unwrap_err().is_panic());
        }
        .boxed()
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn crash_bound(&self, _ttl: Duration) -> Duration {
        Duration::from_millis(500)
    }

    fn loss_bound(&self) -> Duration {
        Duration::from_secs(1)
    }
}

sync_lock::lock_conformance!(local, LocalHarness::default());
