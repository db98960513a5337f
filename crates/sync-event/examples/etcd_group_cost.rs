//! What one event costs a consumer group on etcd, counted by etcd itself: a 3-member group
//! (3 connections, as 3 processes) takes and acks a backlog, and the example prints the
//! requests the cluster answered (transactions, ranges) and the raft entries it committed per
//! event, from every member's `/metrics`, beside the events per second. Asserts only that
//! every event was acked once; the figures are for profiling.
//!
//! ```text
//! eval "$(cargo xtask etcd up)"
//! cargo run --release -p sync-event --features etcd --example etcd_group_cost [EVENTS]
//! ```
#![allow(clippy::print_stdout)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use sync_etcd::testing;
use sync_event::{EtcdEvents, EventOptions, EventStream, GroupOptions, Member, Message};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Counters summed over the cluster's members (`proposals` is the most any member committed:
/// every member commits the same entries).
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    txns: f64,
    ranges: f64,
    proposals: f64,
}

/// One member's `/metrics` page, over plain HTTP/1.0 on loopback.
fn scrape(endpoint: &str) -> Result<String, Error> {
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

fn value(page: &str, name: &str, labels: &[&str]) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn counts(endpoints: &[String]) -> Result<Counts, Error> {
    let mut c = Counts::default();
    for e in endpoints {
        let page = scrape(e)?;
        let ok = "grpc_code=\"OK\"";
        c.txns += value(
            &page,
            "grpc_server_handled_total",
            &[ok, "grpc_method=\"Txn\""],
        );
        c.ranges += value(
            &page,
            "grpc_server_handled_total",
            &[ok, "grpc_method=\"Range\""],
        );
        c.proposals = c
            .proposals
            .max(value(&page, "etcd_server_proposals_committed_total", &[]));
    }
    Ok(c)
}

async fn member(
    m: Box<dyn Member>,
    acked: Arc<Mutex<BTreeSet<u64>>>,
    n: usize,
) -> Result<(), Error> {
    loop {
        if acked.lock().unwrap().len() >= n {
            return Ok(());
        }
        let d = tokio::select! {
            d = m.next() => d?,
            _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
        };
        m.ack(&d).await?;
        if !acked.lock().unwrap().insert(d.event.offset) {
            return Err(format!("offset {} acked twice", d.event.offset).into());
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let cfg = testing::config("event-group-cost");
    let endpoints: Vec<String> = cfg.endpoint_urls();
    let _wipe = testing::WipeOnDrop(testing::connect(cfg.clone()).await);
    let mut handles = Vec::new();
    for _ in 0..3 {
        handles.push(EtcdEvents::connect(cfg.clone(), EventOptions::new()).await?);
    }
    let mut members = Vec::new();
    for h in &handles {
        members.push(h.join("t", "g", GroupOptions::new()).await?);
    }
    let published: Vec<_> = futures::stream::iter(0..n)
        .map(|_| handles[0].publish("t", Message::new(vec![3u8; 256])))
        .buffer_unordered(32)
        .collect()
        .await;
    for p in published {
        p?;
    }
    let before = counts(&endpoints)?;
    let t = Instant::now();
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let tasks: Vec<_> = members
        .into_iter()
        .map(|m| tokio::spawn(member(m, acked.clone(), n)))
        .collect();
    for task in tasks {
        task.await??;
    }
    let secs = t.elapsed().as_secs_f64();
    let after = counts(&endpoints)?;
    let got = acked.lock().unwrap().len();
    if got != n {
        return Err(format!("{got} of {n} events acked").into());
    }
    let per = |a: f64, b: f64| (a - b) / n as f64;
    println!(
        "{n} events by 3 members in {secs:.2} s: {:.0} events/s; per event: {:.2} txns, {:.2} ranges, {:.2} raft entries committed",
        n as f64 / secs,
        per(after.txns, before.txns),
        per(after.ranges, before.ranges),
        per(after.proposals, before.proposals),
    );
    Ok(())
}
