#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(clippy::print_stdout, clippy::print_stderr)]

mod elected;
mod error;
mod group;
mod local;
mod options;

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

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::stream::{BoxStream, Stream};
use serde::{Deserialize, Serialize};

pub use elected::{Elected, RawElected};
pub use error::{Error, Result};
pub use group::Group;
pub use local::{GroupStatus, LocalLeader};
pub use options::{ElectOptions, DEFAULT_GROUP};
pub use sync_core::name::MAX_NAME_LEN;
pub use sync_core::signal::{LossReason, LossSignal};

#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub use etcd::EtcdLeader;
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub use sync_etcd::{EtcdConfig, EtcdConnection, Session, TlsConfig};

/// Who leads a group: the candidate's id, its term, and the value it last proclaimed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LeaderInfo {
    /// The id the leader campaigned with.
    pub id: String,
    /// Its term: the fencing number of this leadership (see [`Elected::term`]).
    pub term: u64,
    /// What it proclaimed last ([`Elected::proclaim`]); at first the options' value, by default
    /// empty.
    pub value: String,
}

impl LeaderInfo {
    /// Assembles the description of a leadership; for backends.
    pub fn new(id: impl Into<String>, term: u64, value: impl Into<String>) -> Self {
        LeaderInfo {
            id: id.into(),
            term,
            value: value.into(),
        }
    }
}

impl fmt::Display for LeaderInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (term {})", self.id, self.term)
    }
}

/// The changes of who leads one group, from [`Leader::observe`].
///
/// The first item is the state when observing began; then one item per change: a new leader, a
/// new proclaimed value, or `None` when nobody leads any more. Consecutive items always differ.
/// The stream does not end while its backend lives; during an etcd outage it waits, and resumes
/// without missing a change when the cluster is back (unless etcd compacted the changes meanwhile:
/// then it reports the state it finds).
pub struct LeaderStream {
    inner: BoxStream<'static, Option<LeaderInfo>>,
}

impl LeaderStream {
    /// Wraps a backend's stream of states.
    pub fn new(stream: impl Stream<Item = Option<LeaderInfo>> + Send + 'static) -> Self {
        LeaderStream {
            inner: Box::pin(stream),
        }
    }
}

impl fmt::Debug for LeaderStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LeaderStream")
    }
}

impl Stream for LeaderStream {
    type Item = Option<LeaderInfo>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Leader election among every user of the same backend: tasks of one process
/// ([`LocalLeader`]) or processes on many machines (`EtcdLeader`, feature `etcd`).
///
/// Candidates campaign in a group ([`ElectOptions::with_group`]); the first to campaign leads,
/// the others queue in order. The trait is dyn-compatible, so `Arc<dyn Leader>` picks a backend at
/// run time, and generic code can take `impl Leader`.
///
/// ```
/// use std::sync::Arc;
/// use futures::StreamExt;
/// use sync_leader::{ElectOptions, Leader, LocalLeader};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let election: Arc<dyn Leader> = Arc::new(LocalLeader::new());
/// let mut changes = election.observe("jobs").await?;
/// assert_eq!(changes.next().await, Some(None)); // nobody leads yet
///
/// let elected = election.elect("a", ElectOptions::new().with_group("jobs")).await?;
/// let now = changes.next().await.unwrap().unwrap();
/// assert_eq!((now.id.as_str(), now.term), ("a", elected.term()));
/// assert_eq!(election.leader("jobs").await?, Some(now));
///
/// elected.resign().await?;
/// assert_eq!(changes.next().await, Some(None));
/// # Ok::<(), sync_leader::Error>(()) }).unwrap();
/// ```
pub trait Leader: Send + Sync + fmt::Debug {
    /// Campaigns as `candidate_id` in the options' group and returns once elected (first come,
    /// first served). Fails with [`Error::Timeout`] after the options' maximum wait. Cancel-safe:
    /// dropping the future leaves no candidacy behind.
    ///
    /// Ids need not be unique: two campaigns with one id are two candidates, one after the other.
    fn elect<'a>(
        &'a self,
        candidate_id: &'a str,
        options: ElectOptions,
    ) -> BoxFuture<'a, Result<Elected>>;

