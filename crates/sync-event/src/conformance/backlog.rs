//! Groups consuming a backlog (tens of events behind the head): a backend may claim several
//! events per round trip there (etcd reserves a batch per take), and these cases hold it to
//! the same guarantees as one event at a time: each event once, in offset order per member,
//! attempts counted only for events handed out, nothing held from other members for long,
//! nothing lost to a dropped `next()`, and one `Truncated` for one loss.

use std::collections::BTreeMap;
use std::time::Duration;

use sync_core::check::{cancel_at_every_poll, Sweep};

use super::{Harness, LONG};
use crate::{Delivery, Error, EventOptions, EventStream, GroupOptions, Member, Message, Retention};

/// Events in each backlog: far enough behind the head that a batching backend batches.
const BACKLOG: usize = 40;

async fn publish_backlog(ev: &dyn EventStream, n: usize) -> Vec<u64> {
    let mut offsets = Vec::with_capacity(n);
    for i in 0..n {
        offsets.push(ev.publish("t", Message::new(format!("{i}"))).await.unwrap());
    }
    offsets
}

async fn next_within(what: &str, m: &dyn Member, limit: Duration) -> Delivery {
    sync_core::check::within(what, limit, m.next())
        .await
        .unwrap()
}

async fn nothing(m: &dyn Member) {
    if let Ok(d) = tokio::time::timeout(Duration::from_millis(300), m.next()).await {
        panic!("expected no delivery, got {d:?}");
    }
}

/// Takes and acks with `m` until `want` offsets were seen; offset → attempt. Fails on an
/// offset delivered twice.
async fn drain(m: &dyn Member, want: usize, limit: Duration) -> BTreeMap<u64, u32> {
    let mut got = BTreeMap::new();
    while got.len() < want {
        let d = next_within("the next event of the backlog", m, limit).await;
        assert!(
            got.insert(d.event.offset, d.attempt).is_none(),
            "offset {} delivered twice",
            d.event.offset
        );
        m.ack(&d).await.unwrap();
    }
    got
}

/// The attempts `got` should show: 1 for every offset, `again` for `held`.
fn expected(offsets: &[u64], held: u64, again: u32) -> BTreeMap<u64, u32> {
    offsets
        .iter()
        .map(|&o| (o, if o == held { again } else { 1 }))
        .collect()
}

/// A member that leaves holding one delivery of a backlog costs the other events no attempt,
/// and they go to another member at once (the ack wait, 10 minutes, never passes): a backend
/// that claimed more events than it handed out must give them back as never delivered.
pub async fn group_member_leaving_mid_backlog_costs_no_attempt(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let opts = GroupOptions::new().with_ack_wait(Duration::from_secs(600));
    let a = ev.join("t", "g", opts.clone()).await.unwrap();
    let offsets = publish_backlog(ev.as_ref(), BACKLOG).await;
    let held = next_within("the first event", a.as_ref(), LONG).await;
    assert_eq!((held.event.offset, held.attempt), (offsets[0], 1));
    a.leave().await.unwrap();
    let other = h.peer(&ev).await;
    let b = other.join("t", "g", opts).await.unwrap();
    let got = drain(b.as_ref(), BACKLOG, LONG).await;
    assert_eq!(got, expected(&offsets, offsets[0], 2));
    nothing(b.as_ref()).await;
}

/// A member that dies (no leave, no cleanup) holding one delivery of a backlog: another
/// member gets every event within the ack wait, the one handed out as attempt 2 and every
/// other as attempt 1 (what the dead member had claimed but not handed out was never
/// delivered).
pub async fn group_member_crash_mid_backlog_costs_no_attempt(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let opts = GroupOptions::new().with_ack_wait(Duration::from_secs(3));
    let other = h.peer(&ev).await;
    let a = other.join("t", "g", opts.clone()).await.unwrap();
    let offsets = publish_backlog(ev.as_ref(), BACKLOG).await;
    let first = next_within("the first event", a.as_ref(), LONG).await;
    a.ack(&first).await.unwrap();
    let held = next_within("the second event", a.as_ref(), LONG).await;
    assert_eq!((held.event.offset, held.attempt), (offsets[1], 1));
    h.crash(a).await;
    let b = ev.join("t", "g", opts).await.unwrap();
    let got = drain(b.as_ref(), BACKLOG - 1, LONG).await;
    assert_eq!(got, expected(&offsets[1..], offsets[1], 2));
    nothing(b.as_ref()).await;
}

/// A member that took one event of a backlog and then stops asking for more (without
/// leaving) keeps the rest from the group for a few seconds at most: another member gets
/// all of them, as attempt 1, long before the ack wait (2 minutes) would end; and the idle
/// member, asking again, gets none of them a second time.
pub async fn group_idle_member_does_not_hold_a_backlog(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let opts = GroupOptions::new().with_ack_wait(Duration::from_secs(120));
    let a = ev.join("t", "g", opts.clone()).await.unwrap();
    let offsets = publish_backlog(ev.as_ref(), BACKLOG).await;
    let d = next_within("the first event", a.as_ref(), LONG).await;
    assert_eq!((d.event.offset, d.attempt), (offsets[0], 1));
    a.ack(&d).await.unwrap();
    let other = h.peer(&ev).await;
    let b = other.join("t", "g", opts).await.unwrap();
    let got = drain(b.as_ref(), BACKLOG - 1, LONG).await;
    assert_eq!(got, expected(&offsets[1..], 0, 1));
    nothing(a.as_ref()).await;
    nothing(b.as_ref()).await;
}

