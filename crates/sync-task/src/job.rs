use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, Failure, Result, Task};

/// A job's id: short, printable, unique per backend. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(Arc<str>);

impl Serialize for JobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d).map(JobId::from)
    }
}

impl JobId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `s` can be a job id: 1 to 64 characters of `[0-9A-Za-z_-]`.
    pub(crate) fn is_well_formed(&self) -> bool {
        !self.0.is_empty()
            && self.0.len() <= 64
            && self
                .0
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for JobId {
    fn from(s: String) -> Self {
        JobId(s.into())
    }
}

impl From<&str> for JobId {
    fn from(s: &str) -> Self {
        JobId(s.into())
    }
}

/// Where a job is in its life: pending (waiting for a worker, or for its retry time), running,
/// or finished (succeeded or failed). See `docs/task.md`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum JobStatus {
    /// Waiting to be run (again).
    Pending {
        /// Attempts started so far.
        attempts: u32,
        /// Not run before this time (a retry's backoff), if set.
        not_before: Option<SystemTime>,
        /// The failure of the previous attempt, if any.
        last_failure: Option<Failure>,
    },
    /// An attempt is running.
    Running {
        /// Which attempt (from 1).
        attempt: u32,
        /// Who runs it (etcd: the worker's id; local: `local`).
        worker: String,
    },
    /// Finished with an output.
    Succeeded {
        /// Attempts it took.
        attempts: u32,
        /// The output.
        output: Value,
    },
    /// Failed for good.
    Failed {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's failure.
        failure: Failure,
    },
}

impl JobStatus {
    /// Whether the job finished (succeeded or failed).
    pub fn is_finished(&self) -> bool {
        matches!(self, JobStatus::Succeeded { .. } | JobStatus::Failed { .. })
    }

    /// Attempts started so far.
    pub fn attempts(&self) -> u32 {
        match self {
            JobStatus::Pending { attempts, .. }
            | JobStatus::Succeeded { attempts, .. }
            | JobStatus::Failed { attempts, .. } => *attempts,
            JobStatus::Running { attempt, .. } => *attempt,
        }
    }

    /// The outcome of a finished job: its output, or the typed error for its failure.
    pub(crate) fn outcome(self, command: &str, job: &JobId) -> Option<Result<Value>> {
        match self {
            JobStatus::Succeeded { output, .. } => Some(Ok(output)),
            JobStatus::Failed { attempts, failure } => {
                Some(Err(Error::from_failure(command, job, attempts, failure)))
            }
            _ => None,
        }
    }
}

/// A submitted job: await its outcome with [`wait`](JobHandle::wait), or ask where it is with
/// [`status`](JobHandle::status). Dropping the handle does not cancel the job.
///
/// ```
/// use sync_task::{Command, Job, JobStatus, LocalTask, Task};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let task = LocalTask::default();
/// task.register(Command::typed("len", |s: String| async move { Ok(s.len()) })).await?;
/// let job = task.submit(Job::new("len", "hello")).await?;
/// assert_eq!(job.wait_as::<usize>().await?, 5);
/// assert!(matches!(job.status().await?, JobStatus::Succeeded { attempts: 1, .. }));
/// // Later, from the id alone:
/// let id = job.id().clone();
/// assert!(task.status(&id).await?.is_finished());
/// # Ok::<(), sync_task::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct JobHandle {
    id: JobId,
    command: String,
    task: Arc<dyn Task>,
}

impl fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobHandle")
            .field("id", &self.id)
            .field("command", &self.command)
            .finish()
    }
}

impl JobHandle {
    /// Assembles a handle; for backends.
    pub fn new(id: JobId, command: impl Into<String>, task: Arc<dyn Task>) -> Self {
        JobHandle {
            id,
            command: command.into(),
            task,
        }
    }

    /// The job's id: pass it around, and ask [`Task::status`] or [`Task::wait`] later.
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// The command.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Waits for the job to finish: its output, or the typed error of its last attempt.
    /// Cancel-safe: dropping the future leaves the job alone.
    pub async fn wait(&self) -> Result<Value> {
        self.task.wait(&self.id).await
    }

    /// [`wait`](JobHandle::wait), deserialising the output into `T`.
    pub async fn wait_as<T: DeserializeOwned>(&self) -> Result<T> {
        let v = self.wait().await?;
        T::deserialize(v).map_err(|e| Error::BadPayload {
            command: self.command.clone(),
            job: Some(self.id.clone()),
            reason: format!("the job's output does not deserialise into the type asked for: {e}"),
        })
    }

    /// Where the job is now.
    pub async fn status(&self) -> Result<JobStatus> {
        self.task.status(&self.id).await
    }
}
