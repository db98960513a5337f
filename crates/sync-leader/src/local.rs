//! The in-process backend.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use futures::future::BoxFuture;
use futures::FutureExt;
use sync_core::signal::{loss_signal, LossReason, LossSignal, LossTrigger};
use tokio::sync::{mpsc, oneshot};

use crate::{
    check_group, ElectOptions, Elected, Error, Leader, LeaderInfo, LeaderStream, RawElected, Result,
};

/// Elections among the tasks of one process. Cheap to clone: clones share the groups.
///
/// Candidates are elected first come, first served; terms come from one counter, so they
/// strictly increase from one leader of a group to the next; a group with no leader, no
/// candidate and no observer takes no memory.
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
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LocalLeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLeader")
            .field("groups", &self.shared.groups().len())
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

#[derive(Default)]
struct Shared {
    groups: Mutex<HashMap<String, GroupState>>,
    next_id: AtomicU64,
    terms: AtomicU64,
}

#[derive(Default)]
struct GroupState {
    office: Option<Office>,
    queue: VecDeque<Candidate>,
    observers: Vec<mpsc::UnboundedSender<Option<LeaderInfo>>>,
    /// What observers were last told.
    reported: Option<LeaderInfo>,
}

struct Office {
    cid: u64,
    info: LeaderInfo,
    trigger: LossTrigger,
}

struct Candidate {
    cid: u64,
    id: String,
    value: String,
    tx: oneshot::Sender<Grant>,
}

struct Grant {
    term: u64,
    signal: LossSignal,
}

impl GroupState {
    fn info(&self) -> Option<LeaderInfo> {
        self.office.as_ref().map(|o| o.info.clone())
    }

    /// Tells the observers if who leads (or what it proclaimed) changed.
    fn publish(&mut self) {
        let now = self.info();
        if now != self.reported {
            self.observers.retain(|tx| tx.send(now.clone()).is_ok());
            self.reported = now;
        }
    }

    fn is_idle(&mut self) -> bool {
        self.observers.retain(|tx| !tx.is_closed());
        self.office.is_none() && self.queue.is_empty() && self.observers.is_empty()
    }
}

impl Shared {
    fn groups(&self) -> MutexGuard<'_, HashMap<String, GroupState>> {
        // Every critical section leaves the map consistent, so a poisoned lock is still usable.
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes candidate `cid` the leader of `state`, returning its grant.
    fn install(&self, state: &mut GroupState, cid: u64, id: String, value: String) -> Grant {
        let term = self.terms.fetch_add(1, Ordering::Relaxed) + 1;
        let (trigger, signal) = loss_signal();
        state.office = Some(Office {
            cid,
            info: LeaderInfo::new(id, term, value),
            trigger,
        });
        Grant { term, signal }
    }

    /// Elects the first candidate still waiting.
    fn hand_over(&self, state: &mut GroupState) {
        debug_assert!(state.office.is_none());
        while let Some(c) = state.queue.pop_front() {
            let grant = self.install(state, c.cid, c.id, c.value);
            if c.tx.send(grant).is_ok() {
                return;
            }
            // That candidate went away between queuing and now: try the next.
            state.office = None;
        }
    }

    /// Ends `cid`'s office in `group` (any leader's if `None`) with `reason`, elects the next
    /// candidate, and tells observers. Returns whether the office was ended.
    fn end_office(&self, group: &str, cid: Option<u64>, reason: LossReason) -> bool {
        let mut groups = self.groups();
        let Some(state) = groups.get_mut(group) else {
            return false;
        };
        let matches = match (&state.office, cid) {
            (Some(o), Some(cid)) => o.cid == cid,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if matches {
            if let Some(o) = state.office.take() {
                o.trigger.fire(reason);
            }
            self.hand_over(state);
            state.publish();
        }
        if state.is_idle() {
            groups.remove(group);
        }
        matches
    }
}

impl LocalLeader {
    /// A new set of empty groups.
    pub fn new() -> Self {
        Self::default()
    }

    /// Who leads `group` and how many candidates wait.
    pub fn status(&self, group: &str) -> GroupStatus {
        let groups = self.shared.groups();
        groups.get(group).map_or(
            GroupStatus {
                leader: None,
                waiting: 0,
            },
            |s| GroupStatus {
                leader: s.info(),
                waiting: s.queue.len(),
            },
        )
    }

    /// Takes the office away from the leader of `group`, as an administrator would: its
    /// [`Elected::revoked`] fires with [`LossReason::Revoked`] and the next candidate is elected.
    /// Returns whether somebody led.
    pub fn revoke(&self, group: &str) -> bool {
        let revoked = self.shared.end_office(group, None, LossReason::Revoked);
        if revoked {
            tracing::info!(%group, "leadership revoked");
        }
        revoked
    }

    fn elected(&self, group: &str, id: &str, cid: u64, grant: Grant) -> Elected {
        Elected::new(
            group,
            id,
            grant.term,
            None,
            grant.signal,
            Box::new(LocalRawElected {
                shared: self.shared.clone(),
                group: group.to_owned(),
                cid,
                done: false,
            }),
        )
    }

