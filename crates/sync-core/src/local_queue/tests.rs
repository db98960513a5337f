//! The queue engine on its own: FIFO, tokens, signals, idle names, watches.

use super::*;
use futures::FutureExt;

/// Counts the changes it is told of; in use while `keep` is set.
#[derive(Default)]
struct Counting {
    changes: Vec<Option<u64>>,
    keep: bool,
}

impl Watch<&'static str> for Counting {
    fn changed(&mut self, holder: Option<&Holder<&'static str>>) {
        self.changes.push(holder.map(Holder::token));
    }
    fn in_use(&mut self) -> bool {
        self.keep
    }
}

#[tokio::test]
async fn fifo_with_increasing_tokens_and_loss_signals() {
    let q: LocalQueue = LocalQueue::new();
    let (first, lost) = q.acquire("n", (), None).await.unwrap();
    let mut second = Box::pin(q.acquire("n", (), None));
    assert!((&mut second).now_or_never().is_none());
    let mut third = Box::pin(q.acquire("n", (), None));
    assert!((&mut third).now_or_never().is_none());
    assert_eq!(
        q.inspect("n", |h, n| (h.map(Holder::token), n)),
        (Some(1), 2)
    );
    assert!(first.release());
    assert_eq!(lost.fired().await, LossReason::Released);
    let (second, lost2) = second.await.unwrap();
    assert_eq!(second.token(), 2);
    assert!(q.revoke("n"));
    assert_eq!(lost2.fired().await, LossReason::Revoked);
    assert!(!second.release(), "a revoked hold is no longer held");
    let (third, _) = third.await.unwrap();
    assert_eq!(third.token(), 3);
}

#[tokio::test]
async fn idle_names_take_no_memory() {
    let q: LocalQueue = LocalQueue::new();
    // Released, dropped, revoked.
    let (h, _) = q.try_acquire("a", ()).unwrap();
    assert_eq!(q.names(), 1);
    h.release();
    assert_eq!(q.names(), 0);
    drop(q.try_acquire("a", ()).unwrap());
    assert_eq!(q.names(), 0);
    let (h, _) = q.try_acquire("a", ()).unwrap();
    assert!(q.revoke("a"));
    assert_eq!(q.names(), 0);
    drop(h);
    // A waiter that timed out, one cancelled, one granted after its future was dropped.
    let (h, _) = q.try_acquire("a", ()).unwrap();
    let r = q.acquire("a", (), Some(Duration::from_millis(1))).await;
    assert!(matches!(r, Err(WaitError::Timeout { .. })), "{r:?}");
    let mut w = Box::pin(q.acquire("a", (), None));
    assert!((&mut w).now_or_never().is_none());
    assert_eq!(q.inspect("a", |_, n| n), 1);
    drop(w);
    assert_eq!(q.inspect("a", |_, n| n), 0);
    let mut w = Box::pin(q.acquire("a", (), None));
    assert!((&mut w).now_or_never().is_none());
    drop(h); // grants the waiter, whose future is then dropped unpolled
    assert!(q.inspect("a", |h, _| h.is_some()));
    drop(w);
    assert_eq!(q.names(), 0);
    // Many names used once each leave nothing behind.
    for i in 0..1000 {
        drop(q.try_acquire(&format!("n{i}"), ()).unwrap());
    }
    assert_eq!(q.names(), 0);
    assert!(!q.revoke("never"));
    q.tidy("never");
    assert_eq!(q.names(), 0);
}

#[tokio::test]
async fn watch_sees_changes_and_keeps_its_name_while_in_use() {
    let q: LocalQueue<&'static str, Counting> = LocalQueue::new();
    q.with_watch("g", |w, h| {
        assert!(h.is_none());
        w.keep = true;
    });
    let (h, _) = q.try_acquire("g", "a").unwrap();
    assert!(h.update(|c| *c = "a2"));
    assert_eq!(q.inspect("g", |h, _| h.map(|h| *h.claim())), Some("a2"));
    let mut next = Box::pin(q.acquire("g", "b", None));
    assert!((&mut next).now_or_never().is_none());
    drop(h);
    // The waiter was granted, then dropped before it took its hold: the name is free again.
    drop(next);
    drop(q.try_acquire("g", "c").unwrap());
    let changes = q.with_watch("g", |w, _| std::mem::take(&mut w.changes));
    assert_eq!(changes, [Some(1), Some(1), Some(2), None, Some(3), None]);
    assert_eq!(q.names(), 1, "kept while the watch is in use");
    q.with_watch("g", |w, _| w.keep = false);
    assert_eq!(q.names(), 0);
    let weak = q.downgrade();
    assert!(weak.upgrade().is_some());
    drop(q);
    assert!(weak.upgrade().is_none());
}

