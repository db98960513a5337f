//! Subscribing: starts, order, back-pressure.

use std::time::{Duration, SystemTime};

use super::{assert_contiguous, payloads, quiet, take, Harness};
use crate::{EventOptions, Message, Start};

/// From `Earliest`: every event, in order, then the ones published later.
pub async fn subscribe_earliest_in_order(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    for i in 0..5 {
        ev.publish("t", Message::new(format!("{i}"))).await.unwrap();
    }
    let mut sub = ev.subscribe("t", Start::Earliest).await.unwrap();
    let got = take(&mut sub, 5).await;
    assert_eq!(payloads(&got), ["0", "1", "2", "3", "4"]);
    let pub2 = h.peer(&ev).await;
    pub2.publish("t", Message::new("5")).await.unwrap();
    let more = take(&mut sub, 1).await;
    assert_eq!(more[0].offset, got[4].offset + 1);
    quiet(&mut sub).await;
}

/// From `Latest`: only events published after subscribe returned.
pub async fn subscribe_latest_sees_only_new(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    ev.publish("t", Message::new("old")).await.unwrap();
    let mut sub = ev.subscribe("t", Start::Latest).await.unwrap();
    let mut empty = ev.subscribe("fresh", Start::Latest).await.unwrap();
    quiet(&mut sub).await;
    let o = ev.publish("t", Message::new("new")).await.unwrap();
    let got = take(&mut sub, 1).await;
    assert_eq!((got[0].offset, payloads(&got)[0].as_str()), (o, "new"));
    ev.publish("fresh", Message::new("first")).await.unwrap();
    assert_eq!(payloads(&take(&mut empty, 1).await), ["first"]);
}

/// From `Offset(n)`: event n on; an offset not yet published waits for it.
pub async fn subscribe_from_offset(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let mut offs = Vec::new();
    for i in 0..5 {
        offs.push(ev.publish("t", Message::new(format!("{i}"))).await.unwrap());
    }
    let mut sub = ev.subscribe("t", Start::Offset(offs[2])).await.unwrap();
    let got = take(&mut sub, 3).await;
    assert_eq!(payloads(&got), ["2", "3", "4"]);
    let mut ahead = ev.subscribe("t", Start::Offset(offs[4] + 2)).await.unwrap();
    ev.publish("t", Message::new("5")).await.unwrap();
    quiet(&mut ahead).await;
    ev.publish("t", Message::new("6")).await.unwrap();
    let got = take(&mut ahead, 1).await;
    assert_eq!(payloads(&got), ["6"]);
}

/// From `Time(t)`: the first event published at or after `t`.
pub async fn subscribe_from_time(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    ev.publish("t", Message::new("before")).await.unwrap();
    // Wall-clock times, so let the clock move past the first event.
    let t0 = SystemTime::now() + Duration::from_millis(20);
    sync_core::check::eventually("the clock passes t0", super::LONG, || async {
        SystemTime::now() > t0 + Duration::from_millis(5)
    })
    .await;
    ev.publish("t", Message::new("after")).await.unwrap();
    let mut sub = ev.subscribe("t", Start::Time(t0)).await.unwrap();
    let got = take(&mut sub, 1).await;
    assert_eq!(payloads(&got), ["after"]);
    assert!(got[0].published_at >= t0);
    let mut future = ev
        .subscribe(
            "t",
            Start::Time(SystemTime::now() + Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    quiet(&mut future).await;
}

/// Several subscribers, started at different moments on different handles, see one order.
pub async fn subscribers_see_one_order(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let other = h.peer(&ev).await;
    let mut early = other.subscribe("t", Start::Earliest).await.unwrap();
    let publisher = {
        let ev = ev.clone();
        tokio::spawn(async move {
            for i in 0..30 {
                ev.publish("t", Message::new(format!("{i}"))).await.unwrap();
            }
        })
    };
    let mut mid = ev.subscribe("t", Start::Earliest).await.unwrap();
    publisher.await.unwrap();
    let a = take(&mut early, 30).await;
    let b = take(&mut mid, 30).await;
    assert_eq!(a, b);
    assert_contiguous(&a);
    let want: Vec<String> = (0..30).map(|i| i.to_string()).collect();
    assert_eq!(payloads(&a), want);
}

/// A subscriber that does not read while many events are published slows nobody and loses
/// nothing: it reads them all afterwards, in order.
pub async fn slow_subscriber_loses_nothing(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let mut slow = ev.subscribe("t", Start::Earliest).await.unwrap();
    let first = take_one_after_publish(&ev, &mut slow).await;
    let n = 300;
    let started = std::time::Instant::now();
    for i in 1..n {
        ev.publish("t", Message::new(format!("{i}"))).await.unwrap();
    }
    assert!(started.elapsed() < super::LONG);
    let rest = take(&mut slow, n - 1).await;
    assert_eq!(rest[0].offset, first + 1);
    assert_contiguous(&rest);
    let want: Vec<String> = (1..n).map(|i| i.to_string()).collect();
    assert_eq!(payloads(&rest), want);
}

async fn take_one_after_publish(
    ev: &std::sync::Arc<dyn crate::EventStream>,
    sub: &mut crate::Subscription,
) -> u64 {
    let o = ev.publish("t", Message::new("0")).await.unwrap();
    assert_eq!(take(sub, 1).await[0].offset, o);
    o
}
