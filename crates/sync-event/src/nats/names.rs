//! Topic and group names as JetStream stream, subject and consumer names.
//!
//! One stream per topic (see the module docs of [`super`]). JetStream names may not contain
//! `.`, `*`, `>`, whitespace or path separators, and stream names become directory names in
//! the server's store (at most 255 bytes). A topic is encoded byte by byte: ASCII letters,
//! digits and `-` stay, every other byte becomes `_XX` (two lowercase hex digits), so the
//! encoding is injective (`a`, `a/b`, `a_2f` give `a`, `a_2fb`, `a_5f2f`). An encoding longer
//! than [`MAX_READABLE`] keeps its first [`MAX_READABLE`] characters and appends `~` and a
//! 128-bit FNV-1a hash of the whole topic; the stream's description holds the topic itself,
//! which is checked on every open, so a collision is an error, never a mix-up.

/// Longest readable part of an encoded name.
pub(super) const MAX_READABLE: usize = 120;

/// `prefix` + `_` + the encoded name: a valid stream or consumer name, at most
/// `prefix.len() + 1 + MAX_READABLE + 33` bytes.
pub(super) fn encode(prefix: &str, name: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1 + name.len());
    out.push_str(prefix);
    out.push('_');
    let start = out.len();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push('_');
            out.push(hex(b >> 4));
            out.push(hex(b & 0xf));
        }
    }
    if out.len() - start > MAX_READABLE {
        // Cut before an escape that would be split (every character is ASCII).
        let mut cut = start + MAX_READABLE;
        let bytes = out.as_bytes();
        if bytes[cut - 1] == b'_' {
            cut -= 1;
        } else if bytes[cut - 2] == b'_' {
            cut -= 2;
        }
        out.truncate(cut);
        out.push('~');
        out.push_str(&format!("{:032x}", fnv1a128(name.as_bytes())));
    }
    out
}

/// A header name or value as NATS carries it: bytes outside printable ASCII, `%`, and (in
/// names) `:` become `%XX`, so any UTF-8 survives the text protocol (names with spaces or
/// umlauts, values with leading spaces or line breaks). Decoded by [`unescape`].
pub(super) fn escape(text: &str, name: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        let plain = (0x21..=0x7e).contains(&b) && b != b'%' && !(name && b == b':');
        if plain {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(hex(b >> 4).to_ascii_uppercase());
            out.push(hex(b & 0xf).to_ascii_uppercase());
        }
    }
    out
}

/// Reverses [`escape`]; text that was not escaped by us comes back as it is.
pub(super) fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex_at = |j: usize| bytes.get(j).and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex_at(i + 1), hex_at(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_string())
}

fn hex(nibble: u8) -> char {
    char::from_digit(u32::from(nibble), 16).unwrap_or('0')
}

/// FNV-1a, 128 bits: stable across Rust releases (unlike `DefaultHasher`).
fn fnv1a128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u128::from(b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sharing_a_prefix_never_meet() {
        assert_eq!(encode("p", "a"), "p_a");
        assert_eq!(encode("p", "a/b"), "p_a_2fb");
        assert_eq!(encode("p", "a_2fb"), "p_a_5f2fb");
        assert_eq!(encode("p", "a.b"), "p_a_2eb");
        assert_eq!(encode("p", "é"), "p__c3_a9");
        assert_ne!(encode("p", "ab"), encode("p", "a b"));
    }

    #[test]
    fn headers_survive_escaping() {
        for (t, name) in [
            ("ünï", true),
            ("a:b c%", true),
            (" lead\r\nx ", false),
            ("plain/ok", false),
        ] {
            let e = escape(t, name);
            assert!(e.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{e}");
            assert!(!name || !e.contains(':'));
            assert_eq!(unescape(&e), t);
        }
        assert_eq!(escape("content-type", true), "content-type");
    }

    #[test]
    fn long_names_are_cut_and_hashed() {
        let long = "x/".repeat(256);
        let other = format!("{}y", "x/".repeat(255));
        let (a, b) = (encode("p", &long), encode("p", &other));
        assert_ne!(a, b);
        assert!(a.len() <= 2 + MAX_READABLE + 33, "{}", a.len());
        assert!(!a[2..a.find('~').unwrap()].ends_with('_'));
        let valid = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_~".contains(&b))
        };
        assert!(valid(&a) && valid(&b));
    }
}
