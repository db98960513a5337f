//! The conformance suite: the guarantees every leader-election backend gives, checked the same
//! way.
//!
//! A backend provides a [`Harness`] and runs the whole suite with one macro line:
//!
//! ```text
//! sync_leader::leader_conformance!(local, LocalHarness::default());
//! ```
//!
//! which expands to one `#[tokio::test]` per guarantee inside a module named for the backend
//! (`local::one_leader_among_five_in_process`, …). Extra attributes (such as `#[ignore = "…"]`
//! for tests that need a server) follow the harness expression.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::StreamExt;

use crate::{
    ElectOptions, Elected, Error, Group, Leader, LeaderInfo, LeaderStream, LossReason, MAX_NAME_LEN,
};

/// What the suite needs from a backend beyond the [`Leader`] trait.
pub trait Harness: Send + Sync {
    /// A new client of the same backend: for a distributed backend a separate connection, as
    /// another process would have.
    fn client(&self) -> BoxFuture<'_, Arc<dyn Leader>>;
    /// Ends the leadership of `group`'s leader behind its back by ending what keeps it alive
    /// (etcd: revokes the leader's lease). The leader must be told through `revoked()`.
    fn revoke_lease<'a>(&'a self, group: &'a str) -> BoxFuture<'a, ()>;
    /// Deletes the leader's record of `group` behind its back (etcd: deletes the leader key).
    /// The leader must be told through `revoked()`.
    fn delete_leader_key<'a>(&'a self, group: &'a str) -> BoxFuture<'a, ()>;
    /// How many candidates (the leader included) the backend records for `group`.
    fn candidates<'a>(&'a self, group: &'a str) -> BoxFuture<'a, usize>;
    /// Makes a leader of `group`, campaigning as `id` with `ttl`, that dies without resigning
    /// (etcd: a child process that is elected and killed with SIGKILL). Returns its term once it
    /// was elected and is dead.
    fn crash_leader<'a>(&'a self, group: &'a str, id: &'a str, ttl: Duration)
        -> BoxFuture<'a, u64>;
    /// The TTL the suite asks for.
    fn ttl(&self) -> Duration;
    /// How long after a leader's death (with TTL `ttl`) another candidate must be elected at the
    /// latest.
    fn crash_bound(&self, ttl: Duration) -> Duration;
    /// How long a revocation may take to be reported.
    fn loss_bound(&self) -> Duration;
}

fn opts(h: &dyn Harness, group: &str) -> ElectOptions {
    ElectOptions::new().with_group(group).with_ttl(h.ttl())
}

