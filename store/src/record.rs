//! The on-disk record format and the public record types.
//!
//! ```text
//!  offset 0        4        8                16               24               32
//!         +--------+--------+----------------+----------------+----------------+-------------+---------+
//!         | len    | crc32  | seq            | timestamp_ns   | deliver_at_ns  | body ...    | padding |
//!         | u32 LE | u32 LE | u64 LE         | i64 LE         | i64 LE         | len-24 B    | to 8 B  |
//!         +--------+--------+----------------+----------------+----------------+-------------+---------+
//!                           |<------------- crc32 (crc32fast) covers these len bytes ------------>|
//! ```
//!
//! Invariants:
//! - `len` counts the bytes after the CRC field (`24 + body.len()`), so a valid record has
//!   `len >= 24`; `len == 0` marks the end of written data (segments are allocated with
//!   zeros).
//! - A record occupies `stride = round_up(8 + len, 8)` bytes, so every record starts
//!   8-byte aligned. Padding is not covered by the CRC and is never read.
//! - The `seq` inside every record lets recovery resynchronise after a corrupt region: a
//!   candidate is accepted only if its `len`, its CRC and its `seq` are all plausible.
//! - The writer stores `len` last (and, for a batch, the first record's `len` after all the
//!   others), so a process killed mid-append usually leaves a clean end marker rather than a
//!   torn record.

use bytes::Bytes;

/// Bytes before the body: len, crc, seq, timestamp, deliver_at.
pub(crate) const RECORD_HEADER: usize = 32;
/// Smallest valid `len` (a record with an empty body).
pub(crate) const MIN_LEN: u32 = 24;
/// Records start at multiples of this.
pub(crate) const ALIGN: u64 = 8;
/// Largest body the format accepts (`len` is a `u32`).
pub const MAX_BODY: usize = u32::MAX as usize - 64;

/// A record read back from a log. `body` points into the segment's memory map (disk logs) or
/// into a heap copy (in-memory logs); cloning it is a reference-count increment.
#[derive(Debug, Clone)]
pub struct Record {
    /// Sequence number in the topic log; message IDs derive from it.
    pub seq: u64,
    /// Publish time, ns since the Unix epoch.
    pub timestamp_ns: i64,
    /// Earliest delivery time, ns since the Unix epoch; 0 (or any past time) means now.
    pub deliver_at_ns: i64,
    /// The message body.
    pub body: Bytes,
}

/// A record to append.
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    /// Publish time, ns since the Unix epoch.
    pub timestamp_ns: i64,
    /// Earliest delivery time, ns since the Unix epoch; 0 means now (DPUB sets it).
    pub deliver_at_ns: i64,
    /// The message body.
    pub body: &'a [u8],
}

/// The fixed-size part of a record, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub len: u32,
    pub crc: u32,
    pub seq: u64,
    pub timestamp_ns: i64,
    pub deliver_at_ns: i64,
}

impl RecordHeader {
    /// Decodes the header from the first 32 bytes of `buf`.
    pub fn decode(buf: &[u8; RECORD_HEADER]) -> Self {
        RecordHeader {
            len: u32::from_le_bytes(array(buf, 0)),
            crc: u32::from_le_bytes(array(buf, 4)),
            seq: u64::from_le_bytes(array(buf, 8)),
            timestamp_ns: i64::from_le_bytes(array(buf, 16)),
            deliver_at_ns: i64::from_le_bytes(array(buf, 24)),
        }
    }

    /// Body length (`len - 24`); only meaningful when `len >= MIN_LEN`.
    pub fn body_len(&self) -> usize {
        self.len.saturating_sub(MIN_LEN) as usize
    }

    /// Bytes the record occupies, padding included.
    pub fn stride(&self) -> u64 {
        stride_for_len(self.len)
    }
}

fn array<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&buf[at..at + N]);
    out
}

/// Bytes occupied by a record whose `len` field is `len`.
pub(crate) fn stride_for_len(len: u32) -> u64 {
    (8 + u64::from(len)).div_ceil(ALIGN) * ALIGN
}

/// Bytes occupied by a record with a body of `body_len` bytes (caller checked `MAX_BODY`).
pub(crate) fn stride_for_body(body_len: usize) -> u64 {
    stride_for_len(MIN_LEN + body_len as u32)
}

/// Encodes the header of `rec` with sequence `seq`, CRC included. The `len` field is
/// returned separately so the writer can store it last.
pub(crate) fn encode_header(seq: u64, rec: &NewRecord<'_>) -> ([u8; RECORD_HEADER], u32) {
    let len = MIN_LEN + rec.body.len() as u32;
    let mut h = [0u8; RECORD_HEADER];
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h[16..24].copy_from_slice(&rec.timestamp_ns.to_le_bytes());
    h[24..32].copy_from_slice(&rec.deliver_at_ns.to_le_bytes());
    let crc = checksum(&h[8..], rec.body);
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    h[0..4].copy_from_slice(&len.to_le_bytes());
    (h, len)
}

/// CRC32 over the header fields after the CRC and the body.
pub(crate) fn checksum(header_tail: &[u8], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header_tail);
    hasher.update(body);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_stride() {
        let rec = NewRecord {
            timestamp_ns: -5,
            deliver_at_ns: 77,
            body: b"hello",
        };
        let (h, len) = encode_header(42, &rec);
        let d = RecordHeader::decode(&h);
        assert_eq!(d.len, len);
        assert_eq!(len, 29);
        assert_eq!(d.seq, 42);
        assert_eq!(d.timestamp_ns, -5);
        assert_eq!(d.deliver_at_ns, 77);
        assert_eq!(d.crc, checksum(&h[8..], b"hello"));
        assert_eq!(d.stride(), 40);
        assert_eq!(stride_for_body(0), 32);
        assert_eq!(stride_for_body(200), 232);
    }
}
