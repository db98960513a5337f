//! `syncctl event publish|tail`: the event streams of `sync-event` on any backend (`local`,
//! `etcd://`, `nats://`).

use std::io::Read;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use serde_json::{json, Map, Value};
use sync_event::{
    Event, EventOptions, EventStream, GroupOptions, Headers, Member, Message, Retention, Start,
};

use crate::backend::{parse_duration, Connect};
use crate::exit::{self, Failure};
use crate::output::{parse_rfc3339, rfc3339, unix_nanos, Output};
use crate::supervise::Signals;

/// The `event` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum EventCmd {
    /// Publish one event to TOPIC; prints its offset once it is durable.
    #[command(
        group(clap::ArgGroup::new("input").required(true).args(["payload", "stdin"])),
        override_usage = "syncctl event publish [OPTIONS] <TOPIC> <PAYLOAD | --stdin>"
    )]
    Publish {
        /// The topic.
        topic: String,
        /// The payload (raw text). Or --stdin.
        payload: Option<String>,
        /// Read the payload from standard input (all of it, as bytes).
        #[arg(long)]
        stdin: bool,
        /// A header `KEY=VALUE` (repeat for several).
        #[arg(long = "header", value_name = "K=V", value_parser = parse_header)]
        headers: Vec<(String, String)>,
        /// Count retention this publish enforces on TOPIC: keep at most N events.
        #[arg(long, value_name = "N")]
        retain_events: Option<u64>,
        /// Age retention this publish enforces on TOPIC (e.g. `24h`).
        #[arg(long, value_name = "D", value_parser = parse_duration)]
        retain_age: Option<Duration>,
    },
    /// Print TOPIC's events (offset, time, headers, payload) as they come, until SIGINT/SIGTERM
    /// or --count; with --group, as a member of a consumer group, acking each event printed.
    Tail {
        /// The topic.
        topic: String,
        /// Where to start: `earliest`, `latest`, an offset (1, 2, …) or an RFC 3339 time.
        /// Default: `latest`; with --group, where the group is (a new group starts at
        /// `earliest`, or at --from).
        #[arg(long, value_name = "START", value_parser = parse_start)]
        from: Option<Start>,
        /// Join the consumer group G: each event goes to one member of G.
        #[arg(long, value_name = "G")]
        group: Option<String>,
        /// With --group: how long this member may hold an event before it goes to another.
        #[arg(long, value_name = "D", value_parser = parse_duration, requires = "group")]
        ack_wait: Option<Duration>,
        /// Stop after N events (exit 0).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
}

/// `KEY=VALUE`, for clap.
fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!(
            "{s:?} is not KEY=VALUE (a non-empty key, `=`, a value)"
        )),
    }
}

/// `earliest`, `latest`, an offset or an RFC 3339 time, for clap.
fn parse_start(s: &str) -> Result<Start, String> {
    match s {
        "earliest" => return Ok(Start::Earliest),
        "latest" => return Ok(Start::Latest),
        _ => {}
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<u64>() {
            Ok(0) => Err("offsets start at 1".to_owned()),
            Ok(n) => Ok(Start::Offset(n)),
            Err(_) => Err(format!("offset {s} is too large")),
        };
    }
    parse_rfc3339(s).map(Start::Time).map_err(|e| {
        format!("{e}; --from takes earliest, latest, an offset (1, 2, …) or an RFC 3339 time")
    })
}

fn show_start(s: Option<Start>) -> String {
    match s {
        None => "default".to_owned(),
        Some(Start::Earliest) => "earliest".to_owned(),
        Some(Start::Latest) => "latest".to_owned(),
        Some(Start::Offset(n)) => n.to_string(),
        Some(Start::Time(t)) => rfc3339(t),
        Some(other) => format!("{other:?}"),
    }
}

