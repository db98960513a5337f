#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod command;
mod error;
mod exec;
mod job;
mod local;
mod options;
#[cfg(feature = "schedule")]
mod schedule;

#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
mod etcd;

#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;

/// For the conformance macro's expansion in other crates.
#[cfg(feature = "conformance")]
#[doc(hidden)]
pub use sync_core as __core;

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use command::{Command, CommandError, Failure, Input};
pub use error::{Error, Result};
pub use job::{JobHandle, JobId, JobStatus};
pub use local::LocalTask;
pub use options::{
    Backoff, Job, TaskOptions, MAX_BACKOFF, MAX_CLAIM_SPREAD, MAX_MESSAGE_BYTES, MAX_OUTPUT_BYTES,
    MAX_PAYLOAD_BYTES, MAX_POOL, MAX_RETENTION, MAX_TTL,
};
#[cfg(feature = "schedule")]
#[cfg_attr(docsrs, doc(cfg(feature = "schedule")))]
pub use schedule::{Schedule, ScheduleHandle, ScheduleStatus, Tick};
pub use serde_json::Value;
pub use sync_core::name::MAX_NAME_LEN;

#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub use etcd::EtcdTask;
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub use sync_etcd::{EtcdConfig, EtcdConnection, TlsConfig};

/// Runs named commands on a pool of workers: the tasks of this process ([`LocalTask`]) or
/// processes sharing an etcd cluster (`EtcdTask`, feature `etcd`).
///
/// A handle is both a submitter and (once it [`register`](Task::register)s commands) a worker.
/// Jobs are run at least once: a job may run again after an error (retries with backoff), a
/// timeout, or the loss of the worker running it; see `docs/task.md` for what can duplicate.
///
/// The trait is dyn-compatible, so `Arc<dyn Task>` picks a backend at run time, and generic
/// code can take `impl Task`.
///
/// ```
/// use std::sync::Arc;
/// use sync_task::{Command, Job, LocalTask, Task, TaskOptions};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let task: Arc<dyn Task> = Arc::new(LocalTask::new(TaskOptions::new().with_pool(10))?);
/// // The seed's shape: run a named command and get its result.
/// let v = task.run(Command::new("answer", |_| async { Ok(42) })).await?;
/// assert_eq!(v, 42);
/// // Workers register commands by name; anyone submits jobs with serde payloads.
/// task.register(Command::typed("greet", |name: String| async move { Ok(format!("hello {name}")) }))
///     .await?;
/// let job = task.submit(Job::new("greet", "ada")).await?;
/// assert_eq!(job.wait().await?, "hello ada");
/// # Ok::<(), sync_task::Error>(()) }).unwrap();
/// ```
pub trait Task: Send + Sync + std::fmt::Debug {
    /// Makes this handle run jobs of `command`'s name (etcd: claim them from the cluster),
    /// replacing an earlier command of that name. Fails with [`Error::InvalidName`] for a bad
    /// name and [`Error::ShutDown`] after [`shutdown`](Task::shutdown).
    fn register(&self, command: Command) -> BoxFuture<'_, Result<()>>;

    /// Submits a job and returns its handle at once. Fails with [`Error::UnknownCommand`] if no
    /// worker has registered the command (unless the job
    /// [waits for one](Job::with_wait_for_worker)); with an idempotency key that a live job
    /// already has, returns that job.
    fn submit(&self, job: Job) -> BoxFuture<'_, Result<JobHandle>>;

    /// Where the job `id` is now; [`Error::NotFound`] if it never existed or its outcome has
    /// passed its retention.
    fn status<'a>(&'a self, id: &'a JobId) -> BoxFuture<'a, Result<JobStatus>>;

    /// Waits for the job `id` to finish: its output, or the typed error of its last attempt.
    /// Cancel-safe: dropping the future leaves the job alone.
    fn wait<'a>(&'a self, id: &'a JobId) -> BoxFuture<'a, Result<serde_json::Value>>;

    /// The seed's `Run(Command)`: registers `command` (see [`register`](Task::register)), runs
    /// one job of it with no payload and the default [`Job`] options, and returns its output or
    /// error. On etcd the job may run on any worker that registered the same name.
    fn run(&self, command: Command) -> BoxFuture<'_, Result<serde_json::Value>> {
        async move {
            let name = command.name().to_owned();
            self.register(command).await?;
            self.submit(Job::new(name, ())).await?.wait().await
        }
        .boxed()
    }

    /// Shuts the handle down gracefully: it stops taking new jobs (and new calls, which fail
    /// with [`Error::ShutDown`]), lets running jobs finish within the
    /// [grace](TaskOptions::with_shutdown_grace), then cancels the rest (etcd: hands them back
    /// to other workers without using up an attempt).
    fn shutdown(&self) -> BoxFuture<'_, Result<()>>;
}