/// A member nacks the first event of a backlog: its next call gets that event again (attempt
/// 2) before any other, and then the rest, each once, as attempt 1, in offset order.
pub async fn group_nack_in_backlog_redelivers_first(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let m = ev.join("t", "g", GroupOptions::new()).await.unwrap();
    let offsets = publish_backlog(ev.as_ref(), BACKLOG).await;
    let d = next_within("the first event", m.as_ref(), LONG).await;
    assert_eq!((d.event.offset, d.attempt), (offsets[0], 1));
    m.nack(&d).await.unwrap();
    let again = next_within("the nacked event", m.as_ref(), LONG).await;
    assert_eq!((again.event.offset, again.attempt), (offsets[0], 2));
    m.ack(&again).await.unwrap();
    for &want in &offsets[1..] {
        let d = next_within("the next event of the backlog", m.as_ref(), LONG).await;
        assert_eq!((d.event.offset, d.attempt), (want, 1));
        m.ack(&d).await.unwrap();
    }
    nothing(m.as_ref()).await;
}

/// A `next` dropped after 1, 2, … polls while the member works through a backlog loses no
/// event and spends no attempt: the member's calls that complete get every event once, as
/// attempt 1, in increasing offset order, each within a few seconds (the ack wait is a
/// minute: an event a dropped call claimed and then lost would come back late, out of
/// order, or as attempt 2).
pub async fn cancelled_next_in_backlog_loses_nothing(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let opts = GroupOptions::new().with_ack_wait(Duration::from_secs(60));
    let m = ev.join("t", "g", opts).await.unwrap();
    let offsets = publish_backlog(ev.as_ref(), BACKLOG).await;
    let m = m.as_ref();
    let seen = std::cell::RefCell::new(Vec::<u64>::new());
    let handle = |d: Delivery| {
        let mut seen = seen.borrow_mut();
        assert_eq!(d.attempt, 1, "offset {}", d.event.offset);
        if let Some(&last) = seen.last() {
            assert!(
                d.event.offset > last,
                "offset {} after {last}: out of order or twice",
                d.event.offset
            );
        }
        seen.push(d.event.offset);
        d
    };
    while seen.borrow().len() < BACKLOG {
        let sweep = cancel_at_every_poll(
            "next",
            30,
            || m.next(),
            |_| {
                let handle = &handle;
                let seen = &seen;
                async move {
                    if seen.borrow().len() < BACKLOG {
                        let d = next_within(
                            "the next event, well within the ack wait",
                            m,
                            Duration::from_secs(4),
                        )
                        .await;
                        let d = handle(d);
                        m.ack(&d).await.unwrap();
                    }
                }
            },
        )
        .await;
        if let Sweep::Completed { output, .. } = sweep {
            let d = handle(output.unwrap());
            m.ack(&d).await.unwrap();
        }
    }
    assert_eq!(*seen.borrow(), offsets);
    nothing(m).await;
}

/// Retention drops events a member had claimed but not handed out (it took one of a backlog,
/// then fell far behind): its next call is `Truncated` once, naming the first event it did
/// not get and the first retained one, and then it gets every retained event, in order, as
/// attempt 1.
pub async fn group_backlog_behind_retention_is_told_once(h: &dyn Harness) {
    let ev = h
        .events(EventOptions::new().with_retention(Retention::new().with_max_events(40)))
        .await;
    let m = ev.join("t", "g", GroupOptions::new()).await.unwrap();
    let offsets = publish_backlog(ev.as_ref(), BACKLOG).await;
    let d = next_within("the first event", m.as_ref(), LONG).await;
    assert_eq!((d.event.offset, d.attempt), (offsets[0], 1));
    m.ack(&d).await.unwrap();
    let later = publish_backlog(ev.as_ref(), 60).await;
    sync_core::check::eventually("count retention applied", LONG, || async {
        ev.first_available("t").await.unwrap() == later[20]
    })
    .await;
    match sync_core::check::within("the group's next call", LONG, m.next()).await {
        Err(Error::Truncated {
            requested,
            first_available,
            ..
        }) => assert_eq!((requested, first_available), (offsets[1], later[20])),
        other => panic!("expected Truncated, got {other:?}"),
    }
    for &want in &later[20..] {
        let d = next_within("a retained event", m.as_ref(), LONG).await;
        assert_eq!((d.event.offset, d.attempt), (want, 1));
        m.ack(&d).await.unwrap();
    }
    nothing(m.as_ref()).await;
}
