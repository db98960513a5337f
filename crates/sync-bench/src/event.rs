//! The event stream (`sync-event`), each beside its raw baseline in the same run: etcd publishes
//! vs raw puts of the same size, publish → subscriber vs put → watch event, and the local
//! backend vs a `tokio::sync::broadcast` channel of the same events.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use etcd_client::WatchOptions;
use futures::{FutureExt, StreamExt};
use sync_event::{
    EtcdEvents, Event, EventOptions, EventStream, GroupOptions, LocalEvents, Member, Message,
    Retention, Start,
};

use crate::lock::{bench_prefix, config, err, raw_client, run_for};
use crate::stats::percentile_ms;
use crate::{Budget, Row, Scenario, Target};

/// Bytes of every payload.
pub(crate) const SIZE: usize = 256;

pub(crate) fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        (
            "event.etcd.publish_1_in_flight",
            Scenario {
                needs_etcd: true,
                needs_ntp: false,
                run: |b| publish_throughput(b, 1).boxed(),
            },
        ),
        (
            "event.etcd.publish_32_in_flight",
            Scenario {
                needs_etcd: true,
                needs_ntp: false,
                run: |b| publish_throughput(b, 32).boxed(),
            },
        ),
        (
            "event.etcd.publish_to_subscriber",
            Scenario {
                needs_etcd: true,
                needs_ntp: false,
                run: |b| delivery_latency(b).boxed(),
            },
        ),
        (
            "event.etcd.group_3_members",
            Scenario {
                needs_etcd: true,
                needs_ntp: false,
                run: |b| group_throughput(b).boxed(),
            },
        ),
        (
            "event.local.publish_and_receive",
            Scenario {
                needs_etcd: false,
                needs_ntp: false,
                run: |b| local_throughput(b).boxed(),
            },
        ),
    ]
    .into_iter()
    .chain(crate::event_nats::scenarios())
    .collect()
}