macro_rules! forward_task {
    ($t:ty) => {
        impl<T: Task + ?Sized> Task for $t {
            fn register(&self, command: Command) -> BoxFuture<'_, Result<()>> {
                (**self).register(command)
            }
            fn submit(&self, job: Job) -> BoxFuture<'_, Result<JobHandle>> {
                (**self).submit(job)
            }
            fn status<'a>(&'a self, id: &'a JobId) -> BoxFuture<'a, Result<JobStatus>> {
                (**self).status(id)
            }
            fn wait<'a>(&'a self, id: &'a JobId) -> BoxFuture<'a, Result<serde_json::Value>> {
                (**self).wait(id)
            }
            fn run(&self, command: Command) -> BoxFuture<'_, Result<serde_json::Value>> {
                (**self).run(command)
            }
            fn shutdown(&self) -> BoxFuture<'_, Result<()>> {
                (**self).shutdown()
            }
        }
    };
}

forward_task!(Arc<T>);
forward_task!(Box<T>);

/// Conveniences over any [`Task`].
pub trait TaskExt: Task {
    /// Submits a job of `command` with `payload` (default options) and waits for its output,
    /// deserialised into `T`.
    ///
    /// ```
    /// use sync_task::{Command, LocalTask, Task, TaskExt};
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let task = LocalTask::default();
    /// task.register(Command::typed("add", |(a, b): (i64, i64)| async move { Ok(a + b) })).await?;
    /// let sum: i64 = task.call("add", (2, 3)).await?;
    /// assert_eq!(sum, 5);
    /// # Ok::<(), sync_task::Error>(()) }).unwrap();
    /// ```
    fn call<'a, T, P>(
        &'a self,
        command: &'a str,
        payload: P,
    ) -> impl Future<Output = Result<T>> + Send + 'a
    where
        T: DeserializeOwned + 'a,
        P: Serialize,
    {
        let job = Job::new(command, payload);
        async move { self.submit(job).await?.wait_as().await }
    }
}

impl<T: Task + ?Sized> TaskExt for T {}

/// What a task handle did since it was made: `LocalTask::stats`, `EtcdTask::stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskStats {
    /// Jobs submitted through this handle.
    pub submitted: u64,
    /// Attempts started here.
    pub attempts: u64,
    /// Jobs that finished here with an output.
    pub succeeded: u64,
    /// Jobs that failed here for good.
    pub failed: u64,
    /// Attempts that failed here and were scheduled again.
    pub retried: u64,
    /// etcd: jobs claimed here.
    pub claims: u64,
    /// etcd: claim transactions that lost the race to another worker (the herd measure).
    pub claim_conflicts: u64,
    /// etcd: attempts whose claim was lost while they ran (their outcome was discarded; the
    /// job runs again elsewhere).
    pub lost: u64,
    /// etcd: running jobs handed back to other workers at shutdown.
    pub handed_back: u64,
}

/// Opens a task backend from a URL: `local` (in-process) or `etcd://host:port,…/prefix?ttl=10s`
/// (feature `etcd`).
///
/// ```
/// use sync_task::{Command, TaskOptions};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let task = sync_task::open("local", TaskOptions::new().with_pool(2)).await?;
/// assert_eq!(task.run(Command::new("one", |_| async { Ok(1) })).await?, 1);
/// assert!(sync_task::open("zookeeper://x", TaskOptions::new()).await.is_err());
/// # Ok::<(), sync_task::Error>(()) }).unwrap();
/// ```
pub async fn open(url: &str, options: TaskOptions) -> Result<Arc<dyn Task>> {
    match sync_core::backend::Backend::from_url(url).map_err(|e| Error::Config(e.to_string()))? {
        sync_core::backend::Backend::Local => Ok(Arc::new(LocalTask::new(options)?)),
        #[cfg(feature = "etcd")]
        sync_core::backend::Backend::Etcd(cfg) => {
            Ok(Arc::new(EtcdTask::connect(*cfg, options).await?))
        }
        #[allow(unreachable_patterns)]
        other => Err(Error::Config(format!(
            "the {} backend is not compiled into sync-task; enable its `{}` feature",
            other.name(),
            other.name()
        ))),
    }
}

pub(crate) fn check_name(what: &'static str, name: &str) -> Result<()> {
    sync_core::name::validate_name(name).map_err(|r| Error::invalid_name(what, name, r))
}