    async fn elect_inner(&self, id: &str, options: ElectOptions) -> Result<Elected> {
        options.validate(id)?;
        let group = options.group();
        let cid = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let (tx, rx) = oneshot::channel();
        {
            let mut groups = self.shared.groups();
            let state = groups.entry(group.to_owned()).or_default();
            if state.office.is_none() && state.queue.is_empty() {
                let grant =
                    self.shared
                        .install(state, cid, id.to_owned(), options.value().to_owned());
                state.publish();
                drop(groups);
                tracing::debug!(%group, %id, term = grant.term, "elected");
                return Ok(self.elected(group, id, cid, grant));
            }
            state.queue.push_back(Candidate {
                cid,
                id: id.to_owned(),
                value: options.value().to_owned(),
                tx,
            });
        }
        let mut waiter = Waiter {
            shared: self.shared.clone(),
            group,
            cid,
            rx: Some(rx),
        };
        let rx = waiter.rx.as_mut().expect("set above");
        let grant = match options.max_wait() {
            Some(max) => match tokio::time::timeout(max, rx).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(Error::Timeout {
                        group: group.to_owned(),
                        candidate: id.to_owned(),
                        waited: started.elapsed(),
                    })
                }
            },
            None => rx.await,
        };
        waiter.rx = None;
        let grant = grant.map_err(|_| Error::Lost {
            group: group.to_owned(),
            candidate: id.to_owned(),
            reason: LossReason::Shutdown,
        })?;
        tracing::debug!(%group, %id, term = grant.term, waited = ?started.elapsed(), "elected");
        Ok(self.elected(group, id, cid, grant))
    }
}

/// A queued candidate; leaves the queue (or resigns an office that came too late) on drop.
struct Waiter<'a> {
    shared: Arc<Shared>,
    group: &'a str,
    cid: u64,
    rx: Option<oneshot::Receiver<Grant>>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if self.rx.is_none() {
            return;
        }
        let mut groups = self.shared.groups();
        let Some(state) = groups.get_mut(self.group) else {
            return;
        };
        let before = state.queue.len();
        state.queue.retain(|c| c.cid != self.cid);
        if state.queue.len() == before {
            // Not queued any more: we were elected but nobody will take the office.
            drop(groups);
            self.shared
                .end_office(self.group, Some(self.cid), LossReason::Released);
            return;
        }
        if state.is_idle() {
            groups.remove(self.group);
        }
    }
}

/// Forgets a group that only this (dropped) observer kept alive.
struct ObserverGuard {
    shared: Weak<Shared>,
    group: String,
}

impl Drop for ObserverGuard {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let mut groups = shared.groups();
        if groups.get_mut(&self.group).is_some_and(GroupState::is_idle) {
            groups.remove(&self.group);
        }
    }
}

struct LocalRawElected {
    shared: Arc<Shared>,
    group: String,
    cid: u64,
    done: bool,
}

impl std::fmt::Debug for LocalRawElected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRawElected")
            .field("group", &self.group)
            .finish()
    }
}

impl RawElected for LocalRawElected {
    fn resign(mut self: Box<Self>) -> BoxFuture<'static, Result<bool>> {
        self.done = true;
        let held = self
            .shared
            .end_office(&self.group, Some(self.cid), LossReason::Released);
        futures::future::ready(Ok(held)).boxed()
    }

    fn proclaim(&self, value: String) -> BoxFuture<'_, Result<bool>> {
        let mut groups = self.shared.groups();
        let held = match groups.get_mut(&self.group) {
            Some(state) => match state.office.as_mut() {
                Some(o) if o.cid == self.cid => {
                    o.info.value = value;
                    state.publish();
                    true
                }
                _ => false,
            },
            None => false,
        };
        futures::future::ready(Ok(held)).boxed()
    }
}

impl Drop for LocalRawElected {
    fn drop(&mut self) {
        if !self.done {
            self.shared
                .end_office(&self.group, Some(self.cid), LossReason::Released);
        }
    }
}

impl Leader for LocalLeader {
    fn elect<'a>(
        &'a self,
        candidate_id: &'a str,
        options: ElectOptions,
    ) -> BoxFuture<'a, Result<Elected>> {
        self.elect_inner(candidate_id, options).boxed()
    }

    fn leader<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<Option<LeaderInfo>>> {
        let r = check_group(group).map(|()| self.status(group).leader);
        futures::future::ready(r).boxed()
    }

    fn observe<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<LeaderStream>> {
        let r = check_group(group).map(|()| {
            let (tx, rx) = mpsc::unbounded_channel();
            let mut groups = self.shared.groups();
            let state = groups.entry(group.to_owned()).or_default();
            // The current state first; publish() keeps `reported` equal to it.
            let _ = tx.send(state.info());
            state.observers.push(tx);
            let guard = ObserverGuard {
                shared: Arc::downgrade(&self.shared),
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
        assert_eq!(l.shared.groups().len(), 2);
        drop(o);
        assert_eq!(
            l.shared.groups().len(),
            1,
            "a dropped observer keeps its group"
        );
        e.resign().await.unwrap();
        assert_eq!(l.shared.groups().len(), 0);
        let e = l
            .elect("b", ElectOptions::new().with_group("g"))
            .now_or_never()
            .expect("a free group elects at once")
            .unwrap();
        drop(e);
        assert_eq!(
            l.shared.groups().len(),
            0,
            "a dropped office keeps its group"
        );
    }
}
