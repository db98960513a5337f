//! syncctl's `event` commands as a process against the harness's NATS JetStream cluster
//! (`SYNC_NATS_URLS`, set by `cargo xtask test` / `cargo xtask etcd up`).

mod support;

use std::time::Duration;

use support::*;

/// A `nats://` URL of the harness's cluster under a fresh prefix; the streams under it are
/// deleted when the returned guard drops. Panics (fails the test) without `SYNC_NATS_URLS`.
fn nats_url(test: &str) -> (String, Wipe) {
    let cfg = sync_event::nats::testing::config(test);
    let hosts: Vec<&str> = cfg
        .urls
        .iter()
        .map(|u| u.trim_start_matches("nats://"))
        .collect();
    let url = format!("nats://{}/{}", hosts.join(","), cfg.prefix);
    (url, Wipe(cfg))
}

struct Wipe(sync_event::NatsConfig);

impl Drop for Wipe {
    fn drop(&mut self) {
        let cfg = self.0.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let events =
                sync_event::nats::testing::connect(cfg, sync_event::EventOptions::new()).await;
            sync_event::nats::testing::wipe(&events).await;
        });
    }
}

#[test]
#[ignore = "needs NATS: run `cargo xtask test`"]
fn nats_event_publish_then_tail_from_earliest_sees_every_payload_in_order() {
    let (url, _wipe) = nats_url("order");
    publish_then_tail_in_order(&url);
}

#[test]
#[ignore = "needs NATS: run `cargo xtask test`"]
fn nats_event_group_members_split_the_events_each_once() {
    let (url, _wipe) = nats_url("group");
    for i in 1..=6 {
        assert_eq!(publish(&url, "jobs", &format!("j{i}"), &[]), i);
    }
    let member = |n: &str| {
        Proc::spawn(
            "member",
            syncctl().args([
                "--url", &url, "--json", "event", "tail", "jobs", "--group", "g", "--count", n,
            ]),
        )
    };
    let (a, b) = (member("2"), member("4"));
    let mut all = Vec::new();
    for (p, n) in [(a, 2), (b, 4)] {
        let (status, out, err) = p.finish(Duration::from_secs(60));
        assert_eq!(status.code(), Some(0), "{err}");
        let got = json_lines(&out);
        assert_eq!(got.len(), n, "--count {n}: {out}");
        all.extend(got.iter().map(|e| e["offset"].as_u64().unwrap()));
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=6).collect::<Vec<u64>>(),
        "each event to one member, once"
    );
}
