use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::{check_name, Error, Result};

/// Options of a task handle: [`LocalTask::new`](crate::LocalTask::new),
/// `EtcdTask::connect` (feature `etcd`).
///
/// ```
/// use std::time::Duration;
/// use sync_task::TaskOptions;
/// let opts = TaskOptions::new()
///     .with_pool(4)
///     .with_shutdown_grace(Duration::from_secs(5));
/// assert_eq!(opts.pool(), 4);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskOptions {
    pool: usize,
    ttl: Option<Duration>,
    shutdown_grace: Duration,
    claim_spread: Duration,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            pool: 10,
            ttl: None,
            shutdown_grace: Duration::from_secs(30),
            claim_spread: Duration::from_millis(20),
        }
    }
}

/// The largest pool accepted.
pub const MAX_POOL: usize = 1 << 16;

impl TaskOptions {
    /// Defaults: a pool of 10, the backend's TTL, 30 s of shutdown grace, a 20 ms claim spread.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many attempts this handle runs at once (1 ..= [`MAX_POOL`]); more wait for a slot.
    pub fn with_pool(mut self, pool: usize) -> Self {
        self.pool = pool;
        self
    }

    /// etcd: the TTL of the worker's lease, to which its job claims are bound: a worker that
    /// dies has its jobs run again by others about this long after. Rounded up to whole seconds;
    /// etcd may raise it to its minimum. Default: the connection's TTL.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How long [`Task::shutdown`](crate::Task::shutdown) lets running jobs finish before
    /// cancelling them (etcd: handing them back to other workers).
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// etcd: the delay step that keeps idle workers from racing for the same new job. Each job
    /// ranks the live workers of its command (rendezvous hashing); the worker ranked `k` tries
    /// to claim it only once it has been claimable for `k` steps. A step is at least twice the
    /// worker's recent claim round trip, so a slow cluster widens it. Zero makes every idle
    /// worker race for every job (a thundering herd; for comparison).
    pub fn with_claim_spread(mut self, step: Duration) -> Self {
        self.claim_spread = step;
        self
    }

    /// The pool size.
    pub fn pool(&self) -> usize {
        self.pool
    }

    /// The worker lease TTL asked for, if any.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// The shutdown grace.
    pub fn shutdown_grace(&self) -> Duration {
        self.shutdown_grace
    }

    /// The claim spread step.
    pub fn claim_spread(&self) -> Duration {
        self.claim_spread
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.pool == 0 || self.pool > MAX_POOL {
            return Err(Error::options(
                "",
                format!("pool size {} is outside 1..={MAX_POOL}", self.pool),
            ));
        }
        if let Some(ttl) = self.ttl {
            sync_core::duration::validate_ttl(ttl).map_err(|reason| Error::options("", reason))?;
        }
        Ok(())
    }
}

/// Retry delays: `initial`, then doubling, at most `max`.
///
/// ```
/// use std::time::Duration;
/// use sync_task::Backoff;
/// let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
/// assert_eq!(b.delay(1), Duration::from_millis(100)); // after the first failed attempt
/// assert_eq!(b.delay(3), Duration::from_millis(400));
/// assert_eq!(b.delay(10), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// Exponential backoff from `initial` (doubling) up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max }
    }

    /// The pause after failed attempt number `attempt` (from 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(31);
        self.initial
            .checked_mul(1u32 << shift)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The first delay.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The longest delay.
    pub fn max(&self) -> Duration {
        self.max
    }
}

/// One job to submit: a command name, its payload, and how to run it.
///
/// ```
/// use std::time::Duration;
/// use sync_task::Job;
/// let job = Job::new("resize", serde_json::json!({"image": "a.png", "width": 640}))
///     .with_max_attempts(5)
///     .with_timeout(Duration::from_secs(30))
///     .with_idempotency_key("resize:a.png:640");
/// assert_eq!(job.command(), "resize");
/// assert_eq!(job.max_attempts(), 5);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Job {
    command: String,
    payload: std::result::Result<Value, String>,
    max_attempts: u32,
    backoff: Backoff,
    timeout: Option<Duration>,
    idempotency_key: Option<String>,
    retention: Duration,
    wait_for_worker: bool,
}

pub(crate) const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub(crate) const DEFAULT_RETENTION: Duration = Duration::from_secs(3600);

/// The longest retention accepted (etcd's lease limit is far above).
pub const MAX_RETENTION: Duration = Duration::from_secs(366 * 24 * 3600);

impl Job {
    /// A job of `command` with `payload` (any serde-serialisable value; `()` for none).
    /// Defaults: 3 attempts, backoff 100 ms doubling up to 30 s, no timeout, no idempotency key,
    /// results kept for an hour.
    pub fn new(command: impl Into<String>, payload: impl Serialize) -> Self {
        Job {
            command: command.into(),
            payload: serde_json::to_value(payload).map_err(|e| e.to_string()),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: Backoff::default(),
            timeout: None,
            idempotency_key: None,
            retention: DEFAULT_RETENTION,
            wait_for_worker: false,
        }
    }

    /// How many times the job may run before it is failed for good (at least 1). Every start
    /// counts, including one whose worker died.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The pauses between attempts.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Cancels an attempt that runs longer than `timeout` (it counts as a failed attempt).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Makes submission idempotent: while a job with this key exists (pending, running, or
    /// finished within its retention), submitting another returns that job instead.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// How long the outcome of the finished job stays readable (`status`, `wait`, the
    /// idempotency key); then it is dropped. At least 1 s (etcd rounds up to whole seconds).
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Accepts the job even if no worker has registered its command yet: it waits for one.
    /// By default submission fails with [`Error::UnknownCommand`] then.
    pub fn with_wait_for_worker(mut self, wait: bool) -> Self {
        self.wait_for_worker = wait;
        self
    }

    /// The command.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The payload, if it could be serialised.
    pub fn payload(&self) -> Option<&Value> {
        self.payload.as_ref().ok()
    }

    /// The maximum number of attempts.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The backoff.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// The per-attempt timeout, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The idempotency key, if any.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.idempotency_key.as_deref()
    }

    /// The retention of its outcome.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// Whether it may wait for a worker to register its command.
    pub fn waits_for_worker(&self) -> bool {
        self.wait_for_worker
    }

    /// Checks names and options; returns the payload.
    pub(crate) fn validate(&self) -> Result<&Value> {
        let c = &self.command;
        check_name("command name", c)?;
        if let Some(k) = &self.idempotency_key {
            check_name("idempotency key", k)?;
        }
        if self.max_attempts == 0 {
            return Err(Error::options(c, "max_attempts must be at least 1"));
        }
        if self.backoff.initial > self.backoff.max {
            return Err(Error::options(
                c,
                format!(
                    "backoff starts at {:?}, above its maximum {:?}",
                    self.backoff.initial, self.backoff.max
                ),
            ));
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(Error::options(c, "a timeout must be above zero"));
        }
        if self.retention < Duration::from_secs(1) || self.retention > MAX_RETENTION {
            return Err(Error::options(
                c,
                format!(
                    "retention {:?} is outside 1 s ..= {MAX_RETENTION:?}",
                    self.retention
                ),
            ));
        }
        self.payload.as_ref().map_err(|e| Error::BadPayload {
            command: c.clone(),
            job: None,
            reason: format!("it cannot be serialised: {e}"),
        })
    }
}
