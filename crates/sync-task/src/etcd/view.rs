//! One handle's view of the task queue (`<prefix>/task/q/`: jobs, claims, workers), from
//! sync-core's [`RangeWatch`]: one consistent read, then every change in order, kept for the
//! life of the handle.
//!
//! It tells the local worker which jobs it may claim, and when. Claiming without a herd: every
//! job ranks the live workers of its command by a hash of (job id, worker id) (rendezvous
//! hashing). The worker ranked `k` considers the job only once it has been claimable for `k`
//! steps (the claim spread, widened to twice the measured claim round trip, and doubled for a
//! while after each lost race); so a new job is tried by one idle worker, the next one steps in
//! only if the first is busy or gone, and idle workers rarely race for the same job.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sync_core::etcd::{EtcdClient, RangeChange, RangeEvent, RangeKv, RangeWatch};
use sync_core::signal::{loss_signal, LossReason, LossSignal, LossTrigger};
use tokio::sync::{Notify, OnceCell};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::records::{now_ms, Entry, JobRecord, Keys};

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

struct JobEntry {
    record: Arc<JobRecord>,
    mod_rev: i64,
    create_rev: i64,
    claimable_since: Instant,
    cooldown_until: Option<Instant>,
    ready_at: Option<Instant>,
}

#[derive(Default)]
pub(crate) struct State {
    jobs: HashMap<String, JobEntry>,
    claims: HashMap<String, i64>,
    workers: HashMap<String, BTreeSet<String>>,
    // The local worker.
    me: String,
    spread: Duration,
    /// Moving average of our claim transactions' round trip.
    claim_latency: Duration,
    /// Grows when our claims lose races (the cluster or the watch lags), shrinks as they win.
    penalty: f64,
    commands: HashSet<String>,
    ready: BTreeSet<(Instant, i64, String)>,
    busy: HashSet<String>,
    running: HashMap<String, (i64, LossTrigger)>,
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

/// The local instant of a wall-clock time in ms since the epoch (now if it is past).
fn instant_of(ms: u64) -> Instant {
    let now = now_ms();
    let now_i = Instant::now();
    if ms <= now {
        now_i
    } else {
        now_i + Duration::from_millis(ms - now)
    }
}

impl State {
    /// Our rank among the live workers of `command` for job `id` (0: first in line).
    fn rank(&self, id: &str, command: &str) -> u32 {
        let Some(ws) = self.workers.get(command) else {
            return 0;
        };
        let mine = (score(id, &self.me), self.me.as_str());
        ws.iter()
            .filter(|w| **w != self.me && (score(id, w), w.as_str()) > mine)
            .count() as u32
    }