/// Runs an `event` subcommand.
pub(crate) async fn run(c: &Connect, cmd: EventCmd, out: Output) -> Result<u8, Failure> {
    match cmd {
        EventCmd::Publish {
            topic,
            payload,
            stdin: _,
            headers,
            retain_events,
            retain_age,
        } => {
            let mut message = Message::new(match payload {
                Some(p) => p.into_bytes(),
                None => read_stdin()?,
            });
            for (k, v) in headers {
                if message.headers.contains_key(&k) {
                    return Err(Failure::usage(format!("header {k:?} is given twice")));
                }
                message = message.with_header(k, v);
            }
            let mut options = EventOptions::new();
            if retain_events.is_some() || retain_age.is_some() {
                let mut r = Retention::new();
                if let Some(n) = retain_events {
                    r = r.with_max_events(n);
                }
                if let Some(a) = retain_age {
                    r = r.with_max_age(a);
                }
                options = options.with_topic_retention(&topic, r);
            }
            let events = c.events(options).await?;
            let offset = events.publish(&topic, message).await?;
            out.answer(&json!({ "topic": topic, "offset": offset }), || {
                offset.to_string()
            });
            Ok(exit::OK)
        }
        EventCmd::Tail {
            topic,
            from,
            group,
            ack_wait,
            count,
        } => {
            // Before connecting: a SIGINT/SIGTERM from now on ends the tail with exit 0.
            let mut signals = Signals::install()?;
            let events = tokio::select! {
                e = c.events(EventOptions::new()) => e?,
                _ = signals.recv() => return Ok(exit::OK),
            };
            match group {
                None => tail(&*events, &topic, from, count, &mut signals, out).await,
                Some(g) => {
                    let mut o = GroupOptions::new();
                    if let Some(w) = ack_wait {
                        o = o.with_ack_wait(w);
                    }
                    if let Some(s) = from {
                        o = o.with_start(s);
                    }
                    let member = tokio::select! {
                        m = events.join(&topic, &g, o) => m?,
                        _ = signals.recv() => return Ok(exit::OK),
                    };
                    out.event(
                        "joined",
                        json!({ "topic": &topic, "group": &g, "from": show_start(from) }),
                        || format!("joined group {g:?} of topic {topic:?}"),
                    );
                    let r = consume(&*member, count, &mut signals, out).await;
                    // Hands back at once whatever is claimed and not acked (a delivery a
                    // signal interrupted); a member that cannot leave is dropped by its lease
                    // or ack wait.
                    if let Err(e) = member.leave().await {
                        let f = Failure::from(e);
                        out.failure(f.code, &format!("leaving group {g:?}: {f}"));
                    }
                    r
                }
            }
        }
    }
}

/// The payload from standard input (all of it).
fn read_stdin() -> Result<Vec<u8>, Failure> {
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf).map_err(|e| {
        Failure::new(
            exit::INTERNAL,
            format!("reading the payload from stdin: {e}"),
        )
    })?;
    Ok(buf)
}

