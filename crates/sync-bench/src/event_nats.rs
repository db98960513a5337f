//! The event stream's `nats` backend, each beside raw JetStream (async-nats directly) on the same
//! 3-node cluster, with the same stream configuration (one stream per topic, 3 replicas, file
//! storage, limits retention, discard old): publish throughput at 1 and 32 in flight, publish →
//! subscriber latency (p50 and p99) vs a raw ordered consumer, and a 3-member group's
//! throughput vs a raw durable pull consumer with 3 pullers.
//!
//! Every scenario needs `SYNC_NATS_URLS` (set by `cargo xtask bench`) and fails without it.
//! Each run works under a fresh prefix and deletes its streams at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures::{FutureExt, StreamExt};
use sync_event::Start;
use sync_event::{
    EventOptions, EventStream, GroupOptions, Member, Message, NatsConfig, NatsEvents,
};

use crate::event::{consume, group_backlog, rate, SIZE};
use crate::lock::err;
use crate::stats::percentile_ms;
use crate::{Budget, Row, Scenario, Target};

/// The variable `cargo xtask bench` sets: the URLs of the 3 NATS nodes.
const URLS_VAR: &str = "SYNC_NATS_URLS";

pub(crate) fn scenarios() -> Vec<(&'static str, Scenario)> {
    // `needs_etcd: false`: these need NATS instead, and fail with the reason when
    // SYNC_NATS_URLS is not set (see `urls`).
    vec![
        (
            "event.nats.publish_1_in_flight",
            Scenario {
                needs_etcd: false,
                needs_ntp: false,
                run: |b| publish_throughput(b, 1).boxed(),
            },
        ),
        (
            "event.nats.publish_32_in_flight",
            Scenario {
                needs_etcd: false,
                needs_ntp: false,
                run: |b| publish_throughput(b, 32).boxed(),
            },
        ),
        (
            "event.nats.publish_to_subscriber_p50",
            Scenario {
                needs_etcd: false,
                needs_ntp: false,
                run: |b| delivery_latency(b, 50.0).boxed(),
            },
        ),
        (
            "event.nats.publish_to_subscriber_p99",
            Scenario {
                needs_etcd: false,
                needs_ntp: false,
                run: |b| delivery_latency(b, 99.0).boxed(),
            },
        ),
        (
            "event.nats.group_3_members",
            Scenario {
                needs_etcd: false,
                needs_ntp: false,
                run: |b| group_throughput(b).boxed(),
            },
        ),
    ]
}

fn urls() -> Result<Vec<String>, String> {
    match std::env::var(URLS_VAR) {
        Ok(v) if !v.trim().is_empty() => Ok(v.split(',').map(|s| s.trim().to_owned()).collect()),
        _ => Err(format!(
            "{URLS_VAR} is not set: this scenario needs the NATS cluster (run `cargo xtask bench`)"
        )),
    }
}

/// One scenario's connections: our handle and a raw JetStream context, under one prefix.
struct Nats {
    urls: Vec<String>,
    prefix: String,
    ours: NatsEvents,
    js: jetstream::Context,
}

impl Nats {
    async fn open(name: &str) -> Result<Nats, String> {
        let urls = urls()?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let prefix = format!("bench-{name}-{:x}-{nanos:x}", std::process::id());
        let ours = Nats::handle(&urls, &prefix).await?;
        let js = Nats::raw(&urls).await?;
        Ok(Nats {
            urls,
            prefix,
            ours,
            js,
        })
    }

    /// Another handle of ours on the same prefix (a new connection, as another process has).
    async fn handle(urls: &[String], prefix: &str) -> Result<NatsEvents, String> {
        let cfg = NatsConfig::new(urls.to_vec()).with_prefix(prefix.to_owned());
        NatsEvents::connect(cfg, EventOptions::new())
            .await
            .map_err(|e| format!("{URLS_VAR} is {urls:?}, but connecting failed: {e}"))
    }

    /// A raw JetStream context on a connection of its own.
    async fn raw(urls: &[String]) -> Result<jetstream::Context, String> {
        let client = async_nats::ConnectOptions::new()
            .connect(urls.to_vec())
            .await
            .map_err(|e| format!("{URLS_VAR} is {urls:?}, but connecting failed: {e}"))?;
        Ok(jetstream::new(client))
    }

    /// A raw stream `name` configured as ours are (see `NatsEvents`: one subject, replicas 3,
    /// file storage, limits retention, discard old), and its subject.
    async fn raw_stream(&self, name: &str) -> Result<(stream::Stream, String), String> {
        let subject = format!("{}.raw.{name}", self.prefix);
        let config = stream::Config {
            name: format!("{}_raw-{name}", self.prefix),
            subjects: vec![subject.clone()],
            num_replicas: 3,
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        };
        let s = self.js.create_stream(config).await.map_err(err)?;
        Ok((s, subject))
    }

