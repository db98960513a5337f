//! Which replies are usable.
//!
//! `sntpc` (0.11) already rejects, per RFC 5905 §A.5.1.1 / RFC 4330 §5, in this order: an origin
//! timestamp that is not the one we sent (this covers a zero origin), a mode other than 4
//! (server), kiss-of-death (stratum 0, with its code), leap indicator 3 (unsynchronized), a
//! version of 0 or above ours, stratum 16 or more, a zero transmit timestamp, a root distance of
//! 16 s or more, a reference timestamp after the transmit timestamp, a reply shorter than 48
//! bytes or from another address. [`from_sntpc`] turns each into our typed [`Error`].
//!
//! [`check`] re-checks the server-state rules on the parsed result (so they hold even if a
//! future `sntpc` stops enforcing one) and converts its NTP short-format fields.

use std::time::Duration;

use crate::Error;

/// `root_delay/2 + root_dispersion` at or above this means "not synchronized" (RFC 5905
/// `MAXDISP`).
pub(crate) const MAX_ROOT_DISTANCE: Duration = Duration::from_secs(16);

/// Turns an `sntpc` rejection into our error, naming `server`.
pub(crate) fn from_sntpc(server: &str, e: sntpc::Error) -> Error {
    use sntpc::Error as E;
    let server = server.to_owned();
    let bad_timestamp = |server, reason| Error::BadTimestamp { server, reason };
    let malformed = |server, reason| Error::MalformedReply { server, reason };
    let unsynchronized = |server, reason| Error::ServerUnsynchronized { server, reason };
    match e {
        E::KissOfDeath(code) => Error::KissOfDeath {
            server,
            code: kiss_code(code),
        },
        E::UnsynchronizedClock => {
            unsynchronized(server, "leap indicator 3: alarm, not synchronized")
        }
        E::IncorrectStratumHeaders => {
            unsynchronized(server, "stratum 16 or more: not synchronized")
        }
        E::ExcessiveRootDistance => unsynchronized(server, "root distance of 16 s or more"),
        E::IncorrectOriginTimestamp => bad_timestamp(
            server,
            "origin timestamp is zero or not the one we sent: not an answer to our request",
        ),
        E::InvalidTimestamp => bad_timestamp(server, "transmit timestamp is zero"),
        E::BackwardReferenceTimestamp => bad_timestamp(
            server,
            "reference timestamp is after the transmit timestamp",
        ),
        E::IncorrectMode => malformed(server, "mode is not 4 (server)"),
        E::IncorrectResponseVersion => malformed(server, "NTP version is 0 or newer than ours"),
        E::IncorrectPayload => malformed(server, "shorter than the 48-byte NTP header"),
        E::ResponseAddressMismatch => malformed(server, "the reply came from another address"),
        E::AddressResolve => Error::Resolve {
            server,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "address not resolved"),
        },
        E::Network => Error::Network {
            server,
            source: std::io::Error::other("sending or receiving the UDP datagram failed"),
        },
        _ => malformed(server, "rejected by the SNTP client"),
    }
}

