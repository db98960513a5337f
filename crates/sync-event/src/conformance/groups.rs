//! Consumer groups: one member per event, ack wait, nack, dead letters, crashes, position.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{payloads, take, Harness, LONG};
use crate::event::dead_letter;
use crate::{Delivery, Error, EventOptions, GroupOptions, Member, Message, Retention, Start};

async fn next(m: &dyn Member) -> Delivery {
    sync_core::check::within("the next delivery", LONG, m.next())
        .await
        .unwrap()
}

async fn nothing(m: &dyn Member) {
    if let Ok(d) = tokio::time::timeout(Duration::from_millis(300), m.next()).await {
        panic!("expected no delivery, got {d:?}");
    }
}

fn text(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.event.payload).into_owned()
}

/// Two members (on different handles) share the events: each event is delivered to exactly
/// one of them, and acked events are not delivered again.
pub async fn group_each_event_to_one_member(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let other = h.peer(&ev).await;
    let a = ev.join("t", "g", GroupOptions::new()).await.unwrap();
    let b = other.join("t", "g", GroupOptions::new()).await.unwrap();
    let n = 20;
    for i in 0..n {
        ev.publish("t", Message::new(format!("{i}"))).await.unwrap();
    }
    let mut seen = BTreeSet::new();
    let (mut from_a, mut from_b) = (0, 0);
    while seen.len() < n {
        let (d, who) = tokio::select! {
            d = a.next() => (d.unwrap(), 0),
            d = b.next() => (d.unwrap(), 1),
            _ = tokio::time::sleep(LONG) => panic!("deliveries stopped at {}", seen.len()),
        };
        assert_eq!(d.attempt, 1);
        assert!(
            seen.insert(d.event.offset),
            "offset {} twice",
            d.event.offset
        );
        if who == 0 {
            a.ack(&d).await.unwrap();
            from_a += 1;
        } else {
            b.ack(&d).await.unwrap();
            from_b += 1;
        }
    }
    assert_eq!(from_a + from_b, n);
    nothing(a.as_ref()).await;
    nothing(b.as_ref()).await;
}

/// Redeliveries raced for by two members, whose losing `next()` is dropped each time (a
/// `select!`), each come once as attempt 2: a redelivery won by a dropped call is not left
/// claimed until the ack wait ends.
pub async fn group_redeliveries_to_racing_members_once_each(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let other = h.peer(&ev).await;
    let a = ev.join("t", "g", GroupOptions::new()).await.unwrap();
    let b = other.join("t", "g", GroupOptions::new()).await.unwrap();
    let n = 12;
    for i in 0..n {
        ev.publish("t", Message::new(format!("{i}"))).await.unwrap();
    }
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(next(a.as_ref()).await);
    }
    for d in &held {
        a.nack(d).await.unwrap();
    }
    let mut seen = BTreeSet::new();
    while seen.len() < n {
        let (d, who) = tokio::select! {
            d = a.next() => (d.unwrap(), 0),
            d = b.next() => (d.unwrap(), 1),
            _ = tokio::time::sleep(LONG) => panic!("redeliveries stopped at {}", seen.len()),
        };
        assert_eq!(d.attempt, 2, "offset {}", d.event.offset);
        assert!(
            seen.insert(d.event.offset),
            "offset {} twice",
            d.event.offset
        );
        let m = if who == 0 { &a } else { &b };
        m.ack(&d).await.unwrap();
    }
    nothing(a.as_ref()).await;
    nothing(b.as_ref()).await;
}

