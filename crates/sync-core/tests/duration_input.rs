//! Every duration a user can pass (issue 10, finding 4): as text in a URL or config, as a serde
//! number, or as a `Duration` in code. Overflow, zero and huge values are errors or documented
//! saturations, never panics, wraps or rounding surprises.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use sync_core::duration::{
    format_duration, parse_duration, validate_max_wait, validate_timeout, validate_ttl,
    MAX_TIMEOUT, MAX_TTL, MIN_TTL, UNLIMITED_WAIT,
};

/// Any `Duration`, with extra weight on the edges.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (any::<u64>(), 0..1_000_000_000u32).prop_map(|(s, n)| Duration::new(s, n)),
        (0..20_000_000_000u64, 0..1_000_000_000u32).prop_map(|(s, n)| Duration::new(s, n)),
        (0..1_000_000_000u64).prop_map(Duration::from_nanos),
        prop::sample::select(vec![
            Duration::ZERO,
            Duration::from_nanos(1),
            MIN_TTL - Duration::from_nanos(1),
            MIN_TTL,
            MAX_TIMEOUT,
            MAX_TIMEOUT + Duration::from_nanos(1),
            MAX_TTL,
            MAX_TTL + Duration::from_nanos(1),
            UNLIMITED_WAIT - Duration::from_nanos(1),
            UNLIMITED_WAIT,
            Duration::MAX,
        ]),
    ]
}

const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

fn max_nanos() -> u128 {
    Duration::MAX.as_nanos()
}

#[test]
fn edges() {
    assert_eq!(
        parse_duration(&format_duration(Duration::MAX)),
        Ok(Duration::MAX)
    );
    assert_eq!(
        parse_duration("18446744073709551615.999999999s"),
        Ok(Duration::MAX)
    );
    assert!(parse_duration("18446744073709551616s").is_err());
    assert!(parse_duration("18446744073709551615.999999999s1ns").is_err());
    assert!(parse_duration("99999999999999999999999999999999999999999999h").is_err());
    assert_eq!(parse_duration("0.1s"), Ok(Duration::from_millis(100)));
    assert_eq!(parse_duration("1.000000001s"), Ok(Duration::new(1, 1)));
    assert_eq!(parse_duration("0.0000000019s"), Ok(Duration::from_nanos(1)));
    assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
    for bad in [
        "1..5s", ".s", "1.2.3s", "-1s", "1e400", "NaN", "inf", "1s-1s", "s",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
    assert_eq!(validate_max_wait(Duration::MAX), Ok(None));
    assert!(validate_ttl(Duration::MAX).is_err());
    assert!(validate_timeout("t", Duration::MAX).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn any_text_parses_or_fails_without_panic(s in "\\PC{0,24}|[0-9.]{0,30}(ns|us|µs|ms|s|m|h)?([0-9.]{0,30}(ns|us|ms|s|m|h))?") {
        let _ = parse_duration(&s);
    }

    #[test]
    fn format_then_parse_is_exact(d in duration()) {
        prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }

    #[test]
    fn integer_with_unit_is_exact_or_too_large(n in prop_oneof![any::<u64>(), 0..100_000u64], unit in 0..UNITS.len()) {
        let (name, nanos) = UNITS[unit];
        let want = u128::from(n) * nanos;
        let got = parse_duration(&format!("{n}{name}"));
        if want <= max_nanos() {
            prop_assert_eq!(got.map(|d| d.as_nanos()), Ok(want));
        } else {
            prop_assert!(got.is_err());
        }
    }

    #[test]
    fn sums_of_parts_are_exact_or_too_large(parts in prop::collection::vec((any::<u64>(), 0..UNITS.len()), 1..4)) {
        let text: String = parts.iter().map(|(n, u)| format!("{n}{}", UNITS[*u].0)).collect();
        let want: u128 = parts.iter().map(|(n, u)| u128::from(*n) * UNITS[*u].1).sum();
        let got = parse_duration(&text);
        if want <= max_nanos() {
            prop_assert_eq!(got.map(|d| d.as_nanos()), Ok(want));
        } else {
            prop_assert!(got.is_err());
        }
    }

    #[test]
    fn ttl_is_accepted_exactly_within_etcds_range(d in duration()) {
        let r = validate_ttl(d);
        prop_assert_eq!(r.is_ok(), (MIN_TTL..=MAX_TTL).contains(&d), "{:?}: {:?}", d, r);
        if let Ok(ttl) = r {
            prop_assert_eq!(ttl, d);
            // The etcd backend rounds up to whole seconds; that still fits etcd and an i64.
            let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
            prop_assert!(secs <= MAX_TTL.as_secs() && i64::try_from(secs).is_ok());
            prop_assert!(Instant::now().checked_add(ttl).is_some());
        }
    }

    #[test]
    fn timeouts_are_accepted_exactly_within_range(d in duration()) {
        let r = validate_timeout("request_timeout", d);
        prop_assert_eq!(r.is_ok(), !d.is_zero() && d <= MAX_TIMEOUT, "{:?}: {:?}", d, r);
        if let Err(m) = r {
            prop_assert!(m.contains("request_timeout"), "{}", m);
        } else {
            // Budgets are a few timeouts long: no deadline built from them overflows.
            prop_assert!(Instant::now().checked_add(d * 3).is_some());
        }
    }

    #[test]
    fn max_wait_is_refused_at_zero_and_saturates_when_huge(d in duration()) {
        match validate_max_wait(d) {
            Err(_) => prop_assert!(d.is_zero()),
            Ok(None) => prop_assert!(d >= UNLIMITED_WAIT),
            Ok(Some(w)) => {
                prop_assert_eq!(w, d);
                prop_assert!(!d.is_zero() && d < UNLIMITED_WAIT);
                prop_assert!(Instant::now().checked_add(w).is_some());
                prop_assert!(tokio::time::Instant::now().checked_add(w).is_some());
            }
        }
    }

    #[test]
    fn serde_numbers_and_strings_never_panic(
        u in any::<u64>(),
        i in any::<i64>(),
        f in any::<f64>(),
        s in "\\PC{0,16}",
    ) {
        #[derive(serde::Deserialize)]
        struct C {
            #[serde(with = "sync_core::duration::serde")]
            #[allow(dead_code)]
            d: Duration,
        }
        let json = format!(r#"{{"d":{u}}}"#);
        prop_assert!(serde_json::from_str::<C>(&json).is_ok());
        let r = serde_json::from_str::<C>(&format!(r#"{{"d":{i}}}"#));
        prop_assert_eq!(r.is_ok(), i >= 0);
        if f.is_finite() {
            let _ = serde_json::from_str::<C>(&format!(r#"{{"d":{f:e}}}"#));
        }
        let _ = serde_json::from_str::<C>(&serde_json::json!({ "d": s }).to_string());
    }
}
