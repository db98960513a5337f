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

/// The longest worker lease TTL accepted ([`TaskOptions::with_ttl`]): a dead worker's jobs wait
/// about this long before they run again, so anything longer only hides crashes.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// The longest claim spread step accepted ([`TaskOptions::with_claim_spread`]).
pub const MAX_CLAIM_SPREAD: Duration = Duration::from_secs(10);

/// The longest pause between two attempts: longer [`Backoff`] delays saturate at it.
pub const MAX_BACKOFF: Duration = Duration::from_secs(366 * 24 * 3600);

/// The largest job payload accepted, in bytes of its JSON serialisation: 1 MiB. Larger payloads
/// are refused at submission with [`Error::TooLarge`](crate::Error::TooLarge), before anything is
/// sent, on every backend (etcd refuses requests above 1.5 MiB by default, and a job travels in
/// one request). Keep large data elsewhere (an object store) and pass a reference.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// The largest command output accepted, in bytes of its JSON serialisation: 1 MiB. An attempt
/// whose output is larger fails the job at once (not retried) with
/// [`Error::TooLarge`](crate::Error::TooLarge), on every backend.
pub const MAX_OUTPUT_BYTES: usize = 1 << 20;

/// Error and panic messages of failed attempts are kept up to this many bytes (cut at a
/// character boundary, with a note of how much was cut), on every backend.
pub const MAX_MESSAGE_BYTES: usize = 4096;

impl TaskOptions {
    /// Defaults: a pool of 10, the backend's TTL, 30 s of shutdown grace, a 20 ms claim spread.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many attempts this handle runs at once (1 ..= [`MAX_POOL`]); more wait for a slot.
    /// Out of range: [`Error::InvalidOptions`] when the handle is made.
    pub fn with_pool(mut self, pool: usize) -> Self {
        self.pool = pool;
        self
    }

    /// etcd: the TTL of the worker's lease, to which its job claims are bound: a worker that
    /// dies has its jobs run again by others about this long after. Rounded up to whole seconds;
    /// etcd may raise it to its minimum. 1 s ..= [`MAX_TTL`]; out of range:
    /// [`Error::InvalidOptions`] when the handle is made. Default: the connection's TTL.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How long [`Task::shutdown`](crate::Task::shutdown) lets running jobs finish before
    /// cancelling them (etcd: handing them back to other workers). Any value is accepted;
    /// `Duration::MAX` waits for running jobs as long as they take.
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// etcd: the delay step that keeps idle workers from racing for the same new job. Each job
    /// ranks the live workers of its command (rendezvous hashing); the worker ranked `k` tries
    /// to claim it only once it has been claimable for `k` steps. A step is at least twice the
    /// worker's recent claim round trip, so a slow cluster widens it. Zero makes every idle
    /// worker race for every job (a thundering herd; for comparison). At most
    /// [`MAX_CLAIM_SPREAD`]; above: [`Error::InvalidOptions`] when the handle is made.
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
            check_ttl(ttl)?;
        }
        if self.claim_spread > MAX_CLAIM_SPREAD {
            return Err(Error::options(
                "",
                format!(
                    "claim spread {:?} is above the maximum {MAX_CLAIM_SPREAD:?} (sync_task::MAX_CLAIM_SPREAD)",
                    self.claim_spread
                ),
            ));
        }
        Ok(())
    }
}

/// Checks a worker lease TTL (asked for, or the connection's).
pub(crate) fn check_ttl(ttl: Duration) -> Result<()> {
    if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
        return Err(Error::options(
            "",
            format!("ttl {ttl:?} is outside 1 s ..= {MAX_TTL:?} (sync_task::MAX_TTL)"),
        ));
    }
    Ok(())
}

/// `d` rounded up to whole milliseconds (saturating).
pub(crate) fn round_up_ms(d: Duration) -> Duration {
    let rem = d.subsec_nanos() % 1_000_000;
    if rem == 0 {
        return d;
    }
    d.checked_add(Duration::from_nanos(u64::from(1_000_000 - rem)))
        .unwrap_or(d - Duration::from_nanos(u64::from(rem)))
}

/// The size of `v`'s JSON serialisation, without building it.
pub(crate) fn json_size(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing a `Value` into a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// Retry delays: `initial`, then doubling, at most `max`, and never more than [`MAX_BACKOFF`]
/// (a longer delay saturates at it, so `Duration::MAX` means "a year from now", never an
/// overflow).
///
/// ```
/// use std::time::Duration;
/// use sync_task::Backoff;
/// let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
/// assert_eq!(b.delay(1), Duration::from_millis(100)); // after the first failed attempt
/// assert_eq!(b.delay(3), Duration::from_millis(400));
/// assert_eq!(b.delay(10), Duration::from_secs(1));
/// let unbounded = Backoff::new(Duration::from_secs(1), Duration::MAX);
/// assert_eq!(unbounded.delay(u32::MAX), sync_task::MAX_BACKOFF);
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

    /// The pause after failed attempt number `attempt` (from 1): `initial × 2^(attempt − 1)`,
    /// at most `max` and at most [`MAX_BACKOFF`].
    pub fn delay(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(31);
        self.initial
            .checked_mul(1u32 << shift)
            .unwrap_or(self.max)
            .min(self.max)
            .min(MAX_BACKOFF)
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
    /// A job of `command` with `payload` (any serde-serialisable value; `()` for none; at most
    /// [`MAX_PAYLOAD_BYTES`] as JSON, else submission fails with
    /// [`Error::TooLarge`](crate::Error::TooLarge)).
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

    /// The pauses between attempts (see [`Backoff`]: they saturate at [`MAX_BACKOFF`]).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Cancels an attempt that runs longer than `timeout` (it counts as a failed attempt).
    /// Rounded up to whole milliseconds, the same on every backend (`999µs` is `1ms`); zero is
    /// refused at submission with [`Error::InvalidOptions`]; `Duration::MAX` never fires.
    ///
    /// ```
    /// use std::time::Duration;
    /// let job = sync_task::Job::new("c", ()).with_timeout(Duration::from_micros(999));
    /// assert_eq!(job.timeout(), Some(Duration::from_millis(1)));
    /// ```
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(round_up_ms(timeout));
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
        let payload = self.payload.as_ref().map_err(|e| Error::BadPayload {
            command: c.clone(),
            job: None,
            reason: format!("it cannot be serialised: {e}"),
        })?;
        let size = json_size(payload);
        if size > MAX_PAYLOAD_BYTES {
            return Err(Error::TooLarge {
                what: "payload",
                command: sync_core::name::display_name(c),
                job: None,
                size,
                limit: MAX_PAYLOAD_BYTES,
            });
        }
        Ok(payload)
    }
}

