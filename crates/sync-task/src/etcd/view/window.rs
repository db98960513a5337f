//! The window's state: which jobs the local worker tracks, which it may claim and from when
//! (rendezvous ranks, the claim spread, cooldowns), and where the next page starts. Pure data:
//! the view's task (`super::run`) feeds it watch events and pages.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sync_core::signal::{loss_signal, LossReason, LossSignal, LossTrigger};
use sync_etcd::{RangeChange, RangeKv, RangePage};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::super::records::{now_ms, Entry, JobRecord, Keys};

/// A job the local worker picked: claim it now.
#[derive(Debug)]
pub(crate) struct Pick {
    pub(crate) id: String,
    pub(crate) record: Arc<JobRecord>,
    pub(crate) mod_rev: i64,
}

/// What the dispatcher should do next.
#[derive(Debug)]
pub(crate) enum Next {
    Claim(Pick),
    /// Nothing claimable before this instant.
    At(Instant),
    /// Nothing claimable at all.
    Idle,
}

/// A tracked job.
pub(super) struct JobEntry {
    pub(super) record: Arc<JobRecord>,
    pub(super) mod_rev: i64,
    pub(super) create_rev: i64,
    pub(super) claimable_since: Instant,
    pub(super) cooldown_until: Option<Instant>,
    pub(super) ready_at: Option<Instant>,
    /// A claim of ours waited too long for the job's submit to release it: not claimed again
    /// while its hold is there.
    pub(super) await_hold: bool,
}

/// The window and what the worker needs to pick from it.
#[derive(Default)]
pub(super) struct State {
    /// The window: tracked jobs of our commands.
    pub(super) jobs: BTreeMap<String, JobEntry>,
    /// The tracked jobs without a claim: at most `cap`.
    pub(super) unclaimed: BTreeSet<String>,
    pub(super) claims: HashMap<String, i64>,
    /// Jobs whose submit has not returned yet (their hold key is there).
    pub(super) holds: HashSet<String>,
    /// Claims of ours on held jobs, waiting for the hold's end: (the claim's create revision,
    /// told whether the hold ended by a release, with our claim still standing).
    pub(super) hold_waiters: HashMap<String, (i64, oneshot::Sender<bool>)>,
    /// The revision of the last watch event (or snapshot) applied.
    pub(super) applied: i64,
    pub(super) workers: HashMap<String, BTreeSet<String>>,
    // The local worker.
    pub(super) me: String,
    pub(super) spread: Duration,
    /// Moving average of our claim transactions' round trip.
    pub(super) claim_latency: Duration,
    /// Grows when our claims lose races (the cluster or the watch lags), shrinks as they win.
    pub(super) penalty: f64,
    pub(super) commands: HashSet<String>,
    pub(super) ready: BTreeSet<(Instant, i64, String)>,
    pub(super) busy: HashSet<String>,
    pub(super) running: HashMap<String, (i64, LossTrigger)>,
    /// The most unclaimed jobs tracked.
    pub(super) cap: usize,
    /// Where the next page starts (a key of `q/jobs/`); `None`: at the beginning.
    pub(super) cursor: Option<Vec<u8>>,
    /// Every unclaimed job of our commands is tracked.
    pub(super) complete: bool,
    /// Since the current pass began, a job behind the cursor was left out.
    pub(super) dirty: bool,
}

