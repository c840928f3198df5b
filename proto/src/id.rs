//! Message IDs: 16 bytes on the wire, opaque to clients.
//!
//! NSQ clients treat an ID as 16 opaque bytes that they echo back in FIN, REQ and TOUCH. Ferry
//! derives it from the record's sequence number in the topic log, written as 16 lowercase hex
//! digits, so the broker finds the message again without a lookup table:
//!
//! ```text
//! seq 26  ──from_seq──▶  "000000000000001a"  ──to_seq──▶  26
//! ```
//!
//! Invariant: for every `u64` `n`, `MessageId::from_seq(n).to_seq() == Some(n)`, and whenever
//! `id.to_seq()` is `Some(n)`, `MessageId::from_seq(n) == id` (only lowercase hex is accepted).

use std::fmt;

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// A 16-byte message ID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId([u8; 16]);

impl MessageId {
    /// Length of an ID on the wire, in bytes.
    pub const LEN: usize = 16;

    /// The ID of sequence number `seq`: 16 zero-padded lowercase hex digits.
    pub fn from_seq(seq: u64) -> Self {
        let mut bytes = [0u8; Self::LEN];
        for (i, byte) in bytes.iter_mut().enumerate() {
            let shift = 60 - 4 * i;
            // The mask keeps the index below 16.
            *byte = HEX_DIGITS[((seq >> shift) & 0xf) as usize];
        }
        MessageId(bytes)
    }

    /// The sequence number this ID was made from, or `None` if it is not 16 lowercase hex digits.
    pub fn to_seq(&self) -> Option<u64> {
        self.0.iter().try_fold(0u64, |acc, &byte| {
            let digit = match byte {
                b'0'..=b'9' => byte - b'0',
                b'a'..=b'f' => byte - b'a' + 10,
                _ => return None,
            };
            Some((acc << 4) | u64::from(digit))
        })
    }

    /// The ID made of exactly these 16 bytes (any content, as NSQ accepts), or `None` if
    /// `bytes` is not 16 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; Self::LEN]>::try_from(bytes).ok().map(MessageId)
    }

    /// The 16 bytes of the ID.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_seq_is_zero_padded_lowercase_hex() {
        assert_eq!(MessageId::from_seq(1).as_bytes(), b"0000000000000001");
        assert_eq!(MessageId::from_seq(0xabc).as_bytes(), b"0000000000000abc");
        assert_eq!(
            MessageId::from_seq(u64::MAX).as_bytes(),
            b"ffffffffffffffff"
        );
        assert_eq!(MessageId::from_seq(0).to_string(), "0000000000000000");
    }

    #[test]
    fn to_seq_inverts_from_seq() {
        for seq in [0, 1, 15, 16, 255, 1 << 32, u64::MAX - 1, u64::MAX] {
            assert_eq!(MessageId::from_seq(seq).to_seq(), Some(seq));
        }
    }

    #[test]
    fn to_seq_rejects_anything_but_lowercase_hex() {
        for bytes in [
            b"000000000000000A",
            b"000000000000000g",
            b"00000000000000 1",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        ] {
            assert_eq!(MessageId::from_bytes(bytes).unwrap().to_seq(), None);
        }
    }

    #[test]
    fn from_bytes_needs_exactly_sixteen() {
        assert!(MessageId::from_bytes(b"0123456789abcdef").is_some());
        assert!(MessageId::from_bytes(b"0123456789abcde").is_none());
        assert!(MessageId::from_bytes(b"0123456789abcdef0").is_none());
        assert!(MessageId::from_bytes(b"").is_none());
    }

    #[test]
    fn debug_and_display_print_the_bytes_lossily() {
        let id = MessageId::from_bytes(b"abc\xffdefghijklmno").unwrap();
        assert_eq!(id.to_string(), "abc\u{fffd}defghijklmno");
        assert_eq!(format!("{id:?}"), id.to_string());
    }

    #[test]
    fn order_follows_sequence() {
        assert!(MessageId::from_seq(9) < MessageId::from_seq(10));
        assert!(MessageId::from_seq(0xff) < MessageId::from_seq(0x100));
    }
}