/// An event not acked within the ack wait goes to another member, as attempt 2.
pub async fn group_ack_wait_redelivers_to_another_member(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let opts = GroupOptions::new().with_ack_wait(Duration::from_millis(1500));
    let a = ev.join("t", "g", opts.clone()).await.unwrap();
    let o = ev.publish("t", Message::new("x")).await.unwrap();
    let first = next(a.as_ref()).await;
    assert_eq!((first.event.offset, first.attempt), (o, 1));
    let other = h.peer(&ev).await;
    let b = other.join("t", "g", opts).await.unwrap();
    let again = next(b.as_ref()).await;
    assert_eq!(
        (again.event.offset, again.attempt, text(&again)),
        (o, 2, "x".into())
    );
    b.ack(&again).await.unwrap();
    let late = a.ack(&first).await;
    assert!(
        matches!(late, Err(Error::DeliveryLost { offset, .. }) if offset == o),
        "{late:?}"
    );
}

/// A nacked event is delivered again at once.
pub async fn group_nack_redelivers(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let m = ev.join("t", "g", GroupOptions::new()).await.unwrap();
    ev.publish("t", Message::new("x")).await.unwrap();
    ev.publish("t", Message::new("y")).await.unwrap();
    let d = next(m.as_ref()).await;
    assert_eq!(text(&d), "x");
    m.nack(&d).await.unwrap();
    let again = next(m.as_ref()).await;
    assert_eq!((text(&again), again.attempt), ("x".into(), 2));
    m.ack(&again).await.unwrap();
    let y = next(m.as_ref()).await;
    assert_eq!((text(&y), y.attempt), ("y".into(), 1));
    m.ack(&y).await.unwrap();
    nothing(m.as_ref()).await;
}

/// After the retry limit the event goes to the dead-letter topic (with where it came from),
/// and the group moves on.
pub async fn group_dead_letter_after_retry_limit(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let opts = GroupOptions::new()
        .with_max_deliveries(2)
        .with_dead_letter("t.dlq");
    let mut dlq = ev.subscribe("t.dlq", Start::Earliest).await.unwrap();
    let m = ev.join("t", "g", opts).await.unwrap();
    let o = ev
        .publish("t", Message::new("poison").with_header("k", "v"))
        .await
        .unwrap();
    ev.publish("t", Message::new("fine")).await.unwrap();
    for attempt in 1..=2 {
        let d = next(m.as_ref()).await;
        assert_eq!((text(&d), d.attempt), ("poison".into(), attempt));
        m.nack(&d).await.unwrap();
    }
    let d = next(m.as_ref()).await;
    assert_eq!(text(&d), "fine");
    m.ack(&d).await.unwrap();
    let dead = take(&mut dlq, 1).await;
    assert_eq!(payloads(&dead), ["poison"]);
    let hd = &dead[0].headers;
    assert_eq!(hd["k"], "v");
    assert_eq!(hd[dead_letter::TOPIC], "t");
    assert_eq!(hd[dead_letter::OFFSET], o.to_string());
    assert_eq!(hd[dead_letter::GROUP], "g");
    assert_eq!(hd[dead_letter::DELIVERIES], "2");
    nothing(m.as_ref()).await;
}

/// A member dropped without acking: its events go to another member (without waiting out a
/// long ack wait).
pub async fn group_member_dropped_without_ack_is_redelivered(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let opts = GroupOptions::new().with_ack_wait(Duration::from_secs(600));
    let a = ev.join("t", "g", opts.clone()).await.unwrap();
    let b = ev.join("t", "g", opts).await.unwrap();
    ev.publish("t", Message::new("x")).await.unwrap();
    let d = next(a.as_ref()).await;
    drop(a);
    let again = next(b.as_ref()).await;
    assert_eq!((again.event.offset, again.attempt), (d.event.offset, 2));
    b.ack(&again).await.unwrap();
}

/// A member that dies (kill -9: no leave, no cleanup) loses nothing: its unacked events are
/// delivered to another member, no later than the ack wait.
pub async fn group_member_crash_loses_nothing(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let other = h.peer(&ev).await;
    let opts = GroupOptions::new().with_ack_wait(Duration::from_secs(3));
    let a = other.join("t", "g", opts.clone()).await.unwrap();
    for i in 0..3 {
        ev.publish("t", Message::new(format!("{i}"))).await.unwrap();
    }
    let d0 = next(a.as_ref()).await;
    let d1 = next(a.as_ref()).await;
    a.ack(&d0).await.unwrap();
    h.crash(a).await;
    let b = ev.join("t", "g", opts).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let d = next(b.as_ref()).await;
        got.push((text(&d), d.attempt));
        b.ack(&d).await.unwrap();
    }
    got.sort();
    assert_eq!(got, [(text(&d1), 2), ("2".into(), 1)]);
    nothing(b.as_ref()).await;
}