    /// The delay between ranks: the configured spread, but at least twice the time a claim
    /// takes to commit (so the worker ranked before us has had time to claim and for us to see
    /// it, even on a slow cluster). Zero turns ranking off.
    fn step(&self) -> Duration {
        if self.spread.is_zero() {
            Duration::ZERO
        } else {
            self.spread
                .max(self.claim_latency * 2)
                .mul_f64(self.penalty.max(1.0))
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
        let eligible = self.commands.contains(&e.record.command)
            && !self.claims.contains_key(id)
            && !self.busy.contains(id);
        let new = eligible.then(|| {
            let mut at = e.claimable_since.max(instant_of(e.record.not_before_ms));
            if let Some(c) = e.cooldown_until {
                at = at.max(c);
            }
            at + self.step() * self.rank(id, &e.record.command)
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

    fn put_job(&mut self, id: &str, kv: &RangeKv) {
        let record: JobRecord = match serde_json::from_slice(&kv.value) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "ignoring a job record that does not parse");
                return;
            }
        };
        let now = Instant::now();
        let unclaimed = !self.claims.contains_key(id);
        match self.jobs.get_mut(id) {
            Some(e) => {
                if kv.mod_revision <= e.mod_rev {
                    return;
                }
                e.record = Arc::new(record);
                e.mod_rev = kv.mod_revision;
                if unclaimed {
                    e.claimable_since = now;
                }
            }
            None => {
                self.jobs.insert(
                    id.to_owned(),
                    JobEntry {
                        record: Arc::new(record),
                        mod_rev: kv.mod_revision,
                        create_rev: kv.create_revision,
                        claimable_since: now,
                        cooldown_until: None,
                        ready_at: None,
                    },
                );
            }
        }
        self.refresh(id);
    }

    fn remove_job(&mut self, id: &str) {
        if let Some(e) = self.jobs.remove(id) {
            if let Some(at) = e.ready_at {
                self.ready.remove(&(at, e.create_rev, id.to_owned()));
            }
        }
    }

    fn apply(&mut self, keys: &Keys, change: &RangeChange) {
        match change {
            RangeChange::Put(kv) => match keys.parse(&kv.key) {
                Some(Entry::Job(id)) => self.put_job(id, kv),
                Some(Entry::Claim(id)) => {
                    self.claims.insert(id.to_owned(), kv.create_revision);
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
                    if let Some(e) = self.jobs.get_mut(id) {
                        e.claimable_since = Instant::now();
                    }
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

    /// Replaces the mirrored keys with a fresh read (at start, or after changes were missed).
    fn reset(&mut self, keys: &Keys, kvs: &[RangeKv]) {
        let old_jobs = std::mem::take(&mut self.jobs);
        self.claims.clear();
        self.workers.clear();
        self.ready.clear();
        for kv in kvs {
            match keys.parse(&kv.key) {
                Some(Entry::Claim(id)) => {
                    self.claims.insert(id.to_owned(), kv.create_revision);
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
        for kv in kvs {
            if let Some(Entry::Job(id)) = keys.parse(&kv.key) {
                self.put_job(id, kv);
                if let (Some(old), Some(e)) = (old_jobs.get(id), self.jobs.get_mut(id)) {
                    e.claimable_since = old.claimable_since;
                    e.cooldown_until = old.cooldown_until;
                }
            }
        }
        let ids: Vec<String> = self.jobs.keys().cloned().collect();
        for id in ids {
            self.refresh(&id);
        }
        for (id, (rev, trigger)) in &self.running {
            if self.claims.get(id) != Some(rev) {
                trigger.fire(LossReason::Revoked);
            }
        }
    }

    /// The next job to claim, if one is claimable now.
    pub(crate) fn next(&mut self, now: Instant) -> Next {
        let Some((at, _, id)) = self.ready.first().cloned() else {
            return Next::Idle;
        };
        if at > now {
            return Next::At(at);
        }
        self.busy.insert(id.clone());
        self.refresh(&id);
        let e = &self.jobs[&id];
        Next::Claim(Pick {
            record: e.record.clone(),
            mod_rev: e.mod_rev,
            id,
        })
    }

    /// The local worker is done with job `id` (or failed to claim it: then it stays away for
    /// `cooldown`, by when the view shows who has it).
    pub(crate) fn release(&mut self, id: &str, cooldown: Option<Duration>) {
        self.busy.remove(id);
        self.running.remove(id);
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

    /// Starts (or stops) claiming jobs of `command`.
    pub(crate) fn set_command(&mut self, command: &str, on: bool) {
        let changed = if on {
            self.commands.insert(command.to_owned())
        } else {
            self.commands.remove(command)
        };
        if changed {
            self.refresh_command(command);
        }
    }

    /// Stops claiming anything.
    pub(crate) fn clear_commands(&mut self) {
        self.commands.clear();
        self.ready.clear();
        for e in self.jobs.values_mut() {
            e.ready_at = None;
        }
    }
}

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the dispatcher when something may have become claimable.
    pub(crate) wake: Notify,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Each update leaves the maps consistent: a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The view; its watch runs from the first [`start`](View::start) until it is dropped.
pub(crate) struct View {
    client: EtcdClient,
    keys: Keys,
    shared: Arc<Shared>,
    task: OnceCell<JoinHandle<()>>,
}

impl Drop for View {
    fn drop(&mut self) {
        if let Some(t) = self.task.get() {
            t.abort();
        }
    }
}

impl View {
    pub(crate) fn new(client: EtcdClient, keys: Keys, me: String, spread: Duration) -> Self {
        let state = State {
            me,
            spread,
            ..State::default()
        };
        View {
            client,
            keys,
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                wake: Notify::new(),
            }),
            task: OnceCell::new(),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Reads the queue and starts watching it, once.
    pub(crate) async fn start(&self) -> sync_core::etcd::Result<()> {
        self.task
            .get_or_try_init(|| async {
                let (watch, snapshot) =
                    RangeWatch::open(self.client.clone(), self.keys.queue()).await?;
                self.shared.lock().reset(&self.keys, &snapshot.kvs);
                self.shared.wake.notify_one();
                Ok(tokio::spawn(run(
                    self.keys.clone(),
                    self.shared.clone(),
                    watch,
                )))
            })
            .await
            .map(|_| ())
    }
}

async fn run(keys: Keys, shared: Arc<Shared>, mut watch: RangeWatch) {
    loop {
        let event = watch.next().await;
        let mut st = shared.lock();
        match &event {
            RangeEvent::Changes { changes, .. } => {
                for c in changes {
                    st.apply(&keys, c);
                }
            }
            RangeEvent::Reset { kvs, .. } => {
                tracing::debug!(range = watch.range(), "task view missed changes: re-read");
                st.reset(&keys, kvs);
            }
            _ => {}
        }
        drop(st);
        shared.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_are_a_permutation_and_spread_over_workers() {
        let workers: BTreeSet<String> = (0..3).map(|i| format!("w{i}")).collect();
        let mut first = HashMap::new();
        for j in 0..300 {
            let id = format!("job{j}");
            let mut ranks = Vec::new();
            for w in &workers {
                let st = State {
                    me: w.clone(),
                    workers: [("c".to_owned(), workers.clone())].into(),
                    ..State::default()
                };
                ranks.push(st.rank(&id, "c"));
            }
            ranks.sort();
            assert_eq!(ranks, vec![0, 1, 2], "ranks of {id} are not a permutation");
            let st = State {
                me: "w0".into(),
                workers: [("c".to_owned(), workers.clone())].into(),
                ..State::default()
            };
            *first.entry(st.rank(&id, "c")).or_insert(0) += 1;
        }
        // w0 is first in line for roughly a third of the jobs.
        let firsts = first[&0];
        assert!((60..140).contains(&firsts), "w0 first for {firsts} of 300");
    }
}
