//! Topic and channel names.
//!
//! A name is 1 to 64 bytes matching `^[.a-zA-Z0-9_-]+(#ephemeral)?$`, the same rule for topics and
//! channels (nsqd's `internal/protocol/names.go`). The `#ephemeral` suffix counts towards the 64
//! bytes and needs at least one ordinary character before it:
//!
//! ```text
//! orders            valid
//! orders#ephemeral  valid, ephemeral
//! #ephemeral        invalid (nothing before the suffix)
//! a b, a/b, ""      invalid
//! ```
//!
//! Every valid name is ASCII.

/// Longest valid topic or channel name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Suffix that marks a topic or channel as ephemeral (never written to disk).
pub const EPHEMERAL_SUFFIX: &str = "#ephemeral";

/// Whether `name` is a valid topic name.
pub fn is_valid_topic_name(name: &str) -> bool {
    is_valid_name(name.as_bytes())
}

/// Whether `name` is a valid channel name.
pub fn is_valid_channel_name(name: &str) -> bool {
    is_valid_name(name.as_bytes())
}

/// Whether `name` ends in [`EPHEMERAL_SUFFIX`].
pub fn is_ephemeral(name: &str) -> bool {
    name.ends_with(EPHEMERAL_SUFFIX)
}

/// The rule shared by topics and channels, on raw bytes so that decoders can check a name before
/// knowing it is UTF-8.
pub(crate) fn is_valid_name(name: &[u8]) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return false;
    }
    let stem = name
        .strip_suffix(EPHEMERAL_SUFFIX.as_bytes())
        .unwrap_or(name);
    !stem.is_empty() && stem.iter().copied().all(is_name_byte)
}

fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_allowed_alphabet() {
        for name in [
            "a",
            "orders",
            "Orders.v2",
            "a_b-c.d",
            "0",
            "...",
            "---",
            "orders#ephemeral",
            "x#ephemeral",
        ] {
            assert!(is_valid_topic_name(name), "{name}");
            assert!(is_valid_channel_name(name), "{name}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for name in [
            "",
            "#ephemeral",
            "a b",
            "a/b",
            "a#b",
            "a#ephemeral#ephemeral",
            "a#Ephemeral",
            "a#ephemeralx",
            "ü",
            "a\n",
            "a\r",
            "a:b",
            "a*",
        ] {
            assert!(!is_valid_topic_name(name), "{name:?}");
            assert!(!is_valid_channel_name(name), "{name:?}");
        }
    }

    #[test]
    fn length_limit_includes_the_suffix() {
        let max = "a".repeat(MAX_NAME_LEN);
        assert!(is_valid_topic_name(&max));
        assert!(!is_valid_topic_name(&format!("{max}a")));
        let stem = "a".repeat(MAX_NAME_LEN - EPHEMERAL_SUFFIX.len());
        assert!(is_valid_topic_name(&format!("{stem}{EPHEMERAL_SUFFIX}")));
        assert!(!is_valid_topic_name(&format!("{stem}a{EPHEMERAL_SUFFIX}")));
    }

    #[test]
    fn ephemeral_is_the_suffix() {
        assert!(is_ephemeral("tail123#ephemeral"));
        assert!(!is_ephemeral("tail123"));
        assert!(!is_ephemeral("#ephemeralx"));
    }
}
