//! Names of locks, election groups, candidates and commands.
//!
//! A name is any non-empty UTF-8 string of at most [`MAX_NAME_LEN`] bytes without NUL. Backends
//! encode names so that names sharing a prefix (`a`, `a/b`, `ab`) never interfere.

/// The longest accepted name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 512;

/// Why a name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is the empty string.
    #[error("the name is empty; use a non-empty name")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("the name is {len} bytes long; the limit is {max} bytes")]
    TooLong {
        /// Length of the rejected name in bytes.
        len: usize,
        /// The limit, [`MAX_NAME_LEN`].
        max: usize,
    },
    /// The name contains a NUL character.
    #[error("the name contains a NUL character at byte {at}; remove it")]
    ContainsNul {
        /// Byte offset of the first NUL.
        at: usize,
    },
}

/// Checks a name against the rules above.
///
/// ```
/// use sync_core::name::{validate_name, NameError};
/// assert_eq!(validate_name(""), Err(NameError::Empty));
/// assert!(matches!(validate_name("a\0b"), Err(NameError::ContainsNul { at: 1 })));
/// assert!(validate_name("jobs/nightly report").is_ok());
/// ```
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    if let Some(at) = name.bytes().position(|b| b == 0) {
        return Err(NameError::ContainsNul { at });
    }
    Ok(())
}

/// Shortens a name for use in an error message (names may be up to [`MAX_NAME_LEN`] bytes, or
/// far longer when rejected), keeping it valid UTF-8.
///
/// ```
/// let long = "x".repeat(1000);
/// assert!(sync_core::name::display_name(&long).len() < 100);
/// assert_eq!(sync_core::name::display_name("a"), "a");
/// ```
pub fn display_name(name: &str) -> String {
    const KEEP: usize = 64;
    if name.len() <= KEEP {
        return name.to_owned();
    }
    let mut end = KEEP;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &name[..end], name.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_limit_and_rejects_beyond() {
        assert!(validate_name(&"a".repeat(MAX_NAME_LEN)).is_ok());
        assert_eq!(
            validate_name(&"a".repeat(MAX_NAME_LEN + 1)),
            Err(NameError::TooLong {
                len: MAX_NAME_LEN + 1,
                max: MAX_NAME_LEN
            })
        );
    }

    #[test]
    fn display_name_respects_char_boundaries() {
        let s = "é".repeat(100);
        let shown = display_name(&s);
        assert!(shown.starts_with("éé"));
        assert!(shown.ends_with("(200 bytes)"));
    }
}
