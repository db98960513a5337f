//! The key layout: `<prefix>/<kind>/<encoded name>/<entry>`.
//!
//! Names are percent-encoded so that they never contain `/`: the range of `a` is `…/a/` and the
//! range of `a/b` is `…/a%2Fb/`, so neither is a prefix of the other.

/// Keys under one prefix (namespace).
///
/// ```
/// use sync_etcd::Keyspace;
/// let ks = Keyspace::new("myapp");
/// assert_eq!(ks.dir("lock", "a"), "myapp/lock/a/");
/// assert_eq!(ks.dir("lock", "a/b"), "myapp/lock/a%2Fb/");
/// assert!(!ks.dir("lock", "a/b").starts_with(&ks.dir("lock", "a")));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyspace {
    root: String,
}

impl Keyspace {
    /// Keys under `prefix` (trailing slashes ignored; empty means the root of the keyspace).
    pub fn new(prefix: &str) -> Self {
        let p = prefix.trim_end_matches('/');
        Keyspace {
            root: if p.is_empty() {
                String::new()
            } else {
                format!("{p}/")
            },
        }
    }

    /// `<prefix>/`: every key we write starts with it.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// `<prefix>/<kind>/`: every key of one primitive (`lock`, `election`, `task`).
    pub fn kind(&self, kind: &str) -> String {
        format!("{}{kind}/", self.root)
    }

    /// `<prefix>/<kind>/<encoded name>/`: the range of one lock, election or queue.
    pub fn dir(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}/{}/", self.root, encode_name(name))
    }
}

/// Percent-encodes every byte outside `[A-Za-z0-9._~-]`, so the result has no `/`.
///
/// ```
/// assert_eq!(sync_etcd::encode_name("a/b c%"), "a%2Fb%20c%25");
/// ```
pub fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverses [`encode_name`]; `None` if `encoded` is not its output.
///
/// ```
/// use sync_etcd::{decode_name, encode_name};
/// assert_eq!(decode_name(&encode_name("ünï/côde")).as_deref(), Some("ünï/côde"));
/// assert_eq!(decode_name("%zz"), None);
/// ```
pub fn decode_name(encoded: &str) -> Option<String> {
    let b = encoded.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(encoded.get(i + 1..i + 3)?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_dir_is_a_prefix_of_another() {
        let ks = Keyspace::new("p/");
        let names = ["a", "a/b", "ab", "a%2Fb", "a b", "a/", "/a", "é"];
        for x in names {
            for y in names {
                if x != y {
                    assert!(
                        !ks.dir("lock", y).starts_with(&ks.dir("lock", x)),
                        "{x} vs {y}"
                    );
                }
            }
            assert_eq!(decode_name(&encode_name(x)).as_deref(), Some(x));
        }
        assert_eq!(Keyspace::new("").dir("lock", "x"), "lock/x/");
    }
}
