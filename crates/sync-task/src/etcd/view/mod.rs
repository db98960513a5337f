//! One worker's view of the task queue (`<prefix>/task/q/`: jobs, claims, workers), kept up to
//! date by sync-etcd's [`RangeWatch`] for the life of the handle.
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

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sync_core::signal::LossSignal;
use sync_etcd::{prefix_end, read_page, EtcdClient, RangeEvent, RangePage, RangeWatch};
use tokio::sync::{Notify, OnceCell};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::records::Keys;

#[cfg(test)]
mod tests;
mod window;

use self::window::State;
pub(crate) use self::window::{Next, Pick};

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

/// The window, shared by the view's task and the worker, with the notifications around it.
struct Shared {
    state: Mutex<State>,
    /// Wakes the dispatcher when something may have become claimable.
    wake: Notify,
    /// Wakes the view's task when the window may want a page.
    paging: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
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

    /// Reads the claims and workers, and starts watching the queue, once.
    pub(crate) async fn start(&self) -> sync_etcd::Result<()> {
        self.task
            .get_or_try_init(|| async {
                let parts = vec![
                    self.keys.claims(),
                    self.keys.holds(),
                    self.keys.workers_root(),
                ];
                let (watch, snapshot) =
                    RangeWatch::open_parts(self.client.clone(), self.keys.queue(), parts).await?;
                self.shared
                    .lock()
                    .reset(&self.keys, snapshot.revision, &snapshot.kvs);
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
    /// The next job to claim: waits until one is claimable. Cancel-safe: a job is handed out
    /// only in the poll that returns it.
    pub(crate) async fn pick(&self) -> Pick {
        loop {
            let notified = self.shared.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next = self.shared.lock().next(Instant::now());
            let at = match next {
                Next::Claim(p) => return p,
                Next::At(at) => Some(at),
                Next::Idle => None,
            };
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(at.unwrap_or_else(Instant::now)), if at.is_some() => {}
            }
        }
    }

    /// The next job to claim, if one is claimable now (as [`pick`](Self::pick), without
    /// waiting).
    pub(crate) fn try_pick(&self) -> Option<Pick> {
        match self.shared.lock().next(Instant::now()) {
            Next::Claim(p) => Some(p),
            Next::At(_) | Next::Idle => None,
        }
    }

    /// Notes how long a claim transaction took and whether it won.
    pub(crate) fn claim_took(&self, d: Duration, won: bool) {
        self.shared.lock().claim_took(d, won);
    }

    /// Marks job `id` as running here under the claim of create revision `claim_rev`; the signal
    /// fires if that claim is deleted behind our back.
    pub(crate) fn running(&self, id: &str, claim_rev: i64) -> LossSignal {
        self.shared.lock().running(id, claim_rev)
    }

    /// Resolves once the hold of job `id`, which our claim of create revision `claim_rev` saw,
    /// is gone: true if its submit released it (the attempt may start), false if the job was
    /// withdrawn or the claim is gone.
    pub(crate) async fn hold_ended(&self, id: &str, claim_rev: i64) -> bool {
        let rx = self.shared.lock().hold_ended(id, claim_rev);
        rx.await.unwrap_or(false)
    }

    /// Our claim of job `id` waited too long for its submit's release and was handed back: it
    /// is not claimed again while its hold is there.
    pub(crate) fn await_hold(&self, id: &str) {
        self.shared.lock().await_hold(id);
    }

    /// The local worker is done with job `id` (or failed to claim it: then it stays away for
    /// `cooldown`). Call [`wake`](View::wake) once its pool slot is free.
    pub(crate) fn release(&self, id: &str, cooldown: Option<Duration>) {
        self.shared.lock().release(id, cooldown);
    }

    /// Wakes the dispatcher: something may have become claimable.
    pub(crate) fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Stops claiming anything, and forgets the window (at shutdown).
    pub(crate) fn clear_commands(&self) {
        self.shared.lock().clear_commands();
    }

    /// How many jobs the window holds.
    pub(crate) fn tracked(&self) -> usize {
        self.shared.lock().tracked()
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
                    RangeEvent::Changes { revision, changes } => {
                        for c in changes {
                            st.apply(&keys, *revision, c);
                        }
                        st.trim(&keys);
                    }
                    RangeEvent::Reset { revision, kvs } => {
                        tracing::debug!(range = watch.range(), "task view missed changes: re-read");
                        st.reset(&keys, *revision, kvs);
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