/// `now + d`, or a deadline far ahead (about 30 years) if `d` is too long to add.
pub(crate) fn deadline_after(now: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    now.checked_add(d.min(FAR)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Any duration, with the edges weighted in.
    fn duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            Just(Duration::ZERO),
            Just(Duration::MAX),
            Just(Duration::from_nanos(1)),
            Just(Duration::from_micros(999)),
            (0u64..10_000_000_000).prop_map(Duration::from_nanos),
            (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        ]
    }

    proptest! {
        /// Job options: validation never panics; an accepted job's backoff saturates below
        /// MAX_BACKOFF at every attempt, its timeout is whole milliseconds and not below what
        /// was asked, and its retention is within bounds.
        #[test]
        fn job_options_validate_or_saturate(
            attempts in any::<u32>(),
            initial in duration(),
            max in duration(),
            timeout in proptest::option::of(duration()),
            retention in duration(),
            attempt in any::<u32>(),
        ) {
            let mut job = Job::new("c", ())
                .with_max_attempts(attempts)
                .with_backoff(Backoff::new(initial, max))
                .with_retention(retention);
            if let Some(t) = timeout {
                job = job.with_timeout(t);
            }
            if job.validate().is_ok() {
                prop_assert!(attempts >= 1);
                let d = job.backoff().delay(attempt);
                prop_assert!(d <= MAX_BACKOFF && d <= max);
                // The retry time fits in a SystemTime and an Instant.
                prop_assert!(std::time::SystemTime::now().checked_add(d).is_some());
                prop_assert!(std::time::Instant::now().checked_add(d).is_some());
                if let (Some(asked), Some(t)) = (timeout, job.timeout()) {
                    prop_assert!(!t.is_zero());
                    prop_assert_eq!(t.subsec_nanos() % 1_000_000, 0);
                    prop_assert!(t >= asked || asked > Duration::MAX - Duration::from_millis(1));
                    prop_assert!(t - asked.min(t) < Duration::from_millis(1));
                }
                prop_assert!(job.retention() >= Duration::from_secs(1) && job.retention() <= MAX_RETENTION);
            }
        }

        /// Handle options: validation never panics, and accepts exactly the documented ranges.
        #[test]
        fn task_options_validate(
            pool in prop_oneof![Just(0usize), Just(MAX_POOL), Just(MAX_POOL + 1), Just(usize::MAX), 1usize..100],
            ttl in proptest::option::of(duration()),
            grace in duration(),
            spread in duration(),
        ) {
            let mut o = TaskOptions::new()
                .with_pool(pool)
                .with_shutdown_grace(grace)
                .with_claim_spread(spread);
            if let Some(t) = ttl {
                o = o.with_ttl(t);
            }
            let ok = (1..=MAX_POOL).contains(&pool)
                && ttl.is_none_or(|t| t >= Duration::from_secs(1) && t <= MAX_TTL)
                && spread <= MAX_CLAIM_SPREAD;
            prop_assert_eq!(o.validate().is_ok(), ok);
            // Any grace is a usable deadline.
            let _ = deadline_after(tokio::time::Instant::now(), grace);
        }

    }

    /// Payload sizes are measured exactly, and the limit is inclusive.
    #[test]
    fn payload_limit_is_exact() {
        for extra in 0usize..3 {
            // A JSON string of n characters is n + 2 bytes.
            let at = "x".repeat(MAX_PAYLOAD_BYTES - 2 - 1 + extra);
            let r = Job::new("c", at).validate().map(|_| ());
            if extra <= 1 {
                assert!(r.is_ok(), "{extra}: {r:?}");
            } else {
                assert!(
                    matches!(
                        r,
                        Err(Error::TooLarge { size, limit: MAX_PAYLOAD_BYTES, .. })
                            if size == MAX_PAYLOAD_BYTES + 1
                    ),
                    "{r:?}"
                );
            }
        }
    }

    #[test]
    fn rounding_up_to_milliseconds() {
        assert_eq!(round_up_ms(Duration::ZERO), Duration::ZERO);
        assert_eq!(
            round_up_ms(Duration::from_nanos(1)),
            Duration::from_millis(1)
        );
        assert_eq!(
            round_up_ms(Duration::from_micros(999)),
            Duration::from_millis(1)
        );
        assert_eq!(
            round_up_ms(Duration::from_millis(7)),
            Duration::from_millis(7)
        );
        assert_eq!(
            round_up_ms(Duration::from_micros(1001)),
            Duration::from_millis(2)
        );
        let max = round_up_ms(Duration::MAX);
        assert!(max <= Duration::MAX && Duration::MAX - max < Duration::from_millis(1));
    }
}
