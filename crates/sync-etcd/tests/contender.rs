//! The contender and sessions against the real cluster that `cargo xtask test` starts: what a
//! session promises (everything in it ends together, a lost session holds nothing new), and the
//! contender's reads and writes of its own key. The queue's FIFO order, cancel safety and loss
//! signals are checked through the lock and leader conformance suites, which run on it.

use std::time::Duration;

use sync_core::check::within;
use sync_core::signal::LossReason;
use sync_etcd::testing::{self, WipeOnDrop};
use sync_etcd::{ContendError, Contender, EtcdClient, EtcdConnection};

async fn setup(test: &str) -> (EtcdConnection, EtcdClient, WipeOnDrop) {
    let admin = testing::connect(testing::config(test)).await;
    let connection = admin.connection();
    (connection, admin.clone(), WipeOnDrop(admin))
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn closing_a_session_ends_every_lock_election_and_key_in_it() {
    let (etcd, admin, _wipe) = setup("session_close").await;
    let session = etcd.session(Duration::from_secs(10)).await.unwrap();
    let locks = Contender::new(&etcd, "lock").in_session(&session);
    let elections = Contender::new(&etcd, "election").in_session(&session);
    let a = locks.contend("a", b"a".to_vec(), None, None).await.unwrap();
    let b = locks.contend("b", b"b".to_vec(), None, None).await.unwrap();
    let e = elections
        .contend("g", b"e".to_vec(), None, None)
        .await
        .unwrap();
    for held in [&a, &b, &e] {
        assert_eq!(
            held.lease().id(),
            session.lease_id(),
            "bound to the session"
        );
    }
    // A key of the user's own, on the session's lease.
    let own = format!("{}mine", etcd.key_root());
    let lease = session.lease_id();
    admin
        .retry("put own key", admin.default_budget(), |mut c| {
            let own = own.clone();
            async move {
                let opts = sync_etcd::etcd_client::PutOptions::new().with_lease(lease);
                c.put(own, "v", Some(opts)).await.map(|_| ())
            }
        })
        .await
        .unwrap();
    assert_eq!(testing::count_keys(&admin, etcd.key_root()).await, 4);

    session.close().await.unwrap();
    assert!(session.is_lost());
    for held in [&a, &b, &e] {
        let reason = within(
            "loss after close",
            Duration::from_secs(2),
            held.signal().fired(),
        )
        .await;
        assert_ne!(reason, LossReason::Released, "{reason:?}");
    }
    assert_eq!(
        testing::count_keys(&admin, etcd.key_root()).await,
        0,
        "the server deleted every key of the session, the user's own included"
    );
    // Releasing after the loss says it was lost first.
    assert!(!a.release().await.unwrap());
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn a_lost_session_holds_nothing_new_and_leaves_no_key() {
    let (etcd, admin, _wipe) = setup("session_lost").await;
    let session = etcd.session(Duration::from_secs(10)).await.unwrap();
    let locks = Contender::new(&etcd, "lock").in_session(&session);
    // Revoked behind its back: the next join learns it from the server.
    testing::revoke(&admin, session.lease_id()).await;
    let err = locks
        .contend("x", b"x".to_vec(), None, Some(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert!(matches!(err, ContendError::Lost(_)), "{err:?}");
    assert!(session.is_lost(), "the session learned it too");
    let again = locks
        .try_contend("x", b"x".to_vec(), None)
        .await
        .unwrap_err();
    assert!(matches!(again, ContendError::Lost(_)), "{again:?}");
    assert_eq!(testing::count_keys(&admin, etcd.key_root()).await, 0);
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn a_session_revoked_behind_its_back_fires_lost_within_its_ttl() {
    let (etcd, admin, _wipe) = setup("session_revoked").await;
    let session = etcd.session(Duration::from_secs(3)).await.unwrap();
    let held = Contender::new(&etcd, "lock")
        .in_session(&session)
        .contend("x", Vec::new(), None, None)
        .await
        .unwrap();
    testing::revoke(&admin, session.lease_id()).await;
    // The key's deletion is seen by the watch; the keeper learns "lease not found" at its next
    // renewal. Both within the TTL.
    within("held lost", Duration::from_secs(3), held.signal().fired()).await;
    within(
        "session lost",
        Duration::from_secs(3),
        session.lost().fired(),
    )
    .await;
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn a_ttl_per_call_in_a_session_is_invalid_and_sends_nothing() {
    let (etcd, admin, _wipe) = setup("session_ttl").await;
    let session = etcd.session(Duration::from_secs(10)).await.unwrap();
    let locks = Contender::new(&etcd, "lock").in_session(&session);
    let err = locks
        .contend("x", Vec::new(), Some(Duration::from_secs(5)), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ContendError::Invalid(m) if m.contains("session")),
        "{err:?}"
    );
    assert_eq!(testing::count_keys(&admin, etcd.key_root()).await, 0);
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn sessions_are_validated_like_every_ttl() {
    let (etcd, _admin, _wipe) = setup("session_bad_ttl").await;
    for ttl in [Duration::ZERO, Duration::from_millis(999), Duration::MAX] {
        let err = etcd.session(ttl).await.unwrap_err();
        assert!(
            matches!(err, sync_etcd::Error::InvalidConfig(_)),
            "{ttl:?}: {err:?}"
        );
    }
    let s = etcd.session(Duration::from_millis(1500)).await.unwrap();
    assert_eq!(s.ttl(), Duration::from_secs(2), "whole seconds, rounded up");
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn head_names_the_holder_and_set_value_only_while_ours() {
    let (etcd, admin, _wipe) = setup("contender_head").await;
    let queues = Contender::new(&etcd, "election");
    assert_eq!(queues.head("g").await.unwrap(), None);
    let first = queues
        .contend("g", b"one".to_vec(), None, None)
        .await
        .unwrap();
    let second = tokio::spawn({
        let q = queues.clone();
        async move { q.contend("g", b"two".to_vec(), None, None).await }
    });
    testing::queued(&admin, &queues.dir("g"), 2).await;
    assert_eq!(
        queues.head("g").await.unwrap(),
        Some((b"one".to_vec(), first.fencing_token()))
    );
    assert!(first.set_value(b"uno".to_vec()).await.unwrap());
    assert_eq!(queues.head("g").await.unwrap().unwrap().0, b"uno");

    // Deleted behind its back: the write must not recreate it.
    admin
        .retry("delete", admin.default_budget(), |mut c| {
            let key = first.key().to_owned();
            async move { c.delete(key, None).await.map(|_| ()) }
        })
        .await
        .unwrap();
    within("loss", Duration::from_secs(2), first.signal().fired()).await;
    assert!(!first.set_value(b"late".to_vec()).await.unwrap());
    let second = within("hand-over", Duration::from_secs(5), second)
        .await
        .unwrap()
        .unwrap();
    assert!(second.fencing_token() > first.fencing_token());
    assert_eq!(
        queues.head("g").await.unwrap(),
        Some((b"two".to_vec(), second.fencing_token()))
    );
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn try_contend_and_timeouts_leave_no_key() {
    let (etcd, admin, _wipe) = setup("contender_try").await;
    let queues = Contender::new(&etcd, "lock");
    let held = queues
        .try_contend("t", Vec::new(), None)
        .await
        .unwrap()
        .unwrap();
    assert!(queues
        .try_contend("t", Vec::new(), None)
        .await
        .unwrap()
        .is_none());
    let err = queues
        .contend("t", Vec::new(), None, Some(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ContendError::Timeout { waited } if waited >= Duration::from_millis(300)),
        "{err:?}"
    );
    sync_core::check::eventually("only the holder's key", Duration::from_secs(3), || {
        let (admin, dir) = (admin.clone(), queues.dir("t"));
        async move { testing::count_keys(&admin, &dir).await == 1 }
    })
    .await;
    assert!(held.release().await.unwrap());
    assert_eq!(testing::count_keys(&admin, etcd.key_root()).await, 0);
}

#[tokio::test]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn a_name_contended_again_reuses_its_key_and_live_keys_never_share_one() {
    let (etcd, admin, _wipe) = setup("slot_reuse").await;
    let locks = Contender::new(&etcd, "lock");
    // One after the other: the same key, a new create revision (the fencing token) each time,
    // so deleted keys do not pile up under the queue.
    let first = locks.contend("r", b"1".to_vec(), None, None).await.unwrap();
    let (key, mut rev) = (first.key().to_owned(), first.revision());
    assert!(first.release().await.unwrap());
    for _ in 0..3 {
        let again = locks.contend("r", b"2".to_vec(), None, None).await.unwrap();
        assert_eq!(again.key(), key, "a released key's name serves again");
        assert!(again.revision() > rev, "the token still increases");
        rev = again.revision();
        assert!(again.release().await.unwrap());
    }
    // A holder and a waiter of this process: two keys.
    let held = locks.contend("r", b"3".to_vec(), None, None).await.unwrap();
    let waiter = tokio::spawn({
        let locks = locks.clone();
        async move { locks.contend("r", b"4".to_vec(), None, None).await }
    });
    let dir = locks.dir("r");
    let queued = testing::queued(&admin, &dir, 2).await;
    assert_ne!(queued[0].key, queued[1].key);
    assert!(held.release().await.unwrap());
    let next = within("the waiter gets it", Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(next.key(), key, "the waiter kept its own key");
    assert!(next.release().await.unwrap());

    // Two handles made apart, on one session (one lease): never one key for two claims, or the
    // second would take over the first's place and hold it too.
    let session = etcd.session(Duration::from_secs(10)).await.unwrap();
    let a = Contender::new(&etcd, "lock").in_session(&session);
    let b = Contender::new(&etcd, "lock").in_session(&session);
    let held = a.contend("s", b"a".to_vec(), None, None).await.unwrap();
    let other = b.try_contend("s", b"b".to_vec(), None).await.unwrap();
    assert!(
        other.is_none(),
        "a second handle on the same session got a held lock"
    );
    assert!(held.release().await.unwrap());
    session.close().await.unwrap();
}
