//! The event conformance suite on the etcd backend, against the cluster that `cargo xtask test`
//! starts (`SYNC_ETCD_ENDPOINTS`). Without the harness these tests are listed as ignored; with
//! it they fail, never skip, when etcd is not there.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt;
use sync_etcd::{testing, EtcdClient, EtcdConfig};
use sync_event::conformance::Harness;
use sync_event::{EtcdEvents, EventOptions, EventStream, Member, Result, ETCD_MAX_EVENT_BYTES};

/// A handle made by the harness, with what made it.
type Made = (Arc<dyn EventStream>, EtcdConfig, EventOptions);

struct EtcdHarness {
    /// One config per handle made by `open`, so peers share its prefix.
    handles: Mutex<Vec<Made>>,
    /// Clients to wipe each prefix with at the end.
    wipe: Mutex<Vec<testing::WipeOnDrop>>,
}

impl EtcdHarness {
    fn new() -> Self {
        EtcdHarness {
            handles: Mutex::new(Vec::new()),
            wipe: Mutex::new(Vec::new()),
        }
    }

    async fn make(&self, cfg: EtcdConfig, options: EventOptions) -> Result<Arc<dyn EventStream>> {
        let ev: Arc<dyn EventStream> =
            Arc::new(EtcdEvents::connect(cfg.clone(), options.clone()).await?);
        self.handles
            .lock()
            .unwrap()
            .push((ev.clone(), cfg, options));
        Ok(ev)
    }
}

impl Harness for EtcdHarness {
    fn open(&self, options: EventOptions) -> BoxFuture<'_, Result<Arc<dyn EventStream>>> {
        async move {
            let cfg = testing::config("event");
            let client: EtcdClient = testing::connect(cfg.clone()).await;
            self.wipe.lock().unwrap().push(testing::WipeOnDrop(client));
            self.make(cfg, options).await
        }
        .boxed()
    }

    fn peer<'a>(&'a self, of: &'a Arc<dyn EventStream>) -> BoxFuture<'a, Arc<dyn EventStream>> {
        async move {
            let (cfg, options) = {
                let handles = self.handles.lock().unwrap();
                let found = handles
                    .iter()
                    .find(|(a, _, _)| std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(of)))
                    .expect("a handle made by this harness");
                (found.1.clone(), found.2.clone())
            };
            self.make(cfg, options).await.expect("connect a peer")
        }
        .boxed()
    }

    fn crash(&self, member: Box<dyn Member>) -> BoxFuture<'_, ()> {
        // No leave, no Drop: its claims stay until their ack wait passes (a killed process's
        // would also go with its lease, after the TTL).
        std::mem::forget(member);
        futures::future::ready(()).boxed()
    }

    fn max_event_bytes(&self) -> usize {
        ETCD_MAX_EVENT_BYTES
    }
}

sync_event::event_conformance!(
    etcd,
    EtcdHarness::new(),
    #[ignore = "needs etcd: run `cargo xtask test`"]
);
