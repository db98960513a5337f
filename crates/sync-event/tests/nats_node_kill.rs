//! A NATS node killed with `kill -9` while events are published and consumed, then restarted:
//! every acknowledged publish reaches the group at least once, and a plain subscriber sees
//! every offset once, in order. Against the cluster `cargo xtask test` starts; listed as
//! ignored without it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use sync_event::nats::testing;
use sync_event::{EventOptions, EventStream, GroupOptions, Message, Start};

const EVENTS: u64 = 600;
const KILL_AT: u64 = 150;
const RESTART_AT: u64 = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs nats: run `cargo xtask test`"]
async fn node_killed_and_restarted_loses_no_acked_event() {
    let cfg = testing::config("kill");
    let events = Arc::new(testing::connect(cfg, EventOptions::new()).await);
    let topic = "orders/kill";
    let first = events.publish(topic, Message::new("first")).await.unwrap();
    assert_eq!(first, 1);

    // Two group members that ack everything, and a plain subscriber from the start.
    let group_seen = Arc::new(Mutex::new(BTreeSet::new()));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let options = GroupOptions::new()
            .with_ack_wait(Duration::from_secs(3))
            .with_max_deliveries(100);
        let member = events.join(topic, "billing", options).await.unwrap();
        let seen = group_seen.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let d = member.next().await.unwrap();
                seen.lock().unwrap().insert(d.event.offset);
                // A lost ack only means another delivery.
                let _ = member.ack(&d).await;
            }
        }));
    }
    let sub_seen = Arc::new(Mutex::new(Vec::new()));
    let mut sub = events.subscribe(topic, Start::Earliest).await.unwrap();
    let seen = sub_seen.clone();
    tasks.push(tokio::spawn(async move {
        while let Some(e) = sub.next().await {
            seen.lock().unwrap().push(e.unwrap().offset);
        }
    }));

    // Kill the stream's raft leader: the worst node to lose.
    let nodes = testing::nodes();
    let leader = testing::stream_leader(&events, topic).await;
    let victim = nodes
        .iter()
        .find(|n| Some(&n.name) == leader.as_ref())
        .unwrap_or(&nodes[0])
        .clone();
    let started = Instant::now();
    let mut acked = BTreeSet::from([first]);
    let mut failed = 0;
    let mut slowest = Duration::ZERO;
    for i in 1..EVENTS {
        if i == KILL_AT {
            eprintln!(
                "kill -9 {} (stream leader: {leader:?}) at {:?}",
                victim.name,
                started.elapsed()
            );
            victim.kill9();
        }
        if i == RESTART_AT {
            let v = victim.clone();
            tokio::task::spawn_blocking(move || v.restart(Duration::from_secs(30)))
                .await
                .unwrap();
            eprintln!(
                "{} restarted and healthy at {:?}",
                victim.name,
                started.elapsed()
            );
        }
        let t = Instant::now();
        match events.publish(topic, Message::new(format!("e{i}"))).await {
            Ok(offset) => assert!(acked.insert(offset), "offset {offset} given twice"),
            Err(e) => {
                failed += 1;
                eprintln!("publish {i} failed (not acked, may or may not be stored): {e}");
            }
        }
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    eprintln!(
        "{} acked, {failed} failed, slowest publish {slowest:?}, {:?} in all",
        acked.len(),
        started.elapsed()
    );
    assert!(
        failed <= 2,
        "{failed} publishes failed across one node's loss"
    );

    let last = *acked.last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut group_done, mut sub_done) = (None, None);
    loop {
        let missing: Vec<u64> = {
            let g = group_seen.lock().unwrap();
            acked.iter().filter(|o| !g.contains(o)).copied().collect()
        };
        let sub_last = sub_seen.lock().unwrap().last().copied().unwrap_or(0);
        if missing.is_empty() && group_done.is_none() {
            group_done = Some(started.elapsed());
        }
        if sub_last >= last && sub_done.is_none() {
            sub_done = Some(started.elapsed());
        }
        if missing.is_empty() && sub_last >= last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "60 s after the last publish: group misses {} acked offsets ({:?}…), subscriber at {sub_last} of {last}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("group caught up at {group_done:?}, subscriber at {sub_done:?}");
    let sub = sub_seen.lock().unwrap().clone();
    let expected: Vec<u64> = (1..=sub.len() as u64).collect();
    assert_eq!(
        sub, expected,
        "the subscriber saw every offset once, in order"
    );
    for t in tasks {
        t.abort();
    }
    testing::wipe(&events).await;
}
