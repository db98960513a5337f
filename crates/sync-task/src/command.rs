//! Commands (a name and the code it runs), their input, and how an attempt can fail.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::JobId;

/// What a handler returns: the output as a JSON value, or why the attempt failed.
pub(crate) type HandlerFuture = BoxFuture<'static, Result<Value, CommandError>>;
pub(crate) type HandlerFn = dyn Fn(Input) -> HandlerFuture + Send + Sync;

/// A named command and the code it runs: the seed's `task.Command{Name, Func}`.
///
/// [`Task::run`](crate::Task::run) runs one; [`Task::register`](crate::Task::register) makes a
/// handle (a worker) run the jobs submitted under its name. The function gets the job's
/// [`Input`] and returns any serde-serialisable output, or a [`CommandError`] (`?` converts any
/// `std::error::Error`).
///
/// ```
/// use sync_task::{Command, CommandError, LocalTask, Task, TaskOptions};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let task = LocalTask::new(TaskOptions::new().with_pool(10))?;
///
/// // The seed's shape: a name and a function; errors reach the caller.
/// task.run(Command::new("atask", |_| async { Ok(()) })).await?;
/// let err = task
///     .run(Command::new("fails", |_| async { Err::<(), _>(CommandError::permanent("disk full")) }))
///     .await
///     .unwrap_err();
/// assert!(err.to_string().contains("disk full"));
///
/// // A typed command: the payload is deserialised, the output serialised.
/// let double = Command::typed("double", |n: u64| async move { Ok(n * 2) });
/// task.register(double).await?;
/// let out: u64 = task.submit(sync_task::Job::new("double", 21)).await?.wait_as().await?;
/// assert_eq!(out, 42);
/// # Ok::<(), sync_task::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct Command {
    name: Arc<str>,
    func: Arc<HandlerFn>,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command").field("name", &self.name).finish()
    }
}

impl Command {
    /// A command named `name` running `func` on each job's [`Input`].
    pub fn new<F, Fut, T>(name: impl Into<String>, func: F) -> Self
    where
        F: Fn(Input) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, CommandError>> + Send + 'static,
        T: Serialize + 'static,
    {
        let func = move |input: Input| -> HandlerFuture {
            let fut = func(input);
            async move { fut.await.and_then(to_output) }.boxed()
        };
        Command {
            name: name.into().into(),
            func: Arc::new(func),
        }
    }

    /// A command whose payload is deserialised into `P` first. A payload that does not
    /// deserialise fails the job at once with [`Error::BadPayload`](crate::Error::BadPayload),
    /// without retries.
    pub fn typed<P, F, Fut, T>(name: impl Into<String>, func: F) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        F: Fn(P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, CommandError>> + Send + 'static,
        T: Serialize + 'static,
    {
        let func = Arc::new(func);
        Command::new(name, move |input: Input| {
            let func = func.clone();
            async move {
                let payload: P = input.payload_as()?;
                func(payload).await
            }
        })
    }

    /// The command's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn name_arc(&self) -> Arc<str> {
        self.name.clone()
    }

    pub(crate) fn call(&self, input: Input) -> HandlerFuture {
        (self.func)(input)
    }

    pub(crate) fn same_as(&self, other: &Command) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.func, &other.func)
    }
}

fn to_output<T: Serialize>(out: T) -> Result<Value, CommandError> {
    serde_json::to_value(out).map_err(|e| {
        CommandError::permanent(format!("the command's output cannot be serialised: {e}"))
    })
}

/// What a command gets for one attempt of a job.
#[derive(Debug, Clone)]
pub struct Input {
    pub(crate) job: JobId,
    pub(crate) command: Arc<str>,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) fence: u64,
    pub(crate) payload: Value,
}

impl Input {
    /// The job's id.
    pub fn job(&self) -> &JobId {
        &self.job
    }

    /// The command's name.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Which attempt this is, from 1. Above 1 after an error, a timeout, or the loss of the
    /// worker that ran an earlier attempt: a command must tolerate running again.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// A number that strictly increases from one attempt of a job to the next, whichever worker
    /// runs it (etcd: the create revision of the attempt's claim). Pass it with the command's
    /// writes so that the resource can refuse a stale attempt (one whose worker lost its claim
    /// and was told too late to stop an RPC already sent).
    pub fn fencing_token(&self) -> u64 {
        self.fence
    }

    /// The job's maximum number of attempts.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The payload as submitted.
    pub fn payload(&self) -> &Value {
        &self.payload
    }

