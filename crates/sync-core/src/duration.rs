//! Human durations such as `10s`, `500ms`, `1m30s`, used in configs and URLs.

use std::time::Duration;

/// A duration string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}; write it like `10s`, `500ms`, `1m30s` or `2h`")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

/// Parses `"10s"`, `"500ms"`, `"1.5s"`, `"1m30s"`, `"2h"`, `"250us"`. A bare number is seconds.
/// Decimal numbers are read exactly (to the nanosecond; further digits are dropped), so
/// `parse_duration(&format_duration(d)) == Ok(d)` for every `Duration`. A value above
/// `Duration::MAX`, a negative one, an unknown unit or a malformed number is an error, never a
/// panic or a wrapped value.
///
/// ```
/// use std::time::Duration;
/// use sync_core::duration::parse_duration;
/// assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
/// assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
/// assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
/// assert_eq!(parse_duration("0.1s").unwrap(), Duration::from_millis(100));
/// assert!(parse_duration("ten seconds").is_err());
/// assert!(parse_duration("18446744073709551616s").is_err());
/// ```
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_owned(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("it is empty"));
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return decimal_nanos(s, NANOS_PER_SEC)
            .and_then(nanos_to_duration)
            .map_err(err);
    }
    if let Ok(secs) = s.parse::<f64>() {
        // Other spellings of a bare number: `1e3`, `+5`, `-1`, `inf`…
        return Duration::try_from_secs_f64(secs).map_err(|_| err("it is negative or too large"));
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("a number lacks its unit"))?;
        if num_end == 0 {
            return Err(err("expected a number"));
        }
        let number = &rest[..num_end];
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit: u128 = match &rest[..unit_end] {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3600 * NANOS_PER_SEC,
            _ => return Err(err("unknown unit (use ns, us, ms, s, m or h)")),
        };
        rest = &rest[unit_end..];
        let part = decimal_nanos(number, unit).map_err(err)?;
        total = total.checked_add(part).ok_or_else(|| err("too large"))?;
    }
    nanos_to_duration(total).map_err(err)
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// `number` (digits with at most one `.`) times `unit` nanoseconds, exactly, rounded down to
/// whole nanoseconds.
fn decimal_nanos(number: &str, unit: u128) -> Result<u128, &'static str> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return Err("a number is malformed");
    }
    let int = int.trim_start_matches('0');
    let mut nanos = if int.is_empty() {
        0
    } else {
        // More than 39 digits do not fit a u128, and are far too large anyway.
        int.parse::<u128>()
            .ok()
            .and_then(|v| v.checked_mul(unit))
            .ok_or("too large")?
    };
    // Digits beyond the 18th after the point are worth less than a nanosecond, even of an hour.
    let frac = &frac[..frac.len().min(18)];
    if !frac.is_empty() {
        let f: u128 = frac.parse().map_err(|_| "a number is malformed")?;
        // f < 10^18 and unit <= 3.6 * 10^12: the product fits a u128.
        nanos = nanos
            .checked_add(f * unit / 10u128.pow(frac.len() as u32))
            .ok_or("too large")?;
    }
    Ok(nanos)
}

fn nanos_to_duration(nanos: u128) -> Result<Duration, &'static str> {
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| "too large")?;
    // The remainder is below 10^9: it fits a u32.
    Ok(Duration::new(secs, (nanos % NANOS_PER_SEC) as u32))
}

/// Formats a duration the way [`parse_duration`] reads it back, exactly (`1.5s`, `250ms`,
/// `0.5us`).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(sync_core::duration::format_duration(Duration::from_millis(1500)), "1.5s");
/// assert_eq!(sync_core::duration::format_duration(Duration::from_millis(250)), "250ms");
/// assert_eq!(sync_core::duration::format_duration(Duration::ZERO), "0s");
/// ```
pub fn format_duration(d: Duration) -> String {
    let nanos = d.subsec_nanos();
    let (whole, frac, width, unit) = if d >= Duration::from_secs(1) || d.is_zero() {
        (d.as_secs(), nanos, 9, "s")
    } else if d >= Duration::from_millis(1) {
        (u64::from(nanos / 1_000_000), nanos % 1_000_000, 6, "ms")
    } else {
        (u64::from(nanos / 1_000), nanos % 1_000, 3, "us")
    };
    if frac == 0 {
        format!("{whole}{unit}")
    } else {
        let frac = format!("{frac:0width$}");
        format!("{whole}.{}{unit}", frac.trim_end_matches('0'))
    }
}

/// The shortest lease TTL: etcd grants leases in whole seconds.
pub const MIN_TTL: Duration = Duration::from_secs(1);

/// The longest lease TTL: etcd's own limit (`MaxLeaseTTL`, 9,000,000,000 s, about 285 years).
/// A longer TTL is refused by the server, so it is refused here, before any request.
pub const MAX_TTL: Duration = Duration::from_secs(9_000_000_000);

