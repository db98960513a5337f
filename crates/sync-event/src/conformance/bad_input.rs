//! Bad input: typed errors, at once, nothing published or lost.

use std::time::{Duration, Instant};

use super::{payloads, take, Harness};
use crate::{Error, EventOptions, GroupOptions, Message, Retention, Start, MAX_NAME_LEN};

/// Empty, NUL-carrying and over-long topic and group names are `InvalidName`, refused at once,
/// and publish nothing.
pub async fn bad_topic_names_are_typed(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let long = "x".repeat(MAX_NAME_LEN + 1);
    for bad in ["", "a\0b", long.as_str()] {
        let t = Instant::now();
        let r = ev.publish(bad, Message::new("x")).await;
        sync_core::check::assert_refused_at_once("publish", r, t.elapsed(), "InvalidName", |e| {
            matches!(e, Error::InvalidName { what: "topic", .. }) && !e.is_retryable()
        });
        let r = ev.subscribe(bad, Start::Earliest).await;
        assert!(matches!(r, Err(Error::InvalidName { .. })), "{r:?}");
        let r = ev.join(bad, "g", GroupOptions::new()).await;
        assert!(matches!(r, Err(Error::InvalidName { .. })), "{r:?}");
        let r = ev.join("t", bad, GroupOptions::new()).await;
        assert!(
            matches!(r, Err(Error::InvalidName { what: "group", .. })),
            "{r:?}"
        );
        assert!(matches!(
            ev.first_available(bad).await,
            Err(Error::InvalidName { .. })
        ));
    }
    ev.publish("t", Message::new("ok")).await.unwrap();
    let mut sub = ev.subscribe("t", Start::Earliest).await.unwrap();
    assert_eq!(payloads(&take(&mut sub, 1).await), ["ok"]);
}

/// An event over the backend's limit is `TooLarge`, naming the limit; nothing is published
/// and the next event gets the next offset. One at the limit goes through.
pub async fn oversized_event_is_typed_and_names_limit(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let limit = h.max_event_bytes();
    let before = ev.publish("t", Message::new("a")).await.unwrap();
    for size in [limit + 1, limit * 2] {
        let t = Instant::now();
        let r = ev.publish("t", Message::new(vec![7u8; size])).await;
        match &r {
            Err(
                e @ Error::TooLarge {
                    limit: l, size: s, ..
                },
            ) => {
                assert_eq!((*l, *s), (limit, size));
                let text = e.to_string();
                assert!(text.contains(&limit.to_string()), "names the limit: {text}");
                assert!(text.contains(&size.to_string()), "names the size: {text}");
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(1));
    }
    // Headers count too.
    let r = ev
        .publish(
            "t",
            Message::new(vec![1u8; limit - 1]).with_header("kk", "v"),
        )
        .await;
    assert!(matches!(r, Err(Error::TooLarge { .. })), "{r:?}");
    let at_limit = ev
        .publish("t", Message::new(vec![9u8; limit]))
        .await
        .unwrap();
    assert_eq!(at_limit, before + 1, "nothing published in between");
    let mut sub = ev.subscribe("t", Start::Offset(before)).await.unwrap();
    let got = take(&mut sub, 2).await;
    assert_eq!(got[1].payload.len(), limit);
}

/// Zero and absurd options are `InvalidOptions`, at once: zero or huge ack waits, zero or huge
/// delivery limits, a dead-letter topic that is the topic itself, zero or huge retention, a
/// zero or over-limit size.
pub async fn bad_options_are_typed(h: &dyn Harness) {
    let ev = h.events(EventOptions::new()).await;
    let bad_groups = [
        GroupOptions::new().with_ack_wait(Duration::ZERO),
        GroupOptions::new().with_ack_wait(Duration::MAX),
        GroupOptions::new().with_max_deliveries(0),
        GroupOptions::new().with_max_deliveries(u32::MAX),
        GroupOptions::new().with_dead_letter("t"),
        GroupOptions::new().with_dead_letter(""),
    ];
    for g in bad_groups {
        let t = Instant::now();
        let r = ev.join("t", "g", g.clone()).await;
        sync_core::check::assert_refused_at_once(
            &format!("join with {g:?}"),
            r,
            t.elapsed(),
            "InvalidOptions",
            |e| matches!(e, Error::InvalidOptions { .. } | Error::InvalidName { .. }),
        );
    }
    let bad_handles = [
        EventOptions::new().with_retention(Retention::new().with_max_events(0)),
        EventOptions::new().with_retention(Retention::new().with_max_events(u64::MAX)),
        EventOptions::new().with_retention(Retention::new().with_max_age(Duration::ZERO)),
        EventOptions::new().with_retention(Retention::new().with_max_age(Duration::MAX)),
        EventOptions::new().with_topic_retention("", Retention::new()),
        EventOptions::new().with_max_event_bytes(0),
        EventOptions::new().with_max_event_bytes(usize::MAX),
    ];
    for o in bad_handles {
        let t = Instant::now();
        let r = h.open(o.clone()).await;
        assert!(t.elapsed() < Duration::from_secs(5), "refused at once");
        assert!(
            matches!(
                r,
                Err(Error::InvalidOptions { .. } | Error::InvalidName { .. })
            ),
            "{o:?}: {r:?}"
        );
    }
    // Nothing was made by the refused joins: a good member sees the event once.
    ev.publish("t", Message::new("x")).await.unwrap();
    let m = ev.join("t", "g", GroupOptions::new()).await.unwrap();
    let d = m.next().await.unwrap();
    assert_eq!((d.attempt, d.event.payload.as_slice()), (1, &b"x"[..]));
    m.ack(&d).await.unwrap();
}