/// Polls `cond` until it holds, failing the test after `within`. This waits on an event in the
/// backend, checked by reading its state; it is not a sleep standing in for synchronisation.
async fn eventually<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return;
        }
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn within<T>(what: &str, d: Duration, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(d, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {d:?}: {what}"))
}

const LONG: Duration = Duration::from_secs(20);

/// The next state an observer reports, failing the test if none comes in time.
async fn next_state(o: &mut LeaderStream, what: &str) -> Option<LeaderInfo> {
    within(what, LONG, o.next())
        .await
        .unwrap_or_else(|| panic!("the observer stream ended while waiting for: {what}"))
}

/// Waits until `group` has `n` candidates (the leader included).
async fn queued(h: &dyn Harness, group: &str, n: usize) {
    eventually(&format!("{n} candidates in {group}"), LONG, || async {
        h.candidates(group).await == n
    })
    .await;
}

/// Campaigns in the background; the handle yields the office once elected.
fn campaign(c: &Arc<dyn Leader>, id: &str, o: ElectOptions) -> tokio::task::JoinHandle<Elected> {
    let (c, id) = (c.clone(), id.to_owned());
    tokio::spawn(async move {
        c.elect(&id, o)
            .await
            .unwrap_or_else(|e| panic!("{id} could not be elected: {e}"))
    })
}

async fn elected(what: &str, t: tokio::task::JoinHandle<Elected>) -> Elected {
    within(what, LONG, t).await.expect("campaign panicked")
}

fn is_loss(reason: &LossReason) -> bool {
    matches!(
        reason,
        LossReason::Revoked | LossReason::LeaseExpired | LossReason::KeepaliveFailed { .. }
    )
}

async fn contend(clients: Vec<Arc<dyn Leader>>, group: &str, ttl: Duration, rounds: usize) {
    let inside = Arc::new(AtomicBool::new(false));
    let terms = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        let (inside, terms, group) = (inside.clone(), terms.clone(), group.to_owned());
        tasks.push(tokio::spawn(async move {
            let id = format!("candidate-{i}");
            let o = ElectOptions::new().with_group(&group).with_ttl(ttl);
            for _ in 0..rounds {
                let e = c.elect(&id, o.clone()).await.expect("elect");
                assert!(
                    !inside.swap(true, Ordering::SeqCst),
                    "two leaders of {group} at once"
                );
                terms.lock().unwrap().push(e.term());
                let seen = c.leader(&group).await.expect("leader()");
                assert_eq!(
                    seen.as_ref().map(|l| (l.id.as_str(), l.term)),
                    Some((id.as_str(), e.term())),
                    "leader() does not name the elected candidate"
                );
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
                assert!(e.is_leader(), "revoked while leading: {e:?}");
                assert!(inside.swap(false, Ordering::SeqCst));
                e.resign().await.expect("resign");
            }
        }));
    }
    for t in tasks {
        within("candidates finish", LONG * 3, t)
            .await
            .expect("candidate panicked");
    }
    let terms = terms.lock().unwrap().clone();
    assert_eq!(terms.len(), 5 * rounds);
    assert!(
        terms.windows(2).all(|w| w[0] < w[1]),
        "terms did not strictly increase: {terms:?}"
    );
}

/// Five candidates sharing one client take turns; never two leaders at once.
pub async fn one_leader_among_five_in_process(h: &dyn Harness) {
    let c = h.client().await;
    contend(vec![c; 5], "five-in-process", h.ttl(), 3).await;
}

/// Five candidates on separate clients (connections) take turns; never two leaders at once.
pub async fn one_leader_among_five_across_clients(h: &dyn Harness) {
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(h.client().await);
    }
    contend(clients, "five-across-clients", h.ttl(), 3).await;
}

/// When the leader resigns, candidates are elected in the order they campaigned.
pub async fn resign_hands_over_in_fifo_order(h: &dyn Harness) {
    let group = "fifo";
    let c = h.client().await;
    let first = c.elect("first", opts(h, group)).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for i in 0..5usize {
        let client = h.client().await;
        let tx = tx.clone();
        let o = opts(h, group);
        tasks.push(tokio::spawn(async move {
            let e = client.elect(&format!("c{i}"), o).await.unwrap();
            tx.send((i, e.term())).unwrap();
            e.resign().await.unwrap();
        }));
        // Campaign one after the other.
        queued(h, group, i + 2).await;
    }
    let mut last = first.term();
    first.resign().await.unwrap();
    let mut order = Vec::new();
    for _ in 0..5 {
        let (i, term) = within("next candidate elected", LONG, rx.recv())
            .await
            .unwrap();
        assert!(term > last, "term {term} after {last}");
        last = term;
        order.push(i);
    }
    assert_eq!(
        order,
        vec![0, 1, 2, 3, 4],
        "candidates were not elected in FIFO order"
    );
    for t in tasks {
        t.await.unwrap();
    }
    queued(h, group, 0).await;
}

