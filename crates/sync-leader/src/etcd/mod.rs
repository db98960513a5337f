//! The etcd backend: the FIFO queue of sync-core under `<prefix>/election/<group>/`, one key per
//! candidate bound to a kept-alive lease; the leader is the key with the smallest create
//! revision, and its create revision is the term.
//!
//! See `docs/leader.md` for why one leader at a time holds and what the term protects against.

mod observe;

use futures::future::BoxFuture;
use futures::FutureExt;
use sync_etcd::{ContendError, Contender, EtcdConfig, EtcdConnection, Held, Session};
use tracing::Instrument;

use crate::{
    check_group, ElectOptions, Elected, Error, Leader, LeaderInfo, LeaderStream, RawElected, Result,
};

/// The key kind of elections: `<prefix>/election/<encoded group>/<candidate key>`.
const KIND: &str = "election";

/// Elections shared by every process connected to the same etcd cluster and key prefix.
///
/// Cheap to clone; clones share one connection, one lease per TTL and one watch. Two candidacies
/// in one process are two candidates, exactly like candidacies of two processes.
///
/// ```no_run
/// use sync_leader::{ElectOptions, EtcdConfig, EtcdLeader, Leader};
/// # async fn demo() -> sync_leader::Result<()> {
/// let cfg = EtcdConfig::new(["127.0.0.1:2379"]).with_prefix("myapp");
/// let election = EtcdLeader::connect(cfg).await?;
/// let elected = election.elect("node-1", ElectOptions::new().with_group("scheduler")).await?;
/// tokio::select! {
///     reason = elected.revoked() => eprintln!("lost the leadership: {reason}"),
///     _ = async { /* lead, passing elected.term() along */ } => elected.resign().await?,
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct EtcdLeader {
    queues: Contender,
}

/// A candidate key's value: the candidate id, a NUL (ids never contain one), the value.
pub(crate) fn encode_value(id: &str, value: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(id.len() + 1 + value.len());
    v.extend_from_slice(id.as_bytes());
    v.push(0);
    v.extend_from_slice(value.as_bytes());
    v
}

/// Reads a candidate key's value back; a value written by someone else is all id.
pub(crate) fn decode_value(raw: &[u8]) -> (String, String) {
    match raw.iter().position(|&b| b == 0) {
        Some(at) => (
            String::from_utf8_lossy(&raw[..at]).into_owned(),
            String::from_utf8_lossy(&raw[at + 1..]).into_owned(),
        ),
        None => (String::from_utf8_lossy(raw).into_owned(), String::new()),
    }
}

pub(crate) fn leader_info(raw_value: &[u8], create_revision: i64) -> LeaderInfo {
    let (id, value) = decode_value(raw_value);
    LeaderInfo::new(id, create_revision as u64, value)
}

impl EtcdLeader {
    /// Connects to etcd with `config`.
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        Ok(Self::new(
            EtcdConnection::connect(config)
                .await
                .map_err(Error::connect)?,
        ))
    }

    /// Uses an existing connection (shared with other primitives).
    pub fn new(connection: EtcdConnection) -> Self {
        EtcdLeader {
            queues: Contender::new(&connection, KIND),
        }
    }

    /// The same elections, with every candidacy bound to `session`'s lease: they all end when the
    /// session does (closed, or lost), and a per-election TTL is an [`Error::InvalidOptions`].
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use sync_leader::{ElectOptions, EtcdLeader, Leader};
    /// # async fn demo(election: EtcdLeader) -> Result<(), Box<dyn std::error::Error>> {
    /// let session = election.connection().session(Duration::from_secs(10)).await?;
    /// let elected = election.with_session(&session).elect("node-1", ElectOptions::new()).await?;
    /// session.close().await?; // the leadership ends with the session
    /// assert!(!elected.is_leader());
    /// # Ok(()) }
    /// ```
    pub fn with_session(&self, session: &Session) -> Self {
        EtcdLeader {
            queues: self.queues.in_session(session),
        }
    }

    /// The connection, to share with other primitives or start a session on.
    pub fn connection(&self) -> EtcdConnection {
        self.queues.connection()
    }

    async fn elect_inner(&self, id: &str, options: ElectOptions) -> Result<Elected> {
        options.validate(id)?;
        let group = options.group();
        let value = encode_value(id, options.value());
        let held = self
            .queues
            .contend(group, value, options.ttl(), options.max_wait())
            .await
            .map_err(|e| contend_error(group, id, e))?;
        let (term, ttl, signal) = (held.fencing_token(), held.ttl(), held.signal().clone());
        tracing::debug!(%group, %id, term, "elected");
        let raw = EtcdRawElected {
            held,
            group: group.to_owned(),
            id: id.to_owned(),
        };
        Ok(Elected::new(
            group,
            id,
            term,
            Some(ttl),
            signal,
            Box::new(raw),
        ))
    }

    async fn leader_inner(&self, group: &str) -> Result<Option<LeaderInfo>> {
        check_group(group)?;
        let head = self
            .queues
            .head(group)
            .await
            .map_err(|e| Error::backend(group, e))?;
        Ok(head.map(|(value, term)| leader_info(&value, term as i64)))
    }
}

fn contend_error(group: &str, id: &str, e: ContendError) -> Error {
    let (group, candidate) = (group.to_owned(), id.to_owned());
    match e {
        ContendError::Timeout { waited } => Error::Timeout {
            group,
            candidate,
            waited,
        },
        ContendError::Lost(reason) => Error::Lost {
            group,
            candidate,
            reason,
        },
        ContendError::Invalid(reason) => Error::InvalidOptions {
            group: sync_core::name::display_name(&group),
            reason,
        },
        ContendError::Etcd(e) => Error::backend(&group, e),
        other => Error::Backend {
            group,
            retryable: true,
            source: Box::new(other),
        },
    }
}

#[derive(Debug)]
struct EtcdRawElected {
    held: Held,
    group: String,
    id: String,
}

impl RawElected for EtcdRawElected {
    fn resign(self: Box<Self>) -> BoxFuture<'static, Result<bool>> {
        async move {
            let group = self.group;
            self.held
                .release()
                .await
                .map_err(|e| Error::backend(&group, e))
        }
        .boxed()
    }

    fn proclaim(&self, value: String) -> BoxFuture<'_, Result<bool>> {
        async move {
            self.held
                .set_value(encode_value(&self.id, &value))
                .await
                .map_err(|e| Error::backend(&self.group, e))
        }
        .boxed()
    }
}

impl Leader for EtcdLeader {
    fn elect<'a>(
        &'a self,
        candidate_id: &'a str,
        options: ElectOptions,
    ) -> BoxFuture<'a, Result<Elected>> {
        crate::elected::traced("etcd", options, |o| self.elect_inner(candidate_id, o)).boxed()
    }

    fn leader<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<Option<LeaderInfo>>> {
        self.leader_inner(group).boxed()
    }

    fn observe<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<LeaderStream>> {
        let span = sync_core::telemetry::span("observe", "etcd", group);
        async move {
            check_group(group)?;
            observe::observe(self.queues.client().clone(), self.queues.dir(group))
                .await
                .map_err(|e| Error::backend(group, e))
        }
        .instrument(span)
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_foreign_values_are_ids() {
        let raw = encode_value("node-1", "10.0.0.1:80\0x");
        assert_eq!(
            decode_value(&raw),
            ("node-1".to_owned(), "10.0.0.1:80\0x".to_owned())
        );
        assert_eq!(decode_value(b"plain"), ("plain".to_owned(), String::new()));
        assert_eq!(leader_info(&encode_value("a", ""), 42).term, 42);
    }
}
