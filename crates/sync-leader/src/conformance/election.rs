//! One leader at a time, in FIFO order, with increasing terms; cancellation and timeouts.

use super::*;

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

/// The most polls a cancel-at-every-poll sweep may take before it must have completed or parked.
const MAX_POLLS: usize = 2_000;

/// After a dropped operation in `group`: eventually only `left` candidates remain, nobody but
/// `leader` is reported as leading, and, when nobody leads, a fresh client is elected at once.
async fn nothing_left(
    h: &dyn Harness,
    group: &str,
    leader: Option<&str>,
    what: &str,
    polls: usize,
) {
    let left = usize::from(leader.is_some());
    eventually(
        &format!("{what} dropped after {polls} polls left its candidacy"),
        LONG,
        || async { h.candidates(group).await == left },
    )
    .await;
    let c = h.client().await;
    let now = c.leader(group).await.unwrap().map(|l| l.id);
    assert_eq!(
        now.as_deref(),
        leader,
        "{what} dropped after {polls} polls: leader() names the wrong candidate"
    );
    if leader.is_none() {
        let e = within(
            &format!("{what} dropped after {polls} polls: a fresh candidate is elected"),
            LONG,
            c.elect("next", opts(h, group)),
        )
        .await
        .unwrap();
        e.resign().await.unwrap();
        queued(h, group, 0).await;
    }
}

/// `elect` then `resign` in a group nobody leads, dropped after 1, 2, … polls until it
/// completes: after every drop no candidacy is left and the next candidate is elected at once.
pub async fn elect_and_resign_cancelled_at_every_poll(h: &dyn Harness) {
    use sync_core::check::{cancel_at_every_poll, Sweep};
    let group = "cancel-every-poll";
    let b = h.client().await;
    let sweep = cancel_at_every_poll(
        "elect + resign",
        MAX_POLLS,
        || {
            let b = b.clone();
            let o = opts(h, group);
            async move {
                let e = b.elect("b", o).await.expect("elect in an empty group");
                e.resign().await.expect("resign")
            }
        },
        |polls| nothing_left(h, group, None, "elect + resign", polls),
    )
    .await;
    assert!(
        matches!(sweep, Sweep::Completed { .. }),
        "elect in an empty group never completed: {sweep:?}"
    );
    nothing_left(h, group, None, "the completed elect + resign", 0).await;
}

/// A waiting `elect` in a group someone leads, dropped after 1, 2, … polls until it waits: after
/// every drop only the leader is left (and named by `leader()`), and once it resigns the next
/// candidate is elected.
pub async fn contended_elect_cancelled_at_every_poll(h: &dyn Harness) {
    use sync_core::check::{cancel_at_every_poll, Sweep};
    let group = "cancel-every-poll-led";
    let (a, b) = (h.client().await, h.client().await);
    let e = a.elect("a", opts(h, group)).await.unwrap();
    let sweep = cancel_at_every_poll(
        "contended elect",
        MAX_POLLS,
        || {
            let b = b.clone();
            let o = opts(h, group);
            async move { b.elect("ghost", o).await }
        },
        |polls| nothing_left(h, group, Some("a"), "contended elect", polls),
    )
    .await;
    match sweep {
        Sweep::Parked { .. } => {}
        Sweep::Completed { output, polls } => {
            panic!("elect in a led group completed after {polls} polls: {output:?}")
        }
        other => panic!("unexpected sweep outcome: {other:?}"),
    }
    e.resign().await.unwrap();
    nothing_left(h, group, None, "the leader's resignation", 0).await;
}

/// The outside tester's scenario: while one candidate leads, another makes many campaigns that
/// are dropped after a random 0–20 ms (by an outer timeout, and through the maximum wait); none
/// is ever named leader, and after the leader resigns a fresh candidate is elected at once.
pub async fn abandoned_elects_leave_no_ghost(h: &dyn Harness) {
    let group = "abandoned";
    let (a, b) = (h.client().await, h.client().await);
    let e = a.elect("a", opts(h, group)).await.unwrap();
    for i in 0..100u64 {
        // Spread over 0–20 ms, the same on every run.
        let wait = Duration::from_micros((i * 7_919) % 20_000);
        if i % 2 == 0 {
            let r = tokio::time::timeout(wait, b.elect("ghost", opts(h, group))).await;
            assert!(r.is_err(), "elected in a led group: {r:?}");
        } else {
            let r = b.elect("ghost", opts(h, group).with_max_wait(wait)).await;
            assert!(
                matches!(r, Err(Error::Timeout { .. })),
                "a maximum wait of {wait:?} in a led group ended with {r:?}"
            );
        }
    }
    nothing_left(h, group, Some("a"), "abandoned campaigns", 0).await;
    e.resign().await.unwrap();
    nothing_left(h, group, None, "abandoned campaigns", 0).await;
}
