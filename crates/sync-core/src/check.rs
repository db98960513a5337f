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

/// TTLs no backend accepts, for the bad-input tests of every primitive; `Duration::MAX` first:
/// it panicked the lease keeper.
pub fn bad_ttls() -> [Duration; 5] {
    [
        Duration::MAX,
        crate::duration::MAX_TTL + Duration::from_nanos(1),
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_millis(999),
    ]
}

/// Runs `f` on its own task and fails the test with a clear message if it panicked.
pub async fn no_panic<T: Send + 'static>(
    what: &str,
    f: impl Future<Output = T> + Send + 'static,
) -> T {
    match tokio::spawn(f).await {
        Ok(v) => v,
        Err(e) => panic!("{what}: the call panicked: {e}"),
    }
}

/// Fails the test unless `r` is an error of the expected `kind` (as `is_kind` decides: the
/// variant, not retryable) returned within 100 ms: bad input is refused at once.
pub fn assert_refused_at_once<T, E: std::fmt::Debug>(
    what: &str,
    r: Result<T, E>,
    took: Duration,
    kind: &str,
    is_kind: impl FnOnce(&E) -> bool,
) {
    match r {
        Err(e) if is_kind(&e) => {}
        Err(e) => panic!("{what}: expected a non-retryable {kind} error, got {e:?}"),
        Ok(_) => panic!("{what}: accepted"),
    }
    assert!(took < Duration::from_millis(100), "{what}: took {took:?}");
}

/// Malformed `etcd://` URLs (issue 10, finding 4; `localhost` for the host that must not be
/// looked up) that every primitive's `open` must refuse at once.
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub const BAD_ETCD_URLS: &[&str] = &[
    "etcd://[::1",
    "etcd://a b:1",
    "etcd://127.0.0.1:1%zz",
    "etcd://localhost:notaport",
    "etcd://:2379",
    "etcd://127.0.0.1:99999",
    "etcd://127.0.0.1:2379?ttl=18446744073709551615s",
    "etcd://127.0.0.1:2379?ttl=0.5s",
    "etcd://127.0.0.1:2379?request_timeout=0s",
    "etcd://127.0.0.1:2379?connect_timeout=1000h",
];

/// Malformed etcd settings that every primitive's `connect` must refuse at once.
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub fn bad_etcd_configs() -> Vec<crate::etcd::EtcdConfig> {
    use crate::etcd::EtcdConfig;
    let ok = EtcdConfig::new(["127.0.0.1:2379"]);
    vec![
        EtcdConfig::new(["[::1"]),
        EtcdConfig::new(["a b:1"]),
        EtcdConfig::new(["127.0.0.1:1%zz"]),
        EtcdConfig::new(["localhost:notaport"]),
        EtcdConfig::new([":2379"]),
        EtcdConfig::new(["127.0.0.1:99999"]),
        EtcdConfig::new(["127.0.0.1:2379", "127.0.0.1"]),
        ok.clone().with_ttl(Duration::MAX),
        ok.clone().with_connect_timeout(Duration::MAX),
        ok.with_request_timeout(Duration::MAX),
    ]
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

/// What every primitive's conformance macro (`lock_conformance!`, …) expands to: a module named
/// for the backend with one test per case of `krate::conformance` (pass `$crate`).
#[doc(hidden)]
#[macro_export]
macro_rules! conformance_module {
    ($krate:tt, $backend:ident, $make:expr, $attrs:tt; $($case:ident),* $(,)?) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            use $krate::conformance as __suite;
            $crate::conformance_cases!(__suite, $make, $attrs; $($case),*);
        }
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

/// How a [`cancel_at_every_poll`] sweep ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum Sweep<T> {
    /// The operation completed within `polls` polls (every smaller count was dropped and
    /// checked); its output is here.
    Completed {
        /// How many polls it took.
        polls: usize,
        /// What it returned.
        output: T,
    },
    /// The operation was still pending after `polls` polls and was not woken again within the
    /// idle time: it waits for something outside it (a lock held by someone else). Every count
    /// up to `polls` was dropped and checked, this last one included.
    Parked {
        /// The polls it took to reach its waiting state.
        polls: usize,
    },
}

/// A waker that counts wake-ups into a [`tokio::sync::Notify`].
struct NotifyWaker(tokio::sync::Notify);

impl futures::task::ArcWake for NotifyWaker {
    fn wake_by_ref(arc_self: &std::sync::Arc<Self>) {
        arc_self.0.notify_one();
    }
}

/// How long a pending operation may go without a wake-up before the sweep treats it as parked
/// (waiting on something outside it).
pub const PARKED_AFTER: Duration = Duration::from_secs(1);

/// The cancel-at-every-poll test: for N = 1, 2, …, builds the operation with `make`, polls it N
/// times (each poll after the operation woke itself, as an executor would), drops it, and runs
/// `after_drop(N)`, which checks that nothing was left behind (no key, no queued claim) and that
/// the next contender gets through. The sweep ends when the operation completes within N polls
/// ([`Sweep::Completed`]) or stays pending without a wake-up for [`PARKED_AFTER`]
/// ([`Sweep::Parked`]: it waits for something outside it; that state was dropped and checked
/// too). Panics (fails the test) after `max_polls` polls without either.
///
/// Every operation that may leave state behind in a backend is tested with it: a future may be
/// dropped at any await, by a caller's `select!` or `timeout`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use sync_core::check::{cancel_at_every_poll, Sweep};
/// let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
/// let c = counter.clone();
/// let sweep = cancel_at_every_poll(
///     "three yields",
///     100,
///     || async {
///         for _ in 0..3 {
///             tokio::task::yield_now().await;
///         }
///         7
///     },
///     |_polls| {
///         let c = c.clone();
///         async move {
///             c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
///         }
///     },
/// )
/// .await;
/// assert!(matches!(sweep, Sweep::Completed { polls: 4, output: 7 }));
/// assert_eq!(counter.load(std::sync::atomic::Ordering::SeqCst), 3);
/// # });
/// ```
pub async fn cancel_at_every_poll<T, F, Fut, C, CFut>(
    what: &str,
    max_polls: usize,
    mut make: F,
    mut after_drop: C,
) -> Sweep<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
    C: FnMut(usize) -> CFut,
    CFut: Future<Output = ()>,
{
    use std::task::{Context, Poll};
    for n in 1..=max_polls {
        let notify = std::sync::Arc::new(NotifyWaker(tokio::sync::Notify::new()));
        let waker = futures::task::waker(notify.clone());
        let mut cx = Context::from_waker(&waker);
        let mut fut = Box::pin(make());
        let mut parked = None;
        for i in 1..=n {
            if let Poll::Ready(output) = fut.as_mut().poll(&mut cx) {
                return Sweep::Completed { polls: i, output };
            }
            if i == n {
                break;
            }
            if tokio::time::timeout(PARKED_AFTER, notify.0.notified())
                .await
                .is_err()
            {
                parked = Some(i);
                break;
            }
        }
        // Dropped here, after n polls (or once parked).
        drop(fut);
        after_drop(parked.unwrap_or(n)).await;
        if let Some(polls) = parked {
            return Sweep::Parked { polls };
        }
    }
    panic!("{what}: neither completed nor parked within {max_polls} polls");
}