/// A resignation elects the next candidate at once (no polling interval, no TTL in between).
pub async fn resign_hands_over_at_once(h: &dyn Harness) {
    let group = "handover";
    let (a, b) = (h.client().await, h.client().await);
    let e = a.elect("a", opts(h, group)).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let next = tokio::spawn({
        let o = opts(h, group);
        async move {
            let e = b.elect("b", o).await.unwrap();
            let _ = tx.send(Instant::now());
            e
        }
    });
    queued(h, group, 2).await;
    let resigned = Instant::now();
    e.resign().await.unwrap();
    let got = within("hand-over", LONG, rx).await.unwrap();
    let e2 = next.await.unwrap();
    // Generous: this is not a benchmark, only a guard against hand-over by polling or TTL.
    assert!(
        got.duration_since(resigned) < Duration::from_secs(1),
        "hand-over took {:?}",
        got.duration_since(resigned)
    );
    e2.resign().await.unwrap();
}

/// `revoked()` fires on resignation too: a worker holding the signal learns that the office
/// ended, with `Released`.
pub async fn revoked_fires_on_resign(h: &dyn Harness) {
    let group = "resign-signal";
    let c = h.client().await;
    let e = c.elect("a", opts(h, group)).await.unwrap();
    let signal = e.revoked_signal();
    let worker = tokio::spawn(async move { signal.fired().await });
    assert!(e.is_leader());
    assert!(!e.revoked_signal().is_fired());
    e.resign().await.unwrap();
    let reason = within("revoked() after resign", LONG, worker)
        .await
        .unwrap();
    assert_eq!(reason, LossReason::Released);
    assert_eq!(c.leader(group).await.unwrap(), None);
    queued(h, group, 0).await;
}

/// Ending the leader's lease behind its back fires `revoked()`, elects the next candidate, and
/// leaves the old leader unable to proclaim or to resign the new leader's office.
pub async fn revoked_fires_on_lease_revocation(h: &dyn Harness) {
    let group = "revoke-lease";
    let (a, b) = (h.client().await, h.client().await);
    let e = a.elect("a", opts(h, group)).await.unwrap();
    let next = campaign(&b, "b", opts(h, group));
    queued(h, group, 2).await;
    h.revoke_lease(group).await;
    let reason = within(
        "revoked() after lease revocation",
        h.loss_bound(),
        e.revoked(),
    )
    .await;
    assert!(is_loss(&reason), "{reason:?}");
    assert!(!e.is_leader());
    let e2 = elected("next candidate elected after revocation", next).await;
    assert!(e2.term() > e.term());
    let err = e.proclaim("stale").await.unwrap_err();
    assert!(matches!(err, Error::NotLeader { .. }), "{err:?}");
    let err = e.resign().await.unwrap_err();
    assert!(matches!(err, Error::Lost { .. }), "{err:?}");
    assert!(err.is_retryable());
    let now = a.leader(group).await.unwrap().expect("b leads");
    assert_eq!((now.id.as_str(), now.term), ("b", e2.term()));
    assert!(e2.is_leader());
    e2.resign().await.unwrap();
}

/// Deleting the leader's record behind its back fires `revoked()` with `Revoked`; the next
/// candidate is elected.
pub async fn revoked_fires_on_key_deletion(h: &dyn Harness) {
    let group = "delete-key";
    let (a, b) = (h.client().await, h.client().await);
    let e = a.elect("a", opts(h, group)).await.unwrap();
    let next = campaign(&b, "b", opts(h, group));
    queued(h, group, 2).await;
    h.delete_leader_key(group).await;
    let reason = within("revoked() after key deletion", h.loss_bound(), e.revoked()).await;
    assert_eq!(reason, LossReason::Revoked);
    let e2 = elected("next candidate elected after deletion", next).await;
    assert!(e2.term() > e.term());
    assert!(e.resign().await.is_err());
    assert!(e2.is_leader());
    e2.resign().await.unwrap();
    queued(h, group, 0).await;
}

