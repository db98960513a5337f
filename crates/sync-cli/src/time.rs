//! `syncctl time [--server ADDR…]`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sync_time::{SourceVerdict, Status, SyncState, Time};

use crate::exit::{self, Failure};
use crate::output::{millis, rfc3339, unix_nanos, Output};

fn verdict(v: &SourceVerdict) -> (Value, String) {
    let ms = |n: i64| n as f64 / 1e6;
    match v {
        SourceVerdict::Selected {
            offset_nanos,
            delay,
            error,
            samples,
        } => (
            json!({ "verdict": "selected", "offset_ms": ms(*offset_nanos), "delay_ms": millis(*delay),
                    "error_ms": millis(*error), "samples": samples }),
            format!(
                "selected     offset {:+.3} ms  delay {:.3} ms  error ±{:.3} ms  ({samples} samples)",
                ms(*offset_nanos),
                millis(*delay),
                millis(*error)
            ),
        ),
        SourceVerdict::FalseTicker {
            offset_nanos,
            delay,
            error,
        } => (
            json!({ "verdict": "false_ticker", "offset_ms": ms(*offset_nanos), "delay_ms": millis(*delay),
                    "error_ms": millis(*error) }),
            format!(
                "FALSE TICKER offset {:+.3} ms  delay {:.3} ms  error ±{:.3} ms (disagrees with the majority)",
                ms(*offset_nanos),
                millis(*delay),
                millis(*error)
            ),
        ),
        SourceVerdict::Failed(e) => (
            json!({ "verdict": "failed", "error": e.to_string() }),
            format!("FAILED       {e}"),
        ),
        SourceVerdict::KissedOff { code, retry_in } => (
            json!({ "verdict": "kiss_of_death", "code": code, "retry_in_ms": retry_in.map(millis) }),
            format!(
                "KISS-OF-DEATH {code}{}",
                retry_in.map_or(String::new(), |d| format!(" (retry in {d:?})"))
            ),
        ),
        SourceVerdict::Duplicate { of } => (
            json!({ "verdict": "duplicate", "of": of }),
            format!("duplicate of {of}"),
        ),
        other => (
            json!({ "verdict": "other", "detail": format!("{other:?}") }),
            format!("{other:?}"),
        ),
    }
}

fn state_name(s: SyncState) -> &'static str {
    match s {
        SyncState::SystemClock => "system_clock",
        SyncState::Synchronized => "synchronized",
        SyncState::Stale => "stale",
        SyncState::NeverSynced => "never_synced",
        _ => "unknown",
    }
}

fn report(time: &dyn Time, status: &Status, out: Output) -> u8 {
    let bounds = time.now_bounds().ok();
    let sources: Vec<(String, Value, String)> = status
        .sources
        .iter()
        .map(|s| {
            let (v, h) = verdict(&s.verdict);
            (s.name.clone(), v, h)
        })
        .collect();
    let value = json!({
        "backend": status.backend,
        "state": state_name(status.state),
        "now_unix_ns": bounds.map(|b| unix_nanos(b.midpoint())),
        "earliest_unix_ns": bounds.map(|b| unix_nanos(b.earliest())),
        "latest_unix_ns": bounds.map(|b| unix_nanos(b.latest())),
        "error_ms": bounds.map(|b| millis(b.error())),
        "offset_ms": status.offset_nanos.map(|n| n as f64 / 1e6),
        "verification": format!("{:?}", status.verification),
        "last_failure": status.last_failure.as_ref().map(|e| e.to_string()),
        "servers": sources.iter().map(|(name, v, _)| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() { o.insert("server".into(), json!(name)); }
            v
        }).collect::<Vec<_>>(),
    });
    out.answer(&value, || {
        let mut s = String::new();
        match bounds {
            Some(b) => {
                s.push_str(&format!("now       {}\n", rfc3339(b.midpoint())));
                s.push_str(&format!(
                    "bounds    [{}, {}]  (±{:.3} ms)\n",
                    rfc3339(b.earliest()),
                    rfc3339(b.latest()),
                    millis(b.error())
                ));
            }
            None => s.push_str("now       unknown: not synchronized\n"),
        }
        s.push_str(&format!(
            "state     {} ({}), {:?}",
            state_name(status.state),
            status.backend,
            status.verification
        ));
        if let Some(o) = status.offset_nanos {
            s.push_str(&format!(
                "\noffset    {:+.3} ms (true time minus this clock)",
                o as f64 / 1e6
            ));
        }
        if let Some(e) = &status.last_failure {
            s.push_str(&format!("\nfailure   {e}"));
        }
        for (name, _, h) in &sources {
            s.push_str(&format!("\nserver    {name}: {h}"));
        }
        s
    });
    if bounds.is_some() {
        exit::OK
    } else {
        exit::UNAVAILABLE
    }
}

/// Syncs once with `servers` (or reads the system clock) and reports.
pub(crate) async fn run(
    servers: Vec<String>,
    samples: Option<u32>,
    timeout: Option<Duration>,
    out: Output,
) -> Result<u8, Failure> {
    let time: Arc<dyn Time> = if servers.is_empty() {
        Arc::new(sync_time::LocalTime::new())
    } else {
        let mut o = sync_time::NtpOptions::new(servers);
        if let Some(n) = samples {
            o = o.with_samples(n);
        }
        if let Some(t) = timeout {
            o = o.with_query_timeout(t);
        }
        o.validate()?;
        Arc::new(sync_time::NtpTime::new(o)?)
    };
    // A failed sync still leaves each server's verdict in the status.
    let _ = time.sync().await;
    let status = time.status();
    Ok(report(&*time, &status, out))
}