#[tokio::test]
async fn permits_admit_up_to_n_then_fifo() {
    let q: LocalQueue = LocalQueue::new();
    let (a, _) = q
        .try_acquire_with("s", Rule::Permits(2), ())
        .unwrap()
        .unwrap();
    let (b, _) = q
        .try_acquire_with("s", Rule::Permits(2), ())
        .unwrap()
        .unwrap();
    assert!(q
        .try_acquire_with("s", Rule::Permits(2), ())
        .unwrap()
        .is_none());
    assert!(matches!(
        q.try_acquire_with("s", Rule::Permits(3), ()),
        Err(WaitError::Mismatch {
            theirs: Rule::Permits(2)
        })
    ));
    let t = b.token();
    drop(a);
    let (c, _) = q
        .acquire_with("s", Rule::Permits(2), (), None)
        .await
        .unwrap();
    assert!(c.token() > t);
    drop((b, c));
    assert_eq!(q.names(), 0);
}

#[tokio::test]
async fn readers_share_and_wait_behind_a_waiting_writer() {
    let q: LocalQueue = LocalQueue::new();
    let (r1, _) = q.try_acquire_with("rw", Rule::Read, ()).unwrap().unwrap();
    let (r2, _) = q.try_acquire_with("rw", Rule::Read, ()).unwrap().unwrap();
    let q2 = q.clone();
    let w = tokio::spawn(async move { q2.acquire_with("rw", Rule::Write, (), None).await });
    while q.inspect_all("rw", |_, waiting| waiting) == 0 {
        tokio::task::yield_now().await;
    }
    assert!(q.try_acquire_with("rw", Rule::Read, ()).unwrap().is_none());
    let q3 = q.clone();
    let r3 = tokio::spawn(async move { q3.acquire_with("rw", Rule::Read, (), None).await });
    while q.inspect_all("rw", |_, waiting| waiting) < 2 {
        tokio::task::yield_now().await;
    }
    drop(r1);
    drop(r2);
    let (w, _) = w.await.unwrap().unwrap();
    assert_eq!(q.inspect_all("rw", |h, n| (h.len(), n)), (1, 1));
    drop(w);
    let (r3, _) = r3.await.unwrap().unwrap();
    drop(r3);
    assert_eq!(q.names(), 0);
}

#[tokio::test]
async fn idle_names_are_swept_before_the_map_grows() {
    let q: LocalQueue = LocalQueue::new();
    // The same name again and again keeps one entry.
    for _ in 0..100 {
        let (h, _) = q.try_acquire("same", ()).expect("free");
        h.release();
    }
    assert_eq!(q.names_in_memory(), 1);
    assert_eq!(q.names(), 0);
    // Ten thousand names used once each never take more than the sweep allows.
    let mut most = 0;
    for i in 0..10_000 {
        let (h, _) = q.try_acquire(&format!("n{i}"), ()).expect("free");
        h.release();
        most = most.max(q.names_in_memory());
    }
    assert!(
        most <= 256,
        "the map kept {most} names for 1 in use at a time"
    );
    // Names in use are never swept.
    let held: Vec<_> = (0..200)
        .map(|i| q.try_acquire(&format!("h{i}"), ()).expect("free").0)
        .collect();
    for i in 0..1_000 {
        let (h, _) = q.try_acquire(&format!("m{i}"), ()).expect("free");
        h.release();
    }
    assert_eq!(q.names(), 200);
    assert!(held
        .iter()
        .all(|h| q.inspect(h.name(), |holder, _| holder.is_some())));
}

#[tokio::test]
async fn a_bare_hold_makes_its_signal_when_asked_and_it_tells_the_truth() {
    let q: LocalQueue = LocalQueue::new();
    // Asked before the loss: fires on revoke, and every later ask shares it.
    let a = q.try_acquire_bare("n", ()).expect("free");
    assert!(q.try_acquire_bare("n", ()).is_none(), "exclusive");
    let early = a.loss_signal();
    assert!(!early.is_fired());
    assert!(q.revoke("n"));
    assert_eq!(early.fired().await, LossReason::Revoked);
    assert_eq!(a.loss_signal().reason(), Some(LossReason::Revoked));
    assert!(!a.release());

    // Asked only after the loss: already fired, with the reason.
    let b = q.try_acquire_bare("n", ()).expect("free again");
    assert!(b.token() > 1);
    assert!(q.revoke("n"));
    assert_eq!(b.loss_signal().reason(), Some(LossReason::Revoked));
    drop(b);

    // Never asked: release hands over to a waiter all the same.
    let c = q.try_acquire_bare("n", ()).expect("free again");
    let mut waiter = Box::pin(q.acquire("n", (), None));
    assert!((&mut waiter).now_or_never().is_none());
    assert!(c.release());
    let (d, lost) = waiter.await.unwrap();
    assert!(!lost.is_fired());
    // A bare try behind a holder, or behind a waiter, gets nothing (FIFO: no barging).
    assert!(q.try_acquire_bare("n", ()).is_none());
    drop(d);
    assert_eq!(lost.fired().await, LossReason::Released);
    assert_eq!(q.names(), 0);
}
