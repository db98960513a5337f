//! The value of an event key: publish time (µs since the epoch, 8 bytes), publish id (16
//! bytes, to recognise our own event after a retried transaction), headers as JSON (4-byte
//! length, then the bytes), then the payload, raw.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Headers, Message};

const FIXED: usize = 8 + 16 + 4;

pub(crate) fn encode(at: SystemTime, id: u128, m: &Message) -> Vec<u8> {
    let micros = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64;
    let headers = if m.headers.is_empty() {
        Vec::new()
    } else {
        serde_json::to_vec(&m.headers).expect("string maps serialise")
    };
    let mut v = Vec::with_capacity(FIXED + headers.len() + m.payload.len());
    v.extend_from_slice(&micros.to_be_bytes());
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    v.extend_from_slice(&headers);
    v.extend_from_slice(&m.payload);
    v
}

pub(crate) fn time_of(v: &[u8]) -> Option<SystemTime> {
    let micros = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    Some(UNIX_EPOCH + Duration::from_micros(micros))
}

pub(crate) fn id_of(v: &[u8]) -> Option<u128> {
    Some(u128::from_be_bytes(v.get(8..24)?.try_into().ok()?))
}

/// (publish time, message), or None for a value we did not write.
pub(crate) fn decode(v: &[u8]) -> Option<(SystemTime, Message)> {
    let at = time_of(v)?;
    let hlen = u32::from_be_bytes(v.get(24..28)?.try_into().ok()?) as usize;
    let headers: Headers = if hlen == 0 {
        Headers::new()
    } else {
        serde_json::from_slice(v.get(FIXED..FIXED + hlen)?).ok()?
    };
    let mut m = Message::new(v.get(FIXED + hlen..)?.to_vec());
    m.headers = headers;
    Some((at, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = Message::new(vec![0u8, 1, 2]).with_header("a", "b");
        let at = UNIX_EPOCH + Duration::from_micros(1_234_567);
        let v = encode(at, 42, &m);
        assert_eq!(decode(&v), Some((at, m)));
        assert_eq!(id_of(&v), Some(42));
        assert_eq!(decode(b"short"), None);
    }
}