/// A leader that dies without resigning is replaced within its TTL (plus a margin).
pub async fn crashed_leader_replaced_within_ttl(h: &dyn Harness) {
    let group = "crash";
    let ttl = h.ttl();
    let b = h.client().await;
    let dead_term = h.crash_leader(group, "doomed", ttl).await;
    let died = Instant::now();
    let bound = h.crash_bound(ttl);
    if bound >= Duration::from_secs(1) {
        let still = b.leader(group).await.unwrap();
        assert_eq!(
            still.map(|l| (l.id, l.term)),
            Some(("doomed".to_owned(), dead_term)),
            "the dead leader was gone at once, so the crash was not simulated"
        );
    }
    let e = b
        .elect("heir", opts(h, group).with_max_wait(bound))
        .await
        .unwrap_or_else(|err| panic!("no new leader within {bound:?} of the crash: {err}"));
    tracing::info!(after = ?died.elapsed(), "crashed leader replaced");
    assert!(e.term() > dead_term);
    e.resign().await.unwrap();
}

/// Terms strictly increase from one leader to the next: across clients, hand-overs,
/// revocations and re-elections.
pub async fn terms_strictly_increase(h: &dyn Harness) {
    let group = "terms";
    let clients = [h.client().await, h.client().await, h.client().await];
    let mut last = 0;
    for i in 0..9 {
        let e = clients[i % 3]
            .elect(&format!("c{}", i % 3), opts(h, group))
            .await
            .unwrap();
        assert!(e.term() > last, "term {} after {last}", e.term());
        last = e.term();
        e.resign().await.unwrap();
    }
    let e = clients[0].elect("c0", opts(h, group)).await.unwrap();
    let next = campaign(&clients[1], "c1", opts(h, group));
    queued(h, group, 2).await;
    h.revoke_lease(group).await;
    let e2 = elected("successor elected", next).await;
    assert!(e2.term() > e.term());
    within("revoked()", h.loss_bound(), e.revoked()).await;
    // The deposed leader campaigns again and comes after its successor.
    let again = campaign(&clients[0], "c0", opts(h, group));
    queued(h, group, 2).await;
    let t2 = e2.term();
    e2.resign().await.unwrap();
    let e3 = elected("re-elected", again).await;
    assert!(e3.term() > t2);
    e3.resign().await.unwrap();
}

/// Observers see every change of leader, and "nobody leads" both after the last resignation and
/// after the leader's record was deleted behind its back.
pub async fn observers_see_every_change_including_none(h: &dyn Harness) {
    let group = "observed";
    let (a, b, c) = (h.client().await, h.client().await, h.client().await);
    let watcher = h.client().await;
    let mut o = watcher.observe(group).await.unwrap();
    assert_eq!(next_state(&mut o, "initial state").await, None);

    let ea = a.elect("a", opts(h, group)).await.unwrap();
    let s = next_state(&mut o, "a elected").await;
    assert_eq!(s, Some(LeaderInfo::new("a", ea.term(), "")));
    let tb = campaign(&b, "b", opts(h, group));
    queued(h, group, 2).await;
    let tc = campaign(&c, "c", opts(h, group));
    queued(h, group, 3).await;
    // Candidates joining the queue change nothing an observer sees: the next item is b's
    // election, not a repetition of a.
    ea.resign().await.unwrap();
    let eb = elected("b elected", tb).await;
    let s = next_state(&mut o, "b elected").await;
    assert_eq!(s, Some(LeaderInfo::new("b", eb.term(), "")));

    // A late observer starts with the current leader.
    let mut late = h.client().await.observe(group).await.unwrap();
    assert_eq!(
        next_state(&mut late, "late observer's first state").await,
        s
    );

    eb.resign().await.unwrap();
    let ec = elected("c elected", tc).await;
    let s = next_state(&mut o, "c elected").await;
    assert_eq!(s, Some(LeaderInfo::new("c", ec.term(), "")));
    assert_eq!(next_state(&mut late, "late observer sees c").await, s);
    ec.resign().await.unwrap();
    assert_eq!(next_state(&mut o, "nobody leads after resign").await, None);
    assert_eq!(next_state(&mut late, "late observer sees none").await, None);

    // Deleted behind the leader's back with nobody waiting: "nobody leads" again (etcd's own
    // Observe misses this one).
    let ed = a.elect("d", opts(h, group)).await.unwrap();
    let s = next_state(&mut o, "d elected").await;
    assert_eq!(s.map(|l| l.term), Some(ed.term()));
    h.delete_leader_key(group).await;
    assert_eq!(
        next_state(&mut o, "nobody leads after deletion").await,
        None
    );
    within("d revoked", h.loss_bound(), ed.revoked()).await;
    assert_eq!(a.leader(group).await.unwrap(), None);
}