/// The longest connect or request timeout: one hour. Far above any useful value, and low enough
/// that a deadline computed from it (even a few of them added up) never overflows an `Instant`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Maximum waits from this long up (100 years) mean "no limit": see [`validate_max_wait`].
pub const UNLIMITED_WAIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Checks a lease TTL a user asked for: at least [`MIN_TTL`], at most [`MAX_TTL`] (a fractional
/// TTL is rounded up to whole seconds by the etcd backend, so `MAX_TTL` is the last one accepted).
/// Returns the TTL unchanged, or why it is refused. Every TTL check of the `sync` crates (etcd
/// config, lock, leader and task options) goes through this one function.
///
/// ```
/// use std::time::Duration;
/// use sync_core::duration::{validate_ttl, MAX_TTL};
/// assert_eq!(validate_ttl(Duration::from_secs(10)), Ok(Duration::from_secs(10)));
/// assert!(validate_ttl(Duration::ZERO).is_err());
/// assert!(validate_ttl(Duration::from_millis(999)).is_err());
/// assert!(validate_ttl(MAX_TTL).is_ok());
/// assert!(validate_ttl(MAX_TTL + Duration::from_nanos(1)).is_err());
/// assert!(validate_ttl(Duration::MAX).is_err());
/// ```
pub fn validate_ttl(ttl: Duration) -> Result<Duration, String> {
    if ttl < MIN_TTL {
        return Err(format!(
            "ttl {} is below etcd's 1 s lease granularity; use at least 1s",
            format_duration(ttl)
        ));
    }
    if ttl > MAX_TTL {
        return Err(format!(
            "ttl {} is above etcd's longest lease TTL, {} (about 285 years); use a shorter one",
            format_duration(ttl),
            format_duration(MAX_TTL)
        ));
    }
    Ok(ttl)
}

/// Checks a connect or request timeout called `what`: above zero, at most [`MAX_TIMEOUT`].
///
/// ```
/// use std::time::Duration;
/// use sync_core::duration::validate_timeout;
/// assert!(validate_timeout("request_timeout", Duration::from_secs(5)).is_ok());
/// assert!(validate_timeout("request_timeout", Duration::ZERO).is_err());
/// assert!(validate_timeout("request_timeout", Duration::MAX).is_err());
/// ```
pub fn validate_timeout(what: &str, timeout: Duration) -> Result<Duration, String> {
    if timeout.is_zero() {
        return Err(format!("{what} must be above zero"));
    }
    if timeout > MAX_TIMEOUT {
        return Err(format!(
            "{what} {} is above the limit of {} (1 hour)",
            format_duration(timeout),
            format_duration(MAX_TIMEOUT)
        ));
    }
    Ok(timeout)
}

/// Checks the longest time an `acquire` or `elect` may wait. Zero is refused: nothing can be
/// granted without waiting at all (a free etcd lock still takes a round trip), and "only if it
/// is free" is what `try_acquire` is for. Waits of [`UNLIMITED_WAIT`] or more, up to
/// `Duration::MAX`, saturate to `None`, "no limit", so that no deadline is ever computed from
/// them.
///
/// ```
/// use std::time::Duration;
/// use sync_core::duration::validate_max_wait;
/// assert_eq!(validate_max_wait(Duration::from_millis(200)), Ok(Some(Duration::from_millis(200))));
/// assert_eq!(validate_max_wait(Duration::MAX), Ok(None));
/// assert!(validate_max_wait(Duration::ZERO).is_err());
/// ```
pub fn validate_max_wait(max_wait: Duration) -> Result<Option<Duration>, String> {
    if max_wait.is_zero() {
        return Err(
            "a maximum wait of 0s can never be met; leave it unset to wait without limit"
                .to_owned(),
        );
    }
    if max_wait >= UNLIMITED_WAIT {
        return Ok(None);
    }
    Ok(Some(max_wait))
}

/// `#[serde(with = "sync_core::duration::serde")]` for a `Duration` written as `"10s"` or as a
/// number of seconds.
pub mod serde {
    use std::time::Duration;

    use serde::{de, Deserializer, Serializer};

    /// Deserializes `"10s"`, `"500ms"` or a number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as \"10s\" or a number of seconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                super::parse_duration(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::from_secs(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v)
                    .map(Duration::from_secs)
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                Duration::try_from_secs_f64(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }

    /// Serializes as a string such as `"10s"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    /// The same for `Option<Duration>`.
    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        /// Deserializes an optional duration.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            #[derive(Deserialize)]
            struct W(#[serde(with = "super")] Duration);
            Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
        }

        /// Serializes an optional duration.
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_rejects_garbage() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration(" 3 ").unwrap(), Duration::from_secs(3));
        for bad in ["", "s", "10", "10x", "-1s", "1e400s", "ms10"] {
            if bad == "10" {
                continue;
            }
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn round_trips_through_format() {
        for d in [
            Duration::from_secs(10),
            Duration::from_millis(1500),
            Duration::from_millis(3),
        ] {
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
    }

    #[test]
    fn serde_accepts_strings_and_numbers() {
        #[derive(::serde::Deserialize)]
        struct C {
            #[serde(with = "crate::duration::serde")]
            d: Duration,
        }
        let c: C = serde_json::from_str(r#"{"d":"250ms"}"#).unwrap();
        assert_eq!(c.d, Duration::from_millis(250));
        let c: C = serde_json::from_str(r#"{"d":5}"#).unwrap();
        assert_eq!(c.d, Duration::from_secs(5));
        assert!(serde_json::from_str::<C>(r#"{"d":"soon"}"#).is_err());
    }
}
