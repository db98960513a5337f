//! The conformance suite: the guarantees every task backend gives, checked the same way.
//!
//! A backend provides a [`Harness`] and runs the whole suite with one macro line:
//!
//! ```text
//! sync_task::task_conformance!(local, LocalHarness::default());
//! ```
//!
//! which expands to one `#[tokio::test]` per guarantee inside a module named for the backend
//! (`local::every_job_runs_once`, …). Extra attributes (such as `#[ignore = "…"]` for tests that
//! need a server) follow the harness expression.

//!
//! The cases, by concern: delivery (every job runs once, the pool bound), submitting, retries and timeouts, status and retention, shutdown, and cancellation (a
//! dropped submit, wait or claim, at every poll, with `sync_core::check::cancel_at_every_poll`).

mod cancellation;
mod delivery;
mod retries;
mod shutdown;
mod status;
mod submit;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

pub use self::cancellation::*;
pub use self::delivery::*;
pub use self::retries::*;
pub use self::shutdown::*;
pub use self::status::*;
pub use self::submit::*;
use crate::{Backoff, Job, JobId, Task, TaskOptions};

/// What the suite needs from a backend beyond the [`Task`] trait.
pub trait Harness: Send + Sync {
    /// A new handle on the backend under test (for a distributed backend: its own connection,
    /// as another process would have). Jobs submitted through any handle of one harness may run
    /// on any of its handles that registered their command.
    fn task(&self, options: TaskOptions) -> BoxFuture<'_, Arc<dyn Task>>;
    /// Another handle on the same jobs as `worker` (etcd: a new connection, as another process
    /// would have; local: `worker` itself, the only pool that runs its jobs).
    fn peer<'a>(&'a self, worker: &'a Arc<dyn Task>) -> BoxFuture<'a, Arc<dyn Task>>;
    /// How many attempts run on `worker` right now (`LocalTask::running`, `EtcdTask::running`).
    fn running(&self, worker: &Arc<dyn Task>) -> usize;
    /// Runs `worker`'s claim path once for job `job` (what its dispatcher does before an
    /// attempt starts: etcd, the claim transaction under its lease; local, taking a pool slot),
    /// then hands the job back without using up an attempt. Whether it claimed the job. The
    /// suite drops this future at every poll: it must leave no claim behind.
    fn claim<'a>(&'a self, worker: &'a Arc<dyn Task>, job: &'a JobId) -> BoxFuture<'a, bool>;
    /// How many job records the backend of `worker` stores (pending, running, or finished
    /// within their retention).
    fn stored_jobs<'a>(&'a self, worker: &'a Arc<dyn Task>) -> BoxFuture<'a, usize>;
    /// How much longer than its retention a finished job may stay stored.
    fn expiry_slack(&self) -> Duration;
    /// Whether a job still running when its worker's shutdown grace ends is handed back to
    /// other workers (distributed backends) rather than failed.
    fn hands_back(&self) -> bool;
}

/// The timeout that fails a test waiting for something that should happen.
const LONG: Duration = Duration::from_secs(30);

/// A gate that commands wait at until the test opens it.
#[derive(Clone)]
struct Gate(Arc<tokio::sync::watch::Sender<bool>>);

impl Gate {
    fn new() -> Self {
        Gate(Arc::new(tokio::sync::watch::Sender::new(false)))
    }
    fn open(&self) {
        self.0.send_replace(true);
    }
    async fn pass(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// Counts how many times something happened, and lets a test wait for a count.
#[derive(Clone, Default)]
struct Counter(Arc<tokio::sync::watch::Sender<usize>>);

impl Counter {
    fn bump(&self) {
        self.0.send_modify(|n| *n += 1);
    }
    fn get(&self) -> usize {
        *self.0.borrow()
    }
    async fn reach(&self, n: usize) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|c| *c >= n).await;
    }
}

/// Bumps a counter when dropped: shows that a cancelled command's future was dropped.
struct DropFlag(Counter);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.bump();
    }
}

fn opts() -> TaskOptions {
    TaskOptions::new().with_pool(4)
}

fn fast(job: Job) -> Job {
    job.with_backoff(Backoff::new(
        Duration::from_millis(10),
        Duration::from_millis(50),
    ))
}

/// Expands to one test per guarantee of the suite, in a module named for the backend.
#[macro_export]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
macro_rules! task_conformance {
    ($backend:ident, $make:expr $(, #[$attr:meta])* $(,)?) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            use $crate::conformance as __suite;
            $crate::__core::conformance_cases!(__suite, $make, [$(#[$attr])*];
                seed_run_returns_output_and_errors,
                every_job_runs_once,
                pool_bound_never_exceeded,
                final_failed_state_after_last_attempt,
                panic_becomes_error,
                retries_with_exponential_backoff,
                permanent_error_not_retried,
                timeout_cancels_attempt,
                idempotency_key_returns_first_job,
                status_and_wait_by_id,
                finished_jobs_expire,
                unknown_command_is_typed_error,
                bad_payload_is_typed_error,
                invalid_input_rejected,
                shutdown_lets_running_jobs_finish,
                shutdown_after_grace_cancels_running_jobs,
                cancelled_wait_leaves_job_alone,
                commands_do_not_interfere,
                register_replaces_command,
                dyn_and_generic_use,
                many_jobs_spread_over_pool,
                extreme_options_never_panic_or_stick,
                oversized_payload_is_refused_at_once,
                sub_millisecond_timeout_rounds_up,
                cancelled_submit_leaves_nothing,
                running_counts_attempts_that_run,
                cancelled_claim_leaves_job_claimable,
            );
        }
    };
}
