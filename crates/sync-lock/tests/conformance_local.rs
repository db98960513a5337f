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

/// The uncontended path makes a guard's loss signal only when asked: asked after a revocation
/// that nobody watched, it says lost all the same, and release reports the loss.
#[tokio::test]
async fn a_loss_nobody_watched_is_still_reported() {
    let locks = LocalLock::new();
    let g = locks.acquire("n", AcquireOptions::new()).await.unwrap();
    assert!(locks.revoke("n"));
    assert!(g.is_lost());
    assert_eq!(g.lost().await, sync_core::signal::LossReason::Revoked);
    assert!(matches!(
        g.release().await,
        Err(sync_lock::Error::Lost { .. })
    ));
    let g = locks.acquire("n", AcquireOptions::new()).await.unwrap();
    assert!(locks.revoke("n"));
    // Not asked at all before release.
    assert!(matches!(
        g.release().await,
        Err(sync_lock::Error::Lost { .. })
    ));
    let g = locks.acquire("n", AcquireOptions::new()).await.unwrap();
    let watcher = g.loss_signal();
    g.release().await.unwrap();
    assert_eq!(
        watcher.fired().await,
        sync_core::signal::LossReason::Released
    );
}
