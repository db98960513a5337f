//! One worker's view of the task queue (`<prefix>/task/q/`: jobs, claims, workers), kept up to
//! date by sync-core's [`RangeWatch`] for the life of the handle.
//!
//! It tells the local worker which jobs it may claim, and when. Claiming without a herd: every
//! job ranks the live workers of its command by a hash of (job id, worker id) (rendezvous
//! hashing). The worker ranked `k` considers the job only once it has been claimable for `k`
//! steps (the claim spread, widened to twice the measured claim round trip, and doubled for a
//! while after each lost race); so a new job is tried by one idle worker, the next one steps in
//! only if the first is busy or gone, and idle workers rarely race for the same job.
//!
//! # A bounded window over any backlog
//!
//! The view holds every claim and every worker registration (as many as jobs run at once in the
//! cluster), but only a window of the pending jobs: at most `cap` unclaimed jobs of the
//! worker's commands (and the claimed ones it hears of, as many as run at once). It fills the
//! window by reading `q/jobs/` in pages (of up to a quarter of the window, and about 1 MiB), in
//! key order (job ids start with their submission time, so oldest first), from a cursor that goes
//! through the queue and starts again from the beginning; new jobs that arrive while the window
//! is full are left out. (etcd 3.4 walks the rest of the range for every limited read, so fewer,
//! larger pages cost it less.)
//!
//! Why nothing is missed: the view is *complete* when it tracks every unclaimed job of its
//! commands. A job left out (no room, or evicted to make room) behind the cursor marks the
//! current pass *dirty*; one ahead of it will be read by the pass. A pass that reaches the end of
//! the queue clean makes the view complete; one that was dirty starts again from the beginning.
//! Until complete, the view reads the next page whenever the window has room for one.
//!
//! Why what it holds is right: pages are read between watch events, in the task that applies
//! them. A page read after applying every event up to revision `w` is a linearizable read, at a
//! revision `r ≥ w`; events up to `r` that arrive afterwards are ignored for jobs (a job's entry
//! only takes a newer `mod_revision`, and a deleted job key is never created again: ids are
//! unique), and every event after `r` is applied. Claims and workers are never paged: they come
//! from the watch's snapshot and its events only.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sync_core::signal::{loss_signal, LossReason, LossSignal, LossTrigger};
use sync_etcd::{
    prefix_end, read_page, EtcdClient, RangeChange, RangeEvent, RangeKv, RangePage, RangeWatch,
};
use tokio::sync::{Notify, OnceCell};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::records::{now_ms, Entry, JobRecord, Keys};

