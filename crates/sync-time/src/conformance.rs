//! The guarantees every [`Time`] backend must keep, checked the same way for each (feature
//! `conformance`).
//!
//! A backend provides a [`Harness`] and runs the whole suite with one macro line:
//!
//! ```text
//! sync_time::time_conformance!(local, LocalHarness::default());
//! ```
//!
//! which expands to one `#[tokio::test]` per guarantee inside a module named for the backend
//! (`local::now_lies_within_bounds`, …), so one failure does not hide the others. Extra
//! attributes (such as `#[ignore = "…"]` for tests that need a server) follow the harness
//! expression. Each check is also a plain `pub async fn` over `&dyn Harness`, and
//! [`run_all`] runs them in a row:
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! use sync_time::{conformance, LocalTime};
//!
//! let harness = conformance::Backend::new(LocalTime::new(), 0, false);
//! conformance::run_all(&harness).await;
//! # }
//! ```
//!
//! The suite needs a multi-threaded tokio runtime (one check reads the time from OS threads
//! while the runtime syncs).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{Error, SyncState, Time, TimeBounds, TimeExt};

/// What the suite needs to know about a backend beyond the [`Time`] trait.
pub trait Harness: Send + Sync {
    /// The backend under test, already synchronized.
    fn time(&self) -> &dyn Time;
    /// True time minus this machine's system clock, nanoseconds: 0 for the `local` backend and
    /// for NTP against a server that serves this machine's clock (chronyd on loopback, an
    /// honest fake server), a fake server's skew otherwise.
    fn true_offset_nanos(&self) -> i64;
    /// Whether the backend promises that `now()` never goes backwards (the `ntp` backend does;
    /// the `local` backend follows the system clock, steps included).
    fn monotonic(&self) -> bool;
}

/// A ready-made [`Harness`] around a backend.
#[derive(Debug)]
pub struct Backend<T> {
    time: T,
    true_offset_nanos: i64,
    monotonic: bool,
}

impl<T: Time> Backend<T> {
    /// `time`, whose true time is the system clock plus `true_offset_nanos`, and which does or
    /// does not promise a monotonic `now()`.
    pub fn new(time: T, true_offset_nanos: i64, monotonic: bool) -> Self {
        Self {
            time,
            true_offset_nanos,
            monotonic,
        }
    }
}

impl<T: Time> Harness for Backend<T> {
    fn time(&self) -> &dyn Time {
        &self.time
    }
    fn true_offset_nanos(&self) -> i64 {
        self.true_offset_nanos
    }
    fn monotonic(&self) -> bool {
        self.monotonic
    }
}