/// After every change, `leader()` answers what `observe()` reported last.
pub async fn leader_agrees_with_observe(h: &dyn Harness) {
    let group = "agree";
    let clients = [h.client().await, h.client().await, h.client().await];
    let mut o = clients[2].observe(group).await.unwrap();
    let mut seen = next_state(&mut o, "initial state").await;
    assert_eq!(clients[0].leader(group).await.unwrap(), seen);

    let check = |seen: Option<LeaderInfo>| {
        let clients = &clients;
        async move {
            for c in clients {
                assert_eq!(
                    c.leader(group).await.unwrap(),
                    seen,
                    "leader() disagrees with observe()"
                );
            }
        }
    };
    let e0 = clients[0]
        .elect("x", opts(h, group).with_value("v0"))
        .await
        .unwrap();
    seen = next_state(&mut o, "x elected").await;
    assert_eq!(seen.as_ref().map(|l| l.value.as_str()), Some("v0"));
    check(seen.clone()).await;
    let t1 = campaign(&clients[1], "y", opts(h, group).with_value("w0"));
    queued(h, group, 2).await;
    check(seen.clone()).await;
    e0.proclaim("v1").await.unwrap();
    seen = next_state(&mut o, "x proclaimed").await;
    check(seen.clone()).await;
    e0.resign().await.unwrap();
    let e1 = elected("y elected", t1).await;
    seen = next_state(&mut o, "y elected").await;
    assert_eq!(seen, Some(LeaderInfo::new("y", e1.term(), "w0")));
    check(seen.clone()).await;
    h.revoke_lease(group).await;
    seen = next_state(&mut o, "y revoked").await;
    assert_eq!(seen, None);
    check(seen).await;
    within("y revoked", h.loss_bound(), e1.revoked()).await;
}

/// `proclaim` changes what observers and `leader()` see, keeps the term and the office (still
/// revocable the same way), and fails once the office is lost.
pub async fn proclaim_updates_what_observers_see(h: &dyn Harness) {
    let group = "proclaim";
    let (a, w) = (h.client().await, h.client().await);
    let e = a
        .elect("p", opts(h, group).with_value("starting"))
        .await
        .unwrap();
    let mut o = w.observe(group).await.unwrap();
    assert_eq!(
        next_state(&mut o, "initial state").await,
        Some(LeaderInfo::new("p", e.term(), "starting"))
    );
    for v in ["10.0.0.1:80", "", "ünïcode ✓"] {
        e.proclaim(v).await.unwrap();
        assert_eq!(
            next_state(&mut o, "proclaimed value").await,
            Some(LeaderInfo::new("p", e.term(), v))
        );
        assert_eq!(
            w.leader(group).await.unwrap(),
            Some(LeaderInfo::new("p", e.term(), v))
        );
    }
    assert!(e.is_leader());
    // The office is still bound to what keeps it alive: revoking that still deposes it.
    h.revoke_lease(group).await;
    let reason = within("revoked() after proclaim", h.loss_bound(), e.revoked()).await;
    assert!(is_loss(&reason), "{reason:?}");
    assert_eq!(next_state(&mut o, "nobody leads").await, None);
    let err = e.proclaim("too late").await.unwrap_err();
    assert!(matches!(err, Error::NotLeader { .. }), "{err:?}");
    assert_eq!(w.leader(group).await.unwrap(), None);
}

