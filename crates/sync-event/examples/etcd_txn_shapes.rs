//! What the shape of a group's transactions costs on etcd: 3 tasks on 3 connections (as the
//! group bench's 3 members) each loop over a pair of requests (a claim-like write, then an
//! ack-like write), and the example prints pairs per second beside two plain puts per pair
//! (the group bench's baseline), measured in turns in the same run. For profiling only: it
//! writes its own keys under a fresh prefix and deletes them at the end.
//!
//! ```text
//! eval "$(cargo xtask etcd up)"
//! cargo run --release -p sync-event --features etcd --example etcd_txn_shapes [SECONDS]
//! ```
#![allow(clippy::print_stdout)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};
use sync_etcd::testing;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Events pre-written under the prefix, as a group's backlog.
const BACKLOG: u64 = 2000;

#[derive(Clone, Copy, Debug)]
enum Shape {
    /// Two plain puts of 256 bytes.
    Puts,
    /// Take one offset (compare cursor, put cursor, p, c on a lease, get the event), then ack
    /// (compare c, delete c and p): no state reads.
    Bare,
    /// As `Bare`, with the group state read (group dir range, seq, first event window) in the
    /// ack.
    AckReads,
    /// Take through an 8-deep chain (first branch wins) whose innermost branch reads the state,
    /// and an ack that reads it (the code before this session).
    Chain,
    /// A mark (compare c, put p and c) then an ack with no reads: the reserved-batch path.
    Mark,
}

struct Keys {
    dir: String,
    me: u64,
}

impl Keys {
    fn event(&self, o: u64) -> String {
        format!("{}e/{o:020}", self.dir)
    }
    fn g(&self) -> String {
        format!("{}g/", self.dir)
    }
    fn cursor(&self) -> String {
        format!("{}g/cursor{}", self.dir, self.me)
    }
    fn p(&self, o: u64) -> String {
        format!("{}g/p/{o:020}", self.dir)
    }
    fn c(&self, o: u64) -> String {
        format!("{}g/c/{o:020}", self.dir)
    }
    fn state(&self, first: u64) -> [TxnOp; 3] {
        [
            TxnOp::get(
                self.g(),
                Some(GetOptions::new().with_range(format!("{}g0", self.dir))),
            ),
            TxnOp::get(format!("{}seq", self.dir), None),
            TxnOp::get(
                self.event(first),
                Some(
                    GetOptions::new()
                        .with_range(self.event(first + 32))
                        .with_limit(1)
                        .with_keys_only(),
                ),
            ),
        ]
    }
}

fn take(k: &Keys, o: u64, lease: i64) -> [TxnOp; 4] {
    [
        TxnOp::put(k.cursor(), (o + 1).to_string(), None),
        TxnOp::put(k.p(o), "1", None),
        TxnOp::put(
            k.c(o),
            "member 123456789",
            Some(PutOptions::new().with_lease(lease)),
        ),
        TxnOp::get(k.event(o), None),
    ]
}

async fn pair(c: &mut Client, k: &Keys, shape: Shape, o: u64, lease: i64) -> Result<(), Error> {
    let cur = Compare::value(k.cursor(), CompareOp::Equal, o.to_string());
    let claimed = Compare::version(k.c(o), CompareOp::Greater, 0);
    let ack = [TxnOp::delete(k.c(o), None), TxnOp::delete(k.p(o), None)];
    match shape {
        Shape::Puts => {
            c.put(k.p(o), vec![3u8; 256], None).await?;
            c.put(k.c(o), vec![3u8; 256], None).await?;
        }
        Shape::Bare | Shape::AckReads => {
            c.txn(Txn::new().when([cur]).and_then(take(k, o, lease)))
                .await?;
            let mut ops = ack.to_vec();
            if matches!(shape, Shape::AckReads) {
                ops.extend(k.state(o));
            }
            c.txn(Txn::new().when([claimed]).and_then(ops)).await?;
        }
        Shape::Chain => {
            let mut txn = Txn::new().and_then(k.state(o));
            for x in (o..o + 8).rev() {
                txn = Txn::new()
                    .when([Compare::value(k.cursor(), CompareOp::Equal, x.to_string())])
                    .and_then(take(k, x, lease))
                    .or_else([TxnOp::txn(txn)]);
            }
            c.txn(txn).await?;
            let mut ops = ack.to_vec();
            ops.extend(k.state(o));
            c.txn(Txn::new().when([claimed]).and_then(ops)).await?;
        }
        Shape::Mark => {
            let mark = [
                TxnOp::put(k.p(o), "1", None),
                TxnOp::put(
                    k.c(o),
                    "member 123456789",
                    Some(PutOptions::new().with_lease(lease)),
                ),
            ];
            c.txn(Txn::new().when([cur]).and_then(mark)).await?;
            c.txn(Txn::new().when([claimed]).and_then(ack)).await?;
        }
    }
    Ok(())
}

/// Pairs per second of 3 tasks running `shape` for `d`.
async fn run(clients: &[Client], prefix: &str, shape: Shape, d: Duration) -> Result<f64, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let mut c = c.clone();
        let k = Keys {
            dir: format!("{prefix}/t/"),
            me: i as u64,
        };
        let (stop, count) = (stop.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let lease = c.lease_grant(30, None).await?.id();
            // Each task walks its own third of the backlog, with a cursor of its own.
            let mut o = 1 + i as u64 * (BACKLOG / 3);
            c.put(k.cursor(), o.to_string(), None).await?;
            while !stop.load(Ordering::Relaxed) {
                pair(&mut c, &k, shape, o, lease).await?;
                if !matches!(shape, Shape::Mark) {
                    o += 1;
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
            c.lease_revoke(lease).await?;
            Ok::<(), Error>(())
        }));
    }
    let t = Instant::now();
    tokio::time::sleep(d).await;
    stop.store(true, Ordering::Relaxed);
    let n = count.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();
    for task in tasks {
        task.await??;
    }
    Ok(n)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3.0);
    let d = Duration::from_secs_f64(secs);
    let endpoints = testing::endpoints();
    let prefix = testing::unique_prefix("txn-shapes");
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(Client::connect(&endpoints, None).await?);
    }
    let mut c = clients[0].clone();
    for o in 1..=BACKLOG {
        c.put(format!("{prefix}/t/e/{o:020}"), vec![3u8; 256], None)
            .await?;
    }
    for round in 0..2 {
        for shape in [
            Shape::Puts,
            Shape::Bare,
            Shape::AckReads,
            Shape::Chain,
            Shape::Mark,
        ] {
            let r = run(&clients, &prefix, shape, d).await?;
            println!("round {round} {shape:?}: {r:.0} pairs/s");
        }
    }
    c.delete(prefix.clone(), Some(DeleteOptions::new().with_prefix()))
        .await?;
    Ok(())
}
