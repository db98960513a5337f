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