/// Dropping a waiting `elect` leaves no candidacy behind: it blocks nobody and is never
/// reported as leader.
pub async fn cancelled_elect_leaves_nothing(h: &dyn Harness) {
    let group = "cancel";
    let (a, b, c) = (h.client().await, h.client().await, h.client().await);
    let mut o = h.client().await.observe(group).await.unwrap();
    assert_eq!(next_state(&mut o, "initial").await, None);
    let e = a.elect("a", opts(h, group)).await.unwrap();
    let waiting = tokio::spawn({
        let (b, o) = (b.clone(), opts(h, group));
        async move { b.elect("ghost", o).await }
    });
    queued(h, group, 2).await;
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    queued(h, group, 1).await;
    // Cancel another one right at the start, before it could have been queued. (Its key may
    // still land and be deleted a moment later; while it exists it is a candidate like any
    // other, so observers may see it lead for that moment. Nothing else may.)
    let quick = tokio::time::timeout(Duration::ZERO, b.elect("quick-ghost", opts(h, group))).await;
    assert!(quick.is_err());
    e.resign().await.unwrap();
    let e2 = within(
        "no ghost blocks the election",
        LONG,
        c.elect("c", opts(h, group)),
    )
    .await
    .unwrap();
    e2.resign().await.unwrap();
    queued(h, group, 0).await;
    let mut states = Vec::new();
    loop {
        let s = next_state(&mut o, "c's term and the end").await;
        let done = s.as_ref().is_some_and(|l| l.id == "c");
        states.push(s);
        if done {
            break;
        }
    }
    assert_eq!(next_state(&mut o, "nobody leads").await, None);
    assert!(
        states.iter().flatten().all(|l| l.id != "ghost"),
        "a cancelled candidate was reported as leader: {states:?}"
    );
}

/// A campaign longer than the maximum wait fails with `Timeout` and leaves no candidacy.
pub async fn elect_timeout_leaves_nothing(h: &dyn Harness) {
    let group = "timeout";
    let (a, b) = (h.client().await, h.client().await);
    let e = a.elect("a", opts(h, group)).await.unwrap();
    let start = Instant::now();
    let max = Duration::from_millis(300);
    let err = b
        .elect("b", opts(h, group).with_max_wait(max))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(start.elapsed() >= max);
    queued(h, group, 1).await;
    e.resign().await.unwrap();
    let e = within(
        "elected after the leader resigned",
        LONG,
        b.elect("b", opts(h, group)),
    )
    .await
    .unwrap();
    e.resign().await.unwrap();
    queued(h, group, 0).await;
}

