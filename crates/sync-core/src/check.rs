//! Waiting helpers for the conformance suites and tests: wait on an event with a deadline that
//! fails the test, never a sleep standing in for synchronisation.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `cond` until it holds, panicking (failing the test) after `within`. This waits for an
/// event in a backend, checked by reading its state.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let start = std::time::Instant::now();
/// sync_core::check::eventually("a moment passed", std::time::Duration::from_secs(1), || async {
///     start.elapsed() > std::time::Duration::from_millis(20)
/// })
/// .await;
/// # });
/// ```
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return;
        }
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Awaits `fut`, panicking (failing the test) if it takes longer than `d`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let v = sync_core::check::within("ready", std::time::Duration::from_secs(1), async { 7 }).await;
/// assert_eq!(v, 7);
/// # });
/// ```
pub async fn within<T>(what: &str, d: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(d, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {d:?}: {what}"))
}

/// Expands to one `#[tokio::test]` per case of a conformance suite: `suite` is a module (in
/// scope) whose `pub async fn case(&dyn Harness)` functions are the cases, `make` builds the
/// harness, and the attributes in brackets (e.g. `#[ignore = "…"]`) go on every test. The
/// primitives' own macros (`lock_conformance!`, …) call it.
#[doc(hidden)]
#[macro_export]
macro_rules! conformance_cases {
    ($suite:ident, $make:expr, $attrs:tt; $($case:ident),* $(,)?) => {
        $( $crate::__conformance_case!($suite, $make, $attrs, $case); )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_case {
    ($suite:ident, $make:expr, [$(#[$attr:meta])*], $case:ident) => {
        $(#[$attr])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $case() {
            let harness = $make;
            $suite::$case(&harness).await;
        }
    };
}
