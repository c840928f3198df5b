//! The text line that starts every command, shared by protocol V2 and lookup protocol V1.
//!
//! ```text
//! PUB orders\n            name and parameters, split on single spaces, ended by '\n'
//! REQ 000000000000001a 0\r\n   a '\r' before the '\n' is tolerated
//! ```
//!
//! A line, its `\n` included, is at most [`MAX_LINE_LEN`] bytes: a peer that sends more without a
//! newline is refused instead of being buffered without bound. Helpers here also format bytes the
//! way nsqd's Go code does in its error texts (`%s` and `%q`).

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::error::{ErrorCode, ProtocolError};

/// Longest command line accepted, counting its `\n`.
///
/// The longest line an NSQ client sends is `SUB` with two 64-byte names, or `DPUB` with a name and
/// a 20-digit number: far below this.
pub const MAX_LINE_LEN: usize = 1024;

/// Where the line at the start of `src` ends: `Ok(Some(i))` with `src[i] == b'\n'`, `Ok(None)` if
/// the newline has not arrived yet, or `E_INVALID` if [`MAX_LINE_LEN`] bytes came without one.
pub(crate) fn find_line_end(src: &[u8]) -> Result<Option<usize>, ProtocolError> {
    let window = &src[..src.len().min(MAX_LINE_LEN)];
    match window.iter().position(|&b| b == b'\n') {
        Some(end) => Ok(Some(end)),
        None if src.len() >= MAX_LINE_LEN => Err(ProtocolError::new(
            ErrorCode::Invalid,
            format!("command line too long (no newline within {MAX_LINE_LEN} bytes)"),
        )),
        None => Ok(None),
    }
}

/// A big-endian `i32` at `src[at..at + 4]`, if those bytes are there.
pub(crate) fn read_i32(src: &[u8], at: usize) -> Option<i32> {
    let bytes = src.get(at..at.checked_add(4)?)?;
    Some(i32::from_be_bytes(bytes.try_into().ok()?))
}

/// Parses ASCII decimal digits as nsqd's `ByteToBase10` does: digits only, and the empty string is
/// 0. Unlike Go, a value that overflows `u64` is refused instead of wrapping.
pub(crate) fn parse_base10(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &byte| {
        if !byte.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(byte - b'0'))
    })
}

/// Bytes as Go's `%s` prints them (invalid UTF-8 replaced).
pub(crate) fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// Bytes as Go's `%q` prints a string: double-quoted, with `"` and `\` escaped, control characters
/// as `\n`, `\x00` or `\u0085`, and each invalid UTF-8 byte as `\xff`.
///
/// Go decides what is printable with Unicode tables; outside ASCII this uses Rust's notion of
/// control and whitespace characters, which agrees for every character a real client sends.
pub(crate) fn go_quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_quoted_char(&mut out, c);
        }
        for byte in chunk.invalid() {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out.push('"');
    out
}

fn push_quoted_char(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\u{07}' => out.push_str("\\a"),
        '\u{08}' => out.push_str("\\b"),
        '\u{0c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{0b}' => out.push_str("\\v"),
        ' ' => out.push(' '),
        c if c < ' ' || c == '\u{7f}' => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        c if c.is_control() || c.is_whitespace() => {
            let code = u32::from(c);
            if code < 0x10000 {
                let _ = write!(out, "\\u{code:04x}");
            } else {
                let _ = write!(out, "\\U{code:08x}");
            }
        }
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_newline_within_the_limit() {
        assert_eq!(find_line_end(b"NOP\n").unwrap(), Some(3));
        assert_eq!(find_line_end(b"NOP").unwrap(), None);
        assert_eq!(find_line_end(b"").unwrap(), None);
        let mut long = vec![b'a'; MAX_LINE_LEN - 1];
        assert_eq!(find_line_end(&long).unwrap(), None);
        long.push(b'\n');
        assert_eq!(find_line_end(&long).unwrap(), Some(MAX_LINE_LEN - 1));
        long.pop();
        long.push(b'a');
        let err = find_line_end(&long).unwrap_err();
        assert_eq!(err.code, ErrorCode::Invalid);
        assert_eq!(
            err.message,
            "command line too long (no newline within 1024 bytes)"
        );
    }

    #[test]
    fn base10_is_digits_only() {
        assert_eq!(parse_base10(b"0"), Some(0));
        assert_eq!(parse_base10(b""), Some(0));
        assert_eq!(parse_base10(b"007"), Some(7));
        assert_eq!(parse_base10(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_base10(b"18446744073709551616"), None);
        assert_eq!(parse_base10(b"-1"), None);
        assert_eq!(parse_base10(b"+1"), None);
        assert_eq!(parse_base10(b"1 "), None);
        assert_eq!(parse_base10(b"1a"), None);
    }

    #[test]
    fn reads_big_endian_sizes() {
        assert_eq!(read_i32(&[0, 0, 1, 0], 0), Some(256));
        assert_eq!(read_i32(&[9, 0xff, 0xff, 0xff, 0xfe], 1), Some(-2));
        assert_eq!(read_i32(&[0, 0, 1], 0), None);
        assert_eq!(read_i32(&[0, 0, 0, 1], usize::MAX), None);
    }

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote(b"orders"), r#""orders""#);
        assert_eq!(go_quote(b""), r#""""#);
        assert_eq!(go_quote(b"a b"), r#""a b""#);
        assert_eq!(go_quote(b"a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote(b"\t\n\r\x00\x7f"), r#""\t\n\r\x00\x7f""#);
        assert_eq!(go_quote(b"\xff\xfe"), r#""\xff\xfe""#);
        assert_eq!(go_quote("é€".as_bytes()), "\"é€\"");
        assert_eq!(go_quote("\u{85}\u{a0}".as_bytes()), r#""\u0085\u00a0""#);
    }
}