/// Expands to one test per guarantee of the suite, in a module named for the backend.
///
/// ```text
/// sync_time::time_conformance!(ntp_chronyd, ChronydHarness::new().await, #[ignore = "needs chronyd"]);
/// ```
#[macro_export]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
macro_rules! time_conformance {
    ($backend:ident, $make:expr $(, #[$attr:meta])* $(,)?) => {
        $crate::__core::conformance_module!($crate, $backend, $make, [$(#[$attr])*];
            status_is_consistent,
            bounds_are_ordered_and_sane,
            now_lies_within_bounds,
            bounds_contain_true_time,
            now_never_goes_backwards,
            now_stays_monotonic_and_bounded_across_threads_and_resyncs,
            after_and_before_agree_with_bounds,
            commit_wait_waits_until_after,
            sync_keeps_the_guarantees,
        );
    };
}

/// Runs every check in a row.
pub async fn run_all(h: &dyn Harness) {
    status_is_consistent(h).await;
    bounds_are_ordered_and_sane(h).await;
    now_lies_within_bounds(h).await;
    bounds_contain_true_time(h).await;
    now_never_goes_backwards(h).await;
    now_stays_monotonic_and_bounded_across_threads_and_resyncs(h).await;
    after_and_before_agree_with_bounds(h).await;
    commit_wait_waits_until_after(h).await;
    sync_keeps_the_guarantees(h).await;
}

fn bounds(time: &dyn Time, what: &str) -> TimeBounds {
    time.now_bounds()
        .unwrap_or_else(|e| panic!("{what}: now_bounds() failed on a synchronized backend: {e}"))
}

fn now(time: &dyn Time, what: &str) -> SystemTime {
    time.now()
        .unwrap_or_else(|e| panic!("{what}: now() failed on a synchronized backend: {e}"))
}

/// True time now, as the harness defines it.
fn true_time(h: &dyn Harness) -> SystemTime {
    shifted(SystemTime::now(), h.true_offset_nanos())
}

fn shifted(t: SystemTime, nanos: i64) -> SystemTime {
    let magnitude = Duration::from_nanos(nanos.unsigned_abs());
    if nanos >= 0 {
        t + magnitude
    } else {
        t - magnitude
    }
}

fn unix_nanos(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

/// `status()` says the backend can serve time, and its error matches the bounds' half-width.
/// (A backend that has never synced must refuse `now()` with [`Error::NotSynchronized`].)
pub async fn status_is_consistent(h: &dyn Harness) {
    let time = h.time();
    let status = time.status();
    match status.state {
        SyncState::NeverSynced => {
            assert!(
                matches!(time.now(), Err(Error::NotSynchronized { .. })),
                "status_is_consistent: a never-synced backend must refuse now()"
            );
            panic!("status_is_consistent: run the suite on a synchronized backend");
        }
        SyncState::SystemClock | SyncState::Synchronized | SyncState::Stale => {}
    }
    let before = bounds(time, "status_is_consistent").error();
    let error = time
        .status()
        .error
        .expect("status_is_consistent: a backend that serves time must report its error");
    let after = bounds(time, "status_is_consistent").error();
    // The error may grow with age (drift) and shrink only by a sync or a slew finishing.
    let slack = Duration::from_micros(1);
    assert!(
        error <= after.max(before) + slack && error + slack >= after.min(before),
        "status_is_consistent: status error {error:?} is not between the bounds' errors \
         {before:?} and {after:?} read around it"
    );
    assert!(
        !status.backend.is_empty(),
        "status_is_consistent: status must name its backend"
    );
}

/// `earliest <= latest`, the error is below a minute, and the interval is within a day of true
/// time (not the epoch, not the far future).
pub async fn bounds_are_ordered_and_sane(h: &dyn Harness) {
    let b = bounds(h.time(), "bounds_are_ordered_and_sane");
    assert!(
        b.earliest() <= b.latest(),
        "bounds_are_ordered_and_sane: {b:?}"
    );
    assert!(
        b.error() < Duration::from_secs(60),
        "bounds_are_ordered_and_sane: error {:?} is not a useful bound",
        b.error()
    );
    let truth = true_time(h);
    let distance = match truth.duration_since(b.midpoint()) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    assert!(
        distance < Duration::from_secs(24 * 3600),
        "bounds_are_ordered_and_sane: {b} is more than a day from true time"
    );
}

/// `now()` lies within the bounds read just before and just after it.
pub async fn now_lies_within_bounds(h: &dyn Harness) {
    let time = h.time();
    for _ in 0..1_000 {
        let before = bounds(time, "now_lies_within_bounds");
        let n = now(time, "now_lies_within_bounds");
        let after = bounds(time, "now_lies_within_bounds");
        assert!(
            before.earliest() <= n && n <= after.latest(),
            "now_lies_within_bounds: now {n:?} outside [{:?}, {:?}]",
            before.earliest(),
            after.latest()
        );
    }
}

/// True time (the system clock plus the harness's offset), read between two bounds, lies
/// within them.
pub async fn bounds_contain_true_time(h: &dyn Harness) {
    let time = h.time();
    for _ in 0..1_000 {
        let before = bounds(time, "bounds_contain_true_time");
        let truth = true_time(h);
        let after = bounds(time, "bounds_contain_true_time");
        assert!(
            before.earliest() <= truth && truth <= after.latest(),
            "bounds_contain_true_time: true time {truth:?} outside [{:?}, {:?}] (error {:?})",
            before.earliest(),
            after.latest(),
            before.error()
        );
    }
}

/// For a monotonic backend, successive `now()` readings never go backwards, not even by a
/// nanosecond. For one that follows the system clock, they go back no further than the bounds
/// allow.
pub async fn now_never_goes_backwards(h: &dyn Harness) {
    let time = h.time();
    let mut last = now(time, "now_never_goes_backwards");
    for _ in 0..10_000 {
        let n = now(time, "now_never_goes_backwards");
        if let Err(back) = n.duration_since(last) {
            let back = back.duration();
            assert!(
                !h.monotonic(),
                "now_never_goes_backwards: now() went back {back:?}"
            );
            let error = bounds(time, "now_never_goes_backwards").error();
            assert!(
                back <= 2 * error,
                "now_never_goes_backwards: now() went back {back:?}, more than the bounds \
                 allow ({error:?} each side)"
            );
        }
        last = n;
    }
}

/// Two OS threads read `now()` and `now_bounds()` while the test re-syncs back to back. Zero
/// violations: `now()` never below an earlier `now()` of any thread (monotonic backends),
/// always within the bounds read just before and just after it, and those bounds contain true
/// time.
pub async fn now_stays_monotonic_and_bounded_across_threads_and_resyncs(h: &dyn Harness) {
    const SYNCS: usize = 40;
    const MIN_READS: usize = 5_000;
    let what = "now_stays_monotonic_and_bounded_across_threads_and_resyncs";
    let time = h.time();
    let published = AtomicI64::new(i64::MIN);
    let stop = AtomicBool::new(false);
    let reads = AtomicUsize::new(0);
    let problems = std::sync::Mutex::new(Vec::<String>::new());
    let report = |p: String| {
        let mut v = problems.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < 10 {
            v.push(p);
        }
    };
    let read_loop = || {
        let mut last = i64::MIN;
        let mut mine = 0usize;
        while !stop.load(Ordering::SeqCst) || mine < MIN_READS {
            mine += 1;
            if mine % 256 == 0 {
                // Leave the runtime some CPU for the syncs.
                std::thread::sleep(Duration::from_micros(50));
            }
            let seen_before = published.load(Ordering::SeqCst);
            let before = bounds(time, what);
            let truth = true_time(h);
            let n = now(time, what);
            let after = bounds(time, what);
            let ns = unix_nanos(n);
            published.fetch_max(ns, Ordering::SeqCst);
            if h.monotonic() && (ns < last || ns < seen_before) {
                report(format!(
                    "now() {ns} went back from {} (this thread) / {seen_before} (any thread)",
                    last
                ));
            }
            last = last.max(ns);
            if !(before.earliest() <= n && n <= after.latest()) {
                report(format!("now() {n:?} outside {before} / {after}"));
            }
            if !(before.earliest() <= truth && truth <= after.latest()) {
                report(format!("true time {truth:?} outside {before} / {after}"));
            }
        }
        reads.fetch_add(mine, Ordering::SeqCst);
    };
    let started = Instant::now();
    let synced = tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let readers = [scope.spawn(read_loop), scope.spawn(read_loop)];
            let synced = tokio::runtime::Handle::current().block_on(async {
                let mut ok = 0;
                for _ in 0..SYNCS {
                    match time.sync().await {
                        Ok(()) => ok += 1,
                        Err(e) => report(format!("sync() failed: {e}")),
                    }
                }
                ok
            });
            stop.store(true, Ordering::SeqCst);
            for r in readers {
                if r.join().is_err() {
                    report("a reader panicked".into());
                }
            }
            synced
        })
    });
    let problems = problems.into_inner().unwrap_or_else(|e| e.into_inner());
    assert!(
        problems.is_empty(),
        "{what}: {} syncs in {:?} under {} reads; first violations: {problems:#?}",
        synced,
        started.elapsed(),
        reads.load(Ordering::SeqCst)
    );
    assert_eq!(synced, SYNCS, "{what}: not every sync succeeded");
}

