//! The pieces of a backend URL that are parsed from text, for every backend (etcd's config,
//! the NATS event backend's): endpoints (`host:port`) and %-escaped URL components. Everything
//! is checked here, when a config is parsed or validated, so that a typo is a configuration
//! error at once rather than a connection that fails (or worse, retries) later.
//!
//! ```
//! use sync_core::endpoint::{parse_host_port, percent_decode};
//! assert_eq!(parse_host_port("[::1]:4222", None), Ok(("[::1]", 4222)));
//! assert!(parse_host_port("h:0", None).is_err());
//! assert_eq!(percent_decode("p%40ss").as_deref(), Ok("p@ss"));
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

/// The longest host name DNS allows.
const MAX_HOST_LEN: usize = 253;
/// The longest label (the part between dots) of a host name.
const MAX_LABEL_LEN: usize = 63;

/// Splits and checks `host:port` (`[v6 address]:port` for IPv6). The host must be a DNS name
/// (letters, digits, `-`, `_`, dots between non-empty labels), an IPv4 address, or an IPv6
/// address in brackets; the port a number from 1 to 65535. Without a port, `default_port` is
/// used, or the endpoint is refused if there is none. Returns the host (with its brackets) and
/// the port.
pub fn parse_host_port(s: &str, default_port: Option<u16>) -> Result<(&str, u16), String> {
    if s.is_empty() {
        return Err(
            "it is empty; write host:port, like 127.0.0.1:2379 (etcd) or 127.0.0.1:4222 (NATS)"
                .to_owned(),
        );
    }
    if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "it contains {c:?}; a host:port has no spaces or control characters"
        ));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest
            .find(']')
            .ok_or("the IPv6 address lacks its closing ']'; write it like [::1]:2379")?;
        let addr = &rest[..end];
        if addr.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "[{addr}] is not an IPv6 address (zone ids such as %eth0 are not supported)"
            ));
        }
        let host = &s[..end + 2];
        match &rest[end + 1..] {
            "" => (host, None),
            after => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => {
                    return Err(format!(
                        "{after:?} follows the IPv6 address; write [address]:port"
                    ))
                }
            },
        }
    } else {
        let (host, port) = match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        if port.is_some_and(|p| p.contains(':')) {
            return Err(
                "it has more than one ':'; write an IPv6 address in brackets, like [::1]:2379"
                    .to_owned(),
            );
        }
        check_host(host)?;
        (host, port)
    };
    let port = match port {
        Some(p) => parse_port(p)?,
        None => default_port
            .ok_or("the port is missing; write host:port, like 127.0.0.1:2379 (etcd) or 127.0.0.1:4222 (NATS)".to_owned())?,
    };
    Ok((host, port))
}

/// Checks a host that is not a bracketed IPv6 address.
fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the host is empty; write host:port, like 127.0.0.1:2379 (etcd) or 127.0.0.1:4222 (NATS)".to_owned());
    }
    if let Some(c) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(format!(
            "host {host:?} contains {c:?}; a host is a DNS name (letters, digits, '-', '_', '.'), \
             an IPv4 address, or an IPv6 address in brackets"
        ));
    }
    if host.bytes().any(|b| b.is_ascii_digit())
        && host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    {
        return match host.parse::<Ipv4Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(format!("host {host:?} is not an IPv4 address")),
        };
    }
    if host.len() > MAX_HOST_LEN {
        return Err(format!(
            "host name is {} bytes long; DNS allows at most {MAX_HOST_LEN}",
            host.len()
        ));
    }
    // One trailing dot (a fully qualified name) is fine.
    for label in host.strip_suffix('.').unwrap_or(host).split('.') {
        if label.is_empty() {
            return Err(format!(
                "host {host:?} has an empty label (a leading dot or two dots in a row)"
            ));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(format!(
                "host {host:?} has a label of {} characters; DNS allows at most {MAX_LABEL_LEN}",
                label.len()
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "host {host:?} has a label that starts or ends with '-'"
            ));
        }
    }
    Ok(())
}

