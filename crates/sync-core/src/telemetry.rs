//! Spans, events and metrics of every primitive, in one place.
//!
//! Backends call three things: [`acquire`] around a wait for a hold (a lock, a permit, a read or
//! write lock, a leadership), which opens a span and records the grant or the refusal; the
//! [`Subject`] it writes on the hold's loss signal, so that the hold's end is reported with its
//! name when the signal fires (a release at `debug`, a loss at `warn`, with the reason); and
//! [`span`] for operations that hold nothing (an observe, a claim, an attempt, a time sync).
//!
//! Metrics go through the [`metrics`](https://docs.rs/metrics) facade when the feature
//! `metrics` is on (an exporter of the application's choice records them; `syncctl
//! --metrics-addr` serves them for Prometheus). Without the feature they cost nothing. The
//! names, all prefixed `sync_`:
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `sync_grants_total` | counter | `primitive`, `backend` |
//! | `sync_wait_seconds` | histogram: from asking to being granted | `primitive`, `backend` |
//! | `sync_not_granted_total` | counter: timeouts, try-misses, errors | `primitive`, `backend`, `outcome` |
//! | `sync_hold_seconds` | histogram: from grant to release or loss | `primitive`, `backend` |
//! | `sync_losses_total` | counter | `primitive`, `backend`, `reason` |
//! | `sync_is_leader` | gauge, 1 while this process leads | `group` |
//! | `sync_lease_keepalive_seconds` | histogram: keepalive round trip | |
//! | `sync_lease_margin_seconds` | gauge: time left, at the last renewal, before the deadline rule would report a loss | |
//! | `sync_task_jobs_total` | counter: submitted, claimed, attempted, succeeded, failed, retried, lost… | `state` |
//! | `sync_task_attempt_seconds` | histogram: one attempt's run time | `outcome` (`ok`, `failed`) |
//! | `sync_time_offset_seconds`, `sync_time_error_bound_seconds` | gauges, at each NTP sync | |
//! | `sync_time_last_sync_timestamp_seconds` | gauge: when the last sync succeeded (Unix time) | |
//! | `sync_time_staleness_seconds` | gauge: the last sync's age, as of the last `status()` | |
//!
//! Lock and semaphore names are not labels (their number is unbounded); they are span fields.
//!
//! ```
//! use std::time::Duration;
//! use sync_core::signal::{loss_signal, LossReason};
//! use sync_core::telemetry::Subject;
//! let (trigger, signal) = loss_signal();
//! // A backend granted lock "billing" with fencing token 7:
//! signal.describe(Subject::new("lock", "local", "billing", 7));
//! assert_eq!(signal.subject().map(|s| s.name()), Some("billing"));
//! trigger.fire(LossReason::Revoked); // logged at `warn`, counted in `sync_losses_total`
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::signal::{LossReason, LossSignal};

/// What a hold is, written on its loss signal when it is granted: which primitive, on which
/// backend, its name (or group) and its fencing token (or term), and since when it is held.
#[derive(Debug, Clone)]
pub struct Subject {
    primitive: &'static str,
    backend: &'static str,
    name: Arc<str>,
    token: u64,
    since: Instant,
}

impl Subject {
    /// A hold of `primitive` (`"lock"`, `"semaphore"`, `"rwlock.read"`, `"rwlock.write"`,
    /// `"leader"`) named `name` on `backend` (`"local"`, `"etcd"`), granted now.
    pub fn new(
        primitive: &'static str,
        backend: &'static str,
        name: impl Into<Arc<str>>,
        token: u64,
    ) -> Self {
        Subject {
            primitive,
            backend,
            name: name.into(),
            token,
            since: Instant::now(),
        }
    }

    /// The primitive.
    pub fn primitive(&self) -> &'static str {
        self.primitive
    }

    /// The name, or the group of a leadership.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fencing token, or the term of a leadership.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// How long it has been held.
    pub fn held_for(&self) -> Duration {
        self.since.elapsed()
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = if self.primitive == "leader" {
            "term"
        } else {
            "token"
        };
        write!(
            f,
            "{} {:?} ({token} {})",
            self.primitive, &*self.name, self.token
        )
    }
}

/// What a backend hands back from an acquire: a hold with a fencing token and a loss signal.
pub trait Grant {
    /// The fencing token (or term).
    fn token(&self) -> u64;
    /// The hold's loss signal, on which its [`Subject`] is written.
    fn signal(&self) -> &LossSignal;
}

/// The names of one wait: what is asked for, where, and by what operation.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// `"acquire"`, `"try_acquire"`, `"elect"`…
    pub op: &'static str,
    /// See [`Subject::new`].
    pub primitive: &'static str,
    /// `"local"` or `"etcd"`.
    pub backend: &'static str,
    /// The name or group.
    pub name: &'a str,
}

