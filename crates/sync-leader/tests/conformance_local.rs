//! The leader conformance suite on the in-process backend.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use sync_leader::conformance::Harness;
use sync_leader::{ElectOptions, Leader, LocalLeader};

#[derive(Default)]
struct LocalHarness {
    leader: LocalLeader,
}

impl Harness for LocalHarness {
    fn client(&self) -> BoxFuture<'_, Arc<dyn Leader>> {
        let l: Arc<dyn Leader> = Arc::new(self.leader.clone());
        futures::future::ready(l).boxed()
    }

    fn revoke_lease<'a>(&'a self, group: &'a str) -> BoxFuture<'a, ()> {
        // In one process nothing keeps an office alive but its handle: revoking is the same
        // administrative act as deleting the record.
        assert!(self.leader.revoke(group), "nobody led {group}");
        futures::future::ready(()).boxed()
    }

    fn delete_leader_key<'a>(&'a self, group: &'a str) -> BoxFuture<'a, ()> {
        assert!(self.leader.revoke(group), "nobody led {group}");
        futures::future::ready(()).boxed()
    }

    fn candidates<'a>(&'a self, group: &'a str) -> BoxFuture<'a, usize> {
        let s = self.leader.status(group);
        futures::future::ready(usize::from(s.leader.is_some()) + s.waiting).boxed()
    }

    fn crash_leader<'a>(
        &'a self,
        group: &'a str,
        id: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, u64> {
        // In one process, a crash is a task that panics while leading.
        let leader = self.leader.clone();
        let (group, id) = (group.to_owned(), id.to_owned());
        async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let task = tokio::spawn(async move {
                let office = leader
                    .elect(&id, ElectOptions::new().with_group(group).with_ttl(ttl))
                    .await
                    .unwrap();
                tx.send(office.term()).unwrap();
                panic!("simulated crash while leading");
            });
            assert!(task.await.unwrap_err().is_panic());
            rx.await.expect("the crashing leader was elected")
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

sync_leader::leader_conformance!(local, LocalHarness::default());