    /// Deletes every stream under the prefix (ours and the raw ones).
    async fn cleanup(&self) {
        let prefix = format!("{}_", self.prefix);
        let names: Vec<String> = self
            .js
            .stream_names()
            .filter_map(|n| async move { n.ok() })
            .filter(|n| std::future::ready(n.starts_with(&prefix)))
            .collect()
            .await;
        for n in names {
            if let Err(e) = self.js.delete_stream(&n).await {
                eprintln!("  warning: could not delete stream {n}: {e}");
            }
        }
    }
}

/// Runs `f` on a fresh [`Nats`] and deletes its streams afterwards, whatever `f` returned.
async fn with_nats<F, Fut>(name: &str, f: F) -> Result<Row, String>
where
    F: FnOnce(Arc<Nats>) -> Fut,
    Fut: std::future::Future<Output = Result<Row, String>>,
{
    let n = Arc::new(Nats::open(name).await?);
    let result = f(n.clone()).await;
    n.cleanup().await;
    result
}

/// `in_flight` publishes at a time to one topic through one handle, vs as many raw JetStream
/// publishes (each awaiting its acknowledgement) at a time to a stream of the same
/// configuration through one connection. Ours also carries a `Nats-Msg-Id` (its retries are
/// stored once); the raw one does not.
async fn publish_throughput(b: Budget, in_flight: usize) -> Result<Row, String> {
    with_nats(&format!("p{in_flight}"), |n| async move {
        let ours = Arc::new(n.ours.clone());
        let topic = format!("bench-{in_flight}");
        ours.publish(&topic, Message::new("warm-up"))
            .await
            .map_err(err)?;
        let (_stream, subject) = n.raw_stream(&format!("p{in_flight}")).await?;
        let js = n.js.clone();
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
            let (js, s) = (js.clone(), subject.clone());
            best_r = best_r.max(
                rate(b.duration, in_flight, move || {
                    let (js, s) = (js.clone(), s.clone());
                    async move {
                        js.publish(s, vec![7u8; SIZE].into())
                            .await
                            .map_err(err)?
                            .await
                            .map(|_| ())
                            .map_err(err)
                    }
                })
                .await?,
            );
        }
        Ok(Row::new(
            &format!("nats event publish, {in_flight} in flight, throughput"),
            best_o,
            best_r,
            "ops/s",
            Target::AtLeast(0.8),
        ))
    })
    .await
}

/// The `p`-th percentile from publish to a subscriber's receipt, vs from a raw JetStream
/// publish to its receipt on a raw ordered consumer (what our subscriber reads through),
/// alternating one of each.
async fn delivery_latency(b: Budget, p: f64) -> Result<Row, String> {
    with_nats("lat", |n| async move {
        let topic = "bench-latency";
        let mut sub = n.ours.subscribe(topic, Start::Latest).await.map_err(err)?;
        let (stream, subject) = n.raw_stream("lat").await?;
        let raw_consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: subject.clone(),
                deliver_policy: consumer::DeliverPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(err)?;
        let mut raw_messages = raw_consumer.messages().await.map_err(err)?;
        let (mut o, mut r) = (Vec::new(), Vec::new());
        let samples = b.samples.min(300);
        for _ in 0..b.rounds {
            for _ in 0..samples {
                let t = Instant::now();
                n.ours
                    .publish(topic, Message::new(vec![1u8; SIZE]))
                    .await
                    .map_err(err)?;
                match tokio::time::timeout(Duration::from_secs(30), sub.next()).await {
                    Ok(Some(Ok(_))) => o.push(t.elapsed()),
                    other => return Err(format!("our subscriber: {other:?}")),
                }
                let t = Instant::now();
                n.js.publish(subject.clone(), vec![1u8; SIZE].into())
                    .await
                    .map_err(err)?
                    .await
                    .map_err(err)?;
                match tokio::time::timeout(Duration::from_secs(30), raw_messages.next()).await {
                    Ok(Some(Ok(_))) => r.push(t.elapsed()),
                    other => return Err(format!("the raw ordered consumer: {other:?}")),
                }
            }
        }
        let (o50, r50) = (percentile_ms(&mut o, 50.0), percentile_ms(&mut r, 50.0));
        let (o99, r99) = (percentile_ms(&mut o, 99.0), percentile_ms(&mut r, 99.0));
        eprintln!(
            "  ours p50 {o50:.3} ms p99 {o99:.3} ms; raw publish → ordered consumer p50 {r50:.3} ms p99 {r99:.3} ms"
        );
        let (ours, raw) = if p >= 99.0 { (o99, r99) } else { (o50, r50) };
        Ok(Row::new(
            &format!("nats event publish → subscriber (p{p})"),
            ours,
            raw,
            "ms",
            Target::AtMost(2.0),
        ))
    })
    .await
}