/// Runs an acquire in a span named for the operation, with the name, backend, fencing token
/// and time waited as fields; writes the [`Subject`] on the hold's signal and records the grant,
/// or the refusal.
pub async fn acquire<G, E, F>(ask: Ask<'_>, wait: F) -> Result<G, E>
where
    G: Grant,
    E: std::fmt::Display,
    F: Future<Output = Result<G, E>>,
{
    if !listening() {
        return wait.await;
    }
    let (span, started) = start(ask);
    let result = wait.instrument(span.clone()).await;
    report(&span, ask, started, result.as_ref().map(Some));
    result
}

/// [`acquire`] for a `try_`: `Ok(None)` (taken) is recorded as not granted.
pub async fn try_acquire<G, E, F>(ask: Ask<'_>, wait: F) -> Result<Option<G>, E>
where
    G: Grant,
    E: std::fmt::Display,
    F: Future<Output = Result<Option<G>, E>>,
{
    if !listening() {
        return wait.await;
    }
    let (span, started) = start(ask);
    let result = wait.instrument(span.clone()).await;
    report(&span, ask, started, result.as_ref().map(Option::as_ref));
    result
}

/// [`try_acquire`] for a backend that answers at once, without a future.
pub fn tried<G: Grant, E: std::fmt::Display>(ask: Ask<'_>, result: &Result<Option<G>, E>) {
    if !listening() {
        return;
    }
    let (span, started) = start(ask);
    report(&span, ask, started, result.as_ref().map(Option::as_ref));
}

/// [`acquire`] for a grant made at once, without a future (an in-process name nobody held):
/// records it as granted after no wait.
pub fn granted_now<G: Grant>(ask: Ask<'_>, grant: &G) {
    if !listening() {
        return;
    }
    let (span, started) = start(ask);
    report::<G, std::convert::Infallible>(&span, ask, started, Ok(Some(grant)));
}

/// Whether anyone records what an acquire reports: metrics compiled in, or a `tracing`
/// subscriber that takes at least warnings (a loss is one). Otherwise the acquire runs bare: no
/// span, no clock reads, no name to allocate, on the uncontended path that costs nanoseconds.
fn listening() -> bool {
    cfg!(feature = "metrics") || tracing::enabled!(tracing::Level::WARN)
}

fn start(ask: Ask<'_>) -> (tracing::Span, Instant) {
    let span = tracing::info_span!(
        "sync.acquire",
        op = ask.op,
        primitive = ask.primitive,
        backend = ask.backend,
        name = ask.name,
        token = tracing::field::Empty,
        waited_ms = tracing::field::Empty,
    );
    (span, Instant::now())
}

fn report<G: Grant, E: std::fmt::Display>(
    span: &tracing::Span,
    ask: Ask<'_>,
    started: Instant,
    result: Result<Option<&G>, &E>,
) {
    let waited = started.elapsed();
    span.record("waited_ms", waited.as_secs_f64() * 1e3);
    let _in = span.enter();
    match result {
        Ok(Some(g)) => {
            span.record("token", g.token());
            // Only reached when someone listens (see `listening`): naming costs an allocation.
            g.signal().describe(Subject::new(
                ask.primitive,
                ask.backend,
                ask.name,
                g.token(),
            ));
            tracing::debug!(token = g.token(), ?waited, "granted");
            metrics::granted(ask, waited);
        }
        Ok(None) => {
            tracing::debug!(?waited, "not granted: taken");
            metrics::not_granted(ask, "taken");
        }
        Err(e) => {
            tracing::debug!(?waited, error = %e, "not granted");
            metrics::not_granted(ask, "error");
        }
    }
}

/// A span for an operation that holds nothing: `op` is `"observe"`, `"claim"`, `"attempt"`,
/// `"sync"`…, `name` the name or group it is about.
pub fn span(op: &'static str, backend: &'static str, name: &str) -> tracing::Span {
    tracing::info_span!("sync.op", op, backend, name)
}

/// Reports the end of a hold: called by the loss signal when it fires.
pub(crate) fn ended(subject: &Subject, reason: &LossReason) {
    let held = subject.held_for();
    match reason {
        LossReason::Released => tracing::debug!(
            primitive = subject.primitive,
            backend = subject.backend,
            name = &*subject.name,
            token = subject.token,
            ?held,
            "released"
        ),
        _ => tracing::warn!(
            primitive = subject.primitive,
            backend = subject.backend,
            name = &*subject.name,
            token = subject.token,
            ?held,
            reason = %reason,
            "{subject} lost: {reason}"
        ),
    }
    metrics::ended(subject, reason, held);
}

impl LossReason {
    /// A short label: `released`, `revoked`, `lease_expired`, `keepalive_failed`, `shutdown`.
    pub fn label(&self) -> &'static str {
        match self {
            LossReason::Released => "released",
            LossReason::Revoked => "revoked",
            LossReason::LeaseExpired => "lease_expired",
            LossReason::KeepaliveFailed { .. } => "keepalive_failed",
            LossReason::Shutdown => "shutdown",
        }
    }
}

/// Records a number the primitives measure outside of holds (lease keepalives, task jobs, time
/// syncs). Without the feature `metrics`, nothing.
pub mod record {
    use std::time::Duration;

    /// A keepalive round trip, and the time left before the deadline rule would fire.
    pub fn keepalive(round_trip: Duration, margin_left: Duration) {
        #[cfg(feature = "metrics")]
        {
            ::metrics::histogram!("sync_lease_keepalive_seconds").record(round_trip.as_secs_f64());
            ::metrics::gauge!("sync_lease_margin_seconds").set(margin_left.as_secs_f64());
        }
        let _ = (round_trip, margin_left);
    }

    /// Something happened to a job: `submitted`, `attempted`, `claimed`, `succeeded`,
    /// `failed`, `retried`, `lost`, `handed_back`…
    pub fn job(state: &'static str) {
        #[cfg(feature = "metrics")]
        ::metrics::counter!("sync_task_jobs_total", "state" => state).increment(1);
        let _ = state;
    }

    /// An attempt of a job ran for `took`, and succeeded or not.
    pub fn attempt(took: Duration, ok: bool) {
        #[cfg(feature = "metrics")]
        ::metrics::histogram!("sync_task_attempt_seconds", "outcome" => if ok { "ok" } else { "failed" })
            .record(took.as_secs_f64());
        let _ = (took, ok);
    }

    /// A time sync's result: the offset applied to the local clock and the error bound then.
    /// Also sets `sync_time_last_sync_timestamp_seconds` (staleness in PromQL: `time() - …`).
    pub fn time_sync(offset_secs: f64, error_bound: Duration) {
        #[cfg(feature = "metrics")]
        {
            ::metrics::gauge!("sync_time_offset_seconds").set(offset_secs);
            ::metrics::gauge!("sync_time_error_bound_seconds").set(error_bound.as_secs_f64());
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            ::metrics::gauge!("sync_time_last_sync_timestamp_seconds").set(now.as_secs_f64());
        }
        let _ = (offset_secs, error_bound);
    }

    /// How old the last sync is, as of a status read.
    pub fn time_staleness(age: Duration) {
        #[cfg(feature = "metrics")]
        ::metrics::gauge!("sync_time_staleness_seconds").set(age.as_secs_f64());
        let _ = age;
    }
}

mod metrics {
    use super::{Ask, Subject};
    use crate::signal::LossReason;
    use std::time::Duration;

    pub(super) fn granted(ask: Ask<'_>, waited: Duration) {
        #[cfg(feature = "metrics")]
        {
            let labels = [("primitive", ask.primitive), ("backend", ask.backend)];
            ::metrics::counter!("sync_grants_total", &labels).increment(1);
            ::metrics::histogram!("sync_wait_seconds", &labels).record(waited.as_secs_f64());
            if ask.primitive == "leader" {
                ::metrics::gauge!("sync_is_leader", "group" => ask.name.to_owned()).set(1.0);
            }
        }
        let _ = (ask, waited);
    }

    pub(super) fn not_granted(ask: Ask<'_>, outcome: &'static str) {
        #[cfg(feature = "metrics")]
        ::metrics::counter!(
            "sync_not_granted_total",
            "primitive" => ask.primitive,
            "backend" => ask.backend,
            "outcome" => outcome
        )
        .increment(1);
        let _ = (ask, outcome);
    }

    pub(super) fn ended(subject: &Subject, reason: &LossReason, held: Duration) {
        #[cfg(feature = "metrics")]
        {
            let labels = [
                ("primitive", subject.primitive),
                ("backend", subject.backend),
            ];
            ::metrics::histogram!("sync_hold_seconds", &labels).record(held.as_secs_f64());
            if *reason != LossReason::Released {
                ::metrics::counter!(
                    "sync_losses_total",
                    "primitive" => subject.primitive,
                    "backend" => subject.backend,
                    "reason" => reason.label()
                )
                .increment(1);
            }
            if subject.primitive == "leader" {
                ::metrics::gauge!("sync_is_leader", "group" => subject.name.to_string()).set(0.0);
            }
        }
        let _ = (subject, reason, held);
    }
}
