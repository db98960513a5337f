//! Retention by count and age, and the typed `Truncated` for starts older than it.

use std::time::{Duration, SystemTime};

use futures::StreamExt;

use super::{payloads, take, Harness, LONG};
use crate::{Error, EventOptions, Message, Retention, Start};

fn count(n: u64) -> EventOptions {
    EventOptions::new().with_retention(Retention::new().with_max_events(n))
}

/// With a count of 3, the topic keeps the newest 3 events; other topics keep their own.
pub async fn retention_by_count(h: &dyn Harness) {
    let ev = h
        .events(count(3).with_topic_retention("big", Retention::new().with_max_events(100)))
        .await;
    let mut last = 0;
    for i in 0..6 {
        last = ev.publish("t", Message::new(format!("{i}"))).await.unwrap();
        ev.publish("big", Message::new(format!("{i}")))
            .await
            .unwrap();
    }
    sync_core::check::eventually("count retention applied", LONG, || async {
        ev.first_available("t").await.unwrap() == last - 2
    })
    .await;
    let mut sub = ev.subscribe("t", Start::Earliest).await.unwrap();
    assert_eq!(payloads(&take(&mut sub, 3).await), ["3", "4", "5"]);
    let mut big = ev.subscribe("big", Start::Earliest).await.unwrap();
    assert_eq!(take(&mut big, 6).await.len(), 6);
}

/// Many publishes in flight at once on a topic that keeps 2: each is acknowledged with its own
/// offset (a backend that batches them must not write more than it keeps in one go), and the
/// topic ends with the newest 2, which a live subscriber saw among all the others, in order.
pub async fn publishes_in_flight_beyond_count_retention(h: &dyn Harness) {
    let ev = h.events(count(2)).await;
    let mut live = ev.subscribe("t", Start::Latest).await.unwrap();
    let publishes = (0..32).map(|i| ev.publish("t", Message::new(format!("{i}"))));
    let mut offsets: Vec<u64> = futures::future::join_all(publishes)
        .await
        .into_iter()
        .map(|r| r.expect("every publish is acknowledged"))
        .collect();
    offsets.sort_unstable();
    offsets.dedup();
    assert_eq!(offsets.len(), 32, "one offset each");
    let last = *offsets.last().expect("32 offsets");
    sync_core::check::eventually("count retention applied", LONG, || async {
        ev.first_available("t").await.unwrap() == last - 1
    })
    .await;
    // Live from before the first publish: every event in order without a gap, up to the last
    // or up to a `Truncated` (retention overtook it), after which the stream ends.
    let mut seen = Vec::new();
    loop {
        match sync_core::check::within("the live subscriber", LONG, live.next()).await {
            Some(Ok(e)) => {
                seen.push(e.offset);
                if e.offset == last {
                    break;
                }
            }
            Some(Err(Error::Truncated { .. })) => {
                let after = sync_core::check::within("the end", LONG, live.next()).await;
                assert!(
                    after.is_none(),
                    "the stream ends after Truncated: {after:?}"
                );
                break;
            }
            other => panic!("live subscriber: {other:?}"),
        }
    }
    assert!(
        seen.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, no gap: {seen:?}"
    );
}

/// With an age limit, old events go and newer ones stay.
pub async fn retention_by_age(h: &dyn Harness) {
    let age = Duration::from_millis(1500);
    let ev = h
        .events(EventOptions::new().with_retention(Retention::new().with_max_age(age)))
        .await;
    ev.publish("t", Message::new("old")).await.unwrap();
    let first = ev.first_available("t").await.unwrap();
    sync_core::check::eventually("the old event ages out", LONG, || async {
        // Publishing is what drives retention in some backends.
        ev.publish("t", Message::new("new")).await.unwrap();
        ev.first_available("t").await.unwrap() > first
    })
    .await;
    let mut sub = ev.subscribe("t", Start::Earliest).await.unwrap();
    let got = take(&mut sub, 1).await;
    assert_eq!(payloads(&got), ["new"]);
    assert!(
        SystemTime::now()
            .duration_since(got[0].published_at)
            .unwrap()
            <= age + LONG
    );
}

/// A start at an offset retention dropped is `Truncated` with the first available offset;
/// starting there works.
pub async fn offset_older_than_retention_is_truncated(h: &dyn Harness) {
    let ev = h.events(count(2)).await;
    let mut offs = Vec::new();
    for i in 0..5 {
        offs.push(ev.publish("t", Message::new(format!("{i}"))).await.unwrap());
    }
    sync_core::check::eventually("count retention applied", LONG, || async {
        ev.first_available("t").await.unwrap() == offs[3]
    })
    .await;
    match ev.subscribe("t", Start::Offset(offs[0])).await {
        Err(Error::Truncated {
            requested,
            first_available,
            topic,
        }) => {
            assert_eq!((requested, first_available), (offs[0], offs[3]));
            assert_eq!(topic, "t");
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    let mut sub = ev.subscribe("t", Start::Offset(offs[3])).await.unwrap();
    assert_eq!(payloads(&take(&mut sub, 2).await), ["3", "4"]);
}

/// A start by time older than retention is `Truncated` too.
pub async fn time_older_than_retention_is_truncated(h: &dyn Harness) {
    let ev = h.events(count(1)).await;
    let t0 = SystemTime::now() - Duration::from_secs(1);
    ev.publish("t", Message::new("0")).await.unwrap();
    let last = ev.publish("t", Message::new("1")).await.unwrap();
    sync_core::check::eventually("count retention applied", LONG, || async {
        ev.first_available("t").await.unwrap() == last
    })
    .await;
    let r = ev.subscribe("t", Start::Time(t0)).await;
    assert!(
        matches!(r, Err(Error::Truncated { first_available, .. }) if first_available == last),
        "{r:?}"
    );
}

/// A subscriber that falls behind retention is either still given every event, in order (a
/// backend may hold them for it, as etcd's watch does), or told `Truncated` right after the
/// last event it read (and the stream ends): never silently skipped ahead.
pub async fn lagging_subscriber_is_told_truncated(h: &dyn Harness) {
    let ev = h.events(count(3)).await;
    let first = ev.publish("t", Message::new("0")).await.unwrap();
    let mut sub = ev.subscribe("t", Start::Offset(first)).await.unwrap();
    let mut last = first;
    for i in 1..10 {
        last = ev.publish("t", Message::new(format!("{i}"))).await.unwrap();
    }
    sync_core::check::eventually("count retention applied", LONG, || async {
        ev.first_available("t").await.unwrap() > first + 1
    })
    .await;
    let mut seen: Vec<u64> = Vec::new();
    loop {
        match sync_core::check::within("the next item", LONG, sub.next()).await {
            Some(Ok(e)) => {
                assert_eq!(e.offset, seen.last().map_or(first, |o| o + 1), "no skip");
                seen.push(e.offset);
                if e.offset == last {
                    return;
                }
            }
            Some(Err(Error::Truncated {
                requested,
                first_available,
                ..
            })) => {
                assert_eq!(requested, seen.last().map_or(first, |o| o + 1), "no skip");
                assert!(first_available > requested);
                break;
            }
            other => panic!("expected Truncated after {seen:?}, got {other:?}"),
        }
    }
    assert!(
        sub.next().await.is_none(),
        "the stream ends after Truncated"
    );
}
