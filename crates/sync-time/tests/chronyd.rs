//! The `ntp` backend against a real chronyd on loopback.
//!
//! `cargo xtask test` starts chronyd (no upstream, never touching the machine's clock) and sets
//! `SYNC_NTP_SERVER=127.0.0.1:PORT`; it runs these with `--include-ignored`. Run alone, they
//! fail loudly when the variable is missing or chronyd does not answer: they never pass
//! without having talked to chronyd.
#![cfg(feature = "ntp")]

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use support::FakeNtpServer;
use sync_time::{HybridClock, NtpOptions, NtpTime, SourceVerdict, SyncState, Time};

/// chronyd's address from the harness, or a loud failure.
fn chronyd() -> String {
    match std::env::var("SYNC_NTP_SERVER") {
        Ok(s) if !s.trim().is_empty() => s,
        _ => panic!(
            "SYNC_NTP_SERVER is not set: this test needs a chronyd serving NTP on loopback. \
             Run `cargo xtask test`, or start chronyd yourself (see notes/services.md) and set \
             SYNC_NTP_SERVER=127.0.0.1:PORT"
        ),
    }
}

fn opts(servers: impl IntoIterator<Item = String>) -> NtpOptions {
    NtpOptions::new(servers)
        .with_query_timeout(Duration::from_secs(1))
        .with_resync_interval(Duration::ZERO)
}

async fn connect(servers: Vec<String>) -> NtpTime {
    let listed = servers.join(", ");
    NtpTime::connect(opts(servers))
        .await
        .unwrap_or_else(|e| panic!("chronyd at {listed} did not give a usable time: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chronyd: run `cargo xtask test`"]
async fn ntp_chronyd_offset_near_zero_and_bounds_contain_the_system_clock() {
    let time = connect(vec![chronyd()]).await;
    let status = time.status();
    assert_eq!(status.state, SyncState::Synchronized);
    // chronyd serves this machine's own clock: the offset is only measurement noise.
    let offset = status.offset_nanos.unwrap();
    assert!(
        offset.abs() < 2_000_000,
        "offset to the local chronyd: {offset} ns"
    );
    let SourceVerdict::Selected { delay, samples, .. } = status.sources[0].verdict else {
        panic!("chronyd was not selected: {status:?}");
    };
    assert_eq!(samples, 4);
    assert!(
        delay < Duration::from_millis(20),
        "loopback round trip {delay:?}"
    );
    for _ in 0..10_000 {
        let before = time.now_bounds().unwrap();
        let system = SystemTime::now();
        let after = time.now_bounds().unwrap();
        assert!(
            before.earliest() <= system && system <= after.latest(),
            "system clock outside {before} / {after}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chronyd: run `cargo xtask test`"]
async fn ntp_chronyd_outvotes_a_lying_server() {
    let honest = FakeNtpServer::honest(0).await;
    let liar = FakeNtpServer::honest(4_000_000_000).await;
    let time = connect(vec![chronyd(), liar.server(), honest.server()]).await;
    let status = time.status();
    assert!(
        matches!(status.sources[0].verdict, SourceVerdict::Selected { .. }),
        "{status:?}"
    );
    assert!(
        matches!(status.sources[1].verdict, SourceVerdict::FalseTicker { .. }),
        "{status:?}"
    );
    assert!(
        matches!(status.sources[2].verdict, SourceVerdict::Selected { .. }),
        "{status:?}"
    );
    let before = time.now_bounds().unwrap();
    let system = SystemTime::now();
    let after = time.now_bounds().unwrap();
    assert!(before.earliest() <= system && system <= after.latest());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chronyd: run `cargo xtask test`"]
async fn ntp_chronyd_agrees_with_a_raw_sntpc_query() {
    let server = chronyd();
    let time = connect(vec![server.clone()]).await;
    let addr: std::net::SocketAddr = tokio::net::lookup_host(server.as_str())
        .await
        .unwrap()
        .next()
        .unwrap();
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
    let socket = sntpc_net_tokio::UdpSocketWrapper::from(socket);
    let raw = tokio::time::timeout(
        Duration::from_secs(1),
        sntpc::get_time(
            addr,
            &socket,
            sntpc::NtpContext::new(sntpc::StdTimestampGen::default()),
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("chronyd at {server} did not answer a raw sntpc query"))
    .unwrap_or_else(|e| panic!("chronyd at {server} rejected by sntpc: {e:?}"));
    let ours = time.status().offset_nanos.unwrap();
    let theirs = raw.offset * 1_000;
    assert!(
        (ours - theirs).abs() < 2_000_000,
        "our offset {ours} ns vs raw sntpc {theirs} ns"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chronyd: run `cargo xtask test`"]
async fn ntp_chronyd_hybrid_clock_over_synced_time() {
    let time: Arc<dyn Time> = Arc::new(connect(vec![chronyd()]).await);
    let hlc = HybridClock::new(time.clone());
    let a = hlc.now().unwrap();
    let b = hlc.now().unwrap();
    assert!(a < b);
    let bounds = time.now_bounds().unwrap();
    assert!(bounds.latest() >= a.wall());
}

#[cfg(feature = "conformance")]
mod conformance {
    use super::*;
    use sync_time::conformance::Backend;

    // chronyd serves this machine's clock: true time is the system clock.
    sync_time::time_conformance!(
        ntp_chronyd,
        Backend::new(connect(vec![chronyd()]).await, 0, true),
        #[ignore = "needs chronyd: run `cargo xtask test`"]
    );
}
