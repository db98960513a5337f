//! The `ntp` backend against the fake NTP server of `support/`: skew, false tickers, every kind
//! of bad reply, silence, clock steps, widening bounds, background re-sync.
#![cfg(feature = "ntp")]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use support::{options, Behavior, Config, FakeNtpServer};
use sync_time::{
    Error, HybridClock, LocalTime, ManualClock, NtpTime, SourceVerdict, SyncState, Time,
    TimeConfig, TimeExt, Verification,
};

const SEC: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;

fn shifted(t: SystemTime, nanos: i64) -> SystemTime {
    if nanos >= 0 {
        t + Duration::from_nanos(nanos as u64)
    } else {
        t - Duration::from_nanos(nanos.unsigned_abs())
    }
}

/// The system clock read between two `now_bounds()` lies within them.
fn contains_system_time(time: &dyn Time) -> bool {
    let before = time.now_bounds().unwrap();
    let system = SystemTime::now();
    let after = time.now_bounds().unwrap();
    before.earliest() <= system && system <= after.latest()
}

/// The one server's failure inside `NoServerReachable`.
fn only_failure(err: &Error) -> &Error {
    match err {
        Error::NoServerReachable { failures } => {
            assert_eq!(failures.len(), 1, "{err}");
            &failures[0].error
        }
        other => panic!("expected NoServerReachable, got {other:?}"),
    }
}