    /// The payload, deserialised. On failure the error fails the job for good (a payload does
    /// not get better by retrying) as [`Error::BadPayload`](crate::Error::BadPayload).
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T, CommandError> {
        T::deserialize(&self.payload).map_err(|e| CommandError {
            message: e.to_string(),
            kind: Kind::BadPayload,
        })
    }
}

/// Why one attempt of a command failed. Any `std::error::Error` converts into it (so `?` works
/// in a command); such errors are retried while the job has attempts left, unless made with
/// [`CommandError::permanent`].
///
/// ```
/// use sync_task::CommandError;
/// let e: CommandError = std::io::Error::other("connection reset").into();
/// assert!(!e.is_permanent());
/// assert_eq!(CommandError::permanent("no such user").message(), "no such user");
/// ```
pub struct CommandError {
    message: String,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Retry,
    Permanent,
    BadPayload,
}

impl CommandError {
    /// An error worth retrying (while attempts are left).
    pub fn msg(message: impl fmt::Display) -> Self {
        CommandError {
            message: message.to_string(),
            kind: Kind::Retry,
        }
    }

    /// An error that retrying cannot fix: the job fails at once.
    pub fn permanent(message: impl fmt::Display) -> Self {
        CommandError {
            message: message.to_string(),
            kind: Kind::Permanent,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the job fails at once instead of being retried.
    pub fn is_permanent(&self) -> bool {
        self.kind != Kind::Retry
    }

    pub(crate) fn into_failure(self) -> Failure {
        let message = cap_message(self.message);
        match self.kind {
            Kind::BadPayload => Failure::BadPayload { message },
            Kind::Retry | Kind::Permanent => Failure::Error { message },
        }
    }
}

impl fmt::Debug for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandError")
            .field("message", &self.message)
            .field("kind", &self.kind)
            .finish()
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for CommandError {
    fn from(e: E) -> Self {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        CommandError::msg(message)
    }
}

/// Why an attempt (and, if it was the last, the job) failed. Stored with a failed job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Failure {
    /// The command returned an error.
    Error {
        /// Its message.
        message: String,
    },
    /// The command panicked.
    Panicked {
        /// The panic message.
        message: String,
    },
    /// The attempt ran past the job's timeout and was cancelled.
    TimedOut {
        /// The timeout.
        #[serde(with = "sync_core::duration::serde")]
        after: Duration,
    },
    /// The payload did not deserialise into what the command expects.
    BadPayload {
        /// What serde said.
        message: String,
    },
    /// The worker running the attempt died or lost its claim.
    WorkerLost,
    /// The task handle shut down before the job could run.
    ShutDown,
    /// The command's output was larger than [`MAX_OUTPUT_BYTES`](crate::MAX_OUTPUT_BYTES)
    /// (bytes of JSON). Not retried.
    OutputTooLarge {
        /// The output's size.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

impl Failure {
    /// Whether another attempt may succeed: not for a bad payload or a permanent error.
    pub(crate) fn retryable(&self, permanent: bool) -> bool {
        !permanent
            && !matches!(
                self,
                Failure::BadPayload { .. } | Failure::ShutDown | Failure::OutputTooLarge { .. }
            )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Error { message } => write!(f, "error: {message}"),
            Failure::Panicked { message } => write!(f, "panicked: {message}"),
            Failure::TimedOut { after } => write!(f, "timed out after {after:?}"),
            Failure::BadPayload { message } => write!(f, "bad payload: {message}"),
            Failure::WorkerLost => f.write_str("the worker running it was lost"),
            Failure::ShutDown => f.write_str("the task handle shut down"),
            Failure::OutputTooLarge { size, limit } => write!(
                f,
                "the output is {size} bytes of JSON, above the limit of {limit} bytes"
            ),
        }
    }
}

/// Cuts a failure message to [`MAX_MESSAGE_BYTES`](crate::MAX_MESSAGE_BYTES) at a character
/// boundary, saying how much was cut: a failure is stored with its job, so it must stay small.
pub(crate) fn cap_message(mut message: String) -> String {
    let max = crate::MAX_MESSAGE_BYTES;
    if message.len() <= max {
        return message;
    }
    let total = message.len();
    // Room for the note.
    let mut end = max - 40;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push_str(&format!("… ({} more bytes cut)", total - end));
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_at_a_char_boundary() {
        assert_eq!(cap_message("short".into()), "short");
        for s in ["x".repeat(10_000), "é".repeat(5_000), "🚀".repeat(3_000)] {
            let cut = cap_message(s.clone());
            assert!(cut.len() <= crate::MAX_MESSAGE_BYTES, "{}", cut.len());
            assert!(cut.contains("more bytes cut"));
            assert!(s.starts_with(cut.split('…').next().unwrap()));
        }
    }
}