/// The kiss code as text (`RATE`), or its bytes in hex if they are not printable ASCII.
fn kiss_code(code: sntpc::KissOfDeathCode) -> String {
    let text = code.as_str();
    if text.len() == 4 && text.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return text.to_owned();
    }
    match code {
        sntpc::KissOfDeathCode::Experimental(bytes) => format!("0x{}", hex(&bytes)),
        _ => text.to_owned(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What we use from a valid reply, after the server-state checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checked {
    pub(crate) offset_nanos: i64,
    pub(crate) delay: Duration,
    pub(crate) root_delay: Duration,
    pub(crate) root_dispersion: Duration,
}

/// Re-checks the server-state rules on a parsed reply and extracts what selection needs.
pub(crate) fn check(server: &str, r: &sntpc::NtpResult) -> Result<Checked, Error> {
    let unsynchronized = |reason| Error::ServerUnsynchronized {
        server: server.to_owned(),
        reason,
    };
    if r.stratum == 0 {
        return Err(Error::KissOfDeath {
            server: server.to_owned(),
            code: kiss_code_from_bytes(r.reference_id),
        });
    }
    if r.stratum >= 16 {
        return Err(unsynchronized("stratum 16 or more: not synchronized"));
    }
    if r.leap_indicator == 3 {
        return Err(unsynchronized("leap indicator 3: alarm, not synchronized"));
    }
    let root_delay = short_format(r.root_delay);
    let root_dispersion = short_format(r.root_dispersion);
    if root_delay / 2 + root_dispersion >= MAX_ROOT_DISTANCE {
        return Err(unsynchronized("root distance of 16 s or more"));
    }
    Ok(Checked {
        offset_nanos: r.offset.saturating_mul(1_000),
        delay: Duration::from_micros(r.roundtrip),
        root_delay,
        root_dispersion,
    })
}

fn kiss_code_from_bytes(bytes: [u8; 4]) -> String {
    if bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        format!("0x{}", hex(&bytes))
    }
}

/// NTP short format (16.16 fixed-point seconds) to a `Duration`, rounded up so an error bound
/// never shrinks in conversion.
pub(crate) fn short_format(value: u32) -> Duration {
    let nanos = (u64::from(value) * 1_000_000_000).div_ceil(1 << 16);
    Duration::from_nanos(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(stratum: u8, leap: u8, root_delay: u32, root_dispersion: u32) -> sntpc::NtpResult {
        sntpc::NtpResult::new(
            0,
            0,
            250,
            -1_500,
            stratum,
            -20,
            leap,
            root_delay,
            root_dispersion,
            *b"LOCL",
            0,
            6,
            0,
        )
    }

    #[test]
    fn short_format_rounds_up() {
        assert_eq!(short_format(1 << 16), Duration::from_secs(1));
        assert_eq!(short_format(1 << 15), Duration::from_millis(500));
        assert_eq!(short_format(1), Duration::from_nanos(15_259)); // 15258.79 ns
        assert_eq!(short_format(0), Duration::ZERO);
    }

    #[test]
    fn check_extracts_a_valid_reply() {
        let c = check("s:123", &result(2, 0, 1 << 16, 1 << 14)).unwrap();
        assert_eq!(c.offset_nanos, -1_500_000);
        assert_eq!(c.delay, Duration::from_micros(250));
        assert_eq!(c.root_delay, Duration::from_secs(1));
        assert_eq!(c.root_dispersion, Duration::from_millis(250));
    }

    #[test]
    fn check_rejects_unsynchronized_servers() {
        for (r, needle) in [
            (result(16, 0, 0, 0), "stratum 16"),
            (result(2, 3, 0, 0), "leap indicator 3"),
            (result(2, 0, 2 << 16, 15 << 16), "root distance"),
        ] {
            let err = check("s:123", &r).unwrap_err();
            assert!(matches!(err, Error::ServerUnsynchronized { .. }), "{err}");
            assert!(err.to_string().contains(needle), "{err}");
            assert!(err.to_string().contains("s:123"), "{err}");
        }
        let err = check("s:123", &result(0, 3, 0, 0)).unwrap_err();
        assert!(matches!(err, Error::KissOfDeath { ref code, .. } if code == "LOCL"));
    }

    #[test]
    fn every_sntpc_rejection_maps_to_a_typed_error_naming_the_server() {
        use sntpc::Error as E;
        for e in [
            E::IncorrectOriginTimestamp,
            E::IncorrectMode,
            E::UnsynchronizedClock,
            E::InvalidTimestamp,
            E::ExcessiveRootDistance,
            E::BackwardReferenceTimestamp,
            E::IncorrectResponseVersion,
            E::IncorrectStratumHeaders,
            E::IncorrectPayload,
            E::Network,
            E::AddressResolve,
            E::ResponseAddressMismatch,
            E::KissOfDeath(sntpc::KissOfDeathCode::Rate),
        ] {
            let err = from_sntpc("srv.example:123", e);
            assert!(err.to_string().contains("srv.example:123"), "{e:?}: {err}");
        }
        assert!(matches!(
            from_sntpc("s", E::KissOfDeath(sntpc::KissOfDeathCode::Deny)),
            Error::KissOfDeath { code, .. } if code == "DENY"
        ));
    }
}