/// Every member leaves; a new member (on a new handle) continues where the group was.
pub async fn group_position_survives_restart(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    for i in 0..4 {
        ev.publish("t", Message::new(format!("{i}"))).await.unwrap();
    }
    let m = ev.join("t", "g", GroupOptions::new()).await.unwrap();
    for want in ["0", "1"] {
        let d = next(m.as_ref()).await;
        assert_eq!(text(&d), want);
        m.ack(&d).await.unwrap();
    }
    m.leave().await.unwrap();
    assert!(matches!(m.next().await, Err(Error::Closed)));
    drop(m);
    let restarted = h.peer(&ev).await;
    let m = restarted
        .join("t", "g", GroupOptions::new().with_start(Start::Latest))
        .await
        .unwrap();
    for want in ["2", "3"] {
        let d = next(m.as_ref()).await;
        assert_eq!((text(&d), d.attempt), (want.into(), 1));
        m.ack(&d).await.unwrap();
    }
    nothing(m.as_ref()).await;
}

/// An ack after the ack wait is `DeliveryLost` (the event is redelivered), never a silent
/// success.
pub async fn group_late_ack_is_delivery_lost(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let m = ev
        .join(
            "t",
            "g",
            GroupOptions::new().with_ack_wait(Duration::from_millis(1200)),
        )
        .await
        .unwrap();
    ev.publish("t", Message::new("x")).await.unwrap();
    let d = next(m.as_ref()).await;
    let again = next(m.as_ref()).await; // after the ack wait
    assert_eq!((again.event.offset, again.attempt), (d.event.offset, 2));
    let late = m.ack(&d).await;
    assert!(matches!(late, Err(Error::DeliveryLost { .. })), "{late:?}");
    m.ack(&again).await.unwrap();
}

/// Two groups of one topic each get every event.
pub async fn groups_are_independent(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let a = ev.join("t", "g", GroupOptions::new()).await.unwrap();
    let b = ev.join("t", "g/2", GroupOptions::new()).await.unwrap();
    ev.publish("t", Message::new("x")).await.unwrap();
    for m in [&a, &b] {
        let d = next(m.as_ref()).await;
        assert_eq!((text(&d), d.attempt), ("x".into(), 1));
        m.ack(&d).await.unwrap();
    }
}

/// A new group with `Start::Latest` skips the events published before it was made.
pub async fn group_start_latest(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    ev.publish("t", Message::new("old")).await.unwrap();
    let m = ev
        .join("t", "g", GroupOptions::new().with_start(Start::Latest))
        .await
        .unwrap();
    nothing(m.as_ref()).await;
    ev.publish("t", Message::new("new")).await.unwrap();
    let d = next(m.as_ref()).await;
    assert_eq!(text(&d), "new");
    m.ack(&d).await.unwrap();
}