/// What one page read aims at, in bytes: well below gRPC's 4 MiB response limit. Pages are
/// sized from the records seen so far (job records are small: failure messages are cut at
/// 4 KiB, names at 512 bytes), between [`MIN_PAGE`] and [`MAX_PAGE`] keys.
const PAGE_BYTES: usize = 1 << 20;
const MIN_PAGE: usize = 16;
const MAX_PAGE: usize = 4096;
/// The fewest unclaimed jobs a window holds at most (it holds at most twice the pool if that is
/// more, so that a large pool always has work in view).
pub(crate) const MIN_CAP: usize = 4096;
/// How long a failed page read waits before the next try.
const PAGE_RETRY: Duration = Duration::from_millis(500);

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
    /// The window: tracked jobs of our commands.
    jobs: BTreeMap<String, JobEntry>,
    /// The tracked jobs without a claim: at most `cap`.
    unclaimed: BTreeSet<String>,
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
    /// The most unclaimed jobs tracked.
    cap: usize,
    /// Where the next page starts (a key of `q/jobs/`); `None`: at the beginning.
    cursor: Option<Vec<u8>>,
    /// Every unclaimed job of our commands is tracked.
    complete: bool,
    /// Since the current pass began, a job behind the cursor was left out.
    dirty: bool,
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
    fn new(me: String, spread: Duration, cap: usize) -> Self {
        State {
            me,
            spread,
            cap,
            ..State::default()
        }
    }

    /// Our rank among the live workers of `command` for job `id` (0: first in line).
    fn rank(&self, id: &str, command: &str) -> u32 {
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
        let eligible = self.commands.contains(&e.record.command)
            && !self.claims.contains_key(id)
            && !self.busy.contains(id);
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
    fn trim(&mut self, keys: &Keys) {
        while self.unclaimed.len() > self.cap {
            let Some(id) = self.unclaimed.iter().next_back().cloned() else {
                break;
            };
            self.remove_job(&id);
            self.left_out(keys.job(&id).as_bytes());
        }
    }

    fn apply(&mut self, keys: &Keys, change: &RangeChange) {
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
                        self.unclaimed.insert(id.to_owned());
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

    /// Replaces claims and workers with a fresh snapshot of them (at start, or after changes
    /// were missed), and empties the window: pages fill it again.
    fn reset(&mut self, keys: &Keys, kvs: &[RangeKv]) {
        self.jobs.clear();
        self.unclaimed.clear();
        self.claims.clear();
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
                Some(Entry::Worker { command, worker }) => {
                    self.workers
                        .entry(command)
                        .or_default()
                        .insert(worker.to_owned());
                }
                _ => {}
            }
        }
        for (id, (rev, trigger)) in &self.running {
            if self.claims.get(id) != Some(rev) {
                trigger.fire(LossReason::Revoked);
            }
        }
    }

    /// Where the next page starts and how many keys it may hold, if the window wants one: it
    /// is not complete, and a quarter of it is free.
    fn wants_page(&self, keys: &Keys) -> Option<(Vec<u8>, usize)> {
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
    fn absorb_page(&mut self, keys: &Keys, from: &[u8], page: RangePage) {
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
    fn set_command(&mut self, command: &str, on: bool) {
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

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the dispatcher when something may have become claimable.
    pub(crate) wake: Notify,
    /// Wakes the view's task when the window may want a page.
    paging: Notify,
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
    /// A view for worker `me`, keeping up to `max(MIN_CAP, 2 × pool)` unclaimed jobs.
    pub(crate) fn new(
        client: EtcdClient,
        keys: Keys,
        me: String,
        spread: Duration,
        pool: usize,
    ) -> Self {
        let cap = MIN_CAP.max(pool.saturating_mul(2));
        View {
            client,
            keys,
            shared: Arc::new(Shared {
                state: Mutex::new(State::new(me, spread, cap)),
                wake: Notify::new(),
                paging: Notify::new(),
            }),
            task: OnceCell::new(),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Reads the claims and workers, and starts watching the queue, once.
    pub(crate) async fn start(&self) -> sync_etcd::Result<()> {
        self.task
            .get_or_try_init(|| async {
                let parts = vec![self.keys.claims(), self.keys.workers_root()];
                let (watch, snapshot) =
                    RangeWatch::open_parts(self.client.clone(), self.keys.queue(), parts).await?;
                self.shared.lock().reset(&self.keys, &snapshot.kvs);
                self.shared.wake.notify_one();
                Ok(tokio::spawn(run(
                    self.client.clone(),
                    self.keys.clone(),
                    self.shared.clone(),
                    watch,
                )))
            })
            .await
            .map(|_| ())
    }

    /// Starts (or stops) claiming jobs of `command`.
    pub(crate) fn set_command(&self, command: &str, on: bool) {
        self.shared.lock().set_command(command, on);
        self.shared.paging.notify_one();
        self.shared.wake.notify_one();
    }
}

/// How many keys the next page asks for: what fits in [`PAGE_BYTES`] at the size of the
/// records seen so far, at most `room`.
struct PageSize {
    /// Mean bytes per key of the pages read so far (a moving average).
    per_key: usize,
}

impl PageSize {
    fn limit(&self, room: usize) -> usize {
        (PAGE_BYTES / self.per_key.max(1))
            .clamp(MIN_PAGE, MAX_PAGE)
            .min(room.max(1))
    }

    fn saw(&mut self, page: &RangePage) {
        if page.kvs.is_empty() {
            return;
        }
        let bytes: usize = page
            .kvs
            .iter()
            .map(|kv| kv.key.len() + kv.value.len() + 32)
            .sum();
        let mean = bytes / page.kvs.len();
        self.per_key = (self.per_key + mean.max(self.per_key / 2)) / 2;
    }

    /// A page was still too large for a response: ask for far fewer keys.
    fn too_large(&mut self) {
        self.per_key = self.per_key.saturating_mul(4);
    }
}

async fn run(client: EtcdClient, keys: Keys, shared: Arc<Shared>, mut watch: RangeWatch) {
    let end = prefix_end(keys.jobs().as_bytes());
    let mut retry_at: Option<Instant> = None;
    let mut size = PageSize { per_key: 512 };
    loop {
        let want = shared.lock().wants_page(&keys);
        if let Some((from, room)) = want.filter(|_| retry_at.is_none_or(|t| t <= Instant::now())) {
            let limit = size.limit(room);
            match read_page(&client, &from, &end, limit as i64, 0).await {
                Ok(page) => {
                    retry_at = None;
                    size.saw(&page);
                    shared.lock().absorb_page(&keys, &from, page);
                    shared.wake.notify_one();
                }
                Err(e) => {
                    if e.to_string().contains("message length too large") {
                        size.too_large();
                    }
                    tracing::warn!(error = %e, limit, "cannot read the task queue; trying again");
                    retry_at = Some(Instant::now() + PAGE_RETRY);
                }
            }
            continue;
        }
        tokio::select! {
            event = watch.next() => {
                let mut st = shared.lock();
                match &event {
                    RangeEvent::Changes { changes, .. } => {
                        for c in changes {
                            st.apply(&keys, c);
                        }
                        st.trim(&keys);
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
            _ = shared.paging.notified() => {}
            _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                retry_at = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use sync_etcd::Keyspace;

    /// The view's state beside a model of the queue in etcd, fed the same changes etcd's watch
    /// would deliver, and pages read from the model.
    struct Sim {
        keys: Keys,
        /// `q/jobs/` and `q/claims/` keys as etcd holds them.
        store: BTreeMap<Vec<u8>, RangeKv>,
        rev: i64,
        st: State,
        next: u64,
        page_limit: usize,
    }

    impl Sim {
        fn new(cap: usize, page_limit: usize) -> Sim {
            let mut st = State::new("w1".into(), Duration::ZERO, cap);
            st.set_command("c", true);
            Sim {
                keys: Keys::new(&Keyspace::new("p")),
                store: BTreeMap::new(),
                rev: 1,
                st,
                next: 0,
                page_limit,
            }
        }

        fn record(&self, command: &str, attempts: u32) -> Vec<u8> {
            let mut r = JobRecord::new(&crate::Job::new(command, ()), 4);
            r.attempts = attempts;
            serde_json::to_vec(&r).unwrap()
        }

        fn events(&mut self, changes: Vec<RangeChange>) {
            for c in &changes {
                self.st.apply(&self.keys, c);
            }
            self.st.trim(&self.keys);
        }

        fn put(&mut self, key: String, value: Vec<u8>) -> RangeChange {
            let k = key.into_bytes();
            let create = self.store.get(&k).map_or(self.rev, |kv| kv.create_revision);
            let kv = RangeKv::new(k.clone(), value, create, self.rev, 0);
            self.store.insert(k, kv.clone());
            RangeChange::Put(kv)
        }

        fn delete(&mut self, key: String) -> Option<RangeChange> {
            let k = key.into_bytes();
            self.store
                .remove(&k)
                .map(|_| RangeChange::Delete { key: k })
        }

        /// Submits a job whose id sorts at `at` (submitters' clocks differ: ids do not arrive
        /// in order).
        fn submit_at(&mut self, command: &str, at: u16) {
            self.rev += 1;
            self.next += 1;
            let id = format!("{at:04x}{:08x}", self.next);
            let v = self.record(command, 0);
            let c = self.put(self.keys.job(&id), v);
            self.events(vec![c]);
        }

        fn submit(&mut self, command: &str) {
            self.submit_at(command, 0x8000);
        }

        fn jobs(&self) -> Vec<String> {
            self.store
                .keys()
                .filter_map(|k| match self.keys.parse(k) {
                    Some(Entry::Job(id)) => Some(id.to_owned()),
                    _ => None,
                })
                .collect()
        }

        fn claimed(&self, id: &str) -> bool {
            self.store.contains_key(self.keys.claim(id).as_bytes())
        }

        /// Another worker claims job `id` (the claim and the job's rewrite, in one revision).
        fn claim(&mut self, id: &str) {
            if self.claimed(id) || !self.store.contains_key(self.keys.job(id).as_bytes()) {
                return;
            }
            self.rev += 1;
            let a = self.put(self.keys.claim(id), b"{}".to_vec());
            let v = self.record("c", 1);
            let b = self.put(self.keys.job(id), v);
            self.events(vec![a, b]);
        }

        /// The claimer dies: its claim goes, the job stays.
        fn lose_claim(&mut self, id: &str) {
            self.rev += 1;
            let c: Vec<_> = self.delete(self.keys.claim(id)).into_iter().collect();
            self.events(c);
        }

        /// The job ends (deleted with its claim, in one revision).
        fn finish(&mut self, id: &str) {
            self.rev += 1;
            let c: Vec<_> = [
                self.delete(self.keys.job(id)),
                self.delete(self.keys.claim(id)),
            ]
            .into_iter()
            .flatten()
            .collect();
            self.events(c);
        }

        /// Reads a page if the view wants one. Whether it did.
        fn page(&mut self) -> bool {
            let Some((from, room)) = self.st.wants_page(&self.keys) else {
                return false;
            };
            let end = prefix_end(self.keys.jobs().as_bytes());
            let limit = room.min(self.page_limit);
            let mut kvs: Vec<RangeKv> = self
                .store
                .range(from.clone()..end)
                .map(|(_, kv)| kv.clone())
                .take(limit + 1)
                .collect();
            let next = (kvs.len() > limit).then(|| {
                kvs.truncate(limit);
                let mut k = kvs[limit - 1].key.clone();
                k.push(0);
                k
            });
            let page = RangePage::new(self.rev, kvs, next);
            self.st.absorb_page(&self.keys, &from, page);
            true
        }

        /// What must hold after every step.
        fn check(&self) {
            let st = &self.st;
            assert!(
                st.unclaimed.len() <= st.cap,
                "{} > cap {}",
                st.unclaimed.len(),
                st.cap
            );
            for (id, e) in &st.jobs {
                let kv = self
                    .store
                    .get(self.keys.job(id).as_bytes())
                    .unwrap_or_else(|| panic!("the view tracks job {id}, which is gone"));
                assert_eq!(e.mod_rev, kv.mod_revision, "stale entry for {id}");
                assert_eq!(st.unclaimed.contains(id), !self.claimed(id), "{id}");
            }
            if st.complete {
                for id in self.jobs() {
                    if !self.claimed(&id) && !self.st.jobs.contains_key(&id) {
                        let kv = &self.store[self.keys.job(&id).as_bytes()];
                        let r: JobRecord = serde_json::from_slice(&kv.value).unwrap();
                        assert_ne!(
                            r.command, "c",
                            "complete, but job {id} of ours is not tracked"
                        );
                    }
                }
            }
        }

        /// Works like a worker until the queue holds no job of ours; fails if that takes
        /// more than `steps`.
        fn drain(&mut self, steps: usize) {
            for _ in 0..steps {
                self.check();
                if self.page() {
                    continue;
                }
                let tracked = self.st.unclaimed.iter().next().cloned();
                match tracked {
                    Some(id) => self.finish(&id),
                    None => {
                        let mine: Vec<String> = self
                            .jobs()
                            .into_iter()
                            .filter(|id| {
                                let r: JobRecord = serde_json::from_slice(
                                    &self.store[self.keys.job(id).as_bytes()].value,
                                )
                                .unwrap();
                                r.command == "c"
                            })
                            .collect();
                        if mine.is_empty() {
                            return;
                        }
                        // Only claimed jobs are left: their claimers finish them.
                        let claimed: Vec<String> =
                            mine.iter().filter(|id| self.claimed(id)).cloned().collect();
                        assert!(
                            !claimed.is_empty(),
                            "jobs of ours are pending but the view neither tracks them nor reads a page: {mine:?}"
                        );
                        for id in claimed {
                            self.finish(&id);
                        }
                    }
                }
            }
            panic!("the queue did not drain in {steps} steps");
        }
    }

    #[test]
    fn a_large_backlog_is_read_in_pages_and_drains() {
        let mut sim = Sim::new(64, 16);
        for _ in 0..1000 {
            sim.submit("c");
        }
        // Submitted before the view read anything: left out, ahead of a pass yet to start.
        assert_eq!(sim.st.jobs.len(), 64);
        sim.drain(100_000);
        assert!(sim.jobs().is_empty());
        assert!(sim.st.complete);
    }

    #[test]
    fn jobs_of_other_commands_are_not_held() {
        let mut sim = Sim::new(8, 4);
        for i in 0..100 {
            sim.submit(if i % 10 == 0 { "c" } else { "other" });
        }
        sim.drain(10_000);
        assert_eq!(
            sim.jobs().len(),
            90,
            "only the other command's jobs are left"
        );
        assert!(sim.st.jobs.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Submit(bool, u16),
        Claim(usize),
        LoseClaim(usize),
        Finish(usize),
        Page,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<bool>(), any::<u16>()).prop_map(|(o, at)| Op::Submit(o, at)),
            2 => any::<usize>().prop_map(Op::Claim),
            1 => any::<usize>().prop_map(Op::LoseClaim),
            2 => any::<usize>().prop_map(Op::Finish),
            2 => Just(Op::Page),
        ]
    }

    proptest! {
        /// Whatever happens to the queue and in whatever order pages are read: the window
        /// never holds more than its cap of unclaimed jobs, holds only jobs that exist as they
        /// are, and every job of ours is eventually seen and run.
        #[test]
        fn the_window_is_bounded_exact_and_misses_nothing(
            cap in 1usize..24,
            page in 1usize..12,
            ops in proptest::collection::vec(op(), 0..300),
        ) {
            let mut sim = Sim::new(cap.max(4), page);
            for op in ops {
                let jobs = sim.jobs();
                let pick = |i: usize| (!jobs.is_empty()).then(|| jobs[i % jobs.len()].clone());
                match op {
                    Op::Submit(ours, at) => sim.submit_at(if ours { "c" } else { "other" }, at),
                    Op::Claim(i) => if let Some(id) = pick(i) { sim.claim(&id) },
                    Op::LoseClaim(i) => if let Some(id) = pick(i) { sim.lose_claim(&id) },
                    Op::Finish(i) => if let Some(id) = pick(i) { sim.finish(&id) },
                    Op::Page => { sim.page(); }
                }
                sim.check();
            }
            sim.drain(100_000);
        }
    }

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