/// `after(t)` and `before(t)` answer from the bounds: a time well in the past is after, one well
/// in the future is before, and a time inside the bounds is neither.
pub async fn after_and_before_agree_with_bounds(h: &dyn Harness) {
    let time = h.time();
    let b = bounds(time, "after_and_before_agree_with_bounds");
    let margin = b.error() * 4 + Duration::from_millis(10);
    let past = b.earliest() - margin;
    let future = b.latest() + margin;
    let after_past = time
        .after(past)
        .unwrap_or_else(|e| panic!("after_and_before_agree_with_bounds: after() failed: {e}"));
    assert!(
        after_past,
        "after_and_before_agree_with_bounds: after({past:?}) should be true"
    );
    assert!(!time.before(past).unwrap_or(true));
    assert!(
        time.before(future).unwrap_or(false),
        "after_and_before_agree_with_bounds: before({future:?}) should be true"
    );
    assert!(!time.after(future).unwrap_or(true));
    let now = now(time, "after_and_before_agree_with_bounds");
    assert!(
        !time.before(now).unwrap_or(true),
        "after_and_before_agree_with_bounds: now() cannot be certainly in the future"
    );
}

/// Commit-wait: `wait_until_after(now())` returns, and then `after(t)` holds; it waited at
/// least the error bound (`now()` is the midpoint, `earliest` must pass it) and not forever.
pub async fn commit_wait_waits_until_after(h: &dyn Harness) {
    let time = h.time();
    // Started before `t` is read: however long this thread is descheduled from here on, true
    // time must still pass `t + error` before the wait may end.
    let started = Instant::now();
    let t = now(time, "commit_wait_waits_until_after");
    let error = bounds(time, "commit_wait_waits_until_after").error();
    let limit = error * 4 + Duration::from_secs(1);
    tokio::time::timeout(limit, time.wait_until_after(t))
        .await
        .unwrap_or_else(|_| {
            panic!("commit_wait_waits_until_after: still waiting after {limit:?} (error {error:?})")
        })
        .unwrap_or_else(|e| panic!("commit_wait_waits_until_after: failed: {e}"));
    assert!(
        time.after(t).unwrap_or(false),
        "commit_wait_waits_until_after: returned but after(t) is false"
    );
    // It must actually have waited out the uncertainty (a midpoint `now()` is `error` after
    // `earliest`; the slack covers the error's growth between reading `t` and the bounds).
    let waited = started.elapsed();
    assert!(
        waited + Duration::from_micros(100) >= error,
        "commit_wait_waits_until_after: returned after {waited:?}, before the error {error:?} passed"
    );
}

/// `sync()` succeeds and the guarantees still hold right after it.
pub async fn sync_keeps_the_guarantees(h: &dyn Harness) {
    let time = h.time();
    time.sync()
        .await
        .unwrap_or_else(|e| panic!("sync_keeps_the_guarantees: sync() failed: {e}"));
    let state = time.status().state;
    assert!(
        matches!(state, SyncState::SystemClock | SyncState::Synchronized),
        "sync_keeps_the_guarantees: state after a successful sync is {state:?}"
    );
    now_lies_within_bounds(h).await;
    bounds_contain_true_time(h).await;
}
