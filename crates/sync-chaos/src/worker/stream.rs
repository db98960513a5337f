//! The event stream's workers: `stream-publish`, `stream-subscribe` and `stream-member`, on
//! etcd, or on NATS JetStream when given `--nats URLS` (the `stream-nats` scenario). They log what [`check_stream`](crate::check::check_stream) reads: the
//! offset of every acknowledged publish with the message's own number, every event a plain
//! subscriber sees, every delivery to the group.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sync_event::{
    EtcdEvents, EventOptions, EventStream, GroupOptions, Message, NatsConfig, NatsEvents, Start,
};

use super::{connect_retrying, pause, Args};
use crate::event::Log;

/// The scenario's one topic and one group.
const TOPIC: &str = "chaos-stream";
/// The group every member joins.
pub const GROUP: &str = "g";
/// A member's ack wait: a delivery held by a killed member returns once its lease expires
/// (the TTL) or after this, whichever comes first.
pub const ACK_WAIT: Duration = Duration::from_secs(5);

/// The backend: NATS at `--nats` (comma-separated URLs) if given, else etcd at `--endpoints`;
/// under `--prefix` either way.
async fn events(a: &Args, log: &Log) -> Result<Arc<dyn EventStream>, String> {
    if let Some(urls) = a.opt("nats") {
        let cfg = NatsConfig::new(urls.split(','))
            .with_prefix(nats_prefix(a.get("prefix")?))
            .with_connect_timeout(Duration::from_secs(3));
        let events = connect_retrying(log, || {
            NatsEvents::connect(cfg.clone(), EventOptions::new())
        })
        .await;
        return Ok(Arc::new(events));
    }
    let cfg = a.config()?;
    let events = connect_retrying(log, || {
        EtcdEvents::connect(cfg.clone(), EventOptions::new())
    })
    .await;
    Ok(Arc::new(events))
}

/// `prefix` as a NATS prefix accepts it: letters, digits and `-`, at most 32 (the scenario's
/// prefix ends with its unique part, which is kept).
fn nats_prefix(prefix: &str) -> String {
    let clean: Vec<char> = prefix
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let tail: String = clean[clean.len().saturating_sub(32)..].iter().collect();
    tail.trim_start_matches('-').to_owned()
}

/// The message number of a payload written by [`publish`]: `<pid>-<n>` as `pid × 10⁹ + n`.
fn number(payload: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(payload).ok()?;
    let (pid, n) = text.split_once('-')?;
    Some(pid.parse::<u64>().ok()? * 1_000_000_000 + n.parse::<u64>().ok()?)
}

/// `stream-publish`: publishes numbered messages, `--pause-ms` apart; logs `published` (offset,
/// number) for each acknowledged one and `publish_failed` for the others.
pub async fn publish(a: &Args) -> Result<(), String> {
    let log = a.log()?;
    let events = events(a, &log).await?;
    let gap = a.range_ms("pause-ms", (10, 40))?;
    let pid = std::process::id();
    for n in 1u64.. {
        let payload = format!("{pid}-{n}");
        let job = number(payload.as_bytes()).unwrap_or_default();
        match events.publish(TOPIC, Message::new(payload)).await {
            Ok(offset) => log.write(log.event("published").token(offset).job(job)),
            Err(e) => log.write(log.event("publish_failed").job(job).detail(e.to_string())),
        }
        tokio::time::sleep(pause(gap)).await;
    }
    Ok(())
}

/// `stream-subscribe`: reads the topic from offset 1; logs `subscribed` (the start) and `seen`
/// (offset, number) for every event. After an error it subscribes again from the offset after
/// the last one it saw, so one process's log stays one ordered run.
pub async fn subscribe(a: &Args) -> Result<(), String> {
    let log = a.log()?;
    let events = events(a, &log).await?;
    let mut next = 1u64;
    log.write(log.event("subscribed").token(next));
    loop {
        let mut sub = match events.subscribe(TOPIC, Start::Offset(next)).await {
            Ok(s) => s,
            Err(e) => {
                log.write(log.event("error").detail(format!("subscribe: {e}")));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        while let Some(item) = sub.next().await {
            match item {
                Ok(e) => {
                    let mut ev = log.event("seen").token(e.offset);
                    if let Some(job) = number(&e.payload) {
                        ev = ev.job(job);
                    }
                    log.write(ev);
                    next = e.offset + 1;
                }
                Err(e) => {
                    log.write(log.event("error").detail(format!("stream: {e}")));
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `stream-member`: a member of the group; logs `got` (offset, number, the group) for every
/// delivery, works on it for `--work-ms` (default 5-30: so that a `kill -9` often lands while
/// it holds a delivery, which must then come back to another member), then acks it (`acked`,
/// or `ack_failed`).
pub async fn member(a: &Args) -> Result<(), String> {
    let log = a.log()?;
    let work = a.range_ms("work-ms", (5, 30))?;
    let events = events(a, &log).await?;
    let options = GroupOptions::new()
        .with_ack_wait(ACK_WAIT)
        .with_start(Start::Earliest);
    loop {
        let member = match events.join(TOPIC, GROUP, options.clone()).await {
            Ok(m) => m,
            Err(e) => {
                log.write(log.event("error").detail(format!("join: {e}")));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        loop {
            let d = match member.next().await {
                Ok(d) => d,
                Err(e) => {
                    log.write(log.event("error").detail(format!("next: {e}")));
                    break;
                }
            };
            let mut ev = log.event("got").token(d.event.offset).detail(GROUP);
            if let Some(job) = number(&d.event.payload) {
                ev = ev.job(job);
            }
            log.write(ev);
            tokio::time::sleep(pause(work)).await;
            match member.ack(&d).await {
                Ok(()) => log.write(log.event("acked").token(d.event.offset)),
                Err(e) => log.write(
                    log.event("ack_failed")
                        .token(d.event.offset)
                        .detail(e.to_string()),
                ),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nats_prefix_keeps_letters_digits_and_dashes() {
        assert_eq!(
            super::nats_prefix("chaos/stream-nats-12"),
            "chaos-stream-nats-12"
        );
        let long = super::nats_prefix("chaos/stream-nats-1795735558203754685");
        assert!(
            long.len() <= 32 && long.ends_with("-nats-1795735558203754685"),
            "{long}"
        );
        let cfg = sync_event::NatsConfig::new(["nats://127.0.0.1:4222"]).with_prefix(long);
        assert!(cfg.validate().is_ok(), "{cfg:?}");
    }

    #[test]
    fn message_numbers_are_unique_per_process_and_count() {
        assert_eq!(super::number(b"12-7"), Some(12_000_000_007));
        assert_eq!(super::number(b"x"), None);
    }
}
