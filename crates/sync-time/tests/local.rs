//! The `local` backend, the trait as `Arc<dyn Time>`, and hybrid clocks over it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sync_time::{
    HlcTimestamp, HybridClock, LocalOptions, LocalTime, ManualClock, SyncState, Time, TimeBounds,
    TimeConfig, TimeExt,
};

#[test]
fn local_bounds_are_the_system_clock_plus_minus_the_assumed_error() {
    let time =
        LocalTime::with_options(LocalOptions::new().with_assumed_error(Duration::from_millis(20)));
    let before = SystemTime::now();
    let b = time.now_bounds().unwrap();
    let after = SystemTime::now();
    assert_eq!(b.error(), Duration::from_millis(20));
    assert!(b.midpoint() >= before && b.midpoint() <= after);
    let status = time.status();
    assert_eq!(status.state, SyncState::SystemClock);
    assert_eq!(status.error, Some(Duration::from_millis(20)));
    assert!(status.sources.is_empty());
}

#[test]
fn local_follows_a_wall_clock_step() {
    // The system-clock backend has no memory: a step moves it (the ntp backend's does not).
    let clock = Arc::new(ManualClock::new());
    let time = LocalTime::new().with_clock(clock.clone());
    let before = time.now().unwrap();
    clock.step_wall(-60_000_000_000);
    let after = time.now().unwrap();
    assert!(before.duration_since(after).unwrap() >= Duration::from_secs(59));
}

#[tokio::test]
async fn local_works_as_arc_dyn_time_and_through_config() {
    let backends: Vec<Arc<dyn Time>> = vec![
        Arc::new(LocalTime::new()),
        sync_time::connect(&TimeConfig::default()).await.unwrap(),
        sync_time::connect(&"local?assumed_error=5ms".parse().unwrap())
            .await
            .unwrap(),
    ];
    for time in backends {
        let t = time.now().unwrap();
        assert!(time.now_bounds().unwrap().latest() >= t);
        assert!(time.after(t - Duration::from_secs(1)).unwrap());
        assert!(time.before(t + Duration::from_secs(1)).unwrap());
        time.sync().await.unwrap();
        // Generic code over `impl Time` accepts the Arc too.
        fn error_of(time: &impl Time) -> Duration {
            time.now_bounds().unwrap().error()
        }
        assert!(error_of(&time) <= LocalOptions::DEFAULT_ASSUMED_ERROR);
    }
}

#[tokio::test]
async fn local_commit_wait_waits_out_the_uncertainty() {
    let time =
        LocalTime::with_options(LocalOptions::new().with_assumed_error(Duration::from_millis(30)));
    let t = time.now().unwrap();
    assert!(!time.after(t).unwrap());
    let started = Instant::now();
    time.wait_until_after(t).await.unwrap();
    let waited = started.elapsed();
    assert!(time.after(t).unwrap());
    // earliest = now - 30 ms must pass t: about 30 ms.
    assert!(
        waited >= Duration::from_millis(29),
        "waited only {waited:?}"
    );
    assert!(waited < Duration::from_millis(500), "waited {waited:?}");
}

#[test]
fn hybrid_clocks_order_a_message_exchange_across_nodes() {
    // Node b's wall clock is 300 ms behind node a's.
    let clock_b = Arc::new(ManualClock::new());
    clock_b.step_wall(-300_000_000);
    let a = HybridClock::new(Arc::new(LocalTime::new()) as Arc<dyn Time>);
    let b = HybridClock::new(Arc::new(LocalTime::new().with_clock(clock_b)) as Arc<dyn Time>);

    let mut history: Vec<HlcTimestamp> = Vec::new();
    for _ in 0..100 {
        let sent = a.now().unwrap();
        let got = b.update(sent).unwrap();
        let reply = b.now().unwrap();
        let back = a.update(reply).unwrap();
        assert!(sent < got && got < reply && reply < back);
        if let Some(prev) = history.last() {
            assert!(*prev < sent, "a's timestamps must increase");
        }
        history.extend([sent, got, reply, back]);
    }
    // b's timestamps track a's wall time (causality), not its own lagging clock.
    let b_wall = b.last().wall();
    assert!(b_wall > SystemTime::now() - Duration::from_millis(100));
    let bounds = TimeBounds::around(SystemTime::now(), Duration::from_secs(1));
    assert!(bounds.contains(b_wall));
}

#[test]
fn hybrid_timestamps_serialize() {
    let t = HlcTimestamp::new(1_732_000_000_000_000_000, 3);
    let json = serde_json::to_string(&t).unwrap();
    assert_eq!(serde_json::from_str::<HlcTimestamp>(&json).unwrap(), t);
}

