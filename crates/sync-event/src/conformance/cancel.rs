//! Cancellation at every poll: publish, ack and next leave nothing half done.

use std::time::Duration;

use sync_core::check::{cancel_at_every_poll, Sweep};

use super::{assert_contiguous, take, Harness, LONG};
use crate::{EventOptions, EventStream, GroupOptions, Member, Message, Start};

/// A publish dropped after 1, 2, … polls is either published whole, once, or not at all;
/// readers see contiguous offsets, and the next publish gets a larger offset.
pub async fn cancelled_publish_at_every_poll(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let start = ev.publish("t", Message::new("start")).await.unwrap();
    let last = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(start));
    let sweep = cancel_at_every_poll(
        "publish",
        200,
        || ev.publish("t", Message::new("maybe")),
        |_| {
            let ev = ev.clone();
            let last = last.clone();
            async move {
                let o = ev.publish("t", Message::new("after")).await.unwrap();
                let before = last.swap(o, std::sync::atomic::Ordering::SeqCst);
                assert!(o > before, "offset {o} after {before}");
            }
        },
    )
    .await;
    let last = match sweep {
        Sweep::Completed { output: Ok(o), .. } => {
            o.max(last.load(std::sync::atomic::Ordering::SeqCst))
        }
        other => panic!("publish did not complete: {other:?}"),
    };
    let first = ev.first_available("t").await.unwrap();
    let mut sub = ev.subscribe("t", Start::Offset(first)).await.unwrap();
    let n = (last - first + 1) as usize;
    let got = take(&mut sub, n).await;
    assert_contiguous(&got);
    for e in &got {
        assert!(
            [&b"start"[..], b"maybe", b"after"].contains(&e.payload.as_slice()),
            "a torn event: {:?}",
            e.payload
        );
    }
}

/// An ack dropped after 1, 2, … polls either acked (the event is not delivered again) or not
/// (the member can still ack it); never a lost event.
pub async fn cancelled_ack_at_every_poll(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let m = ev
        .join(
            "t",
            "g",
            GroupOptions::new().with_ack_wait(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    ev.publish("t", Message::new("x")).await.unwrap();
    let mut d = m.next().await.unwrap();
    let sweep = cancel_at_every_poll("ack", 200, || m.ack(&d), |_| async {}).await;
    // The sweep's last run completed (Ok, or DeliveryLost if an earlier dropped ack went
    // through); it never parks.
    assert!(!matches!(sweep, Sweep::Parked { .. }), "ack parked");
    // Whatever happened, the group delivers the next event and never this one again.
    ev.publish("t", Message::new("y")).await.unwrap();
    d = sync_core::check::within("next", LONG, m.next())
        .await
        .unwrap();
    assert_eq!((d.event.payload.as_slice(), d.attempt), (&b"y"[..], 1));
    m.ack(&d).await.unwrap();
}

/// A `next` dropped after 1, 2, … polls loses nothing: every event is still delivered (a
/// claim made by a dropped call comes back after the ack wait or when the member leaves).
pub async fn cancelled_next_loses_nothing(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let opts = GroupOptions::new().with_ack_wait(Duration::from_millis(1500));
    let m = ev.join("t", "g", opts.clone()).await.unwrap();
    for i in 0..3 {
        ev.publish("t", Message::new(format!("{i}"))).await.unwrap();
    }
    let _ = cancel_at_every_poll("next", 50, || m.next(), |_| async {}).await;
    m.leave().await.unwrap();
    let m2 = ev.join("t", "g", opts).await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 3 {
        let d = sync_core::check::within("redelivery", LONG, m2.next())
            .await
            .unwrap();
        seen.insert(String::from_utf8_lossy(&d.event.payload).into_owned());
        m2.ack(&d).await.unwrap();
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["0", "1", "2"]);
}

/// Publishes an event, takes it (attempt 1) and nacks it; its offset.
async fn nacked(ev: &dyn EventStream, m: &dyn Member) -> u64 {
    let o = ev.publish("t", Message::new("x")).await.unwrap();
    let d = sync_core::check::within("a new event", LONG, m.next())
        .await
        .unwrap();
    assert_eq!((d.event.offset, d.attempt), (o, 1));
    m.nack(&d).await.unwrap();
    o
}

/// A `next` dropped after 1, 2, … polls while a nacked event is due again does not keep that
/// event from the member: its next call gets it as attempt 2 well within the ack wait (a
/// redelivery claimed by the dropped call is handed out, not left claimed until the ack
/// wait ends).
pub async fn cancelled_next_keeps_redelivery(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let opts = GroupOptions::new().with_ack_wait(Duration::from_secs(60));
    let m = ev.join("t", "g", opts).await.unwrap();
    let due = std::cell::Cell::new(nacked(ev.as_ref(), m.as_ref()).await);
    let (ev, m) = (ev.as_ref(), m.as_ref());
    // A sweep ends at the first call that completes, which timing decides: several sweeps.
    for _ in 0..5 {
        let sweep = cancel_at_every_poll(
            "next",
            50,
            || m.next(),
            |_| {
                let due = &due;
                async move {
                    let d = sync_core::check::within(
                        "the redelivery, well within the ack wait",
                        Duration::from_secs(10),
                        m.next(),
                    )
                    .await
                    .unwrap();
                    assert_eq!((d.event.offset, d.attempt), (due.get(), 2));
                    m.ack(&d).await.unwrap();
                    due.set(nacked(ev, m).await);
                }
            },
        )
        .await;
        // A call that completed holds the redelivery: it must be the one due.
        if let Sweep::Completed { output, .. } = sweep {
            let d = output.unwrap();
            assert_eq!((d.event.offset, d.attempt), (due.get(), 2));
            m.ack(&d).await.unwrap();
            due.set(nacked(ev, m).await);
        }
    }
}