/// Events that retention drops before the group took them are reported to the group as
/// `Truncated` (naming the first offset it missed and the first available one), never skipped
/// silently; after it, the group goes on from the first available event, and the same loss is
/// not reported again.
pub async fn group_behind_retention_is_told_truncated(h: &dyn Harness) {
    let ev = h
        .events(EventOptions::new().with_retention(Retention::new().with_max_events(3)))
        .await;
    let m = ev.join("t", "g", GroupOptions::new()).await.unwrap();
    let mut offsets = Vec::new();
    for i in 0..8 {
        offsets.push(ev.publish("t", Message::new(format!("{i}"))).await.unwrap());
    }
    sync_core::check::eventually("count retention applied", LONG, || async {
        ev.first_available("t").await.unwrap() == offsets[5]
    })
    .await;
    match sync_core::check::within("the group's next call", LONG, m.next()).await {
        Err(Error::Truncated {
            topic,
            requested,
            first_available,
        }) => {
            assert_eq!(topic, "t");
            assert_eq!((requested, first_available), (offsets[0], offsets[5]));
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    for want in ["5", "6", "7"] {
        let d = next(m.as_ref()).await;
        assert_eq!((text(&d), d.attempt), (want.into(), 1));
        m.ack(&d).await.unwrap();
    }
    nothing(m.as_ref()).await;
}

/// A member waiting in `next()` on a caught-up group is woken by a publish: it gets the event
/// well before any ack wait could have passed.
pub async fn group_waiting_member_is_woken_by_publish(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let opts = GroupOptions::new().with_ack_wait(Duration::from_secs(120));
    let m = ev.join("t", "g", opts).await.unwrap();
    for round in 0..3 {
        let (d, o) = tokio::join!(next(m.as_ref()), async {
            // Long enough for the member to find nothing and wait.
            tokio::time::sleep(Duration::from_millis(300)).await;
            ev.publish("t", Message::new(format!("{round}")))
                .await
                .unwrap()
        });
        assert_eq!(
            (d.event.offset, d.attempt, text(&d)),
            (o, 1, round.to_string())
        );
        m.ack(&d).await.unwrap();
    }
}

/// A member waiting in `next()` is woken by another member's nack: it gets the nacked event as
/// attempt 2 at once, not after the ack wait (two minutes here, longer than the test may take).
pub async fn group_waiting_member_is_woken_by_nack(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let other = h.peer(&ev).await;
    let opts = GroupOptions::new().with_ack_wait(Duration::from_secs(120));
    let a = ev.join("t", "g", opts.clone()).await.unwrap();
    let b = other.join("t", "g", opts).await.unwrap();
    let o = ev.publish("t", Message::new("x")).await.unwrap();
    let first = next(a.as_ref()).await;
    assert_eq!((first.event.offset, first.attempt), (o, 1));
    let (again, ()) = tokio::join!(next(b.as_ref()), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.nack(&first).await.unwrap();
    });
    assert_eq!(
        (again.event.offset, again.attempt, text(&again)),
        (o, 2, "x".into())
    );
    b.ack(&again).await.unwrap();
}

/// A member that took and acked an event, then fell far behind (retention dropped many more
/// events than it keeps meanwhile), is told `Truncated` with the true first retained offset, and
/// then gets every retained event: none is skipped because the group looked for the first one
/// near where it last saw it.
pub async fn group_far_behind_retention_gets_every_retained_event(h: &dyn Harness) {
    let ev = h
        .events(EventOptions::new().with_retention(Retention::new().with_max_events(5)))
        .await;
    let m = ev.join("t", "g", GroupOptions::new()).await.unwrap();
    ev.publish("t", Message::new("first")).await.unwrap();
    let d = next(m.as_ref()).await;
    assert_eq!(text(&d), "first");
    m.ack(&d).await.unwrap();
    let mut offsets = Vec::new();
    for i in 0..60 {
        offsets.push(ev.publish("t", Message::new(format!("{i}"))).await.unwrap());
    }
    sync_core::check::eventually("count retention applied", LONG, || async {
        ev.first_available("t").await.unwrap() == offsets[55]
    })
    .await;
    match sync_core::check::within("the group's next call", LONG, m.next()).await {
        Err(Error::Truncated {
            requested,
            first_available,
            ..
        }) => assert_eq!((requested, first_available), (offsets[0], offsets[55])),
        other => panic!("expected Truncated, got {other:?}"),
    }
    for want in 55..60 {
        let d = next(m.as_ref()).await;
        assert_eq!((text(&d), d.attempt), (want.to_string(), 1));
        m.ack(&d).await.unwrap();
    }
    nothing(m.as_ref()).await;
}
