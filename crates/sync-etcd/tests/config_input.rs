//! Bad input to the etcd configuration (issue 10, finding 4): every malformed URL, endpoint or
//! duration is a non-retryable `InvalidConfig` error at once, whether it comes from a URL, from
//! `EtcdConfig::new` or from serde; no input makes the parser panic; valid URLs round-trip.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use sync_core::backend::Backend;
use sync_core::duration::{MAX_TIMEOUT, MAX_TTL};
use sync_etcd::{Error, EtcdClient, EtcdConfig};

/// The URLs of the finding, verbatim, and their kin.
const BAD_URLS: &[&str] = &[
    "etcd://[::1",
    "etcd://a b:1",
    "etcd://127.0.0.1:1%zz",
    "etcd://host:notaport",
    "etcd://:2379",
    "etcd://127.0.0.1:99999",
    "etcd://127.0.0.1:0",
    "etcd://[::1]x:1",
    "etcd://[zz::1]:1",
    "etcd://::1:2379",
    "etcd://host:",
    "etcd://a..b:1",
    "etcd://999.1.1.1:1",
    "etcd://a:1,b:x",
    "etcd://a:1/pre fix",
    "etcd://a:1/pre\tfix",
    "etcd://a:1/prefix#frag",
    "etcd://a:1/%zz",
    "etcd://a:1/%",
    "etcd://a:1/%+1",
    "etcd://u%zz:p@a:1",
    "etcd://u:p%@a:1",
    "etcd://:p@a:1",
    "etcd://a:1?ttl=1s%",
    "etcd://a:1?ttl=0.5s",
    "etcd://a:1?ttl=9000000001s",
    "etcd://a:1?ttl=18446744073709551615s",
    "etcd://a:1?ttl=99999999999999999999999h",
    "etcd://a:1?connect_timeout=0s",
    "etcd://a:1?connect_timeout=2h",
    "etcd://a:1?request_timeout=0ms",
    "etcd://a:1?request_timeout=18446744073709551615s",
    "etcd://a:1?timeout=1e400",
    "etcd://a:1?ca=",
];

/// Endpoints as `EtcdConfig::new` might be given them in code.
const BAD_ENDPOINTS: &[&str] = &[
    "[::1",
    "a b:1",
    "127.0.0.1:1%zz",
    "localhost:notaport",
    ":2379",
    "127.0.0.1:99999",
    "127.0.0.1",
    "localhost",
    "http://",
    "http://localhost:notaport",
    "::1:2379",
    "",
];

fn assert_config_error<E: Into<Error>>(what: &str, r: Result<impl std::fmt::Debug, E>) {
    match r.map_err(Into::into) {
        Err(e @ Error::InvalidConfig(_)) => {
            assert!(!e.is_retryable(), "{what}: {e} is retryable");
        }
        other => panic!("{what}: expected InvalidConfig, got {other:?}"),
    }
}

#[test]
fn finding_4_urls_are_config_errors_at_once() {
    for url in BAD_URLS {
        let start = Instant::now();
        assert_config_error(url, EtcdConfig::from_url(url));
        let b = Backend::from_url(url);
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "{url}: {:?}",
            start.elapsed()
        );
        let e = b.expect_err(url);
        assert!(!e.is_retryable(), "{url}: {e}");
    }
}

#[test]
fn bad_endpoints_and_durations_given_in_code_fail_validate() {
    for e in BAD_ENDPOINTS {
        assert_config_error(e, EtcdConfig::new([*e]).validate());
        assert_config_error(e, EtcdConfig::new(["127.0.0.1:2379", e]).validate());
    }
    let ok = EtcdConfig::new(["127.0.0.1:2379"]);
    for ttl in [
        Duration::ZERO,
        Duration::from_millis(999),
        MAX_TTL + Duration::from_nanos(1),
        Duration::MAX,
    ] {
        assert_config_error("ttl", ok.clone().with_ttl(ttl).validate());
    }
    for t in [
        Duration::ZERO,
        MAX_TIMEOUT + Duration::from_nanos(1),
        Duration::MAX,
    ] {
        assert_config_error("connect", ok.clone().with_connect_timeout(t).validate());
        assert_config_error("request", ok.clone().with_request_timeout(t).validate());
    }
    assert!(ok.clone().with_ttl(MAX_TTL).validate().is_ok());
    assert!(ok
        .clone()
        .with_request_timeout(MAX_TIMEOUT)
        .validate()
        .is_ok());
}