/// A 3-member group (each member on a connection of its own, as 3 processes) taking and acking
/// a backlog, vs a raw durable pull consumer (explicit acks, 3 replicas, as our group's) read
/// by 3 pullers on 3 connections.
///
/// The baseline pullers do what a member must do for the group's guarantees, and no more:
/// each requests one message at a time (a batch would leave events waiting in one puller's
/// buffer where no other member can take them, and count deliveries the user never saw) and
/// waits for the server to confirm each ack (so that, as our `ack()` promises, an acked event
/// is never delivered again). A batched, fire-and-forget consumer would be faster and give
/// neither, so it is not the comparison.
async fn group_throughput(b: Budget) -> Result<Row, String> {
    let backlog = group_backlog(b, 3000.0);
    with_nats("grp", |n| async move {
        let (mut best_o, mut best_r) = (0f64, 0f64);
        let mut handles = vec![n.ours.clone()];
        for _ in 0..2 {
            handles.push(Nats::handle(&n.urls, &n.prefix).await?);
        }
        let mut raws = Vec::new();
        for _ in 0..3 {
            raws.push(Nats::raw(&n.urls).await?);
        }
        for round in 0..b.rounds {
            // Ours.
            let topic = format!("bench-group-{round}");
            let mut members: Vec<Arc<dyn Member>> = Vec::new();
            for h in &handles {
                let m = h
                    .join(&topic, "g", GroupOptions::new())
                    .await
                    .map_err(err)?;
                members.push(Arc::from(m));
            }
            fill(&n.ours, &topic, backlog).await?;
            best_o = best_o.max(consume(members, backlog).await?);

            // Raw.
            let (stream, subject) = n.raw_stream(&format!("g{round}")).await?;
            let durable = "g".to_string();
            stream
                .create_consumer(consumer::pull::Config {
                    durable_name: Some(durable.clone()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    filter_subject: subject.clone(),
                    num_replicas: 3,
                    ..Default::default()
                })
                .await
                .map_err(err)?;
            raw_fill(&n.js, &subject, backlog).await?;
            let mut pullers = Vec::new();
            for js in &raws {
                let s = js
                    .get_stream(stream.cached_info().config.name.clone())
                    .await
                    .map_err(err)?;
                let c: consumer::PullConsumer = s.get_consumer(&durable).await.map_err(err)?;
                pullers.push(c);
            }
            best_r = best_r.max(raw_consume(pullers, backlog).await?);
        }
        Ok(Row::new(
            "nats event group, 3 members, throughput",
            best_o,
            best_r,
            "ops/s",
            Target::AtLeast(0.8),
        ))
    })
    .await
}

/// Publishes `n` events to `topic`, 64 at a time.
async fn fill(events: &NatsEvents, topic: &str, n: usize) -> Result<(), String> {
    futures::stream::iter(0..n)
        .map(|_| events.publish(topic, Message::new(vec![3u8; SIZE])))
        .buffer_unordered(64)
        .map(|r| r.map(|_| ()).map_err(err))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Publishes `n` raw messages to `subject`, 64 at a time.
async fn raw_fill(js: &jetstream::Context, subject: &str, n: usize) -> Result<(), String> {
    futures::stream::iter(0..n)
        .map(|_| async {
            js.publish(subject.to_owned(), vec![3u8; SIZE].into())
                .await
                .map_err(err)?
                .await
                .map(|_| ())
                .map_err(err)
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Messages per second for `pullers` to fetch one message at a time and double-ack it until
/// `n` are acked.
async fn raw_consume(pullers: Vec<consumer::PullConsumer>, n: usize) -> Result<f64, String> {
    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let t = Instant::now();
    let tasks: Vec<_> = pullers
        .into_iter()
        .map(|c| tokio::spawn(pull_loop(c, acked.clone(), done.clone(), n)))
        .collect();
    let finished = tokio::time::timeout(Duration::from_secs(120), done.notified()).await;
    let elapsed = t.elapsed();
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        if let Ok(Err(e)) = task.await {
            return Err(format!("a raw puller failed: {e}"));
        }
    }
    finished.map_err(|_| format!("the raw pullers acked fewer than {n} messages in 120 s"))?;
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// One raw puller: fetch one, double-ack it, count it; until aborted or an error.
async fn pull_loop(
    c: consumer::PullConsumer,
    acked: Arc<std::sync::atomic::AtomicUsize>,
    done: Arc<tokio::sync::Notify>,
    n: usize,
) -> Result<(), String> {
    loop {
        let mut batch = c
            .batch()
            .max_messages(1)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .map_err(err)?;
        if let Some(m) = batch.next().await {
            m.map_err(err)?.double_ack().await.map_err(err)?;
            if acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == n {
                done.notify_one();
            }
        }
    }
}
