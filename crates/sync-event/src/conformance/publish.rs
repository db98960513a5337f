//! Publishing: offsets, payloads, headers, names.

use std::sync::Arc;

use futures::StreamExt;

use super::{assert_contiguous, payloads, take, Harness};
use crate::{EventOptions, EventStream, EventStreamExt, Message, Start};

/// Offsets returned by publish strictly increase per topic, and readers see them contiguous.
pub async fn offsets_strictly_increase(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let mut last = 0;
    for i in 0..20 {
        let o = ev.publish("t", Message::new(format!("{i}"))).await.unwrap();
        assert!(o > last, "offset {o} after {last}");
        last = o;
    }
    let mut sub = ev.subscribe("t", Start::Earliest).await.unwrap();
    let got = take(&mut sub, 20).await;
    assert_contiguous(&got);
    assert_eq!(got.last().unwrap().offset, last);
}

/// Publishers on several handles at once: every publish gets a distinct offset, and the
/// topic holds each event once, in offset order.
pub async fn concurrent_publishers_one_order(h: &dyn Harness) {
    let a = h.events(EventOptions::new()).await;
    let b = h.peer(&a).await;
    let mut tasks = Vec::new();
    for (p, ev) in [("a", a.clone()), ("b", b.clone())] {
        for i in 0..10 {
            let ev = ev.clone();
            tasks.push(tokio::spawn(async move {
                let m = format!("{p}{i}");
                (ev.publish("t", Message::new(m.clone())).await.unwrap(), m)
            }));
        }
    }
    let mut sent = Vec::new();
    for t in tasks {
        sent.push(t.await.unwrap());
    }
    sent.sort();
    let offsets: Vec<u64> = sent.iter().map(|s| s.0).collect();
    let mut dedup = offsets.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), offsets.len(), "duplicate offsets: {offsets:?}");
    let mut sub = a.subscribe("t", Start::Earliest).await.unwrap();
    let got = take(&mut sub, 20).await;
    assert_contiguous(&got);
    let seen: Vec<(u64, String)> = got
        .iter()
        .map(|e| (e.offset, String::from_utf8_lossy(&e.payload).into_owned()))
        .collect();
    assert_eq!(seen, sent, "each publish once, at the offset it was given");
}

/// Binary payloads (empty, NUL bytes) and headers come back exactly.
pub async fn payload_and_headers_round_trip(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let bin: Vec<u8> = (0..=255u8).collect();
    ev.publish("t", Message::new(Vec::new())).await.unwrap();
    ev.publish(
        "t",
        Message::new(bin.clone())
            .with_header("a", "1")
            .with_header("ünï", "wert mit leerzeichen"),
    )
    .await
    .unwrap();
    let mut sub = ev.subscribe("t", Start::Earliest).await.unwrap();
    let got = take(&mut sub, 2).await;
    assert!(got[0].payload.is_empty() && got[0].headers.is_empty());
    assert_eq!(got[1].payload, bin);
    assert_eq!(got[1].headers["a"], "1");
    assert_eq!(got[1].headers["ünï"], "wert mit leerzeichen");
    assert_eq!(got[1].topic, "t");
    assert!(got[1].published_at >= got[0].published_at);
}

/// JSON in, JSON out; a payload that does not fit the type is a typed error.
pub async fn json_helpers_round_trip(h: &dyn Harness) {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Order {
        id: u32,
        item: String,
    }
    let ev = h.events(EventOptions::new()).await;
    let o = Order {
        id: 7,
        item: "tea".into(),
    };
    ev.publish_json("orders", &o).await.unwrap();
    ev.publish("orders", Message::new("not json"))
        .await
        .unwrap();
    let mut sub = ev.subscribe("orders", Start::Earliest).await.unwrap();
    let got = take(&mut sub, 2).await;
    assert_eq!(got[0].json::<Order>().unwrap(), o);
    assert_eq!(got[0].headers["content-type"], "application/json");
    let e = got[1].json::<Order>().unwrap_err();
    assert!(
        matches!(e, crate::Error::BadPayload { offset: Some(n), .. } if n == got[1].offset),
        "{e:?}"
    );
}

/// Topics whose names share prefixes (`a`, `a/b`, `ab`, `a.dead-letter`) never see each
/// other's events; offsets count per topic.
pub async fn topics_do_not_interfere(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let names = ["a", "a/b", "ab", "a/", "a b", "ä"];
    for (i, n) in names.iter().enumerate() {
        for j in 0..=i {
            ev.publish(n, Message::new(format!("{n}:{j}")))
                .await
                .unwrap();
        }
    }
    for (i, n) in names.iter().enumerate() {
        let mut sub = ev.subscribe(n, Start::Earliest).await.unwrap();
        let got = take(&mut sub, i + 1).await;
        let want: Vec<String> = (0..=i).map(|j| format!("{n}:{j}")).collect();
        assert_eq!(payloads(&got), want, "topic {n:?}");
        super::quiet(&mut sub).await;
    }
}

/// The trait works as `Arc<dyn EventStream>`, `Box<dyn EventStream>` and `impl EventStream`.
pub async fn dyn_and_generic_use(h: &dyn Harness) {
    async fn generic(ev: impl EventStream) -> u64 {
        ev.publish("g", Message::new("x")).await.unwrap()
    }
    let ev: Arc<dyn EventStream> = h.events(EventOptions::new()).await;
    let a = generic(ev.clone()).await;
    let boxed: Box<dyn EventStream> = Box::new(ev.clone());
    let b = boxed.publish("g", "y".into()).await.unwrap();
    assert!(b > a);
    assert_eq!(ev.first_available("g").await.unwrap(), a);
    let n = ev
        .subscribe("g", Start::Earliest)
        .await
        .unwrap()
        .take(2)
        .count()
        .await;
    assert_eq!(n, 2);
}