/// Parses a port: decimal digits only, 1 to 65535.
fn parse_port(p: &str) -> Result<u16, String> {
    if p.is_empty() {
        return Err("the port after ':' is empty; write host:port, like 127.0.0.1:2379 (etcd) or 127.0.0.1:4222 (NATS)".to_owned());
    }
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {p:?} is not a number from 1 to 65535"));
    }
    match p.parse::<u16>() {
        Ok(0) => Err("port 0 cannot be connected to; use a port from 1 to 65535".to_owned()),
        Ok(port) => Ok(port),
        Err(_) => Err(format!(
            "port {p} is out of range; use a port from 1 to 65535"
        )),
    }
}

/// Decodes the %-escapes of a URL component: `%` must be followed by two hex digits, and the
/// result must be UTF-8.
pub fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let hex = |at: usize| b.get(at).and_then(|&c| char::from(c).to_digit(16));
        match (hex(i + 1), hex(i + 2)) {
            (Some(hi), Some(lo)) => {
                // Two hex digits: at most 0xff.
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            _ => {
                let bad: String = s[i..].chars().take(3).collect();
                return Err(format!(
                    "{bad:?} is not a %-escape; write '%' and two hex digits (a '%' itself is %25)"
                ));
            }
        }
    }
    String::from_utf8(out).map_err(|_| "its %-escapes do not decode to UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_addresses_and_ports() {
        for (s, host, port) in [
            ("localhost:2379", "localhost", 2379),
            (
                "etcd-0.etcd.svc.cluster.local.:1",
                "etcd-0.etcd.svc.cluster.local.",
                1,
            ),
            ("my_host:65535", "my_host", 65535),
            ("127.0.0.1:2379", "127.0.0.1", 2379),
            ("[::1]:2379", "[::1]", 2379),
            ("[fe80::1:2]:12", "[fe80::1:2]", 12),
            ("a:02379", "a", 2379),
        ] {
            assert_eq!(parse_host_port(s, None), Ok((host, port)), "{s}");
        }
        assert_eq!(parse_host_port("[::1]", Some(7)), Ok(("[::1]", 7)));
        assert_eq!(parse_host_port("h", Some(7)), Ok(("h", 7)));
    }

    #[test]
    fn refuses_what_cannot_be_an_endpoint() {
        for s in [
            "",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[nope]:1",
            "[fe80::1%eth0]:1",
            "::1:2379",
            "a b:1",
            "a\tb:1",
            "a\0:1",
            "é:1",
            ":2379",
            "host:",
            "host:notaport",
            "host:+1",
            "host:-1",
            "127.0.0.1:99999",
            "127.0.0.1:0",
            "127.0.0.1:1%zz",
            "127.0.0.1:184467440737095516150",
            "999.0.0.1:1",
            "1.2.3:1",
            ".a:1",
            "a..b:1",
            "-a:1",
            "a-:1",
            "a/b:1",
            "a@b:1",
            "h",
            ".:1",
            "..:1",
            "a.:1.",
        ] {
            assert!(parse_host_port(s, None).is_err(), "{s:?} should be refused");
        }
        let long_label = format!("{}:1", "a".repeat(64));
        assert!(parse_host_port(&long_label, None).is_err());
        let ok_name = format!("{}:1", ["a"; 127].join("."));
        assert!(parse_host_port(&ok_name, None).is_ok());
        let long_name = format!("{}:1", ["a"; 128].join("."));
        assert!(parse_host_port(&long_name, None).is_err());
    }

    #[test]
    fn percent_escapes_are_strict() {
        assert_eq!(percent_decode("s%40cret%2Fx").as_deref(), Ok("s@cret/x"));
        assert_eq!(percent_decode("%c3%a9").as_deref(), Ok("é"));
        for bad in ["%", "%1", "%zz", "%+1", "%-1", "a%é", "%ff"] {
            assert!(percent_decode(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