/// The seed's loop: elect, act as leader until `revoked()`, elect again; three revocations
/// (lease and record alternately) behind its back, and terms increase each time.
pub async fn seed_reelect_loop(h: &dyn Harness) {
    let name = "seed";
    let l = Group::from_arc(h.client().await, name).with_ttl(h.ttl());
    let observer = h.client().await;
    let terms = Mutex::new(Vec::new());
    let ops = AtomicUsize::new(0);
    let leader_loop = async {
        // elect leader
        let mut e = l.elect("id").await.unwrap();
        terms.lock().unwrap().push(e.term());
        let mut revocations = 0;
        loop {
            let revoked = tokio::select! {
                reason = e.revoked() => Some(reason),
                _ = tokio::time::sleep(Duration::from_millis(5)) => None,
            };
            match revoked {
                Some(reason) => {
                    assert!(is_loss(&reason), "{reason:?}");
                    revocations += 1;
                    if revocations == 3 {
                        break;
                    }
                    // re-elect
                    e = l.elect("id").await.unwrap();
                    terms.lock().unwrap().push(e.term());
                }
                // leader operation
                None => {
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // The office is gone: resigning it now reports the loss.
        assert!(e.resign().await.is_err());
    };
    let revoker = async {
        let mut last = 0;
        for i in 0..3 {
            eventually("the loop leads in a new term", LONG, || async {
                matches!(observer.leader(name).await.unwrap(), Some(l) if l.id == "id" && l.term > last)
            })
            .await;
            last = observer.leader(name).await.unwrap().unwrap().term;
            if i % 2 == 0 {
                h.revoke_lease(name).await;
            } else {
                h.delete_leader_key(name).await;
            }
        }
    };
    within("the seed loop", LONG * 3, async {
        tokio::join!(leader_loop, revoker)
    })
    .await;
    let terms = terms.into_inner().unwrap();
    assert_eq!(terms.len(), 3);
    assert!(terms.windows(2).all(|w| w[0] < w[1]), "{terms:?}");
    queued(h, name, 0).await;
}

/// Empty, oversized and NUL-containing group names and candidate ids, and a zero TTL, are typed
/// errors; nothing is left behind.
pub async fn invalid_names_rejected(h: &dyn Harness) {
    let c = h.client().await;
    let long = "x".repeat(MAX_NAME_LEN + 1);
    for bad in ["", long.as_str(), "a\0b"] {
        let e = c.elect(bad, opts(h, "valid")).await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidName {
                    kind: "candidate id",
                    ..
                }
            ),
            "{e:?}"
        );
        let e = c.elect("valid", opts(h, bad)).await.unwrap_err();
        assert!(
            matches!(e, Error::InvalidName { kind: "group", .. }),
            "{e:?}"
        );
        assert!(!e.is_retryable());
        assert!(e.to_string().len() < 300, "error message too long: {e}");
        let e = c.leader(bad).await.unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "{e:?}");
        let e = c.observe(bad).await.unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "{e:?}");
    }
    let e = c
        .elect(
            "a",
            ElectOptions::new()
                .with_group("zero-ttl")
                .with_ttl(Duration::ZERO),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidOptions { .. }), "{e:?}");
    assert_eq!(h.candidates("zero-ttl").await, 0);
    assert_eq!(h.candidates("valid").await, 0);
    // The longest valid names, and non-ASCII ones, work.
    let longest = "y".repeat(MAX_NAME_LEN);
    let e = c.elect(&longest, opts(h, &longest)).await.unwrap();
    assert_eq!(c.leader(&longest).await.unwrap().unwrap().id, longest);
    e.resign().await.unwrap();
    let e = c.elect("候補 🚀", opts(h, "グループ/ünï")).await.unwrap();
    assert_eq!(e.id(), "候補 🚀");
    assert_eq!(e.group(), "グループ/ünï");
    e.resign().await.unwrap();
}

async fn generic_term(l: &impl Leader, group: &str, o: ElectOptions) -> u64 {
    let e = l.elect("generic", o.with_group(group)).await.unwrap();
    let t = e.term();
    e.resign().await.unwrap();
    t
}

/// `Arc<dyn Leader>`, `Box<dyn Leader>`, generic code over `impl Leader`, and `Group` all work.
pub async fn dyn_and_generic_use(h: &dyn Harness) {
    let c: Arc<dyn Leader> = h.client().await;
    let t1 = generic_term(&c, "dyn", opts(h, "dyn")).await;
    let boxed: Box<dyn Leader> = Box::new(c.clone());
    let t2 = generic_term(&boxed, "dyn", opts(h, "dyn")).await;
    assert!(t2 > t1);
    let g = Group::from_arc(c.clone(), "dyn").with_options(opts(h, "ignored"));
    assert_eq!(g.name(), "dyn");
    let e = g.elect("grouped").await.unwrap();
    assert!(e.term() > t2);
    assert_eq!(
        g.leader().await.unwrap().map(|l| l.id),
        Some("grouped".into())
    );
    let mut o = g.observe().await.unwrap();
    assert_eq!(
        next_state(&mut o, "group observer").await.map(|l| l.term),
        Some(e.term())
    );
    e.resign().await.unwrap();
    assert_eq!(next_state(&mut o, "nobody leads").await, None);
    queued(h, "dyn", 0).await;
}

