//! `observe()`, `leader()` and `proclaim()`: what everyone else sees.

use super::*;

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