async fn connect_err(server: &FakeNtpServer) -> Error {
    NtpTime::connect(
        options(&[server])
            .with_samples(2)
            .with_query_timeout(Duration::from_millis(100)),
    )
    .await
    .expect_err("a sync from a bad server must fail")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntp_measures_a_known_skew_and_bounds_contain_the_skewed_time() {
    for skew in [2_500 * MS, -1_700 * MS] {
        let server = FakeNtpServer::honest(skew).await;
        let time = NtpTime::connect(options(&[&server])).await.unwrap();
        let status = time.status();
        let offset = status.offset_nanos.unwrap();
        let error = status.error_at_sync.unwrap();
        // The guarantee: the true offset is within the error bound of the measured one...
        assert!(
            (offset - skew).unsigned_abs() <= error.as_nanos() as u64,
            "measured offset {offset} ns ± {error:?}, server skew {skew} ns"
        );
        // ...and on loopback that is a few milliseconds at most.
        assert!(
            (offset - skew).abs() < 5 * MS,
            "measured offset {offset} ns, server skew {skew} ns"
        );
        assert_eq!(status.state, SyncState::Synchronized);
        assert!(
            status.error.unwrap() < Duration::from_millis(10),
            "{status:?}"
        );
        for _ in 0..1_000 {
            let before = time.now_bounds().unwrap();
            let skewed = shifted(SystemTime::now(), skew);
            let after = time.now_bounds().unwrap();
            assert!(
                before.earliest() <= skewed && skewed <= after.latest(),
                "server time {skewed:?} outside {before} / {after}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntp_rejects_a_liar_among_three_servers() {
    let honest_a = FakeNtpServer::honest(0).await;
    let liar = FakeNtpServer::honest(5 * SEC).await;
    let honest_b = FakeNtpServer::honest(0).await;
    let time = NtpTime::connect(options(&[&honest_a, &liar, &honest_b]))
        .await
        .unwrap();
    let status = time.status();
    let verdicts: Vec<_> = status.sources.iter().map(|s| &s.verdict).collect();
    assert!(
        matches!(verdicts[0], SourceVerdict::Selected { .. }),
        "{verdicts:?}"
    );
    assert!(
        matches!(verdicts[1], SourceVerdict::FalseTicker { offset_nanos, .. } if (offset_nanos - 5 * SEC).abs() < 5 * MS),
        "{verdicts:?}"
    );
    assert!(
        matches!(verdicts[2], SourceVerdict::Selected { .. }),
        "{verdicts:?}"
    );
    assert!(status.offset_nanos.unwrap().abs() < 5 * MS, "{status:?}");
    assert!(contains_system_time(&time));
    assert!(time.now_bounds().unwrap().error() < Duration::from_millis(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntp_outvotes_two_liars_among_five_servers() {
    let servers = [
        FakeNtpServer::honest(3 * SEC).await,
        FakeNtpServer::honest(0).await,
        FakeNtpServer::honest(0).await,
        FakeNtpServer::honest(-4 * SEC).await,
        FakeNtpServer::honest(0).await,
    ];
    let refs: Vec<&FakeNtpServer> = servers.iter().collect();
    let time = NtpTime::connect(options(&refs)).await.unwrap();
    let chimers: Vec<bool> = time
        .status()
        .sources
        .iter()
        .map(|s| matches!(s.verdict, SourceVerdict::Selected { .. }))
        .collect();
    assert_eq!(chimers, [false, true, true, false, true]);
    assert!(time.status().offset_nanos.unwrap().abs() < 5 * MS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntp_two_disagreeing_servers_are_no_agreement() {
    let a = FakeNtpServer::honest(0).await;
    let b = FakeNtpServer::honest(5 * SEC).await;
    let err = NtpTime::connect(options(&[&a, &b])).await.unwrap_err();
    assert!(matches!(err, Error::NoAgreement { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&a.server()) && msg.contains(&b.server()),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntp_kiss_of_death_is_a_typed_error_and_stops_queries() {
    for code in [*b"RATE", *b"DENY"] {
        let server = FakeNtpServer::behaving(Behavior::KissOfDeath(code)).await;
        let err = connect_err(&server).await;
        match only_failure(&err) {
            Error::KissOfDeath { server: s, code: c } => {
                assert_eq!(s, &server.server());
                assert_eq!(c.as_bytes(), code);
            }
            other => panic!("expected KissOfDeath, got {other:?}"),
        }
        assert!(err.to_string().contains(&server.server()), "{err}");
        assert_eq!(
            server.queries(),
            1,
            "a kissed-off server must not be asked again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntp_unsynchronized_server_is_a_typed_error() {
    for (behavior, needle) in [
        (Behavior::Unsynchronized, "leap indicator 3"),
        (Behavior::Stratum16, "stratum 16"),
    ] {
        let server = FakeNtpServer::behaving(behavior).await;
        let err = connect_err(&server).await;
        let inner = only_failure(&err);
        assert!(
            matches!(inner, Error::ServerUnsynchronized { .. }),
            "{inner:?}"
        );
        assert!(inner.to_string().contains(needle), "{inner}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntp_bad_timestamps_are_typed_errors() {
    for (behavior, needle) in [
        (Behavior::ZeroOrigin, "origin timestamp"),
        (Behavior::WrongOrigin, "origin timestamp"),
        (Behavior::ZeroTransmit, "transmit timestamp is zero"),
    ] {
        let server = FakeNtpServer::behaving(behavior.clone()).await;
        let err = connect_err(&server).await;
        let inner = only_failure(&err);
        assert!(
            matches!(inner, Error::BadTimestamp { .. }),
            "{behavior:?}: {inner:?}"
        );
        assert!(inner.to_string().contains(needle), "{inner}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntp_stale_replies_are_skipped_and_the_socket_reused() {
    // The first request's reply comes after the timeout; the next request must not take it for
    // its own answer (its origin timestamp is the first request's), but wait for its own.
    let server = FakeNtpServer::start(Config {
        inbound_delays: [150, 0, 0, 0].map(Duration::from_millis).to_vec(),
        ..Config::default()
    })
    .await;
    let time = NtpTime::connect(
        options(&[&server])
            .with_samples(3)
            .with_query_timeout(Duration::from_millis(100)),
    )
    .await
    .unwrap();
    let status = time.status();
    let SourceVerdict::Selected { samples, delay, .. } = status.sources[0].verdict else {
        panic!("{status:?}");
    };
    assert_eq!(samples, 2, "one timed out, two answered: {status:?}");
    assert!(delay < Duration::from_millis(10), "{delay:?}");
    assert!(status.offset_nanos.unwrap().abs() < 5 * MS);
    // Later syncs reuse the socket and still see only their own replies.
    for _ in 0..20 {
        time.sync().await.unwrap();
    }
    assert!(time.status().offset_nanos.unwrap().abs() < 5 * MS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntp_truncated_reply_is_a_typed_error() {
    let server = FakeNtpServer::behaving(Behavior::Truncated).await;
    let err = connect_err(&server).await;
    let inner = only_failure(&err);
    assert!(matches!(inner, Error::MalformedReply { .. }), "{inner:?}");
    assert!(inner.to_string().contains("48-byte"), "{inner}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntp_garbage_replies_are_typed_errors_never_panics() {
    let server = FakeNtpServer::behaving(Behavior::Garbage).await;
    // Replies that are not answers to our request are skipped until the timeout, so keep it
    // short: 300 syncs of one query each.
    let time = NtpTime::new(
        options(&[&server])
            .with_samples(1)
            .with_query_timeout(Duration::from_millis(20)),
    )
    .unwrap();
    for _ in 0..300 {
        let err = time.sync().await.expect_err("garbage cannot sync");
        let inner = only_failure(&err);
        assert!(
            matches!(
                inner,
                Error::BadTimestamp { .. } | Error::MalformedReply { .. }
            ),
            "unexpected error for garbage: {inner:?}"
        );
    }
    assert_eq!(time.status().state, SyncState::NeverSynced);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntp_silent_server_times_out() {
    let server = FakeNtpServer::behaving(Behavior::Silent).await;
    let started = Instant::now();
    let err = NtpTime::connect(
        options(&[&server])
            .with_samples(4)
            .with_query_timeout(Duration::from_millis(150)),
    )
    .await
    .unwrap_err();
    match only_failure(&err) {
        Error::Timeout { server: s, timeout } => {
            assert_eq!(s, &server.server());
            assert_eq!(*timeout, Duration::from_millis(150));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    // A dead server costs at most two timeouts per sync, not one per sample.
    assert!(
        started.elapsed() < Duration::from_millis(1_000),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.queries(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntp_no_usable_server_is_a_typed_error_naming_every_server_tried() {
    let silent = FakeNtpServer::behaving(Behavior::Silent).await;
    let kod = FakeNtpServer::behaving(Behavior::KissOfDeath(*b"DENY")).await;
    let opts =
        sync_time::NtpOptions::new([silent.server(), kod.server(), "127.0.0.1:99999".into()])
            .with_query_timeout(Duration::from_millis(100))
            .with_resync_interval(Duration::ZERO);
    let err = NtpTime::connect(opts).await.unwrap_err();
    let Error::NoServerReachable { failures } = &err else {
        panic!("expected NoServerReachable, got {err:?}");
    };
    assert!(matches!(*failures[0].error, Error::Timeout { .. }));
    assert!(matches!(*failures[1].error, Error::KissOfDeath { .. }));
    assert!(matches!(*failures[2].error, Error::Resolve { .. }));
    let msg = err.to_string();
    for name in [silent.server(), kod.server(), "127.0.0.1:99999".into()] {
        assert!(msg.contains(&name), "{name} missing from: {msg}");
    }
    assert!(err.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntp_failing_servers_beside_a_good_one_are_reported_and_outvote_it_by_default() {
    let good = FakeNtpServer::honest(0).await;
    let silent = FakeNtpServer::behaving(Behavior::Silent).await;
    let garbage = FakeNtpServer::behaving(Behavior::Garbage).await;
    let opts = options(&[&good, &silent, &garbage]).with_query_timeout(Duration::from_millis(100));
    // One answer out of three configured servers is no majority: not believed by default...
    let err = NtpTime::connect(opts.clone()).await.unwrap_err();
    match &err {
        Error::NoQuorum {
            required: 2,
            configured: 3,
            answered,
            failures,
        } => {
            assert_eq!(answered.len(), 1, "{err}");
            assert_eq!(failures.len(), 2, "{err}");
        }
        other => panic!("expected NoQuorum, got {other:?}"),
    }
    assert!(err.is_retryable());
    // ...unless `min_agreeing` allows it, and then the status says so.
    let time = NtpTime::connect(opts.with_min_agreeing(1)).await.unwrap();
    let status = time.status();
    assert_eq!(status.state, SyncState::Synchronized);
    assert_eq!(
        status.verification,
        Verification::Unverified { configured: 3 }
    );
    assert!(matches!(
        status.sources[0].verdict,
        SourceVerdict::Selected { samples: 4, .. }
    ));
    assert!(
        matches!(&status.sources[1].verdict, SourceVerdict::Failed(e) if matches!(**e, Error::Timeout { .. }))
    );
    assert!(matches!(
        status.sources[2].verdict,
        SourceVerdict::Failed(_)
    ));
    assert!(status.last_failure.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntp_keeps_the_minimum_delay_sample() {
    // Requests are held 150, 0, 100 and 200 ms on the way in: that adds to the round trip and,
    // being one-way, skews those samples' offsets by half. The one not held must win. The
    // held ones are far apart from it, so that a loaded machine's own delays (25 ms seen in
    // CI) cannot make a held sample look the shortest.
    let server = FakeNtpServer::start(Config {
        inbound_delays: [150, 0, 100, 200].map(Duration::from_millis).to_vec(),
        ..Config::default()
    })
    .await;
    let opts = options(&[&server]).with_query_timeout(Duration::from_secs(1));
    let time = NtpTime::connect(opts).await.unwrap();
    let status = time.status();
    let SourceVerdict::Selected { delay, samples, .. } = status.sources[0].verdict else {
        panic!("{status:?}");
    };
    assert_eq!(samples, 4);
    assert!(
        delay < Duration::from_millis(100),
        "kept a held sample: {delay:?}"
    );
    // The fake server's clock is ours: the kept sample's offset error is at most half its
    // round trip.
    let bound = delay.as_nanos() as i64 / 2 + MS;
    assert!(
        status.offset_nanos.unwrap().abs() <= bound,
        "offset beyond half the kept sample's delay ({bound} ns): {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntp_error_bound_follows_the_documented_formula() {
    // Root delay 62.5 ms and root dispersion 31.25 ms, exactly representable in 16.16.
    let server = FakeNtpServer::start(Config {
        root_delay: 1 << 12,
        root_dispersion: 1 << 11,
        ..Config::default()
    })
    .await;
    let time = NtpTime::connect(options(&[&server]).with_samples(1).with_max_drift_ppm(500))
        .await
        .unwrap();
    let status = time.status();
    let SourceVerdict::Selected { delay, error, .. } = status.sources[0].verdict else {
        panic!("{status:?}");
    };
    // ε = δ/2 + root_delay/2 + root_dispersion + φ·age + 2 µs, where age is the time from the
    // start of the sync to the reply: under 100 ms even on a loaded machine, so φ·age < 50 µs.
    let without_drift = delay.div_f64(2.0)
        + Duration::from_micros(31_250)
        + Duration::from_micros(31_250)
        + Duration::from_micros(2);
    assert!(
        error >= without_drift && error <= without_drift + Duration::from_micros(50),
        "error {error:?}, expected {without_drift:?} + φ·age"
    );
    // One server: the bounds are its interval.
    let at_sync = status.error_at_sync.unwrap();
    assert!(
        at_sync <= error + Duration::from_nanos(1) && error <= at_sync + Duration::from_nanos(1),
        "bounds error {at_sync:?}, server error {error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntp_bounds_widen_with_age_at_the_drift_rate() {
    let server = FakeNtpServer::honest(0).await;
    let clock = Arc::new(ManualClock::new());
    let time = NtpTime::connect_with_clock(
        options(&[&server])
            .with_max_drift_ppm(500)
            .with_stale_after(Duration::from_secs(60)),
        clock.clone(),
    )
    .await
    .unwrap();
    let at_sync = time.status().error_at_sync.unwrap();
    let now_before = time.now().unwrap();
    clock.advance(Duration::from_secs(100));
    server.set_skew(100 * SEC); // 100 s pass for the server too
    let status = time.status();
    let error = status.error.unwrap();
    // 500 ppm × 100 s = 50 ms, plus 500 ppm of the (real) few ms since the sync.
    let widened = error - at_sync;
    assert!(
        widened >= Duration::from_millis(50) && widened < Duration::from_micros(50_500),
        "widened by {widened:?}"
    );
    assert_eq!(
        time.now_bounds().unwrap().error().as_millis(),
        error.as_millis()
    );
    assert_eq!(
        status.state,
        SyncState::Stale,
        "100 s > stale_after of 60 s"
    );
    let advanced = time.now().unwrap().duration_since(now_before).unwrap();
    assert!(
        advanced >= Duration::from_secs(100) && advanced < Duration::from_millis(100_500),
        "now() advanced {advanced:?}"
    );
    // A fresh sync brings the error back down and the state back to synchronized.
    time.sync().await.unwrap();
    assert_eq!(time.status().state, SyncState::Synchronized);
    assert!(time.status().error.unwrap() < Duration::from_millis(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntp_wall_clock_step_leaves_now_continuous() {
    let server = FakeNtpServer::honest(0).await;
    let clock = Arc::new(ManualClock::new());
    let ntp = NtpTime::connect_with_clock(options(&[&server]), clock.clone())
        .await
        .unwrap();
    let local = LocalTime::new().with_clock(clock.clone());

    let before = ntp.now().unwrap();
    let local_before = local.now().unwrap();
    clock.step_wall(-3_600 * SEC);
    let after = ntp.now().unwrap();
    let local_after = local.now().unwrap();

    // The system-clock backend follows the step; the NTP one does not notice it.
    assert!(local_before.duration_since(local_after).unwrap() > Duration::from_secs(3_599));
    let moved = after
        .duration_since(before)
        .expect("ntp now() went backwards");
    assert!(
        moved < Duration::from_millis(50),
        "ntp now() moved {moved:?}"
    );
    assert!(contains_system_time(&ntp));

    // Forward too, and across a re-sync made while the wall clock is wrong.
    clock.step_wall(7_200 * SEC);
    ntp.sync().await.unwrap();
    assert!(
        contains_system_time(&ntp),
        "after a forward step and re-sync"
    );
    assert!(
        (ntp.status().offset_nanos.unwrap() + 3_600 * SEC).abs() < 5 * MS,
        "the offset now measures the step: {:?}",
        ntp.status().offset_nanos
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntp_never_synced_refuses_time_until_a_sync_succeeds() {
    let server = FakeNtpServer::behaving(Behavior::Silent).await;
    let time =
        NtpTime::new(options(&[&server]).with_query_timeout(Duration::from_millis(100))).unwrap();
    assert_eq!(time.status().state, SyncState::NeverSynced);
    assert!(matches!(time.now(), Err(Error::NotSynchronized { .. })));
    assert!(matches!(
        time.now_bounds(),
        Err(Error::NotSynchronized { .. })
    ));
    assert!(matches!(
        time.after(SystemTime::UNIX_EPOCH),
        Err(Error::NotSynchronized { .. })
    ));

    let err = time.sync().await.unwrap_err();
    let status = time.status();
    assert_eq!(status.state, SyncState::NeverSynced);
    assert_eq!(
        status.last_failure.as_ref().map(|e| e.to_string()),
        Some(err.to_string())
    );

    server.set_behavior(Behavior::Honest);
    time.sync().await.unwrap();
    let status = time.status();
    assert_eq!(status.state, SyncState::Synchronized);
    assert!(status.last_failure.is_none());
    assert!(time.now().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntp_background_resync_runs_and_stops_with_the_last_handle() {
    let server = FakeNtpServer::honest(0).await;
    let time = NtpTime::connect(
        options(&[&server])
            .with_samples(1)
            .with_resync_interval(Duration::from_millis(50)),
    )
    .await
    .unwrap();
    let clone = time.clone();
    // Re-syncs happen on their own.
    server
        .wait_for_queries_above(3, Duration::from_secs(5))
        .await;
    drop(time);
    server
        .wait_for_queries_above(server.queries(), Duration::from_secs(5))
        .await; // a clone keeps it alive
    drop(clone);
    // Let a possibly in-flight query land, then nothing more may come.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let settled = server.queries();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.queries(),
        settled,
        "re-sync continued after the last handle was dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntp_works_as_arc_dyn_time_from_a_url() {
    let server = FakeNtpServer::honest(0).await;
    let url = format!(
        "ntp://{}?samples=2&timeout=300ms&interval=0s",
        server.server()
    );
    let config: TimeConfig = url.parse().unwrap();
    let time: Arc<dyn Time> = sync_time::connect(&config).await.unwrap();
    assert_eq!(time.status().backend, "ntp");
    let t = time.now().unwrap();
    assert!(time.now_bounds().unwrap().error() < Duration::from_millis(10));
    tokio::time::timeout(Duration::from_secs(1), time.wait_until_after(t))
        .await
        .unwrap()
        .unwrap();
    let hlc = HybridClock::new(time.clone());
    assert!(hlc.now().unwrap() < hlc.now().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntp_hybrid_clocks_order_events_and_reject_a_node_too_far_ahead() {
    // Three nodes synced to three different servers: b's is 200 ms ahead, c's 2 s ahead.
    let servers = [
        FakeNtpServer::honest(0).await,
        FakeNtpServer::honest(200 * MS).await,
        FakeNtpServer::honest(2 * SEC).await,
    ];
    let mut nodes = Vec::new();
    for s in &servers {
        let time = NtpTime::connect(options(&[s])).await.unwrap();
        nodes.push(HybridClock::new(Arc::new(time)).with_max_offset(Duration::from_millis(500)));
    }
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    // b sends to a: a's physical clock is 200 ms behind, yet a's next events order after it.
    let sent = b.now().unwrap();
    let received = a.update(sent).unwrap();
    assert!(received > sent);
    let reply = a.now().unwrap();
    assert!(reply > received);
    assert!(b.update(reply).unwrap() > reply);
    // c is 2 s ahead: rejected by a, and a's clock is unchanged.
    let last = a.last();
    let err = a.update(c.now().unwrap()).unwrap_err();
    assert!(matches!(err, Error::ClockOffsetTooLarge { .. }), "{err:?}");
    assert_eq!(a.last(), last);
}
