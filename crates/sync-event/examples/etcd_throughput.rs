//! Publish throughput of the etcd backend beside raw etcd puts of the same size, at 1 and at
//! `IN_FLIGHT` publishes in flight, on one topic, in the same run on the same cluster; and the
//! publish → subscriber latency. Prints figures; asserts nothing.
//!
//! ```text
//! SYNC_ETCD_ENDPOINTS=http://127.0.0.1:2379,… \
//!   cargo run --release -p sync-event --features etcd --example etcd_throughput [EVENTS] [IN_FLIGHT] [BYTES]
//! ```
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use sync_etcd::{testing, EtcdClient};
use sync_event::{EtcdEvents, EventOptions, EventStream, Message, Start};

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let events = args.first().copied().unwrap_or(2000);
    let in_flight = args.get(1).copied().unwrap_or(32);
    let bytes = args.get(2).copied().unwrap_or(256);
    let cfg = testing::config("event-bench");
    let client = testing::connect(cfg.clone()).await;
    let _wipe = testing::WipeOnDrop(client.clone());
    let ev = Arc::new(EtcdEvents::connect(cfg, EventOptions::new()).await.unwrap());
    println!(
        "{events} events of {bytes} B, {} etcd members",
        testing::endpoints().len()
    );
    for conc in [1, in_flight] {
        let raw = raw_puts(&client, events, conc, bytes).await;
        let ours = publishes(&ev, &format!("t{conc}"), events, conc, bytes).await;
        println!(
            "in flight {conc:>3}: publish {:>8.0}/s, raw put {:>8.0}/s, ratio {:.2}",
            ours,
            raw,
            ours / raw
        );
    }
    // Latency: one publish at a time, timed to the subscriber's receipt.
    let mut sub = ev.subscribe("lat", Start::Latest).await.unwrap();
    let mut lat = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        ev.publish("lat", Message::new(vec![i as u8; bytes]))
            .await
            .unwrap();
        sub.next().await.unwrap().unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "publish -> subscriber: p50 {:?}, p99 {:?}",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );
}

async fn publishes(ev: &Arc<EtcdEvents>, topic: &str, n: usize, conc: usize, bytes: usize) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conc {
        let ev = ev.clone();
        let topic = topic.to_owned();
        tasks.push(tokio::spawn(async move {
            for _ in (w..n).step_by(conc) {
                ev.publish(&topic, Message::new(vec![7u8; bytes]))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    per_sec(n, start.elapsed())
}

async fn raw_puts(client: &EtcdClient, n: usize, conc: usize, bytes: usize) -> f64 {
    let root = client.keyspace().root().to_owned();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conc {
        let mut c = client.raw();
        let root = root.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(conc) {
                c.put(format!("{root}raw/{i:020}"), vec![7u8; bytes], None)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    per_sec(n, start.elapsed())
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}
