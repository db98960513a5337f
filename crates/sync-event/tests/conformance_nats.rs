//! The event conformance suite on the nats backend, against the 3-node JetStream cluster that
//! `cargo xtask test` starts (`SYNC_NATS_URLS`). Without the harness these tests are listed as
//! ignored; with `SYNC_NATS_URLS` set and the cluster unreachable they fail.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt;
use sync_event::conformance::Harness;
use sync_event::nats::{testing, FRAMING_RESERVE};
use sync_event::{Error, EventOptions, EventStream, Member, NatsConfig, NatsEvents, Result};

/// Every handle it opened, under its own fresh prefix; their streams are deleted on drop.
#[derive(Default)]
struct NatsHarness {
    opened: Mutex<Vec<Opened>>,
}

/// A handle given to the suite, and the backend behind it.
struct Opened {
    handle: Arc<dyn EventStream>,
    events: NatsEvents,
}

impl NatsHarness {
    fn config_of(&self, of: &Arc<dyn EventStream>) -> NatsConfig {
        let opened = self.opened.lock().unwrap();
        let o = opened
            .iter()
            .find(|o| Arc::ptr_eq(&o.handle, of))
            .expect("peer() of a handle this harness opened");
        o.events.config().clone()
    }
}

impl Harness for NatsHarness {
    fn open(&self, options: EventOptions) -> BoxFuture<'_, Result<Arc<dyn EventStream>>> {
        async move {
            let cfg = testing::config("conf");
            let events = match NatsEvents::connect(cfg.clone(), options).await {
                Ok(e) => e,
                Err(e @ Error::Unavailable { .. }) => panic!(
                    "{} says NATS is at {:?}, but connecting failed: {e}",
                    testing::URLS_VAR,
                    cfg.urls
                ),
                Err(e) => return Err(e),
            };
            let handle: Arc<dyn EventStream> = Arc::new(events.clone());
            self.opened.lock().unwrap().push(Opened {
                handle: handle.clone(),
                events,
            });
            Ok(handle)
        }
        .boxed()
    }

    fn peer<'a>(&'a self, of: &'a Arc<dyn EventStream>) -> BoxFuture<'a, Arc<dyn EventStream>> {
        async move {
            // A new connection, as another process would have, on the same prefix.
            let cfg = self.config_of(of);
            let events = testing::connect(cfg, EventOptions::new()).await;
            let handle: Arc<dyn EventStream> = Arc::new(events.clone());
            self.opened.lock().unwrap().push(Opened {
                handle: handle.clone(),
                events,
            });
            handle
        }
        .boxed()
    }

    fn crash(&self, member: Box<dyn Member>) -> BoxFuture<'_, ()> {
        // No leave, no Drop: its deliveries come back only after the ack wait, as a killed
        // process's would (its pull request stays open at the server until it expires).
        std::mem::forget(member);
        futures::future::ready(()).boxed()
    }

    fn max_event_bytes(&self) -> usize {
        // The harness's servers run with the default max_payload, 1 MiB.
        (1 << 20) - FRAMING_RESERVE
    }
}

impl Drop for NatsHarness {
    /// Deletes the streams of every prefix used, on a thread of its own (the test's runtime
    /// is shutting down).
    fn drop(&mut self) {
        let handles: Vec<NatsEvents> = self
            .opened
            .lock()
            .map(|mut o| o.drain(..).map(|o| o.events).collect())
            .unwrap_or_default();
        if handles.is_empty() {
            return;
        }
        let configs: Vec<NatsConfig> = handles.iter().map(|e| e.config().clone()).collect();
        drop(handles);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the cleanup");
            rt.block_on(async {
                let mut seen = std::collections::HashSet::new();
                for cfg in configs {
                    if seen.insert(cfg.prefix.clone()) {
                        if let Ok(e) = NatsEvents::connect(cfg, EventOptions::new()).await {
                            testing::wipe(&e).await;
                        }
                    }
                }
            })
        })
        .join();
    }
}

sync_event::event_conformance!(
    nats,
    NatsHarness::default(),
    #[ignore = "needs nats: run `cargo xtask test`"]
);

/// `open` takes `nats://` URLs; a malformed one is a configuration error, before any network.
#[tokio::test]
async fn open_refuses_a_malformed_nats_url() {
    for url in ["nats://h1/app", "nats://h1:1/a.b", "nats://h1:1?replicas=9"] {
        let r = sync_event::open(url, EventOptions::new()).await;
        assert!(matches!(r, Err(Error::Config(_))), "{url}: {r:?}");
    }
}

/// `open("nats://…")` reaches the harness's cluster.
#[tokio::test]
#[ignore = "needs nats: run `cargo xtask test`"]
async fn open_by_url() {
    let cfg = testing::config("open");
    let hosts: Vec<&str> = cfg
        .urls
        .iter()
        .map(|u| u.trim_start_matches("nats://"))
        .collect();
    let url = format!("nats://{}/{}?replicas=3", hosts.join(","), cfg.prefix);
    let ev = sync_event::open(&url, EventOptions::new()).await.unwrap();
    assert_eq!(ev.publish("t", "x".into()).await.unwrap(), 1);
    assert_eq!(ev.first_available("t").await.unwrap(), 1);
    let cleanup = testing::connect(cfg, EventOptions::new()).await;
    assert_eq!(testing::wipe(&cleanup).await, 1);
}
