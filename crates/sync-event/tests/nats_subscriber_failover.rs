//! Plain subscribers whose consumers may live on a NATS node killed with `kill -9`: each
//! resumes within a few seconds (two missed idle heartbeats of its consumer, then a new
//! consumer from the next offset) and loses nothing. Against the cluster `cargo xtask test`
//! starts; listed as ignored without it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use sync_event::nats::testing;
use sync_event::{EventOptions, EventStream, Message, Start};

/// Subscribers: a subscriber's consumer (1 replica) is placed on one of the stream's 3 nodes,
/// so with 6 of them one is on the killed node but for a chance of (2/3)^6 ≈ 9 %.
const SUBSCRIBERS: usize = 6;
/// The longest pause a subscriber may see. Two missed heartbeats of 2 s and a new consumer;
/// async-nats's ordered consumer (two missed heartbeats of 15 s) paused 63 s here.
const MAX_PAUSE: Duration = Duration::from_secs(12);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs nats: run `cargo xtask test`"]
async fn subscribers_resume_soon_after_their_node_is_killed() {
    let cfg = testing::config("subfail");
    let events = Arc::new(testing::connect(cfg, EventOptions::new()).await);
    let topic = "ticks";
    events.publish(topic, Message::new("0")).await.unwrap();

    // Each subscriber records (when, offset) of every event it reads.
    let mut logs = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let log = Arc::new(Mutex::new(Vec::<(Instant, u64)>::new()));
        let mut sub = events.subscribe(topic, Start::Latest).await.unwrap();
        let l = log.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(e) = sub.next().await {
                l.lock().unwrap().push((Instant::now(), e.unwrap().offset));
            }
        }));
        logs.push(log);
    }
    // A publisher every 20 ms.
    let publisher = {
        let events = events.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for i in 1..=1500u64 {
                last = events
                    .publish(topic, Message::new(i.to_string()))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            last
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Kill a node that does not lead the stream (publishes go on; only the consumers placed
    // on it are cut off), restart it 2 s later.
    let nodes = testing::nodes();
    let leader = testing::stream_leader(&events, topic).await;
    let victim = nodes
        .iter()
        .find(|n| Some(&n.name) != leader.as_ref())
        .expect("a node that does not lead the stream")
        .clone();
    let killed_at = Instant::now();
    tokio::task::spawn_blocking(move || {
        victim.kill9();
        std::thread::sleep(Duration::from_secs(2));
        victim.restart(Duration::from_secs(30));
    })
    .await
    .unwrap();

    let last = publisher.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while logs
        .iter()
        .any(|l| l.lock().unwrap().last().map(|e| e.1) != Some(last))
    {
        assert!(
            Instant::now() < deadline,
            "a subscriber did not reach the last offset {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in tasks {
        t.abort();
    }

    let mut worst = Duration::ZERO;
    for (i, log) in logs.iter().enumerate() {
        let log = log.lock().unwrap();
        for w in log.windows(2) {
            assert_eq!(
                w[1].1,
                w[0].1 + 1,
                "subscriber {i}: offsets in order, none lost"
            );
        }
        let pause = log
            .windows(2)
            .filter(|w| w[1].0 > killed_at)
            .map(|w| w[1].0 - w[0].0)
            .max()
            .unwrap_or_default();
        eprintln!("subscriber {i}: longest pause after the kill {pause:?}");
        worst = worst.max(pause);
    }
    eprintln!("longest pause of {SUBSCRIBERS} subscribers: {worst:?}");
    assert!(
        worst <= MAX_PAUSE,
        "a subscriber paused {worst:?} (at most {MAX_PAUSE:?})"
    );
    testing::wipe(&events).await;
}
