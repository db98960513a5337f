//! Publish, subscribe and a consumer group, with a redelivery and a dead letter.
//!
//! A publisher appends six orders to the topic `orders`; each publish returns the event's
//! offset once it is durable. A subscriber reads them back in the same order. The consumer
//! group `billing` has two members, each its own task as it would be its own process: each
//! order goes to one member, which acks it. Order 3 is nacked on its first delivery and comes
//! back (attempt 2); order 6 is nacked every time, so after the group's retry limit it goes to
//! the dead-letter topic `orders.dead-letter`, where a second subscriber sees it with headers
//! saying where it came from.
//!
//! ```sh
//! eval "$(cargo xtask etcd up)"
//! cargo run -p sync-event --features etcd --example event_groups
//! cargo run -p sync-event --features etcd --example event_groups -- local
//! cargo run -p sync-event --features etcd,nats --example event_groups -- "nats://${SYNC_NATS_URLS//nats:\/\//}"
//! ```
//!
//! The backend is the first argument, else `SYNC_URL`, else `SYNC_ETCD_ENDPOINTS` (prefix
//! `sync-examples`), else `local`. A group's position is durable: run it again and the group
//! carries on after the orders of the last run (any that an interrupted run left unacked are
//! acked and reported first). Finishes in about a second; exits non-zero if an order is lost,
//! duplicated after its ack, or out of order.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sync_event::{
    dead_letter, EventOptions, EventStream, EventStreamExt, GroupOptions, Member, Start,
};
use tokio::sync::{mpsc, watch};

type Error = Box<dyn std::error::Error + Send + Sync>;

const TOPIC: &str = "orders";
const GROUP: &str = "billing";
/// The order every member refuses: it ends in the dead-letter topic.
const POISON: u32 = 6;

/// The backend URL: the first argument, else `SYNC_URL`, else the cluster that
/// `cargo xtask etcd up` announces in `SYNC_ETCD_ENDPOINTS`, else `local`.
fn backend_url() -> String {
    std::env::args()
        .nth(1)
        .or_else(|| std::env::var("SYNC_URL").ok())
        .or_else(|| {
            let endpoints = std::env::var("SYNC_ETCD_ENDPOINTS").ok()?;
            let hosts: Vec<&str> = endpoints
                .split(',')
                .map(|e| e.trim().trim_start_matches("http://"))
                .collect();
            Some(format!("etcd://{}/sync-examples", hosts.join(",")))
        })
        .unwrap_or_else(|| "local".to_owned())
}

/// One member of the group: takes deliveries until told to stop, acks or nacks each, and
/// reports the orders it acked.
async fn member(
    name: &'static str,
    member: Box<dyn Member>,
    first: u64,
    acked: mpsc::UnboundedSender<u32>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    loop {
        let d = tokio::select! {
            d = member.next() => d?,
            _ = stop.changed() => break,
        };
        let order: u32 = d.event.json()?;
        if d.event.offset < first {
            println!(
                "  {name}: order {order} at offset {} was left unacked by an earlier run: ack",
                d.event.offset
            );
            member.ack(&d).await?;
        } else if order == POISON || (order == 3 && d.attempt == 1) {
            println!(
                "  {name}: order {order} (attempt {}): cannot handle it now: nack",
                d.attempt
            );
            member.nack(&d).await?;
        } else {
            println!(
                "  {name}: order {order} (attempt {}): billed, ack",
                d.attempt
            );
            member.ack(&d).await?;
            let _ = acked.send(order);
        }
    }
    member.leave().await?; // hands back anything unacked
    Ok(())
}

/// Prints the error (its message, not its `Debug` form) and exits 1 on failure.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("event_groups: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    let url = backend_url();
    println!("backend: {}", sync_core::backend::redact_url(&url));
    let events: Arc<dyn EventStream> = sync_event::open(&url, EventOptions::new()).await?;

    // The group and the dead-letter reader exist before the orders are published.
    let group = GroupOptions::new()
        .with_ack_wait(Duration::from_secs(5))
        .with_max_deliveries(2)
        .with_start(Start::Latest); // a new group starts at the next event
    let dead_topic = group.dead_letter_for(TOPIC);
    let mut dead_letters = events.subscribe(&dead_topic, Start::Latest).await?;
    let members = [
        events.join(TOPIC, GROUP, group.clone()).await?,
        events.join(TOPIC, GROUP, group).await?,
    ];

    // Publish: each call returns once the event is durable, with its offset.
    let mut offsets = Vec::new();
    for order in 1..=6u32 {
        let offset = events.publish_json(TOPIC, &order).await?;
        println!("published order {order} at offset {offset}");
        offsets.push(offset);
    }
    let first = offsets[0];

    // Subscribe: every reader sees the same events in the same order, none missing.
    let mut sub = events.subscribe(TOPIC, Start::Offset(first)).await?;
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let e = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await?
            .ok_or("the subscription ended")??;
        seen.push((e.offset, e.json::<u32>()?));
    }
    println!("subscriber read {seen:?}");
    let expected: Vec<(u64, u32)> = offsets.iter().copied().zip(1..=6).collect();
    if seen != expected {
        return Err(format!("the subscriber read {seen:?}, published {expected:?}").into());
    }

    // The group: two members share the orders.
    println!("group {GROUP}:");
    let (acked_tx, mut acked_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let tasks: Vec<_> = members
        .into_iter()
        .zip(["member-1", "member-2"])
        .map(|(m, name)| tokio::spawn(member(name, m, first, acked_tx.clone(), stop_rx.clone())))
        .collect();
    let mut acked = BTreeSet::new();
    while acked.len() < 5 {
        let order = tokio::time::timeout(Duration::from_secs(20), acked_rx.recv())
            .await
            .map_err(|_| format!("only orders {acked:?} were acked within 20 s"))?
            .ok_or("the members stopped")?;
        if !acked.insert(order) {
            return Err(format!("order {order} was delivered again after its ack").into());
        }
    }
    let dead = tokio::time::timeout(Duration::from_secs(20), dead_letters.next())
        .await
        .map_err(|_| "order 6 did not reach the dead-letter topic within 20 s")?
        .ok_or("the dead-letter subscription ended")??;
    println!(
        "dead-letter topic {dead_topic}: order {} from {} offset {} after {} deliveries",
        dead.json::<u32>()?,
        dead.headers[dead_letter::TOPIC],
        dead.headers[dead_letter::OFFSET],
        dead.headers[dead_letter::DELIVERIES],
    );
    if dead.json::<u32>()? != POISON {
        return Err("the wrong order reached the dead-letter topic".into());
    }

    let _ = stop_tx.send(true);
    for t in tasks {
        t.await??;
    }
    println!("acked orders {acked:?}; event_groups: ok");
    Ok(())
}
