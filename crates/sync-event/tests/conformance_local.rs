//! The event conformance suite on the in-process backend.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use sync_event::conformance::Harness;
use sync_event::{EventOptions, EventStream, LocalEvents, Member, Result, LOCAL_MAX_EVENT_BYTES};

#[derive(Default)]
struct LocalHarness;

impl Harness for LocalHarness {
    fn open(&self, options: EventOptions) -> BoxFuture<'_, Result<Arc<dyn EventStream>>> {
        let ev = LocalEvents::with_options(options).map(|l| Arc::new(l) as Arc<dyn EventStream>);
        futures::future::ready(ev).boxed()
    }

    fn peer<'a>(&'a self, of: &'a Arc<dyn EventStream>) -> BoxFuture<'a, Arc<dyn EventStream>> {
        futures::future::ready(of.clone()).boxed()
    }

    fn crash(&self, member: Box<dyn Member>) -> BoxFuture<'_, ()> {
        // No leave, no Drop: only the ack wait frees its deliveries.
        std::mem::forget(member);
        futures::future::ready(()).boxed()
    }

    fn max_event_bytes(&self) -> usize {
        LOCAL_MAX_EVENT_BYTES
    }
}

sync_event::event_conformance!(local, LocalHarness);

mod local_only {
    use sync_event::{Error, EventOptions, Message};

    #[tokio::test]
    async fn open_by_url() {
        let ev = sync_event::open("local", EventOptions::new())
            .await
            .unwrap();
        assert_eq!(ev.publish("t", Message::new("x")).await.unwrap(), 1);
        let e = sync_event::open("zookeeper://x", EventOptions::new())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e:?}");
        let e = sync_event::open("local", EventOptions::new().with_max_event_bytes(0))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidOptions { .. }), "{e:?}");
    }

    #[cfg(feature = "etcd")]
    #[tokio::test]
    async fn malformed_etcd_urls_are_refused_at_once() {
        for url in sync_event::__core::check::BAD_ETCD_URLS {
            let t = std::time::Instant::now();
            let r = sync_event::open(url, EventOptions::new()).await;
            sync_event::__core::check::assert_refused_at_once(url, r, t.elapsed(), "Config", |e| {
                matches!(e, Error::Config(_)) && !e.is_retryable()
            });
        }
    }

    #[tokio::test]
    async fn memory_is_bounded_by_count_retention() {
        let ev = sync_event::LocalEvents::new();
        for _ in 0..(sync_event::LOCAL_DEFAULT_MAX_EVENTS + 10) {
            sync_event::EventStream::publish(&ev, "t", Message::new("x"))
                .await
                .unwrap();
        }
        assert_eq!(
            ev.retained("t") as u64,
            sync_event::LOCAL_DEFAULT_MAX_EVENTS
        );
    }
}