/// A leader keeps its office well past its TTL (it is kept alive) and is not told of a loss.
pub async fn leader_kept_past_ttl(h: &dyn Harness) {
    let group = "long";
    let (a, b) = (h.client().await, h.client().await);
    let e = a.elect("a", opts(h, group)).await.unwrap();
    let hold = h.ttl() * 2 + Duration::from_millis(500);
    let revoked = tokio::time::timeout(hold, e.revoked()).await;
    assert!(revoked.is_err(), "revoked while kept alive: {revoked:?}");
    assert!(e.is_leader());
    assert_eq!(
        b.leader(group).await.unwrap().map(|l| l.term),
        Some(e.term())
    );
    let err = b
        .elect(
            "b",
            opts(h, group).with_max_wait(Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    e.resign().await.unwrap();
}

/// Groups whose names share a prefix, or differ only by an encoded character, are separate
/// elections, each with its own leader and observers.
pub async fn groups_do_not_interfere(h: &dyn Harness) {
    let c = h.client().await;
    let groups = ["a", "a/b", "ab", "a%2Fb", "a b", "a/", "ä", "a/b/c"];
    let mut o = c.observe("a").await.unwrap();
    assert_eq!(next_state(&mut o, "initial").await, None);
    let mut offices = Vec::new();
    for g in groups {
        let e = c
            .elect(g, opts(h, g).with_max_wait(LONG))
            .await
            .unwrap_or_else(|e| panic!("{g:?} blocked by another group: {e}"));
        offices.push(e);
    }
    assert_eq!(
        next_state(&mut o, "a elected").await.map(|l| l.id),
        Some("a".to_owned())
    );
    for (g, e) in groups.iter().zip(&offices) {
        let l = c.leader(g).await.unwrap().expect("a leader");
        assert_eq!((l.id.as_str(), l.term), (*g, e.term()));
        assert_eq!(e.group(), *g);
    }
    for e in offices {
        e.resign().await.unwrap();
    }
    // The only change "a"'s observer saw after a's election is its end.
    assert_eq!(next_state(&mut o, "a resigned").await, None);
    for g in groups {
        queued(h, g, 0).await;
    }
}

/// Dropping the handle resigns: the next candidate is elected.
pub async fn drop_resigns(h: &dyn Harness) {
    let group = "drop";
    let (a, b) = (h.client().await, h.client().await);
    let e = a.elect("a", opts(h, group)).await.unwrap();
    let next = campaign(&b, "b", opts(h, group));
    queued(h, group, 2).await;
    drop(e);
    let e2 = elected("dropped handle resigned", next).await;
    e2.resign().await.unwrap();
    queued(h, group, 0).await;
}

/// Expands to one test per guarantee of the suite, in a module named for the backend.
#[macro_export]
macro_rules! leader_conformance {
    ($backend:ident, $make:expr $(, #[$attr:meta])* $(,)?) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            $crate::__leader_conformance_cases!($make, [$(#[$attr])*];
                one_leader_among_five_in_process,
                one_leader_among_five_across_clients,
                resign_hands_over_in_fifo_order,
                resign_hands_over_at_once,
                revoked_fires_on_resign,
                revoked_fires_on_lease_revocation,
                revoked_fires_on_key_deletion,
                crashed_leader_replaced_within_ttl,
                terms_strictly_increase,
                observers_see_every_change_including_none,
                leader_agrees_with_observe,
                proclaim_updates_what_observers_see,
                cancelled_elect_leaves_nothing,
                elect_timeout_leaves_nothing,
                seed_reelect_loop,
                invalid_names_rejected,
                dyn_and_generic_use,
                leader_kept_past_ttl,
                groups_do_not_interfere,
                drop_resigns,
            );
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __leader_conformance_cases {
    ($make:expr, $attrs:tt; $($case:ident),* $(,)?) => {
        $( $crate::__leader_conformance_case!($make, $attrs, $case); )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __leader_conformance_case {
    ($make:expr, [$(#[$attr:meta])*], $case:ident) => {
        $(#[$attr])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $case() {
            let harness = $make;
            $crate::conformance::$case(&harness).await;
        }
    };
}