/// Finding 9 (issue 10): merging a remote timestamp at the very end of the range cannot give a
/// timestamp after it; that is an error, never a stamp that orders before the remote.
#[test]
fn hybrid_update_at_the_end_of_the_range_is_an_error_not_an_earlier_stamp() {
    let hlc = HybridClock::new(Arc::new(LocalTime::new())).with_max_offset(Duration::MAX);
    let before = hlc.last();
    for remote in [
        HlcTimestamp::new(u64::MAX, u32::MAX),
        HlcTimestamp::new(u64::MAX, u32::MAX - 1),
    ] {
        match hlc.update(remote) {
            Ok(t) => assert!(t > remote, "update({remote}) returned {t}, not after it"),
            Err(e) => assert!(e.to_string().contains(&remote.to_string()), "{e}"),
        }
    }
    // (u64::MAX, u32::MAX - 1) has one successor, (u64::MAX, u32::MAX): after that, nothing.
    assert_eq!(hlc.last(), HlcTimestamp::new(u64::MAX, u32::MAX));
    assert!(hlc.now().is_err(), "no timestamp is after the last one");
    assert!(before < hlc.last());
}

/// Finding 10: commit-wait after `now()` waits about the error bound (`now()` is the midpoint,
/// so `earliest` passes it after one error bound), and it is not rounded up to the runtime's
/// 1 ms timer: a sub-millisecond bound gives a sub-millisecond wait. Minimum of several runs,
/// so a loaded machine does not fail it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_commit_wait_is_about_one_error_bound_and_can_be_sub_millisecond() {
    async fn min_wait(error: Duration, runs: usize) -> Duration {
        let time = LocalTime::with_options(LocalOptions::new().with_assumed_error(error));
        let mut best = Duration::MAX;
        for _ in 0..runs {
            // Started before `t` is read, so a descheduled thread cannot shorten the wait.
            let started = Instant::now();
            let t = time.now().unwrap();
            time.wait_until_after(t).await.unwrap();
            let waited = started.elapsed();
            assert!(time.after(t).unwrap());
            assert!(
                waited >= error,
                "returned after {waited:?} < error {error:?}"
            );
            best = best.min(waited);
        }
        best
    }
    let sub_ms = min_wait(Duration::from_micros(200), 20).await;
    assert!(
        sub_ms < Duration::from_micros(900),
        "a 200 µs bound took at least {sub_ms:?} to wait out"
    );
    let twenty = min_wait(Duration::from_millis(20), 5).await;
    assert!(
        twenty < Duration::from_millis(25),
        "a 20 ms bound took at least {twenty:?} to wait out (about 1× expected)"
    );
}

/// Finding 9: the lossless JSON form has no number a `f64` parser would round, and both forms
/// read back exactly.
#[test]
fn hybrid_timestamps_have_a_lossless_json_form() {
    fn numbers_survive_f64(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Number(n) => n.as_u64().is_none_or(|u| u <= 1 << 53),
            serde_json::Value::Object(m) => m.values().all(numbers_survive_f64),
            serde_json::Value::Array(a) => a.iter().all(numbers_survive_f64),
            _ => true,
        }
    }
    let clock = HybridClock::new(Arc::new(LocalTime::new()));
    for t in [
        clock.now().unwrap(),
        HlcTimestamp::new((1 << 53) + 1, 0),
        HlcTimestamp::new(u64::MAX, u32::MAX),
    ] {
        let plain = serde_json::to_value(t).unwrap();
        assert!(
            !numbers_survive_f64(&plain),
            "today's wall_nanos is above 2^53: {plain}"
        );
        let lossless = serde_json::to_value(sync_time::lossless::Lossless(t)).unwrap();
        assert!(numbers_survive_f64(&lossless), "{lossless}");
        assert_eq!(lossless["wall_nanos"], t.wall_nanos().to_string());
        for v in [plain, lossless] {
            assert_eq!(
                serde_json::from_value::<HlcTimestamp>(v.clone()).unwrap(),
                t,
                "{v}"
            );
            let back: sync_time::lossless::Lossless = serde_json::from_value(v).unwrap();
            assert_eq!(back.0, t);
        }
    }
    for bad in [
        r#"{"wall_nanos":"-1","logical":0}"#,
        r#"{"wall_nanos":"1e9","logical":0}"#,
        r#"{"wall_nanos":"18446744073709551616","logical":0}"#,
        r#"{"wall_nanos":1.5,"logical":0}"#,
        r#"{"wall_nanos":"1","logical":0,"extra":1}"#,
    ] {
        assert!(serde_json::from_str::<HlcTimestamp>(bad).is_err(), "{bad}");
    }
}
