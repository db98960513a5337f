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
///
/// ```
/// use std::time::Duration;
/// use sync_core::duration::parse_duration;
/// assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
/// assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
/// assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
/// assert!(parse_duration("ten seconds").is_err());
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
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| err("it is negative or too large"));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("a number lacks its unit"))?;
        if num_end == 0 {
            return Err(err("expected a number"));
        }
        let value: f64 = rest[..num_end]
            .parse()
            .map_err(|_| err("a number is malformed"))?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err("unknown unit (use ns, us, ms, s, m or h)")),
        };
        rest = &rest[unit_end..];
        let part = Duration::try_from_secs_f64(value * scale).map_err(|_| err("too large"))?;
        total = total.checked_add(part).ok_or_else(|| err("too large"))?;
    }
    Ok(total)
}

/// Formats a duration the way [`parse_duration`] reads it back (`1.5s`, `250ms`).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(sync_core::duration::format_duration(Duration::from_millis(1500)), "1.5s");
/// assert_eq!(sync_core::duration::format_duration(Duration::from_millis(250)), "250ms");
/// ```
pub fn format_duration(d: Duration) -> String {
    if d >= Duration::from_secs(1) || d.is_zero() {
        format!("{}s", d.as_secs_f64())
    } else if d >= Duration::from_millis(1) {
        format!("{}ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{}us", d.as_secs_f64() * 1e6)
    }
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
