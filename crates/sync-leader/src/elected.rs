use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use sync_core::signal::{LossReason, LossSignal};

use crate::{Error, Result};

/// The backend side of an [`Elected`]: what a backend implements to resign and proclaim.
///
/// Dropping a `RawElected` without calling [`resign`](RawElected::resign) must resign in the
/// background (best effort; the lease TTL is the safety net).
pub trait RawElected: Send + Sync + fmt::Debug {
    /// Resigns now. Returns `Ok(false)` if the office was no longer held (it was lost first), in
    /// which case nothing of anyone else's is touched.
    fn resign(self: Box<Self>) -> BoxFuture<'static, Result<bool>>;

    /// Replaces the value observers see, if the office is still held; `Ok(false)` otherwise.
    fn proclaim(&self, value: String) -> BoxFuture<'_, Result<bool>>;
}

/// The office of leader of one group, until [`resign`](Elected::resign), drop, or loss.
///
/// Act as the leader only while [`revoked`](Elected::revoked) has not fired, and pass
/// [`term`](Elected::term) along with every write so that the resource can refuse a deposed
/// leader that has not noticed yet.
///
/// ```
/// use sync_leader::{ElectOptions, Leader, LocalLeader, LossReason};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let election = LocalLeader::new();
/// let elected = election.elect("a", ElectOptions::new()).await?;
/// assert!(elected.is_leader());
/// let revoked = elected.revoked_signal(); // for the task doing the leader's work
/// let term = elected.term();
/// elected.resign().await?;
/// assert_eq!(revoked.fired().await, LossReason::Released);
/// let again = election.elect("b", ElectOptions::new()).await?;
/// assert!(again.term() > term);
/// # Ok::<(), sync_leader::Error>(()) }).unwrap();
/// ```
pub struct Elected {
    group: String,
    id: String,
    term: u64,
    ttl: Option<Duration>,
    signal: LossSignal,
    raw: Option<Box<dyn RawElected>>,
}

impl fmt::Debug for Elected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Elected")
            .field("group", &self.group)
            .field("id", &self.id)
            .field("term", &self.term)
            .field("ttl", &self.ttl)
            .field("revoked", &self.signal.reason())
            .finish()
    }
}

impl Elected {
    /// Assembles the handle; for backends.
    pub fn new(
        group: impl Into<String>,
        id: impl Into<String>,
        term: u64,
        ttl: Option<Duration>,
        signal: LossSignal,
        raw: Box<dyn RawElected>,
    ) -> Self {
        Elected {
            group: group.into(),
            id: id.into(),
            term,
            ttl,
            signal,
            raw: Some(raw),
        }
    }

    /// The group led.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The id this candidate campaigned with.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The term: a number that strictly increases from one leader of the group to the next
    /// (etcd: the create revision of the leader's key). Hand it to every resource the leader
    /// writes to; a resource that remembers the highest term it has seen can refuse a deposed
    /// leader still acting on a stale belief (see `docs/leader.md`).
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The TTL the backend granted (etcd may raise the one asked for); `None` for backends
    /// without one.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// Resolves when the office is lost, for any reason: resigned (through another handle on
    /// the signal), its lease expired or could not be renewed in time, or someone deleted it. It
    /// resolves before anyone else can be elected; stop acting as the leader at once.
    pub async fn revoked(&self) -> LossReason {
        self.signal.fired().await
    }

    /// Whether this candidate still leads (the office was not lost).
    pub fn is_leader(&self) -> bool {
        !self.signal.is_fired()
    }

    /// A cloneable handle on the revocation signal, to hand to the task doing the leader's work.
    /// It also fires (with [`LossReason::Released`]) when the leader resigns.
    pub fn revoked_signal(&self) -> LossSignal {
        self.signal.clone()
    }

    /// Replaces the value observers see as [`LeaderInfo::value`](crate::LeaderInfo::value) (an address, a status). Fails
    /// with [`Error::NotLeader`] if the office was lost.
    pub async fn proclaim(&self, value: impl Into<String>) -> Result<()> {
        let not_leader = || Error::NotLeader {
            group: self.group.clone(),
            candidate: self.id.clone(),
        };
        if self.signal.is_fired() {
            return Err(not_leader());
        }
        let raw = self.raw.as_ref().expect("only resign takes the raw handle");
        if raw.proclaim(value.into()).await? {
            Ok(())
        } else {
            Err(not_leader())
        }
    }

    /// Resigns now: the next candidate in line is elected at once. Fails with [`Error::Lost`]
    /// if the office had been lost before (nothing is touched then, least of all the next
    /// leader's office).
    pub async fn resign(mut self) -> Result<()> {
        let lost_before = self.signal.reason();
        let raw = self.raw.take().expect("an office is resigned once");
        let still_held = raw.resign().await?;
        tracing::debug!(group = %self.group, id = %self.id, term = self.term, "resigned");
        let lost = |reason| Error::Lost {
            group: self.group.clone(),
            candidate: self.id.clone(),
            reason,
        };
        match lost_before {
            Some(reason) => Err(lost(reason)),
            None if !still_held => Err(lost(self.signal.reason().unwrap_or(LossReason::Revoked))),
            None => Ok(()),
        }
    }
}

impl Drop for Elected {
    fn drop(&mut self) {
        if self.raw.is_some() {
            tracing::debug!(group = %self.group, id = %self.id, term = self.term, "elected handle dropped: resigning in the background");
        }
        // Dropping the raw handle resigns in the background.
    }
}

impl sync_core::telemetry::Grant for Elected {
    fn token(&self) -> u64 {
        self.term
    }

    fn signal(&self) -> &LossSignal {
        &self.signal
    }
}

/// Runs an election (`elect` given the options) in its span, recording the grant in the metrics
/// (`sync_is_leader` for the group) and naming the leadership on its signal, so that its loss
/// is reported with the group.
pub(crate) async fn traced<F, Fut>(
    backend: &'static str,
    options: crate::ElectOptions,
    elect: F,
) -> crate::Result<Elected>
where
    F: FnOnce(crate::ElectOptions) -> Fut,
    Fut: std::future::Future<Output = crate::Result<Elected>>,
{
    let group = options.group().to_owned();
    let ask = sync_core::telemetry::Ask {
        op: "elect",
        primitive: "leader",
        backend,
        name: &group,
    };
    sync_core::telemetry::acquire(ask, elect(options)).await
}