/// Prints the topic's events from `from` (default: latest).
async fn tail(
    events: &dyn EventStream,
    topic: &str,
    from: Option<Start>,
    count: Option<u64>,
    signals: &mut Signals,
    out: Output,
) -> Result<u8, Failure> {
    let mut sub = tokio::select! {
        s = events.subscribe(topic, from.unwrap_or(Start::Latest)) => s?,
        _ = signals.recv() => return Ok(exit::OK),
    };
    out.event(
        "subscribed",
        json!({ "topic": topic, "from": show_start(from.or(Some(Start::Latest))) }),
        || format!("following topic {topic:?}"),
    );
    let mut printed = 0;
    while count.is_none_or(|n| printed < n) {
        tokio::select! {
            next = sub.next() => match next {
                Some(Ok(e)) => {
                    show(&e, None, out);
                    printed += 1;
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err(Failure::new(
                    exit::UNAVAILABLE,
                    format!("stopped following topic {topic:?}: the backend's stream ended"),
                )),
            },
            _ = signals.recv() => return Ok(exit::OK),
        }
    }
    Ok(exit::OK)
}

/// Prints the member's deliveries, acking each one printed.
async fn consume(
    member: &dyn Member,
    count: Option<u64>,
    signals: &mut Signals,
    out: Output,
) -> Result<u8, Failure> {
    let mut printed = 0;
    while count.is_none_or(|n| printed < n) {
        let d = tokio::select! {
            d = member.next() => d?,
            _ = signals.recv() => return Ok(exit::OK),
        };
        show(&d.event, Some(d.attempt), out);
        printed += 1;
        match member.ack(&d).await {
            Ok(()) => {}
            // At least once: it is delivered again, to us or another member.
            Err(e @ sync_event::Error::DeliveryLost { .. }) => out.event(
                "ack_lost",
                json!({ "offset": d.event.offset, "message": e.to_string() }),
                || e.to_string(),
            ),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(exit::OK)
}

/// One event on stdout: `OFFSET TIME [K=V …] PAYLOAD` (control characters and invalid UTF-8
/// escaped, so one event is one line), or one JSON object.
fn show(e: &Event, attempt: Option<u32>, out: Output) {
    let mut v = Map::new();
    v.insert("topic".into(), json!(e.topic));
    v.insert("offset".into(), json!(e.offset));
    v.insert("published_at".into(), json!(rfc3339(e.published_at)));
    v.insert(
        "published_at_unix_ns".into(),
        json!(unix_nanos(e.published_at) as i64),
    );
    v.insert("headers".into(), json!(e.headers));
    match std::str::from_utf8(&e.payload) {
        Ok(text) => v.insert("payload".into(), json!(text)),
        Err(_) => v.insert("payload_hex".into(), json!(hex(&e.payload))),
    };
    if let Some(a) = attempt {
        v.insert("attempt".into(), json!(a));
    }
    out.answer(&Value::Object(v), || {
        human(e.offset, e.published_at, &e.headers, &e.payload)
    });
}

fn human(offset: u64, at: SystemTime, headers: &Headers, payload: &[u8]) -> String {
    let headers: Vec<String> = headers
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k.as_bytes()), escape(v.as_bytes())))
        .collect();
    format!(
        "{offset} {} [{}] {}",
        rfc3339(at),
        headers.join(" "),
        escape(payload)
    )
}

/// Text as is; `\` and control characters escaped (`\n`, `\t`, `\u{7f}`); bytes that are not
/// UTF-8 as `\xNN`.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(s) => (s, 0),
            Err(e) => {
                let (v, _) = rest.split_at(e.valid_up_to());
                let bad = e.error_len().unwrap_or(rest.len() - e.valid_up_to());
                (std::str::from_utf8(v).unwrap_or_default(), bad)
            }
        };
        for c in valid.chars() {
            if c == '\\' || c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        let bad_start = valid.len();
        for b in &rest[bad_start..bad_start + bad] {
            out.push_str(&format!("\\x{b:02x}"));
        }
        rest = &rest[bad_start + bad..];
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts() {
        assert_eq!(parse_start("earliest"), Ok(Start::Earliest));
        assert_eq!(parse_start("latest"), Ok(Start::Latest));
        assert_eq!(parse_start("42"), Ok(Start::Offset(42)));
        assert!(parse_start("0").unwrap_err().contains("start at 1"));
        assert!(parse_start("99999999999999999999999").is_err());
        assert_eq!(
            parse_start("1970-01-01T00:00:01Z"),
            Ok(Start::Time(std::time::UNIX_EPOCH + Duration::from_secs(1)))
        );
        for bad in ["", "-1", "soon", "1.5", "Earliest "] {
            assert!(parse_start(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn headers() {
        assert_eq!(parse_header("k=v=w"), Ok(("k".into(), "v=w".into())));
        assert_eq!(parse_header("k="), Ok(("k".into(), String::new())));
        assert!(parse_header("=v").is_err());
        assert!(parse_header("kv").is_err());
    }

    #[test]
    fn one_event_is_one_line() {
        assert_eq!(escape(b"plain text, ok"), "plain text, ok");
        assert_eq!(escape("a\nb\tc\\d é".as_bytes()), "a\\nb\\tc\\\\d é");
        assert_eq!(escape(b"x\xffy\xe2\x82"), "x\\xffy\\xe2\\x82");
        assert_eq!(hex(b"\x00\xab"), "00ab");
        let mut h = Headers::new();
        h.insert("k".into(), "v 1".into());
        let line = human(3, std::time::UNIX_EPOCH, &h, b"p\nq");
        assert_eq!(line, "3 1970-01-01T00:00:00.000000000Z [k=v 1] p\\nq");
    }
}
