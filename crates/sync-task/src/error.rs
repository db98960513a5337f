use std::time::Duration;

use sync_core::name::NameError;

use crate::{Failure, JobId};

/// Result of task operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong with a command or a job.
///
/// A job that ran and failed for good is reported by the variant of its last attempt's failure
/// ([`Failed`](Error::Failed), [`Panicked`](Error::Panicked), [`TimedOut`](Error::TimedOut),
/// [`BadPayload`](Error::BadPayload), [`WorkerLost`](Error::WorkerLost)); each names the
/// command, the job and the number of attempts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A command name or idempotency key is not acceptable.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        /// `"command name"` or `"idempotency key"`.
        what: &'static str,
        /// The name, shortened if long.
        name: String,
        /// Why.
        #[source]
        reason: NameError,
    },
    /// The options of a job or of a task handle are not acceptable (zero attempts, a zero pool,
    /// a retention below one second, …).
    #[error("invalid options for command {command:?}: {reason}")]
    InvalidOptions {
        /// The command (empty for the options of a task handle).
        command: String,
        /// Why.
        reason: String,
    },
    /// No handler is registered for the command (etcd: no live worker registered it), so
    /// nothing would ever run the job.
    #[error("unknown command {command:?}: no worker has registered it; register it first (or let the job wait with Job::with_wait_for_worker)")]
    UnknownCommand {
        /// The command.
        command: String,
    },
    /// The payload could not be serialised at submission, or the command could not
    /// deserialise it (the job then fails at once, without retries).
    #[error("bad payload for command {command:?}{}: {reason}", job_suffix(.job))]
    BadPayload {
        /// The command.
        command: String,
        /// The job, if it was submitted.
        job: Option<JobId>,
        /// What serde said.
        reason: String,
    },
    /// The command returned an error on its last attempt.
    #[error("job {job} of command {command:?} failed after {attempts} attempt(s): {message}")]
    Failed {
        /// The command.
        command: String,
        /// The job.
        job: JobId,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        message: String,
    },
    /// The command panicked on its last attempt. The pool survives a panicking command.
    #[error("job {job} of command {command:?} panicked on attempt {attempts}: {message}")]
    Panicked {
        /// The command.
        command: String,
        /// The job.
        job: JobId,
        /// Attempts made.
        attempts: u32,
        /// The panic message.
        message: String,
    },
    /// The last attempt ran past the job's timeout and was cancelled.
    #[error("job {job} of command {command:?} timed out after {after:?} on attempt {attempts}")]
    TimedOut {
        /// The command.
        command: String,
        /// The job.
        job: JobId,
        /// Attempts made.
        attempts: u32,
        /// The job's timeout.
        after: Duration,
    },
    /// The worker running the last attempt died or lost its claim (etcd), and no attempt was
    /// left to run it again.
    #[error("job {job} of command {command:?} failed: the worker running attempt {attempts} (the last) was lost; allow more attempts")]
    WorkerLost {
        /// The command.
        command: String,
        /// The job.
        job: JobId,
        /// Attempts made.
        attempts: u32,
    },
    /// The task handle was shut down (before the call, or while the job waited to run here).
    #[error("task handle shut down{}", command_suffix(.command))]
    ShutDown {
        /// The command concerned, if any.
        command: Option<String>,
    },
    /// No such job: it never existed, or it finished more than its retention ago and was
    /// dropped.
    #[error(
        "job {job} is unknown: it never existed, or it finished longer than its retention ago"
    )]
    NotFound {
        /// The job.
        job: JobId,
    },
    /// The backend could not be reached, or failed; the message names the endpoint.
    #[error("task backend failed for {subject}: {source}")]
    Backend {
        /// The command or job concerned (empty for connection errors).
        subject: String,
        /// Whether retrying later may succeed.
        retryable: bool,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
    /// A job's payload, or a command's output, is larger than every backend accepts
    /// ([`MAX_PAYLOAD_BYTES`](crate::MAX_PAYLOAD_BYTES),
    /// [`MAX_OUTPUT_BYTES`](crate::MAX_OUTPUT_BYTES), in bytes of JSON). Known before anything
    /// is sent, so reported at once; never retryable: the same data will not get smaller.
    #[error("the {what} of command {command:?}{} is {size} bytes of JSON, above the limit of {limit} bytes (sync_task::MAX_{}_BYTES); keep large data elsewhere (an object store) and pass a reference to it", job_suffix(.job), .what.to_ascii_uppercase())]
    TooLarge {
        /// `"payload"` or `"output"`.
        what: &'static str,
        /// The command.
        command: String,
        /// The job, for an output (the job failed).
        job: Option<JobId>,
        /// The size of its JSON serialisation, in bytes.
        size: usize,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The backend configuration (or URL) is not acceptable.
    #[error("invalid task backend configuration: {0}")]
    Config(String),
}

fn job_suffix(job: &Option<JobId>) -> String {
    job.as_ref()
        .map(|j| format!(" (job {j})"))
        .unwrap_or_default()
}

fn command_suffix(command: &Option<String>) -> String {
    command
        .as_ref()
        .map(|c| format!(" (command {c:?})"))
        .unwrap_or_default()
}

impl Error {
    /// Whether trying again later may succeed: the backend was unreachable, or the job failed
    /// for a reason that is not its input (an error, a panic, a timeout, a lost worker).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Backend { retryable, .. } => *retryable,
            Error::Failed { .. }
            | Error::Panicked { .. }
            | Error::TimedOut { .. }
            | Error::WorkerLost { .. } => true,
            _ => false,
        }
    }

    /// The job this error is about, if any.
    pub fn job(&self) -> Option<&JobId> {
        match self {
            Error::Failed { job, .. }
            | Error::Panicked { job, .. }
            | Error::TimedOut { job, .. }
            | Error::WorkerLost { job, .. }
            | Error::NotFound { job } => Some(job),
            Error::BadPayload { job, .. } | Error::TooLarge { job, .. } => job.as_ref(),
            _ => None,
        }
    }

    pub(crate) fn invalid_name(what: &'static str, name: &str, reason: NameError) -> Self {
        Error::InvalidName {
            what,
            name: sync_core::name::display_name(name),
            reason,
        }
    }

    pub(crate) fn options(command: &str, reason: impl Into<String>) -> Self {
        Error::InvalidOptions {
            command: sync_core::name::display_name(command),
            reason: reason.into(),
        }
    }

    pub(crate) fn shut_down(command: &str) -> Self {
        Error::ShutDown {
            command: Some(command.to_owned()),
        }
    }

    /// The error that reports a job's final failure.
    pub(crate) fn from_failure(
        command: &str,
        job: &JobId,
        attempts: u32,
        failure: Failure,
    ) -> Self {
        let (command, job) = (command.to_owned(), job.clone());
        match failure {
            Failure::Error { message } => Error::Failed {
                command,
                job,
                attempts,
                message,
            },
            Failure::Panicked { message } => Error::Panicked {
                command,
                job,
                attempts,
                message,
            },
            Failure::TimedOut { after } => Error::TimedOut {
                command,
                job,
                attempts,
                after,
            },
            Failure::BadPayload { message } => Error::BadPayload {
                command,
                job: Some(job),
                reason: message,
            },
            Failure::WorkerLost => Error::WorkerLost {
                command,
                job,
                attempts,
            },
            Failure::ShutDown => Error::ShutDown {
                command: Some(command),
            },
            Failure::OutputTooLarge { size, limit } => Error::TooLarge {
                what: "output",
                command,
                job: Some(job),
                size: usize::try_from(size).unwrap_or(usize::MAX),
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
            },
        }
    }

    #[cfg(feature = "etcd")]
    pub(crate) fn backend(subject: &str, e: sync_etcd::Error) -> Self {
        match e {
            sync_etcd::Error::InvalidConfig(m) => Error::Config(m),
            e => Error::Backend {
                subject: subject.to_owned(),
                retryable: e.is_retryable(),
                source: Box::new(e),
            },
        }
    }
}
