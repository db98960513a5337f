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

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of the algorithm above).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses an RFC 3339 time: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` (`t`, `z` and a space
/// for `T` accepted). Leap seconds (`:60`) are refused.
pub(crate) fn parse_rfc3339(s: &str) -> Result<SystemTime, String> {
    let bad = |why: &str| {
        format!("{s:?} is not an RFC 3339 time ({why}); write e.g. 2026-11-26T22:54:01Z")
    };
    let b = s.as_bytes();
    let digits = |from: usize, len: usize| -> Result<i64, String> {
        let part = b.get(from..from + len).ok_or_else(|| bad("too short"))?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(bad("expected digits"));
        }
        Ok(part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let sep = |at: usize, ok: &[u8]| -> Result<(), String> {
        match b.get(at) {
            Some(c) if ok.contains(c) => Ok(()),
            _ => Err(bad("misplaced separator")),
        }
    };
    let (y, mo, d) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    sep(4, b"-")?;
    sep(7, b"-")?;
    sep(10, b"Tt ")?;
    let (h, mi, sec) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    sep(13, b":")?;
    sep(16, b":")?;
    let month_days = [
        31,
        28 + i64::from(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)),
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo) || d < 1 || d > month_days[(mo - 1) as usize] {
        return Err(bad("no such date"));
    }
    if h > 23 || mi > 59 || sec > 59 {
        return Err(bad("no such time of day"));
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return Err(bad("no digits after the decimal point"));
        }
        for _ in (i - start).min(9)..9 {
            nanos *= 10;
        }
    }
    let offset_secs = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&c @ (b'+' | b'-')) if i + 6 == b.len() => {
            sep(i + 3, b":")?;
            let (oh, om) = (digits(i + 1, 2)?, digits(i + 4, 2)?);
            if oh > 23 || om > 59 {
                return Err(bad("no such offset"));
            }
            let o = oh * 3600 + om * 60;
            if c == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return Err(bad("it needs a zone: Z or ±HH:MM at the end")),
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    let since = |s: i64| Duration::new(s.unsigned_abs(), 0);
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(since(secs))
    } else {
        UNIX_EPOCH.checked_sub(since(secs))
    };
    t.and_then(|t| t.checked_add(Duration::from_nanos(nanos as u64)))
        .ok_or_else(|| bad("out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_formats_and_zones() {
        for t in [
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::new(1_700_000_000, 5),
            UNIX_EPOCH + Duration::new(951_782_400, 123_456_789), // 2000-02-29
            UNIX_EPOCH + Duration::new(4_102_444_799, 999_999_999),
        ] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Ok(t), "{}", rfc3339(t));
        }
        let z = parse_rfc3339("2023-11-14T22:13:20Z").unwrap();
        assert_eq!(z, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        assert_eq!(parse_rfc3339("2023-11-15T00:13:20+02:00"), Ok(z));
        assert_eq!(parse_rfc3339("2023-11-14 20:13:20.0-02:00"), Ok(z));
        assert_eq!(
            parse_rfc3339("2023-11-14t22:13:20.5z"),
            Ok(z + Duration::from_millis(500))
        );
        assert_eq!(
            parse_rfc3339("1969-12-31T23:59:59Z"),
            Ok(UNIX_EPOCH - Duration::from_secs(1))
        );
    }

    #[test]
    fn refuses_what_is_not_a_time() {
        for s in [
            "",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20+0200",
            "2023-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:13:60Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20Zjunk",
            "2023/11/14T22:13:20Z",
            "+023-11-14T22:13:20Z",
            "２023-11-14T22:13:20Z",
        ] {
            let e = parse_rfc3339(s).expect_err(s);
            assert!(e.contains("RFC 3339"), "{e}");
        }
    }

    #[test]
    fn formats_utc() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.000000005Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
    }
}