/// FNV-1a over `job`, a separator and `worker`, then a finaliser (splitmix64): the same in
/// every process, whatever its Rust version.
fn score(job: &str, worker: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in job.bytes().chain([0xff]).chain(worker.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The local instant of a wall-clock time in ms since the epoch (now if it is past; far ahead,
/// never an overflow, if it is very far).
fn instant_of(ms: u64) -> Instant {
    let now = now_ms();
    let now_i = Instant::now();
    if ms <= now {
        now_i
    } else {
        crate::options::deadline_after(now_i, Duration::from_millis(ms - now))
    }
}

impl State {
    pub(super) fn new(me: String, spread: Duration, cap: usize) -> Self {
        State {
            me,
            spread,
            cap,
            ..State::default()
        }
    }

    /// Our rank among the live workers of `command` for job `id` (0: first in line).
    pub(super) fn rank(&self, id: &str, command: &str) -> u32 {
        let Some(ws) = self.workers.get(command) else {
            return 0;
        };
        let mine = (score(id, &self.me), self.me.as_str());
        let ahead = ws
            .iter()
            .filter(|w| **w != self.me && (score(id, w), w.as_str()) > mine)
            .count();
        u32::try_from(ahead).unwrap_or(u32::MAX)
    }

    /// The delay between ranks: the configured spread, but at least twice the time a claim
    /// takes to commit (so the worker ranked before us has had time to claim and for us to see
    /// it, even on a slow cluster). Zero turns ranking off.
    fn step(&self) -> Duration {
        if self.spread.is_zero() {
            Duration::ZERO
        } else {
            // At most MAX_CLAIM_SPREAD (10 s) × 16: no overflow.
            self.spread
                .max(self.claim_latency * 2)
                .mul_f64(self.penalty.clamp(1.0, 16.0))
        }
    }

    /// Notes how long a claim transaction took and whether it won.
    pub(crate) fn claim_took(&mut self, d: Duration, won: bool) {
        self.claim_latency = (self.claim_latency * 4 + d.min(Duration::from_secs(1))) / 5;
        self.penalty = if won {
            (self.penalty * 0.97).max(1.0)
        } else {
            (self.penalty.max(1.0) * 2.0).min(16.0)
        };
    }

    /// Recomputes whether and from when the local worker may claim job `id`.
    fn refresh(&mut self, id: &str) {
        let Some(e) = self.jobs.get(id) else { return };
        let old = e.ready_at.map(|at| (at, e.create_rev));
        let waits_for_hold = e.await_hold && self.holds.contains(id);
        let eligible = self.commands.contains(&e.record.command)
            && !self.claims.contains_key(id)
            && !self.busy.contains(id)
            && !waits_for_hold;
        let new = eligible.then(|| {
            let mut at = e.claimable_since.max(instant_of(e.record.not_before_ms));
            if let Some(c) = e.cooldown_until {
                at = at.max(c);
            }
            let wait = self
                .step()
                .checked_mul(self.rank(id, &e.record.command))
                .unwrap_or(Duration::MAX);
            crate::options::deadline_after(at, wait)
        });
        let create_rev = e.create_rev;
        if let Some((at, rev)) = old {
            self.ready.remove(&(at, rev, id.to_owned()));
        }
        if let Some(at) = new {
            self.ready.insert((at, create_rev, id.to_owned()));
        }
        if let Some(e) = self.jobs.get_mut(id) {
            e.ready_at = new;
        }
    }

    fn refresh_command(&mut self, command: &str) {
        let ids: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, e)| e.record.command == command)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.refresh(&id);
        }
    }

    /// Whether the window has room for another unclaimed job.
    fn has_room(&self) -> bool {
        self.unclaimed.len() < self.cap
    }

    /// A job of ours that exists was not taken into the window (`key` is its key).
    fn left_out(&mut self, key: &[u8]) {
        if self.complete {
            // A new pass from the beginning will find it.
            self.complete = false;
            self.cursor = None;
            self.dirty = false;
        } else if self.cursor.as_deref().is_some_and(|c| key < c) {
            self.dirty = true;
        }
        // Else it is ahead of the cursor: this pass will read it.
    }

    /// Takes a put of `q/jobs/<id>` (from the watch, or from a page) into the window. Returns
    /// false if it is a new unclaimed job of ours and the window is full (it was left out only
    /// if `leave_out`).
    fn put_job(&mut self, id: &str, kv: &RangeKv, leave_out: bool) -> bool {
        let record: JobRecord = match serde_json::from_slice(&kv.value) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "ignoring a job record that does not parse");
                return true;
            }
        };
        if !self.commands.contains(&record.command) {
            self.remove_job(id);
            return true;
        }
        let now = Instant::now();
        let unclaimed = !self.claims.contains_key(id);
        match self.jobs.get_mut(id) {
            Some(e) => {
                if kv.mod_revision <= e.mod_rev {
                    return true;
                }
                e.record = Arc::new(record);
                e.mod_rev = kv.mod_revision;
                if unclaimed {
                    e.claimable_since = now;
                }
            }
            None => {
                if unclaimed && !self.has_room() {
                    if leave_out {
                        self.left_out(&kv.key);
                    }
                    return false;
                }
                if unclaimed {
                    self.unclaimed.insert(id.to_owned());
                }
                self.jobs.insert(
                    id.to_owned(),
                    JobEntry {
                        record: Arc::new(record),
                        mod_rev: kv.mod_revision,
                        create_rev: kv.create_revision,
                        claimable_since: now,
                        cooldown_until: None,
                        ready_at: None,
                        await_hold: false,
                    },
                );
            }
        }
        self.refresh(id);
        true
    }

    fn remove_job(&mut self, id: &str) {
        if let Some(e) = self.jobs.remove(id) {
            self.unclaimed.remove(id);
            if let Some(at) = e.ready_at {
                self.ready.remove(&(at, e.create_rev, id.to_owned()));
            }
        }
    }

    /// Keeps at most `cap` unclaimed jobs: leaves out the newest (by key) beyond.
    pub(super) fn trim(&mut self, keys: &Keys) {
        while self.unclaimed.len() > self.cap {
            let Some(id) = self.unclaimed.iter().next_back().cloned() else {
                break;
            };
            self.remove_job(&id);
            self.left_out(keys.job(&id).as_bytes());
        }
    }

    /// Applies one change of the watch event of `revision`.
    pub(super) fn apply(&mut self, keys: &Keys, revision: i64, change: &RangeChange) {
        self.applied = self.applied.max(revision);
        match change {
            RangeChange::Put(kv) => match keys.parse(&kv.key) {
                Some(Entry::Job(id)) => {
                    self.put_job(id, kv, true);
                }
                Some(Entry::Claim(id)) => {
                    self.claims.insert(id.to_owned(), kv.create_revision);
                    self.unclaimed.remove(id);
                    self.refresh(id);
                }
                Some(Entry::Hold(id)) => {
                    self.holds.insert(id.to_owned());
                    self.refresh(id);
                }
                Some(Entry::Worker { command, worker }) => {
                    let added = self
                        .workers
                        .entry(command.clone())
                        .or_default()
                        .insert(worker.to_owned());
                    if added {
                        self.refresh_command(&command);
                    }
                }
                None => {}
            },
            RangeChange::Delete { key } => match keys.parse(key) {
                Some(Entry::Job(id)) => self.remove_job(id),
                Some(Entry::Claim(id)) => {
                    let rev = self.claims.remove(id);
                    if let Some((ours, trigger)) = self.running.get(id) {
                        if rev == Some(*ours) {
                            trigger.fire(LossReason::Revoked);
                        }
                    }
                    if self
                        .hold_waiters
                        .get(id)
                        .is_some_and(|(ours, _)| rev == Some(*ours))
                    {
                        self.end_hold_wait(id, false);
                    }
                    if let Some(e) = self.jobs.get_mut(id) {
                        e.claimable_since = Instant::now();
                        self.unclaimed.insert(id.to_owned());
                    }
                    self.refresh(id);
                }
                Some(Entry::Hold(id)) => {
                    self.holds.remove(id);
                    // A release deletes the hold alone; a withdrawal deletes the claim and the
                    // job first, in the same revision: applied before this.
                    let released = self
                        .hold_waiters
                        .get(id)
                        .is_some_and(|(ours, _)| self.claims.get(id) == Some(ours));
                    self.end_hold_wait(id, released);
                    self.refresh(id);
                }
                Some(Entry::Worker { command, worker }) => {
                    let removed = self
                        .workers
                        .get_mut(&command)
                        .is_some_and(|ws| ws.remove(worker));
                    if self.workers.get(&command).is_some_and(BTreeSet::is_empty) {
                        self.workers.remove(&command);
                    }
                    if removed {
                        self.refresh_command(&command);
                    }
                }
                None => {}
            },
            _ => {}
        }
    }

    /// Replaces claims and workers with a fresh snapshot of them (at start, or after changes
    /// were missed), and empties the window: pages fill it again.
    pub(super) fn reset(&mut self, keys: &Keys, revision: i64, kvs: &[RangeKv]) {
        self.applied = self.applied.max(revision);
        self.jobs.clear();
        self.unclaimed.clear();
        self.claims.clear();
        self.holds.clear();
        self.workers.clear();
        self.ready.clear();
        self.complete = false;
        self.cursor = None;
        self.dirty = false;
        for kv in kvs {
            match keys.parse(&kv.key) {
                Some(Entry::Claim(id)) => {
                    self.claims.insert(id.to_owned(), kv.create_revision);
                }
                Some(Entry::Hold(id)) => {
                    self.holds.insert(id.to_owned());
                }
                Some(Entry::Worker { command, worker }) => {
                    self.workers
                        .entry(command)
                        .or_default()
                        .insert(worker.to_owned());
                }
                _ => {}
            }
        }
        // A claim of ours still waiting: its hold is there, or it ended (released if our claim
        // still stands; a claim that is not there yet, made after the snapshot, counts as lost:
        // the attempt is handed back, never started early).
        let ended: Vec<(String, bool)> = self
            .hold_waiters
            .iter()
            .filter(|(id, _)| !self.holds.contains(*id))
            .map(|(id, (ours, _))| (id.clone(), self.claims.get(id) == Some(ours)))
            .collect();
        for (id, released) in ended {
            self.end_hold_wait(&id, released);
        }
        for (id, (rev, trigger)) in &self.running {
            if self.claims.get(id) != Some(rev) {
                trigger.fire(LossReason::Revoked);
            }
        }
    }

    /// Where the next page starts and how many keys it may hold, if the window wants one: it
    /// is not complete, and a quarter of it is free.
    pub(super) fn wants_page(&self, keys: &Keys) -> Option<(Vec<u8>, usize)> {
        let room = self.cap.saturating_sub(self.unclaimed.len());
        (!self.complete && !self.commands.is_empty() && room >= self.cap / 4).then(|| {
            let from = self
                .cursor
                .clone()
                .unwrap_or_else(|| keys.jobs().into_bytes());
            (from, room)
        })
    }

    /// Takes a page of `q/jobs/` read from `from` into the window, as far as it has room.
    pub(super) fn absorb_page(&mut self, keys: &Keys, from: &[u8], page: RangePage) {
        if self.cursor.as_deref().unwrap_or(keys.jobs().as_bytes()) != from {
            // The pass was restarted while the page was read: read again from the new cursor.
            return;
        }
        if self.cursor.is_none() {
            self.dirty = false;
        }
        for kv in &page.kvs {
            let Some(Entry::Job(id)) = keys.parse(&kv.key) else {
                continue;
            };
            if !self.put_job(id, kv, false) {
                // Full: the next page starts here.
                self.cursor = Some(kv.key.clone());
                return;
            }
        }
        match page.next {
            Some(next) => self.cursor = Some(next),
            None => {
                // The end of the queue: a clean pass saw every job of ours.
                self.complete = !self.dirty;
                self.cursor = None;
                self.dirty = false;
            }
        }
    }

    /// The next job to claim, if one is claimable now.
    pub(crate) fn next(&mut self, now: Instant) -> Next {
        loop {
            let Some((at, _, id)) = self.ready.first().cloned() else {
                return Next::Idle;
            };
            if at > now {
                return Next::At(at);
            }
            self.busy.insert(id.clone());
            self.refresh(&id);
            let Some(e) = self.jobs.get(&id) else {
                continue;
            };
            return Next::Claim(Pick {
                record: e.record.clone(),
                mod_rev: e.mod_rev,
                id,
            });
        }
    }

    /// The local worker is done with job `id` (or failed to claim it: then it stays away for
    /// `cooldown`, by when the view shows who has it).
    pub(crate) fn release(&mut self, id: &str, cooldown: Option<Duration>) {
        self.busy.remove(id);
        self.running.remove(id);
        self.hold_waiters.remove(id);
        if let (Some(c), Some(e)) = (cooldown, self.jobs.get_mut(id)) {
            e.cooldown_until = Some(Instant::now() + c);
        }
        self.refresh(id);
    }

    /// Marks job `id` as running here under the claim of create revision `claim_rev`; the signal
    /// fires if that claim is deleted behind our back.
    pub(crate) fn running(&mut self, id: &str, claim_rev: i64) -> LossSignal {
        let (trigger, signal) = loss_signal();
        self.running.insert(id.to_owned(), (claim_rev, trigger));
        signal
    }

    /// Tells whether the hold of job `id`, which our claim of create revision `claim_rev` saw,
    /// ended by a release with that claim still standing (true), or otherwise (false: the job
    /// was withdrawn, or the claim is gone). At once if the view knows already.
    pub(crate) fn hold_ended(&mut self, id: &str, claim_rev: i64) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        if self.claims.get(id) == Some(&claim_rev) {
            // The view is at or past the claim, when the hold was there: it ended since if it
            // is not there now, by a release (a withdrawal would have taken the claim).
            if self.holds.contains(id) {
                self.hold_waiters.insert(id.to_owned(), (claim_rev, tx));
            } else {
                let _ = tx.send(true);
            }
        } else if self.applied >= claim_rev {
            // Past the claim and the claim is gone.
            let _ = tx.send(false);
        } else {
            // The view has not seen the claim yet: its events will tell.
            self.hold_waiters.insert(id.to_owned(), (claim_rev, tx));
        }
        rx
    }

    fn end_hold_wait(&mut self, id: &str, released: bool) {
        if let Some((_, tx)) = self.hold_waiters.remove(id) {
            let _ = tx.send(released);
        }
    }

    /// Our claim of job `id` waited too long for its release and was handed back: do not claim
    /// it again while its hold is there.
    pub(crate) fn await_hold(&mut self, id: &str) {
        if let Some(e) = self.jobs.get_mut(id) {
            e.await_hold = true;
        }
        self.refresh(id);
    }

    /// Starts (or stops) claiming jobs of `command`.
    pub(super) fn set_command(&mut self, command: &str, on: bool) {
        let changed = if on {
            self.commands.insert(command.to_owned())
        } else {
            self.commands.remove(command)
        };
        if changed && on {
            // Its jobs are not in the window yet: a new pass from the beginning.
            self.complete = false;
            self.cursor = None;
            self.dirty = false;
        }
        if changed {
            self.refresh_command(command);
        }
    }

    /// Stops claiming anything, and forgets the window.
    pub(crate) fn clear_commands(&mut self) {
        self.commands.clear();
        self.ready.clear();
        self.jobs.clear();
        self.unclaimed.clear();
    }

    /// How many jobs the window holds.
    pub(crate) fn tracked(&self) -> usize {
        self.jobs.len()
    }
}