/// Operations per second of `tasks` tasks running `op` in a loop for `d`.
pub(crate) async fn rate<F, Fut>(d: Duration, tasks: usize, op: F) -> Result<f64, String>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let handles = (0..tasks)
        .map(|_| {
            let (op, count, stop) = (op.clone(), count.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    op().await?;
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    run_for(d, &count, &stop, handles).await
}

/// `in_flight` publishes at a time to one topic through one handle, vs as many raw puts of the
/// same size at a time through one client.
async fn publish_throughput(b: Budget, in_flight: usize) -> Result<Row, String> {
    let ours = Arc::new(
        EtcdEvents::connect(config(), EventOptions::new())
            .await
            .map_err(err)?,
    );
    let raw = raw_client().await?;
    let topic = format!("bench-{in_flight}");
    let key = Arc::new(format!("{}/raw-events/{in_flight}", bench_prefix()));
    let (mut best_o, mut best_r) = (0f64, 0f64);
    for _ in 0..b.rounds {
        let (e, t) = (ours.clone(), topic.clone());
        best_o = best_o.max(
            rate(b.duration, in_flight, move || {
                let (e, t) = (e.clone(), t.clone());
                async move {
                    e.publish(&t, Message::new(vec![7u8; SIZE]))
                        .await
                        .map(|_| ())
                        .map_err(err)
                }
            })
            .await?,
        );
        let (c, k) = (raw.clone(), key.clone());
        best_r = best_r.max(
            rate(b.duration, in_flight, move || {
                let (mut c, k) = (c.clone(), k.clone());
                async move {
                    c.put(k.as_str(), vec![7u8; SIZE], None)
                        .await
                        .map(|_| ())
                        .map_err(err)
                }
            })
            .await?,
        );
    }
    Ok(Row::new(
        &format!("etcd event publish, {in_flight} in flight, throughput"),
        best_o,
        best_r,
        "ops/s",
        Target::AtLeast(0.8),
    ))
}

/// p99 from publish to a subscriber's receipt, vs from a raw put to its watch event.
async fn delivery_latency(b: Budget) -> Result<Row, String> {
    let ours = EtcdEvents::connect(config(), EventOptions::new())
        .await
        .map_err(err)?;
    let mut sub = ours
        .subscribe("bench-latency", Start::Latest)
        .await
        .map_err(err)?;
    let mut raw = raw_client().await?;
    let key = format!("{}/raw-latency", bench_prefix());
    let mut watch = raw
        .watch(key.as_str(), Some(WatchOptions::new()))
        .await
        .map_err(err)?;
    let (mut o, mut r) = (Vec::new(), Vec::new());
    let n = b.samples.min(300);
    for _ in 0..b.rounds {
        for _ in 0..n {
            let t = Instant::now();
            ours.publish("bench-latency", Message::new(vec![1u8; SIZE]))
                .await
                .map_err(err)?;
            match sub.next().await {
                Some(Ok(_)) => o.push(t.elapsed()),
                other => return Err(format!("the subscription ended: {other:?}")),
            }
            let t = Instant::now();
            raw.put(key.as_str(), vec![1u8; SIZE], None)
                .await
                .map_err(err)?;
            loop {
                match watch.message().await.map_err(err)? {
                    Some(m) if !m.events().is_empty() => break,
                    Some(_) => continue,
                    None => return Err("the watch ended".into()),
                }
            }
            r.push(t.elapsed());
        }
    }
    let (o50, r50) = (percentile_ms(&mut o, 50.0), percentile_ms(&mut r, 50.0));
    let (o99, r99) = (percentile_ms(&mut o, 99.0), percentile_ms(&mut r, 99.0));
    eprintln!(
        "  ours p50 {o50:.3} ms p99 {o99:.3} ms; put → watch p50 {r50:.3} ms p99 {r99:.3} ms"
    );
    Ok(Row::new(
        "etcd event publish → subscriber (p99)",
        o99,
        r99,
        "ms",
        Target::AtMost(2.0),
    ))
}

/// One publisher and one subscriber on the local backend vs a `tokio::sync::broadcast` channel
/// of the same owned [`Event`]s, both keeping the last 1000 events: events per second from send
/// to receipt.
async fn local_throughput(b: Budget) -> Result<Row, String> {
    let (mut best_o, mut best_r) = (0f64, 0f64);
    let batch = 1000u64;
    for _ in 0..b.rounds {
        // Both keep the last `batch` events for a lagging reader: ours by count retention, the
        // channel by its capacity.
        let events = LocalEvents::with_options(
            EventOptions::new().with_retention(Retention::new().with_max_events(batch)),
        )
        .map_err(err)?;
        let mut sub = events
            .subscribe("bench", Start::Latest)
            .await
            .map_err(err)?;
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < b.duration {
            for _ in 0..batch {
                events
                    .publish("bench", Message::new(vec![1u8; SIZE]))
                    .await
                    .map_err(err)?;
            }
            for _ in 0..batch {
                sub.next()
                    .await
                    .ok_or("the subscription ended")?
                    .map_err(err)?;
            }
            n += batch;
        }
        best_o = best_o.max(n as f64 / t.elapsed().as_secs_f64());

        // The baseline hands each receiver the same owned `Event` ours does (a broadcast
        // receiver clones it): what the row measures is what the topic log, its offsets and
        // the lookup by name add, not the price of the `Event` type itself.
        let (tx, mut rx) = tokio::sync::broadcast::channel::<Event>(batch as usize);
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < b.duration {
            for i in 0..batch {
                let e = Event::new(
                    "bench",
                    n + i + 1,
                    SystemTime::now(),
                    Message::new(vec![1u8; SIZE]),
                );
                tx.send(e).map_err(err)?;
            }
            for _ in 0..batch {
                rx.recv().await.map_err(err)?;
            }
            n += batch;
        }
        best_r = best_r.max(n as f64 / t.elapsed().as_secs_f64());
    }
    Ok(Row::new(
        "local event publish and receive, throughput",
        best_o,
        best_r,
        "ops/s",
        Target::AtLeast(0.8),
    ))
}

/// Events in a group benchmark's backlog: about `per_sec` times the measurement's duration
/// (at least 500), so that a round lasts about as long as a throughput measurement.
pub(crate) fn group_backlog(b: Budget, per_sec: f64) -> usize {
    ((b.duration.as_secs_f64() * per_sec) as usize).max(500)
}

/// Events per second for `members` to take and ack `n` events (a backlog published before):
/// the clock stops at the `n`-th ack, and the members are then dropped.
pub(crate) async fn consume(members: Vec<Arc<dyn Member>>, n: usize) -> Result<f64, String> {
    let acked = Arc::new(AtomicU64::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let t = Instant::now();
    let tasks: Vec<_> = members
        .into_iter()
        .map(|m| tokio::spawn(member_loop(m, acked.clone(), done.clone(), n as u64)))
        .collect();
    let finished = tokio::time::timeout(Duration::from_secs(120), done.notified()).await;
    let elapsed = t.elapsed();
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        if let Ok(Err(e)) = task.await {
            return Err(format!("a member failed: {e}"));
        }
    }
    finished.map_err(|_| format!("the members acked fewer than {n} events in 120 s"))?;
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// One member: take, ack, count; until aborted or an error.
async fn member_loop(
    m: Arc<dyn Member>,
    acked: Arc<AtomicU64>,
    done: Arc<tokio::sync::Notify>,
    n: u64,
) -> Result<(), String> {
    loop {
        let d = m.next().await.map_err(err)?;
        m.ack(&d).await.map_err(err)?;
        if acked.fetch_add(1, Ordering::SeqCst) + 1 == n {
            done.notify_one();
        }
    }
}

/// A 3-member group (members on 3 connections, as 3 processes) taking and acking a backlog,
/// vs raw put throughput at 3 in flight ÷ 2.
///
/// Why that baseline: handing an event to one member with at-least-once delivery needs at
/// least two durable writes in order, one that claims it (so that no other member takes it
/// and a crashed member's events are found again) and one that records its ack; 3 members are
/// 3 writers at a time. Half the put rate at that concurrency is what any etcd recipe with a
/// durable claim could reach at best (as the task bench compares 3 workers with raw puts ÷ 3).
async fn group_throughput(b: Budget) -> Result<Row, String> {
    let backlog = group_backlog(b, 500.0);
    let mut handles = Vec::new();
    for _ in 0..3 {
        handles.push(
            EtcdEvents::connect(config(), EventOptions::new())
                .await
                .map_err(err)?,
        );
    }
    let raw = raw_client().await?;
    let key = Arc::new(format!("{}/raw-group", bench_prefix()));
    let (mut best_o, mut best_r) = (0f64, 0f64);
    for round in 0..b.rounds {
        let topic = format!("bench-group-{round}");
        let mut members: Vec<Arc<dyn Member>> = Vec::new();
        for h in &handles {
            let m = h
                .join(&topic, "g", GroupOptions::new())
                .await
                .map_err(err)?;
            members.push(Arc::from(m));
        }
        let publisher = &handles[0];
        let published: Result<Vec<u64>, _> = futures::stream::iter(0..backlog)
            .map(|_| publisher.publish(&topic, Message::new(vec![3u8; SIZE])))
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect();
        published.map_err(err)?;
        best_o = best_o.max(consume(members, backlog).await?);

        let (c, k) = (raw.clone(), key.clone());
        best_r = best_r.max(
            rate(b.duration, 3, move || {
                let (mut c, k) = (c.clone(), k.clone());
                async move {
                    c.put(k.as_str(), vec![3u8; SIZE], None)
                        .await
                        .map(|_| ())
                        .map_err(err)
                }
            })
            .await?
                / 2.0,
        );
    }
    Ok(Row::new(
        "etcd event group, 3 members, throughput (baseline: puts at 3 in flight ÷ 2)",
        best_o,
        best_r,
        "ops/s",
        Target::AtLeast(0.8),
    ))
}