    /// Who leads `group` now, if anyone.
    fn leader<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<Option<LeaderInfo>>>;

    /// Follows who leads `group`: the current state, then every change, including `None`
    /// ("nobody leads now"). See [`LeaderStream`].
    fn observe<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<LeaderStream>>;
}

impl<L: Leader + ?Sized> Leader for Arc<L> {
    fn elect<'a>(&'a self, id: &'a str, o: ElectOptions) -> BoxFuture<'a, Result<Elected>> {
        (**self).elect(id, o)
    }
    fn leader<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<Option<LeaderInfo>>> {
        (**self).leader(group)
    }
    fn observe<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<LeaderStream>> {
        (**self).observe(group)
    }
}

impl<L: Leader + ?Sized> Leader for Box<L> {
    fn elect<'a>(&'a self, id: &'a str, o: ElectOptions) -> BoxFuture<'a, Result<Elected>> {
        (**self).elect(id, o)
    }
    fn leader<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<Option<LeaderInfo>>> {
        (**self).leader(group)
    }
    fn observe<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<LeaderStream>> {
        (**self).observe(group)
    }
}

/// Conveniences over any [`Leader`].
pub trait LeaderExt: Leader {
    /// Campaigns as `candidate_id`, runs `work` with the term once elected, then resigns; the
    /// work's output is returned. If the office is lost meanwhile, the work is cancelled
    /// (dropped) and [`Error::Lost`] returned.
    ///
    /// ```
    /// use sync_leader::{ElectOptions, LeaderExt, LocalLeader};
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let election = LocalLeader::new();
    /// let term = election.lead("me", ElectOptions::new(), |term| async move { term }).await?;
    /// assert!(term > 0);
    /// # Ok::<(), sync_leader::Error>(()) }).unwrap();
    /// ```
    fn lead<'a, F, Fut, T>(
        &'a self,
        candidate_id: &'a str,
        options: ElectOptions,
        work: F,
    ) -> impl std::future::Future<Output = Result<T>> + Send + 'a
    where
        F: FnOnce(u64) -> Fut + Send + 'a,
        Fut: std::future::Future<Output = T> + Send + 'a,
        T: Send + 'a,
    {
        async move {
            let elected = self.elect(candidate_id, options).await?;
            let out = tokio::select! {
                out = work(elected.term()) => out,
                reason = elected.revoked() => {
                    return Err(Error::Lost {
                        group: elected.group().to_owned(),
                        candidate: candidate_id.to_owned(),
                        reason,
                    });
                }
            };
            elected.resign().await?;
            Ok(out)
        }
    }
}

impl<L: Leader + ?Sized> LeaderExt for L {}

/// Opens a leader-election backend from a URL: `local` (in-process) or
/// `etcd://host:port,…/prefix?ttl=10s` (feature `etcd`).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let election = sync_leader::open("local").await?;
/// let e = election.elect("me", Default::default()).await?;
/// e.resign().await?;
/// assert!(sync_leader::open("zookeeper://x").await.is_err());
/// # Ok::<(), sync_leader::Error>(()) }).unwrap();
/// ```
pub async fn open(url: &str) -> Result<Arc<dyn Leader>> {
    match sync_core::backend::Backend::from_url(url).map_err(|e| Error::Config(e.to_string()))? {
        sync_core::backend::Backend::Local => Ok(Arc::new(LocalLeader::new())),
        #[cfg(feature = "etcd")]
        sync_core::backend::Backend::Etcd(cfg) => Ok(Arc::new(EtcdLeader::connect(*cfg).await?)),
        #[allow(unreachable_patterns)]
        other => Err(Error::Config(format!(
            "the {} backend is not compiled into sync-leader; enable its `{}` feature",
            other.name(),
            other.name()
        ))),
    }
}

pub(crate) fn check_group(group: &str) -> Result<()> {
    sync_core::name::validate_name(group).map_err(|r| Error::invalid_name("group", group, r))
}

pub(crate) fn check_candidate(id: &str) -> Result<()> {
    sync_core::name::validate_name(id).map_err(|r| Error::invalid_name("candidate id", id, r))
}
