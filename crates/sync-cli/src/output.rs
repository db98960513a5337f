//! What syncctl says about itself: human lines or JSON objects, on stderr for the commands that
//! run a child (its stdout is the child's), on stdout for the commands that answer a question.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Where and how to report.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    pub(crate) json: bool,
}

/// Nanoseconds since the Unix epoch, now.
pub(crate) fn unix_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

impl Output {
    /// A status event about a held lock or leadership, on stderr: `syncctl: HUMAN`, or one JSON
    /// object `{"event": EVENT, "at_unix_ns": …, …fields}`.
    pub(crate) fn event(&self, event: &str, fields: Value, human: impl FnOnce() -> String) {
        if self.json {
            let mut obj = json!({ "event": event, "at_unix_ns": unix_nanos(SystemTime::now()) });
            if let (Some(o), Value::Object(f)) = (obj.as_object_mut(), fields) {
                o.extend(f);
            }
            eprintln!("{obj}");
        } else {
            eprintln!("syncctl: {}", human());
        }
    }

    /// An answer, on stdout: `human` or `value` as one JSON line.
    #[allow(clippy::print_stdout)]
    pub(crate) fn answer(&self, value: &Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", human());
        }
    }

    /// A failure, on stderr.
    pub(crate) fn failure(&self, code: u8, message: &str) {
        if self.json {
            eprintln!(
                "{}",
                json!({ "event": "error", "exit_code": code, "message": message,
                        "at_unix_ns": unix_nanos(SystemTime::now()) })
            );
        } else {
            eprintln!("syncctl: error: {message}");
        }
    }
}

/// `d` in milliseconds with a fraction, for JSON.
pub(crate) fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A wall-clock time as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (UTC).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let nanos = unix_nanos(t);
    let secs = nanos.div_euclid(1_000_000_000) as i64;
    let sub = nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{sub:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.000000005Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
    }
}
