//! Running one attempt of a command: panics and timeouts become failures, never a crashed pool.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;
use serde_json::Value;
use tracing::Instrument;

use crate::command::HandlerFuture;
use crate::{Command, Failure, Input};

/// How one attempt ended, when it did not succeed.
#[derive(Debug)]
pub(crate) struct AttemptFailure {
    pub(crate) failure: Failure,
    /// The command said retrying cannot help.
    pub(crate) permanent: bool,
}

impl AttemptFailure {
    /// Whether the job gets another attempt after attempt `attempt` of `max`.
    pub(crate) fn retry(&self, attempt: u32, max: u32) -> bool {
        attempt < max && self.failure.retryable(self.permanent)
    }
}

/// Runs one attempt of `command` on `input`, cancelling it after `timeout`; counted in
/// `counters` (started, and running while it runs).
pub(crate) async fn attempt(
    command: &Command,
    input: Input,
    timeout: Option<Duration>,
    counters: &Counters,
) -> Result<Value, AttemptFailure> {
    let (name, job, n) = (input.command.clone(), input.job.clone(), input.attempt);
    counters.bump(Count::Attempted);
    let _running = Running::enter(&counters.running);
    let span = tracing::info_span!("sync.attempt", command = %name, job = %job, attempt = n);
    let started = std::time::Instant::now();
    let out = guarded(
        || command.call(input),
        timeout,
        |message| {
            tracing::warn!(command = %name, job = %job, attempt = n, %message, "command panicked");
        },
    )
    .instrument(span.clone())
    .await;
    let took = started.elapsed();
    span.in_scope(|| tracing::debug!(?took, ok = out.is_ok(), "attempt ended"));
    sync_core::telemetry::record::attempt(took, out.is_ok());
    let out = out?;
    let size = crate::options::json_size(&out);
    if size > crate::MAX_OUTPUT_BYTES {
        tracing::warn!(command = %name, job = %job, attempt = n, size, "command output too large: the job fails");
        return Err(AttemptFailure {
            failure: Failure::OutputTooLarge {
                size: size as u64,
                limit: crate::MAX_OUTPUT_BYTES as u64,
            },
            permanent: true,
        });
    }
    Ok(out)
}

/// Counts one running attempt until dropped.
struct Running<'a>(&'a AtomicUsize);

impl<'a> Running<'a> {
    fn enter(c: &'a AtomicUsize) -> Self {
        c.fetch_add(1, Ordering::SeqCst);
        Running(c)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Calls `call` and awaits its future, turning a panic (in the call or in the future) and a
/// timeout into failures; `on_panic` is told the panic message.
pub(crate) async fn guarded(
    call: impl FnOnce() -> HandlerFuture,
    timeout: Option<Duration>,
    on_panic: impl FnOnce(&str),
) -> Result<Value, AttemptFailure> {
    let panicked = |p: Box<dyn Any + Send>| {
        let message = crate::command::cap_message(panic_message(&*p));
        on_panic(&message);
        AttemptFailure {
            failure: Failure::Panicked { message },
            permanent: false,
        }
    };
    // The function itself may panic before returning its future.
    let fut = match std::panic::catch_unwind(AssertUnwindSafe(call)) {
        Ok(f) => f,
        Err(p) => return Err(panicked(p)),
    };
    let guarded = AssertUnwindSafe(fut).catch_unwind();
    let result = match timeout {
        None => guarded.await,
        // `tokio::time::timeout` saturates: `Duration::MAX` never fires.
        Some(after) => match tokio::time::timeout(after, guarded).await {
            Ok(r) => r,
            Err(_) => {
                return Err(AttemptFailure {
                    failure: Failure::TimedOut { after },
                    permanent: false,
                });
            }
        },
    };
    match result {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            let permanent = e.is_permanent();
            Err(AttemptFailure {
                failure: e.into_failure(),
                permanent,
            })
        }
        Err(p) => Err(panicked(p)),
    }
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

/// Counters of what a task handle did; read with `stats()`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) submitted: AtomicU64,
    pub(crate) attempts: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) claims: AtomicU64,
    pub(crate) claim_conflicts: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) handed_back: AtomicU64,
    /// Attempts running now (not a total).
    pub(crate) running: AtomicUsize,
}

/// What happened to a job, counted in [`Counters`] and in the metrics (`sync_task_jobs_total`,
/// labelled by [`Count::label`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Count {
    Submitted,
    Attempted,
    Succeeded,
    Failed,
    Retried,
    // Only a distributed backend claims, loses or hands back jobs.
    #[cfg(feature = "etcd")]
    Claimed,
    #[cfg(feature = "etcd")]
    ClaimConflict,
    #[cfg(feature = "etcd")]
    Lost,
    #[cfg(feature = "etcd")]
    HandedBack,
}

impl Count {
    fn label(self) -> &'static str {
        match self {
            Count::Submitted => "submitted",
            Count::Attempted => "attempted",
            Count::Succeeded => "succeeded",
            Count::Failed => "failed",
            Count::Retried => "retried",
            #[cfg(feature = "etcd")]
            Count::Claimed => "claimed",
            #[cfg(feature = "etcd")]
            Count::ClaimConflict => "claim_conflict",
            #[cfg(feature = "etcd")]
            Count::Lost => "lost",
            #[cfg(feature = "etcd")]
            Count::HandedBack => "handed_back",
        }
    }
}

impl Counters {
    pub(crate) fn bump(&self, what: Count) {
        let c = match what {
            Count::Submitted => &self.submitted,
            Count::Attempted => &self.attempts,
            Count::Succeeded => &self.succeeded,
            Count::Failed => &self.failed,
            Count::Retried => &self.retried,
            #[cfg(feature = "etcd")]
            Count::Claimed => &self.claims,
            #[cfg(feature = "etcd")]
            Count::ClaimConflict => &self.claim_conflicts,
            #[cfg(feature = "etcd")]
            Count::Lost => &self.lost,
            #[cfg(feature = "etcd")]
            Count::HandedBack => &self.handed_back,
        };
        c.fetch_add(1, Ordering::Relaxed);
        sync_core::telemetry::record::job(what.label());
    }

    /// Attempts running now.
    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    pub(crate) fn snapshot(&self) -> crate::TaskStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        crate::TaskStats {
            submitted: g(&self.submitted),
            attempts: g(&self.attempts),
            succeeded: g(&self.succeeded),
            failed: g(&self.failed),
            retried: g(&self.retried),
            claims: g(&self.claims),
            claim_conflicts: g(&self.claim_conflicts),
            lost: g(&self.lost),
            handed_back: g(&self.handed_back),
        }
    }
}

/// Counts jobs queued or running, so that `shutdown` can wait for them.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    count: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One job counted by a [`Tracker`] until dropped.
#[derive(Debug)]
pub(crate) struct Tracked(std::sync::Arc<Tracker>);

impl Tracker {
    pub(crate) fn enter(self: &std::sync::Arc<Self>) -> Tracked {
        self.count.fetch_add(1, Ordering::SeqCst);
        Tracked(self.clone())
    }

    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits until nothing is counted, for at most `within`; returns whether it got there.
    pub(crate) async fn wait_idle(&self, within: Duration) -> bool {
        let deadline = crate::options::deadline_after(tokio::time::Instant::now(), within);
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() == 0 {
                return true;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => return false,
            }
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
