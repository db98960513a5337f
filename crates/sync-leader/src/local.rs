//! The in-process backend: a thin layer over [`sync_core::local_queue`], whose per-group state
//! is the observers.

use std::time::Instant;

use futures::future::BoxFuture;
use futures::FutureExt;
use sync_core::local_queue::{Hold, Holder, LocalQueue, WaitError, Watch};
use sync_core::signal::LossReason;
use tokio::sync::mpsc;

use crate::{
    check_group, ElectOptions, Elected, Error, Leader, LeaderInfo, LeaderStream, RawElected, Result,
};

/// Elections among the tasks of one process. Cheap to clone: clones share the groups.
///
/// Candidates are elected first come, first served; terms come from one counter, so they
/// strictly increase from one leader of a group to the next; a group with no leader, no
/// candidate and no observer takes no memory (it is forgotten as soon as the last of them goes;
/// see [`sync_core::local_queue`]).
///
/// ```
/// use sync_leader::{ElectOptions, Leader, LocalLeader, LossReason};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let election = LocalLeader::new();
/// let e = election.elect("a", ElectOptions::new().with_group("g")).await?;
/// assert_eq!(election.status("g").leader.map(|l| l.id), Some("a".to_owned()));
/// assert!(election.revoke("g")); // as an administrator would
/// assert_eq!(e.revoked().await, LossReason::Revoked);
/// assert!(election.status("g").leader.is_none());
/// # Ok::<(), sync_leader::Error>(()) }).unwrap();
/// ```
#[derive(Clone, Default)]
pub struct LocalLeader {
    queue: Groups,
}

type Groups = LocalQueue<Candidate, Observers>;

impl std::fmt::Debug for LocalLeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLeader")
            .field("groups", &self.queue.names())
            .finish()
    }
}

/// What [`LocalLeader::status`] reports about one group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupStatus {
    /// Who leads, if anyone.
    pub leader: Option<LeaderInfo>,
    /// How many candidates wait behind the leader.
    pub waiting: usize,
}

/// What a candidate brings to the queue.
struct Candidate {
    id: String,
    value: String,
}

fn info(holder: &Holder<Candidate>) -> LeaderInfo {
    let c = holder.claim();
    LeaderInfo::new(c.id.clone(), holder.token(), c.value.clone())
}

/// The observers of one group, and what they were last told.
#[derive(Default)]
struct Observers {
    senders: Vec<mpsc::UnboundedSender<Option<LeaderInfo>>>,
    reported: Option<LeaderInfo>,
}

impl Watch<Candidate> for Observers {
    /// Tells the observers if who leads (or what it proclaimed) changed.
    fn changed(&mut self, holder: Option<&Holder<Candidate>>) {
        let now = holder.map(info);
        if now != self.reported {
            self.senders.retain(|tx| tx.send(now.clone()).is_ok());
            self.reported = now;
        }
    }

    fn in_use(&mut self) -> bool {
        self.senders.retain(|tx| !tx.is_closed());
        !self.senders.is_empty()
    }
}

impl LocalLeader {
    /// A new set of empty groups.
    pub fn new() -> Self {
        Self::default()
    }

    /// Who leads `group` and how many candidates wait.
    pub fn status(&self, group: &str) -> GroupStatus {
        self.queue.inspect(group, |holder, waiting| GroupStatus {
            leader: holder.map(info),
            waiting,
        })
    }

    /// Takes the office away from the leader of `group`, as an administrator would: its
    /// [`Elected::revoked`] fires with [`LossReason::Revoked`] and the next candidate is elected.
    /// Returns whether somebody led.
    pub fn revoke(&self, group: &str) -> bool {
        let revoked = self.queue.revoke(group);
        if revoked {
            tracing::info!(%group, "leadership revoked");
        }
        revoked
    }

    async fn elect_inner(&self, id: &str, options: ElectOptions) -> Result<Elected> {
        options.validate(id)?;
        let group = options.group();
        let started = Instant::now();
        let claim = Candidate {
            id: id.to_owned(),
            value: options.value().to_owned(),
        };
        let (hold, signal) = self
            .queue
            .acquire(group, claim, options.max_wait())
            .await
            .map_err(|e| match e {
                WaitError::Timeout { waited } => Error::Timeout {
                    group: group.to_owned(),
                    candidate: id.to_owned(),
                    waited,
                },
                _ => Error::Lost {
                    group: group.to_owned(),
                    candidate: id.to_owned(),
                    reason: LossReason::Shutdown,
                },
            })?;
        tracing::debug!(%group, %id, term = hold.token(), waited = ?started.elapsed(), "elected");
        Ok(Elected::new(
            group,
            id,
            hold.token(),
            None,
            signal,
            Box::new(LocalRawElected(hold)),
        ))
    }
}

/// Forgets a group that only this (dropped) observer kept alive.
struct ObserverGuard {
    queue: sync_core::local_queue::WeakLocalQueue<Candidate, Observers>,
    group: String,
}

impl Drop for ObserverGuard {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.upgrade() {
            queue.tidy(&self.group);
        }
    }
}

/// The local backend's office: its hold in the queue.
#[derive(Debug)]
struct LocalRawElected(Hold<Candidate, Observers>);

impl RawElected for LocalRawElected {
    fn resign(self: Box<Self>) -> BoxFuture<'static, Result<bool>> {
        futures::future::ready(Ok(self.0.release())).boxed()
    }

    fn proclaim(&self, value: String) -> BoxFuture<'_, Result<bool>> {
        futures::future::ready(Ok(self.0.update(|c| c.value = value))).boxed()
    }
}

impl Leader for LocalLeader {
    fn elect<'a>(
        &'a self,
        candidate_id: &'a str,
        options: ElectOptions,
    ) -> BoxFuture<'a, Result<Elected>> {
        crate::elected::traced("local", options, |o| self.elect_inner(candidate_id, o)).boxed()
    }

    fn leader<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<Option<LeaderInfo>>> {
        let r = check_group(group).map(|()| self.status(group).leader);
        futures::future::ready(r).boxed()
    }

    fn observe<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<LeaderStream>> {
        let r = check_group(group).map(|()| {
            let (tx, rx) = mpsc::unbounded_channel();
            self.queue.with_watch(group, |observers, holder| {
                // The current state first; `changed` keeps `reported` equal to it.
                let _ = tx.send(holder.map(info));
                observers.senders.push(tx);
            });
            let guard = ObserverGuard {
                queue: self.queue.downgrade(),
                group: group.to_owned(),
            };
            // The receiver is dropped before the guard, which then finds its sender closed.
            LeaderStream::new(futures::stream::unfold(
                (rx, guard),
                |(mut rx, guard)| async move { rx.recv().await.map(|item| (item, (rx, guard))) },
            ))
        });
        futures::future::ready(r).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn forgotten_groups_take_no_memory() {
        let l = LocalLeader::new();
        let mut o = l.observe("watched").await.unwrap();
        assert_eq!(o.next().await, Some(None));
        let e = l
            .elect("a", ElectOptions::new().with_group("g"))
            .await
            .unwrap();
        assert_eq!(l.queue.names(), 2);
        drop(o);
        assert_eq!(l.queue.names(), 1, "a dropped observer keeps its group");
        e.resign().await.unwrap();
        assert_eq!(l.queue.names(), 0);
        let e = l
            .elect("b", ElectOptions::new().with_group("g"))
            .now_or_never()
            .expect("a free group elects at once")
            .unwrap();
        drop(e);
        assert_eq!(l.queue.names(), 0, "a dropped office keeps its group");
    }
}
