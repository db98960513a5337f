//! The guarantees every [`Time`] backend must keep, as plain async functions over
//! `&dyn Time` (feature `conformance`).
//!
//! Each function checks one guarantee and panics with a message saying which and why, so a
//! backend's test suite is a list of calls:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use sync_time::{conformance, LocalTime};
//!
//! let time = LocalTime::new();
//! conformance::run_all(&time, conformance::Reference::SystemClock).await;
//! # }
//! ```
//!
//! Backends differ in what their time should agree with: the [`Reference`] parameter says
//! whether the backend's true time is the machine's own clock (the `local` backend, or NTP
//! against a server on this machine, like the test harness's chronyd) or something else (a
//! test server with a deliberate skew).

use std::time::{Duration, SystemTime};

use crate::{Error, SyncState, Time, TimeBounds, TimeExt};

/// What the backend's time should agree with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reference {
    /// The system clock of this machine is true time (within the bounds).
    SystemClock,
    /// The backend serves another time (e.g. a skewed test server): the system clock is not
    /// checked against the bounds.
    Other,
}

/// Runs every check.
pub async fn run_all(time: &dyn Time, reference: Reference) {
    status_is_consistent(time).await;
    bounds_are_ordered_and_sane(time).await;
    now_lies_within_bounds(time).await;
    if reference == Reference::SystemClock {
        bounds_contain_system_time(time).await;
    }
    now_does_not_go_backwards(time).await;
    after_and_before_agree_with_bounds(time).await;
    commit_wait_waits_until_after(time).await;
    sync_keeps_the_guarantees(time, reference).await;
}

fn bounds(time: &dyn Time, what: &str) -> TimeBounds {
    time.now_bounds()
        .unwrap_or_else(|e| panic!("{what}: now_bounds() failed on a synchronized backend: {e}"))
}

fn now(time: &dyn Time, what: &str) -> SystemTime {
    time.now()
        .unwrap_or_else(|e| panic!("{what}: now() failed on a synchronized backend: {e}"))
}

/// `status()` says the backend can serve time, and its error matches the bounds' half-width.
/// (A backend that has never synced must refuse `now()` with [`Error::NotSynchronized`].)
pub async fn status_is_consistent(time: &dyn Time) {
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
    let error = status
        .error
        .expect("status_is_consistent: a backend that serves time must report its error");
    let after = bounds(time, "status_is_consistent").error();
    assert!(
        before <= error + Duration::from_micros(1) && error <= after + Duration::from_micros(1),
        "status_is_consistent: status error {error:?} is not between the bounds' errors \
         {before:?} and {after:?} read around it"
    );
    assert!(
        !status.backend.is_empty(),
        "status_is_consistent: status must name its backend"
    );
}

/// `earliest <= latest`, the error is below a minute, and the interval is near the system
/// clock's idea of the year (not the epoch, not the far future).
pub async fn bounds_are_ordered_and_sane(time: &dyn Time) {
    let b = bounds(time, "bounds_are_ordered_and_sane");
    assert!(
        b.earliest() <= b.latest(),
        "bounds_are_ordered_and_sane: {b:?}"
    );
    assert!(
        b.error() < Duration::from_secs(60),
        "bounds_are_ordered_and_sane: error {:?} is not a useful bound",
        b.error()
    );
    let system = SystemTime::now();
    let distance = match system.duration_since(b.midpoint()) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    assert!(
        distance < Duration::from_secs(24 * 3600),
        "bounds_are_ordered_and_sane: {b} is more than a day from the system clock"
    );
}

/// `now()` lies within the bounds read just before and just after it.
pub async fn now_lies_within_bounds(time: &dyn Time) {
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

/// The system clock, read between two bounds, lies within them (for backends whose true time
/// is this machine's clock).
pub async fn bounds_contain_system_time(time: &dyn Time) {
    for _ in 0..1_000 {
        let before = bounds(time, "bounds_contain_system_time");
        let system = SystemTime::now();
        let after = bounds(time, "bounds_contain_system_time");
        assert!(
            before.earliest() <= system && system <= after.latest(),
            "bounds_contain_system_time: system clock {system:?} outside [{:?}, {:?}] \
             (error {:?})",
            before.earliest(),
            after.latest(),
            before.error()
        );
    }
}

/// Successive `now()` readings never go backwards by more than the error bound (they may jump
/// within it at a re-sync, and the system clock may be stepped, but never beyond what the
/// bounds allow).
pub async fn now_does_not_go_backwards(time: &dyn Time) {
    let mut last = now(time, "now_does_not_go_backwards");
    for _ in 0..10_000 {
        let n = now(time, "now_does_not_go_backwards");
        if let Err(back) = n.duration_since(last) {
            let error = bounds(time, "now_does_not_go_backwards").error();
            assert!(
                back.duration() <= 2 * error,
                "now_does_not_go_backwards: now() went back {:?}, more than the bounds allow \
                 ({error:?} each side)",
                back.duration()
            );
        }
        last = n;
    }
}

/// `after(t)` and `before(t)` answer from the bounds: a time well in the past is after, one well
/// in the future is before, and a time inside the bounds is neither.
pub async fn after_and_before_agree_with_bounds(time: &dyn Time) {
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

/// Commit-wait: `wait_until_after(now())` returns, within about twice the error bound, and then
/// `after(t)` holds.
pub async fn commit_wait_waits_until_after(time: &dyn Time) {
    let t = now(time, "commit_wait_waits_until_after");
    let error = bounds(time, "commit_wait_waits_until_after").error();
    let limit = error * 4 + Duration::from_secs(1);
    let started = std::time::Instant::now();
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
    // It must actually have waited out the uncertainty (minus the timer's rounding).
    let waited = started.elapsed();
    assert!(
        waited + Duration::from_millis(2) >= error,
        "commit_wait_waits_until_after: returned after {waited:?}, before the error {error:?} passed"
    );
}

/// `sync()` succeeds and the guarantees still hold right after it.
pub async fn sync_keeps_the_guarantees(time: &dyn Time, reference: Reference) {
    time.sync()
        .await
        .unwrap_or_else(|e| panic!("sync_keeps_the_guarantees: sync() failed: {e}"));
    let state = time.status().state;
    assert!(
        matches!(state, SyncState::SystemClock | SyncState::Synchronized),
        "sync_keeps_the_guarantees: state after a successful sync is {state:?}"
    );
    now_lies_within_bounds(time).await;
    if reference == Reference::SystemClock {
        bounds_contain_system_time(time).await;
    }
}