#[tokio::test]
async fn connect_refuses_bad_config_without_touching_the_network() {
    let ok = EtcdConfig::new(["127.0.0.1:2379"]);
    let mut configs: Vec<(String, EtcdConfig)> = BAD_ENDPOINTS
        .iter()
        .map(|e| (format!("endpoint {e:?}"), EtcdConfig::new([*e])))
        .collect();
    configs.push(("ttl MAX".into(), ok.clone().with_ttl(Duration::MAX)));
    configs.push((
        "connect_timeout MAX".into(),
        ok.clone().with_connect_timeout(Duration::MAX),
    ));
    configs.push((
        "request_timeout MAX".into(),
        ok.clone().with_request_timeout(Duration::MAX),
    ));
    for (what, cfg) in configs {
        let start = Instant::now();
        let r = EtcdClient::connect(cfg).await;
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "{what}: {:?}",
            start.elapsed()
        );
        assert_config_error(&what, r);
    }
}

#[test]
fn serde_config_is_checked_by_validate() {
    for json in [
        r#"{"endpoints":["127.0.0.1:99999"]}"#,
        r#"{"endpoints":["[::1"]}"#,
        r#"{"endpoints":["a b:1"]}"#,
        r#"{"ttl":18446744073709551615}"#,
        r#"{"ttl":"9000000001s"}"#,
        r#"{"connect_timeout":0}"#,
        r#"{"request_timeout":1e300}"#,
        r#"{"user":""}"#,
    ] {
        // Refused by serde already is fine too.
        if let Ok(cfg) = serde_json::from_str::<EtcdConfig>(json) {
            assert_config_error(json, cfg.validate());
        }
    }
    let b: Result<Backend, _> =
        serde_json::from_str(r#"{"backend":"etcd","endpoints":["127.0.0.1:99999"]}"#);
    match b {
        Ok(Backend::Etcd(cfg)) => assert_config_error("serde backend", cfg.validate()),
        other => panic!("{other:?}"),
    }
}

/// Strings shaped like our URLs (scheme, user info, hosts, prefix, query), each part mostly
/// well formed with now and then a character or escape that is not, so that the parser is
/// exercised past its first check.
fn url_like() -> impl Strategy<Value = String> {
    fn noise(good: &'static str, len: usize) -> impl Strategy<Value = String> {
        let bad = prop::sample::select(vec![
            ":", "[", "]", "@", "/", "?", "&", "=", ",", "%", "%2", "%zz", "%41", "%ff", ".", "-",
            "_", " ", "\t", "\0", "#", "é", "::1", "+", "99999", "0",
        ])
        .prop_map(str::to_owned);
        prop::collection::vec(prop_oneof![6 => good, 1 => bad], 0..len).prop_map(|v| v.concat())
    }
    let scheme = prop_oneof![
        8 => Just("etcd://"),
        2 => Just("etcds://"),
        1 => Just("http://"),
        1 => Just(""),
    ];
    let userinfo = prop::option::of((
        noise("[a-z%0-9]{1,4}", 3),
        prop::option::of(noise("[a-z%0-9]{0,4}", 3)),
    ))
    .prop_map(|u| match u {
        None => String::new(),
        Some((user, None)) => format!("{user}@"),
        Some((user, Some(pass))) => format!("{user}:{pass}@"),
    });
    let host = prop_oneof![
        noise("[a-z0-9]{1,5}|\\.", 4),
        any::<Ipv4Addr>().prop_map(|a| a.to_string()),
        any::<Ipv6Addr>().prop_map(|a| format!("[{a}]")),
        noise("[0-9a-f:.\\[\\]]{1,6}", 3),
    ];
    let port = prop::option::of(prop_oneof![
        4 => (1..=u16::MAX).prop_map(|p| p.to_string()),
        1 => noise("[0-9]{1,6}", 3),
    ]);
    let hosts = prop::collection::vec((host, port), 1..4).prop_map(|hs| {
        hs.into_iter()
            .map(|(h, p)| match p {
                Some(p) => format!("{h}:{p}"),
                None => h,
            })
            .collect::<Vec<_>>()
            .join(",")
    });
    let path = prop::option::of(noise("[a-z0-9/]{1,4}|%2F|%20", 4)).prop_map(|p| match p {
        Some(p) => format!("/{p}"),
        None => String::new(),
    });
    let key = prop::sample::select(vec![
        "ttl",
        "connect_timeout",
        "request_timeout",
        "timeout",
        "user",
        "password",
        "prefix",
        "ca",
        "cert",
        "key",
        "domain",
        "colour",
    ]);
    let value = prop_oneof![
        "[0-9]{1,12}(\\.[0-9]{1,3})?(ns|us|ms|s|m|h)?",
        noise("[a-z0-9/.]{1,4}", 3),
    ];
    let query = prop::option::of(prop::collection::vec((key, value), 0..4)).prop_map(|q| match q {
        Some(q) => format!(
            "?{}",
            q.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        ),
        None => String::new(),
    });
    (scheme, userinfo, hosts, path, query).prop_map(|(s, u, h, p, q)| format!("{s}{u}{h}{p}{q}"))
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn host() -> impl Strategy<Value = String> {
    let label = "[a-z0-9]([a-z0-9_-]{0,8}[a-z0-9])?";
    prop_oneof![
        prop::collection::vec(label, 1..4)
            .prop_map(|ls| ls.join("."))
            // A name of digits and dots only must be an IPv4 address; leave those to the next arm.
            .prop_filter("not all digits", |h| !h
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.')),
        any::<Ipv4Addr>().prop_map(|a| a.to_string()),
        any::<Ipv6Addr>().prop_map(|a| format!("[{a}]")),
    ]
}

#[derive(Debug, Clone)]
struct Parts {
    hosts: Vec<(String, Option<u16>)>,
    auth: Option<(String, Option<String>)>,
    prefix: Option<String>,
    ttl: Option<Duration>,
    connect_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
}

fn parts() -> impl Strategy<Value = Parts> {
    let hosts = prop::collection::vec((host(), prop::option::of(1..=u16::MAX)), 1..4);
    let auth = prop::option::of(("\\PC{1,12}", prop::option::of("\\PC{0,12}")));
    let prefix = prop::option::of("[^\\x00]{0,20}");
    let ttl = prop::option::of(
        (1..=MAX_TTL.as_secs(), 0..1_000_000_000u32).prop_map(|(s, n)| {
            let d = Duration::new(s, n);
            d.min(MAX_TTL)
        }),
    );
    let timeout =
        || prop::option::of((1..=MAX_TIMEOUT.as_nanos() as u64).prop_map(Duration::from_nanos));
    (hosts, auth, prefix, ttl, timeout(), timeout()).prop_map(
        |(hosts, auth, prefix, ttl, connect_timeout, request_timeout)| Parts {
            hosts,
            auth,
            prefix,
            ttl,
            connect_timeout,
            request_timeout,
        },
    )
}

fn url_of(p: &Parts) -> String {
    let mut url = "etcd://".to_owned();
    if let Some((user, pass)) = &p.auth {
        url += &encode(user);
        if let Some(pass) = pass {
            url += ":";
            url += &encode(pass);
        }
        url += "@";
    }
    let hosts: Vec<String> = p
        .hosts
        .iter()
        .map(|(h, port)| match port {
            Some(port) => format!("{h}:{port}"),
            None => h.clone(),
        })
        .collect();
    url += &hosts.join(",");
    if let Some(prefix) = &p.prefix {
        url += "/";
        url += &encode(prefix);
    }
    let mut query = Vec::new();
    let fmt = sync_core::duration::format_duration;
    if let Some(d) = p.ttl {
        query.push(format!("ttl={}", fmt(d)));
    }
    if let Some(d) = p.connect_timeout {
        query.push(format!("connect_timeout={}", fmt(d)));
    }
    if let Some(d) = p.request_timeout {
        query.push(format!("request_timeout={}", fmt(d)));
    }
    if !query.is_empty() {
        url += "?";
        url += &query.join("&");
    }
    url
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn any_string_parses_or_fails_typed_without_panic(s in any::<String>()) {
        check_any(&s);
    }

    #[test]
    fn url_like_strings_parse_or_fail_typed_without_panic(s in url_like()) {
        check_any(&s);
    }

    #[test]
    fn any_endpoint_validates_or_fails_typed_without_panic(e in "\\PC{0,24}|[\\[\\]0-9a-f:.%]{0,24}") {
        match EtcdConfig::new([e.clone()]).validate().map_err(Error::from) {
            // What validates has a host and a port one can connect to.
            Ok(()) => {
                let (host, port) = e
                    .trim_start_matches("http://")
                    .trim_start_matches("https://")
                    .trim_end_matches('/')
                    .rsplit_once(':')
                    .expect("a port");
                prop_assert!(!host.is_empty(), "{:?}", e);
                prop_assert!(port.parse::<u16>().is_ok_and(|p| p > 0), "{:?}", e);
            }
            Err(Error::InvalidConfig(_)) => {}
            Err(other) => prop_assert!(false, "{e:?}: {other:?}"),
        }
    }

    #[test]
    fn valid_urls_round_trip(p in parts()) {
        let url = url_of(&p);
        let cfg = EtcdConfig::from_url(&url)
            .map_err(|e| TestCaseError::fail(format!("{url}: {e}")))?;
        let want: Vec<String> = p
            .hosts
            .iter()
            .map(|(h, port)| format!("{h}:{}", port.unwrap_or(2379)))
            .collect();
        prop_assert_eq!(&cfg.endpoints, &want);
        prop_assert_eq!(cfg.user.as_deref(), p.auth.as_ref().map(|a| a.0.as_str()));
        prop_assert_eq!(
            cfg.password.as_deref(),
            p.auth.as_ref().and_then(|a| a.1.as_deref())
        );
        let default = EtcdConfig::default();
        prop_assert_eq!(&cfg.prefix, p.prefix.as_ref().unwrap_or(&default.prefix));
        prop_assert_eq!(cfg.ttl, p.ttl.unwrap_or(default.ttl));
        prop_assert_eq!(
            cfg.connect_timeout,
            p.connect_timeout.unwrap_or(default.connect_timeout)
        );
        prop_assert_eq!(
            cfg.request_timeout,
            p.request_timeout.unwrap_or(default.request_timeout)
        );
        // What parsed, validates, and serde carries it unchanged.
        prop_assert!(cfg.validate().is_ok());
        let json = serde_json::to_string(&cfg).unwrap();
        let mut back: EtcdConfig = serde_json::from_str(&json).unwrap();
        back.password = cfg.password.clone(); // never serialized
        prop_assert_eq!(back, cfg);
    }

    #[test]
    fn a_url_with_one_bad_host_is_refused(p in parts(), bad in prop::sample::select(BAD_ENDPOINTS)) {
        prop_assume!(!bad.is_empty() && !bad.starts_with("http") && !bad.contains(','));
        // Without a port, a bare host is valid in a URL (2379 is implied).
        prop_assume!(bad != "127.0.0.1" && bad != "localhost");
        let mut p = p;
        let at = p.hosts.len() / 2;
        p.hosts.insert(at, (bad.to_owned(), None));
        let url = url_of(&p);
        assert_config_error(&url, EtcdConfig::from_url(&url));
    }
}

fn check_any(s: &str) {
    match EtcdConfig::from_url(s).map_err(Error::from) {
        // Whatever is accepted is valid, with every duration in range, so that deadlines
        // computed from it cannot overflow.
        Ok(cfg) => {
            assert!(cfg.validate().is_ok(), "{s:?} parsed to an invalid {cfg:?}");
            let now = Instant::now();
            assert!(now.checked_add(cfg.connect_timeout * 3).is_some());
            assert!(now.checked_add(cfg.request_timeout * 3).is_some());
            assert!(cfg.ttl <= MAX_TTL && now.checked_add(cfg.ttl).is_some());
        }
        Err(e @ Error::InvalidConfig(_)) => assert!(!e.is_retryable()),
        Err(other) => panic!("{s:?}: {other:?}"),
    }
    if let Err(e) = Backend::from_url(s) {
        assert!(!e.is_retryable());
    }
}
