//! The `ntp` backend against servers that fail, refuse and lie in the same set, and against
//! re-syncs that move the interval under concurrent readers.
#![cfg(feature = "ntp")]

mod support;

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::{options, Behavior, Config, FakeNtpServer};
use sync_time::{Error, ManualClock, NtpOptions, NtpTime, SourceVerdict, Time, Verification};

const SEC: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;

fn unix_nanos(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

/// What the readers saw.
#[derive(Debug, Default)]
struct Violations {
    reads: AtomicUsize,
    /// `now()` below an earlier `now()` of the same thread.
    backwards: AtomicUsize,
    /// `now()` below a `now()` another thread had returned before this call began.
    backwards_across_threads: AtomicUsize,
    /// `now()` outside `[before.earliest, after.latest]`.
    outside_bounds: AtomicUsize,
    /// True time (the servers' clock: the system clock) outside `[before.earliest, after.latest]`.
    missed_true_time: AtomicUsize,
    worst_back_nanos: AtomicI64,
}

/// Readers on `threads` OS threads hammer `now()`/`now_bounds()` until `stop` is set.
fn spawn_readers(
    time: &NtpTime,
    threads: usize,
    seen: &Arc<Violations>,
    published: &Arc<AtomicI64>,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..threads)
        .map(|_| {
            let (time, seen, published, stop) =
                (time.clone(), seen.clone(), published.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut last = i64::MIN;
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    if i % 256 == 0 {
                        // Leave the runtime's workers some CPU for the re-syncs.
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    let before_any = published.load(Ordering::SeqCst);
                    let before = time.now_bounds().unwrap();
                    let system = SystemTime::now();
                    let n = time.now().unwrap();
                    let after = time.now_bounds().unwrap();
                    let ns = unix_nanos(n);
                    published.fetch_max(ns, Ordering::SeqCst);
                    seen.reads.fetch_add(1, Ordering::Relaxed);
                    if ns < last {
                        seen.backwards.fetch_add(1, Ordering::SeqCst);
                        seen.worst_back_nanos.fetch_max(last - ns, Ordering::SeqCst);
                    }
                    if ns < before_any {
                        seen.backwards_across_threads.fetch_add(1, Ordering::SeqCst);
                        seen.worst_back_nanos
                            .fetch_max(before_any - ns, Ordering::SeqCst);
                    }
                    last = last.max(ns);
                    if !(before.earliest() <= n && n <= after.latest()) {
                        seen.outside_bounds.fetch_add(1, Ordering::SeqCst);
                    }
                    if !(before.earliest() <= system && system <= after.latest()) {
                        seen.missed_true_time.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect()
}

/// Finding 5 (issue 10): one server, one sample per sync, re-sync every 20 ms, requests held
/// on the way in for a varying time so that each sync's interval is wider or narrower and
/// its midpoint moves; two threads read `now()` and `now_bounds()` meanwhile. Zero
/// violations allowed: `now()` never goes backwards (per thread and across threads), lies
/// within the bounds read just before and just after it, and the bounds contain true time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn now_is_monotonic_and_within_bounds_across_resyncs_that_move_the_interval() {
    let server = FakeNtpServer::start(Config {
        inbound_delays: [0, 20, 2, 35, 7, 0, 12, 28]
            .map(Duration::from_millis)
            .to_vec(),
        ..Config::default()
    })
    .await;
    let time = NtpTime::connect(
        options(&[&server])
            .with_samples(1)
            .with_resync_interval(Duration::from_millis(20)),
    )
    .await
    .unwrap();

    let seen = Arc::new(Violations::default());
    let published = Arc::new(AtomicI64::new(i64::MIN));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers = spawn_readers(&time, 2, &seen, &published, &stop);
    // Let at least 40 syncs happen under the readers (about 1.5 s), at most 20 s.
    server
        .wait_for_queries_above(server.queries() + 40, Duration::from_secs(20))
        .await;
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.join().unwrap();
    }
    let worst = Duration::from_nanos(seen.worst_back_nanos.load(Ordering::SeqCst).max(0) as u64);
    assert!(seen.reads.load(Ordering::SeqCst) > 1_000, "{seen:?}");
    assert_eq!(
        (
            seen.backwards.load(Ordering::SeqCst),
            seen.backwards_across_threads.load(Ordering::SeqCst),
            seen.outside_bounds.load(Ordering::SeqCst),
            seen.missed_true_time.load(Ordering::SeqCst),
        ),
        (0, 0, 0, 0),
        "violations (backwards, backwards across threads, now outside bounds, true time \
         outside bounds); worst step back {worst:?}: {seen:?}"
    );
}

/// Finding 5, with several servers: three servers whose samples are delayed differently at
/// every sync (so the agreed interval moves), explicit `sync()` calls as fast as they go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn now_is_monotonic_across_back_to_back_syncs_of_three_moving_servers() {
    let delays = |v: [u64; 5]| v.map(Duration::from_millis).to_vec();
    let servers = [
        FakeNtpServer::start(Config {
            inbound_delays: delays([0, 9, 1, 14, 4]),
            ..Config::default()
        })
        .await,
        FakeNtpServer::start(Config {
            inbound_delays: delays([11, 0, 6, 2, 16]),
            ..Config::default()
        })
        .await,
        FakeNtpServer::start(Config {
            inbound_delays: delays([3, 13, 0, 8, 1]),
            ..Config::default()
        })
        .await,
    ];
    let refs: Vec<&FakeNtpServer> = servers.iter().collect();
    let time = NtpTime::connect(options(&refs).with_samples(1))
        .await
        .unwrap();
    let seen = Arc::new(Violations::default());
    let published = Arc::new(AtomicI64::new(i64::MIN));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers = spawn_readers(&time, 2, &seen, &published, &stop);
    for _ in 0..60 {
        time.sync().await.unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(
        (
            seen.backwards.load(Ordering::SeqCst),
            seen.backwards_across_threads.load(Ordering::SeqCst),
            seen.outside_bounds.load(Ordering::SeqCst),
            seen.missed_true_time.load(Ordering::SeqCst),
        ),
        (0, 0, 0, 0),
        "{seen:?}"
    );
}

/// Finding 6: one silent server, one answering kiss-of-death, one skewed +3 s. Only the liar
/// answers: one server of three is no majority, so nothing is believed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_liar_beside_a_silent_and_a_kissing_server_is_not_believed() {
    for kiss in [*b"RATE", *b"DENY"] {
        let silent = FakeNtpServer::behaving(Behavior::Silent).await;
        let kod = FakeNtpServer::behaving(Behavior::KissOfDeath(kiss)).await;
        let liar = FakeNtpServer::honest(3 * SEC).await;
        let result = NtpTime::connect(
            options(&[&silent, &kod, &liar]).with_query_timeout(Duration::from_millis(100)),
        )
        .await;
        let err = match result {
            Ok(time) => panic!(
                "a lone liar was believed: offset {:?} ns, error {:?}, {:?}",
                time.status().offset_nanos,
                time.status().error,
                time.status().state
            ),
            Err(e) => e,
        };
        let msg = err.to_string();
        for s in [&silent, &kod, &liar] {
            assert!(
                msg.contains(&s.server()),
                "{} missing from: {msg}",
                s.server()
            );
        }
        assert!(err.is_retryable(), "{err:?}");
        assert!(
            matches!(
                err,
                Error::NoQuorum {
                    required: 2,
                    configured: 3,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}

/// Finding 6, the explicit way out: `min_agreeing` accepts fewer servers, and the status says
/// that the bound rests on fewer servers than a majority of those configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_agreeing_accepts_fewer_servers_and_the_status_says_so() {
    let silent = FakeNtpServer::behaving(Behavior::Silent).await;
    let kod = FakeNtpServer::behaving(Behavior::KissOfDeath(*b"DENY")).await;
    let a = FakeNtpServer::honest(0).await;
    let b = FakeNtpServer::honest(0).await;
    let opts = options(&[&silent, &kod, &a, &b]).with_query_timeout(Duration::from_millis(100));
    // Two of four agree: not a majority of the configured servers.
    let err = NtpTime::connect(opts.clone()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::NoQuorum {
                required: 3,
                configured: 4,
                ..
            }
        ),
        "{err:?}"
    );
    let time = NtpTime::connect(opts.with_min_agreeing(2)).await.unwrap();
    let status = time.status();
    assert_eq!(
        status.verification,
        Verification::BelowMajority {
            agreeing: 2,
            configured: 4
        }
    );
    assert!(!status.verification.is_majority());
    // One server configured: its word alone, unverified.
    let time = NtpTime::connect(options(&[&a])).await.unwrap();
    assert_eq!(
        time.status().verification,
        Verification::Unverified { configured: 1 }
    );
    // Three of three: a verified majority.
    let c = FakeNtpServer::honest(0).await;
    let time = NtpTime::connect(options(&[&a, &b, &c])).await.unwrap();
    assert_eq!(
        time.status().verification,
        Verification::Majority {
            agreeing: 3,
            configured: 3
        }
    );
}

/// Finding 9: a liar listed twice must not outvote one honest server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liar_listed_twice_does_not_outvote_an_honest_server() {
    let honest = FakeNtpServer::honest(0).await;
    let liar = FakeNtpServer::honest(4 * SEC).await;
    let lists = [
        vec![honest.server(), liar.server(), liar.server()],
        // The same server spelt differently.
        vec![
            liar.server(),
            honest.server(),
            format!(" {} ", liar.server()),
        ],
    ];
    for servers in lists {
        let opts = NtpOptions::new(servers.clone())
            .with_query_timeout(Duration::from_millis(300))
            .with_resync_interval(Duration::ZERO);
        if let Ok(time) = NtpTime::connect(opts.clone()).await {
            let b = time.now_bounds().unwrap();
            assert!(
                b.contains(SystemTime::now()),
                "{servers:?}: the twice-listed liar won: bounds {b}, {:?}",
                time.status()
            );
        }
        // Two distinct servers that disagree: nobody can tell which is right.
        let err = NtpTime::connect(opts).await.unwrap_err();
        assert!(matches!(err, Error::NoAgreement { .. }), "{err:?}");
    }
    // Two names for one address: one vote, and the status says which was asked.
    let port = liar.server().rsplit_once(':').unwrap().1.to_owned();
    let servers = vec![
        honest.server(),
        liar.server(),
        format!("[::ffff:127.0.0.1]:{port}"),
    ];
    let opts = NtpOptions::new(servers.clone())
        .with_query_timeout(Duration::from_millis(300))
        .with_resync_interval(Duration::ZERO);
    let time = NtpTime::new(opts).unwrap();
    let asked_before = liar.queries();
    let err = time.sync().await.unwrap_err();
    assert!(matches!(err, Error::NoAgreement { .. }), "{err:?}");
    let status = time.status();
    assert!(
        matches!(&status.sources[2].verdict, SourceVerdict::Duplicate { of } if *of == liar.server()),
        "{status:?}"
    );
    assert_eq!(
        liar.queries() - asked_before,
        4,
        "the liar was asked once per sample, not twice"
    );
}

/// Finding 7: a wall clock before 1970 (a dead RTC) does not corrupt the synced time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_before_1970_still_gives_true_time() {
    let server = FakeNtpServer::honest(0).await;
    for before_epoch in [SEC * 86_400, SEC * 3_600 * 24 * 365 * 30] {
        let clock = Arc::new(ManualClock::new());
        // From now to 1969-12-31 (one day before the epoch), then 30 years further back.
        clock.step_wall(-(unix_nanos(SystemTime::now()) + before_epoch));
        assert!(clock_is_before_1970(&*clock));
        let time = NtpTime::connect_with_clock(options(&[&server]), clock.clone())
            .await
            .unwrap();
        for _ in 0..100 {
            let before = time.now_bounds().unwrap();
            let system = SystemTime::now();
            let n = time.now().unwrap();
            let after = time.now_bounds().unwrap();
            assert!(
                before.earliest() <= system && system <= after.latest(),
                "true time {system:?} outside {before} / {after}"
            );
            let off = unix_nanos(n) - unix_nanos(system);
            assert!(off.abs() < 50 * MS, "now() is {off} ns off true time");
            assert!(before.error() < Duration::from_millis(10), "{before}");
        }
        // The offset says how far the wall clock is behind.
        let offset = time.status().offset_nanos.unwrap();
        let expected =
            unix_nanos(SystemTime::now()) - unix_nanos(sync_time::ClockSource::wall(&*clock));
        assert!(
            (offset - expected).abs() < 50 * MS,
            "offset {offset}, expected {expected}"
        );
    }
}

fn clock_is_before_1970(clock: &dyn sync_time::ClockSource) -> bool {
    clock.wall() < UNIX_EPOCH
}

/// Finding 8: after kiss-of-death `RATE` the server is polled less often, and after `DENY` or
/// `RSTR` not at all, while the other servers are polled at the normal rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiss_of_death_rate_backs_off_and_deny_stops_asking() {
    for kiss in [*b"RATE", *b"DENY", *b"RSTR"] {
        let a = FakeNtpServer::honest(0).await;
        let b = FakeNtpServer::honest(0).await;
        let kod = FakeNtpServer::behaving(Behavior::KissOfDeath(kiss)).await;
        let time = NtpTime::connect(
            options(&[&a, &b, &kod])
                .with_samples(1)
                .with_resync_interval(Duration::from_millis(20))
                .with_retry_interval(Duration::from_millis(20)),
        )
        .await
        .unwrap();
        // Twenty more syncs of the others.
        a.wait_for_queries_above(a.queries() + 20, Duration::from_secs(10))
            .await;
        assert_eq!(
            kod.queries(),
            1,
            "{}: the kissing server was asked again during the next 20 syncs",
            String::from_utf8_lossy(&kiss)
        );
        let status = time.status();
        match &status.sources[2].verdict {
            SourceVerdict::KissedOff { code, retry_in } => {
                assert_eq!(code.as_bytes(), kiss);
                if kiss == *b"RATE" {
                    // The first back-off is 64 s (more than twice the re-sync interval), minus
                    // the time the syncs since took.
                    let r = retry_in.expect("RATE backs off for a while");
                    assert!(
                        r > Duration::from_secs(30) && r <= Duration::from_secs(64),
                        "{r:?}"
                    );
                } else {
                    assert_eq!(*retry_in, None, "DENY/RSTR: never again");
                }
            }
            other => panic!("expected KissedOff, got {other:?}"),
        }
        assert_eq!(status.state, sync_time::SyncState::Synchronized);
        drop(time);
    }
}

/// Finding 8: the kiss-of-death `RATE` back-off ends: once it has passed, the server is asked
/// again (and a server that now answers is used again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiss_of_death_rate_backoff_ends() {
    let a = FakeNtpServer::honest(0).await;
    let b = FakeNtpServer::honest(0).await;
    let kod = FakeNtpServer::behaving(Behavior::KissOfDeath(*b"RATE")).await;
    let clock = Arc::new(ManualClock::new());
    let time = NtpTime::connect_with_clock(options(&[&a, &b, &kod]).with_samples(1), clock.clone())
        .await
        .unwrap();
    assert_eq!(kod.queries(), 1);
    time.sync().await.unwrap();
    assert_eq!(kod.queries(), 1, "asked again within the back-off");
    // A second RATE doubles the back-off: after 64 s it is asked, kisses again, and then
    // waits 128 s.
    clock.advance(Duration::from_secs(65));
    for s in [&a, &b, &kod] {
        s.set_skew(65 * SEC);
    }
    time.sync().await.unwrap();
    assert_eq!(kod.queries(), 2, "not asked again after the first back-off");
    clock.advance(Duration::from_secs(65));
    for s in [&a, &b, &kod] {
        s.set_skew(130 * SEC);
    }
    time.sync().await.unwrap();
    assert_eq!(kod.queries(), 2, "the second back-off is twice as long");
    kod.set_behavior(Behavior::Honest);
    // Time passes, for the servers too.
    clock.advance(Duration::from_secs(3_600));
    for s in [&a, &b, &kod] {
        s.set_skew((130 + 3_600) * SEC);
    }
    time.sync().await.unwrap();
    assert_eq!(kod.queries(), 3, "not asked again after the back-off");
    let status = time.status();
    assert!(
        matches!(
            status.sources[2].verdict,
            sync_time::SourceVerdict::Selected { .. }
        ),
        "{status:?}"
    );
    let before = time.now_bounds().unwrap();
    let skewed = SystemTime::now() + Duration::from_secs(130 + 3_600);
    let after = time.now_bounds().unwrap();
    assert!(
        before.earliest() <= skewed && skewed <= after.latest(),
        "true time {skewed:?} outside {before} / {after}"
    );
}
