//! Retention racing a consumer group on etcd: events published fast to a topic that keeps only
//! the newest few, while two members take them. An event retention removes between a member's
//! read of the group and its take must be reported (`Truncated`), never skipped silently: every
//! offset is either delivered or inside a reported gap. Needs the harness's etcd.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;

use sync_etcd::testing;
use sync_event::{Error, EtcdEvents, EventOptions, EventStream, GroupOptions, Message, Retention};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs etcd: run `cargo xtask test`"]
async fn retention_never_makes_a_group_skip_silently() {
    const EVENTS: u64 = 300;
    let cfg = testing::config("event-retention-race");
    let client = testing::connect(cfg.clone()).await;
    let _wipe = testing::WipeOnDrop(client);
    let options = EventOptions::new().with_retention(Retention::new().with_max_events(2));
    let ev = Arc::new(
        EtcdEvents::connect(cfg.clone(), options.clone())
            .await
            .unwrap(),
    );
    // Joined before the first publish, from the start: every offset is the group's to account for.
    let seen = Arc::new(Mutex::new((BTreeSet::new(), Vec::new())));
    let published = Arc::new(AtomicBool::new(false));
    let mut members = Vec::new();
    for _ in 0..2 {
        let peer = EtcdEvents::connect(cfg.clone(), options.clone())
            .await
            .unwrap();
        let m = peer.join("t", "g", GroupOptions::new()).await.unwrap();
        let (seen, published) = (seen.clone(), published.clone());
        members.push(tokio::spawn(async move {
            let _peer = peer;
            loop {
                match tokio::time::timeout(Duration::from_secs(3), m.next()).await {
                    // Quiet after the last publish: everything is taken. (Quiet before it is a
                    // stalled machine, not the end.)
                    Err(_) if published.load(Ordering::SeqCst) => return,
                    Err(_) => {}
                    Ok(Ok(d)) => {
                        seen.lock().unwrap().0.insert(d.event.offset);
                        // Slow enough that retention overtakes the group now and then.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        let _ = m.ack(&d).await;
                    }
                    Ok(Err(Error::Truncated {
                        requested,
                        first_available,
                        ..
                    })) => {
                        assert!(
                            requested < first_available,
                            "{requested}..{first_available}"
                        );
                        seen.lock().unwrap().1.push((requested, first_available));
                    }
                    Ok(Err(e)) => panic!("member: {e}"),
                }
            }
        }));
    }
    let mut last = 0;
    let mut pending = futures::stream::FuturesUnordered::new();
    for i in 0..EVENTS {
        let ev = ev.clone();
        pending.push(async move { ev.publish("t", Message::new(format!("{i}"))).await.unwrap() });
        if pending.len() >= 8 {
            last = last.max(pending.next().await.unwrap());
        }
    }
    while let Some(o) = pending.next().await {
        last = last.max(o);
    }
    published.store(true, Ordering::SeqCst);
    for m in members {
        m.await.unwrap();
    }
    let (delivered, gaps) = &*seen.lock().unwrap();
    let silent: Vec<u64> = (1..=last)
        .filter(|o| !delivered.contains(o) && !gaps.iter().any(|(r, f)| (*r..*f).contains(o)))
        .collect();
    println!(
        "{last} published, {} delivered, {} gaps reported covering {} offsets",
        delivered.len(),
        gaps.len(),
        gaps.iter().map(|(r, f)| f - r).sum::<u64>()
    );
    assert!(
        silent.is_empty(),
        "offsets skipped without Truncated: {silent:?}"
    );
}
