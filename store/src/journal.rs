//! The channel-state journal: what channels did since the last snapshot in `meta.dat`.
//!
//! A topic's channels record their FIN / REQ / timeout / empty operations
//! ([`JournalOp`], kept by [`crate::ChannelState`] until the topic's sync drains them); the
//! sync appends them to `<dir>/journal.<gen>` and fdatasyncs it right after the log sync. From
//! time to time the topic compacts: it snapshots every channel into `meta.dat`, which names the
//! generation that continues after it (`gen + 1`), and deletes `journal.<gen>`. On open, the
//! journal named by `meta.dat` is replayed over the snapshot ([`replay`]).
//!
//! ```text
//!  frame   = magic u32 "FJNL" | payload len u32 (> 0) | crc32 u32 of payload | payload
//!  payload = name_len u16 | channel name (UTF-8) | n_ops u32 | op*
//!  op      = 0 u8 | seq u64                                    FIN
//!          | 1 u8 | seq u64 | attempts u16 | deliver_at_ns i64 REQ or timeout (0: due now)
//!          | 2 u8 | cursor u64                                 channel emptied up to cursor
//!  (all integers little-endian)
//! ```
//!
//! Invariants:
//! - A frame is accepted only whole: right magic, non-zero length within the file, matching
//!   CRC and a payload that decodes exactly. The first frame that fails ends the replay, so a
//!   torn or zero-filled tail (crash during a write, power loss before the fdatasync) is
//!   ignored. A topic that found such a tail compacts before it writes again, so no good frame
//!   ever follows a bad one.
//! - Deliveries are not journaled: a FIN (or REQ) of a seq at or after the snapshot's cursor
//!   proves the cursor passed it. Replay moves the cursor past the highest such seq and owes
//!   again every record it skipped that was not FINed (at-least-once).
//! - Replay never moves a cursor past the log's end and ignores ops for seqs the log no longer
//!   has (after a power loss the log may be shorter than the journal's view of it).
//! - Ops of a channel are applied in the order they were recorded (a channel's ops are drained
//!   and written under its lock's order); ops of different channels are independent.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{ChannelSnapshot, EntryKind, SnapshotEntry, StoreError, TopicLog};

const MAGIC: [u8; 4] = *b"FJNL";
const FRAME_HEADER: usize = 12;
const PREFIX: &str = "journal.";

/// One change of a channel's queue state, as journaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalOp {
    /// FIN of `seq`.
    Finish {
        /// The message.
        seq: u64,
    },
    /// REQ (or timeout) of `seq`: owed again with `attempts`, due at `deliver_at_ns` (0 or a
    /// past time: now).
    Requeue {
        /// The message.
        seq: u64,
        /// Deliveries so far.
        attempts: u16,
        /// When it is due again.
        deliver_at_ns: i64,
    },
    /// Channel empty: nothing owed, the cursor at `cursor` (the log's end then).
    Empty {
        /// The new cursor.
        cursor: u64,
    },
}

/// Path of journal generation `gen` in a topic directory.
pub fn journal_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{generation}"))
}

/// An append-only journal file, created at its first write. No file stays open between
/// appends (an idle topic holds no file descriptor).
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    len: u64,
}

impl Journal {
    /// The journal of generation `gen` in `dir`; an existing file is appended to (its length is
    /// recorded as durable for power-loss tests, as segments are at open).
    pub fn open(dir: &Path, generation: u64) -> Result<Journal, StoreError> {
        let path = journal_path(dir, generation);
        let len = match std::fs::metadata(&path) {
            Ok(m) => {
                crate::fault::record_synced(&path, m.len());
                m.len()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(StoreError::io("stat journal", &path, e)),
        };
        Ok(Journal { path, len })
    }

    /// Bytes in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one frame per `(channel, ops)` (channels with no op are skipped), then
    /// fdatasyncs. On error the file may end with part of a frame: the caller must compact
    /// (start a new generation) before appending again.
    pub fn append(&mut self, batches: &[(String, Vec<JournalOp>)]) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        for (name, ops) in batches {
            if !ops.is_empty() {
                encode_frame(&mut buf, name, ops)
                    .map_err(|e| StoreError::io("encode journal", &self.path, e))?;
            }
        }
        if buf.is_empty() {
            return Ok(());
        }
        let mut f: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| StoreError::io("open journal", &self.path, e))?;
        if self.len == 0 {
            // A new file: its directory entry must survive too.
            if let Some(dir) = self.path.parent() {
                crate::sys::fsync_dir(dir)?;
            }
        }
        f.write_all(&buf)
            .map_err(|e| StoreError::io("write journal", &self.path, e))?;
        self.len += buf.len() as u64;
        f.sync_data()
            .map_err(|e| StoreError::io("fdatasync journal", &self.path, e))?;
        crate::fault::record_synced(&self.path, self.len);
        Ok(())
    }
}

fn encode_frame(out: &mut Vec<u8>, name: &str, ops: &[JournalOp]) -> std::io::Result<()> {
    let too_big =
        |e: std::num::TryFromIntError| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    let mut p = Vec::with_capacity(8 + name.len() + ops.len() * 19);
    p.extend_from_slice(&u16::try_from(name.len()).map_err(too_big)?.to_le_bytes());
    p.extend_from_slice(name.as_bytes());
    p.extend_from_slice(&u32::try_from(ops.len()).map_err(too_big)?.to_le_bytes());
    for op in ops {
        match *op {
            JournalOp::Finish { seq } => {
                p.push(0);
                p.extend_from_slice(&seq.to_le_bytes());
            }
            JournalOp::Requeue {
                seq,
                attempts,
                deliver_at_ns,
            } => {
                p.push(1);
                p.extend_from_slice(&seq.to_le_bytes());
                p.extend_from_slice(&attempts.to_le_bytes());
                p.extend_from_slice(&deliver_at_ns.to_le_bytes());
            }
            JournalOp::Empty { cursor } => {
                p.push(2);
                p.extend_from_slice(&cursor.to_le_bytes());
            }
        }
    }
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&u32::try_from(p.len()).map_err(too_big)?.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&p).to_le_bytes());
    out.extend_from_slice(&p);
    Ok(())
}

/// What a journal file held.
#[derive(Debug, Default)]
pub struct JournalContents {
    /// Each channel's ops, in the order they were written.
    pub ops: HashMap<String, Vec<JournalOp>>,
    /// Bytes of whole, valid frames at the start of the file.
    pub valid_bytes: u64,
    /// Bytes after them that were ignored (torn or zeroed tail).
    pub ignored_bytes: u64,
}

/// Reads journal generation `gen` of `dir` (empty if there is none); stops at the first frame
/// that is not whole and valid.
pub fn read_journal(dir: &Path, generation: u64) -> Result<JournalContents, StoreError> {
    let path = journal_path(dir, generation);
    let buf = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(JournalContents::default()),
        Err(e) => return Err(StoreError::io("read journal", &path, e)),
    };
    Ok(decode_journal(&buf))
}

fn decode_journal(buf: &[u8]) -> JournalContents {
    let mut out = JournalContents::default();
    let mut at = 0usize;
    while let Some((name, ops, next)) = decode_frame(buf, at) {
        out.ops.entry(name).or_default().extend(ops);
        at = next;
    }
    out.valid_bytes = at as u64;
    out.ignored_bytes = (buf.len() - at) as u64;
    out
}

fn decode_frame(buf: &[u8], at: usize) -> Option<(String, Vec<JournalOp>, usize)> {
    let header = buf.get(at..at.checked_add(FRAME_HEADER)?)?;
    if header[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(header[4..8].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[8..12].try_into().ok()?);
    if len == 0 {
        return None;
    }
    let start = at + FRAME_HEADER;
    let payload = buf.get(start..start.checked_add(len)?)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let mut r = payload;
    let name_len = u16::from_le_bytes(take(&mut r)?) as usize;
    let name = std::str::from_utf8(take_n(&mut r, name_len)?)
        .ok()?
        .to_owned();
    let n = u32::from_le_bytes(take(&mut r)?) as usize;
    let mut ops = Vec::with_capacity(n.min(r.len() / 9));
    for _ in 0..n {
        let tag = take::<1>(&mut r)?[0];
        let seq = u64::from_le_bytes(take(&mut r)?);
        ops.push(match tag {
            0 => JournalOp::Finish { seq },
            1 => JournalOp::Requeue {
                seq,
                attempts: u16::from_le_bytes(take(&mut r)?),
                deliver_at_ns: i64::from_le_bytes(take(&mut r)?),
            },
            2 => JournalOp::Empty { cursor: seq },
            _ => return None,
        });
    }
    if !r.is_empty() {
        return None;
    }
    Some((name, ops, start + len))
}

fn take_n<'a>(r: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if n > r.len() {
        return None;
    }
    let (head, rest) = r.split_at(n);
    *r = rest;
    Some(head)
}

fn take<const N: usize>(r: &mut &[u8]) -> Option<[u8; N]> {
    take_n(r, N)?.try_into().ok()
}

/// Removes every `journal.*` file of `dir` except generation `keep` (leftovers of a compaction
/// interrupted between its metadata save and the old journal's deletion). Returns how many.
pub fn remove_other_journals(dir: &Path, keep: u64) -> Result<usize, StoreError> {
    let keep_name = format!("{PREFIX}{keep}");
    let mut removed = 0;
    let entries = std::fs::read_dir(dir).map_err(|e| StoreError::io("list topic dir", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("list topic dir", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(PREFIX) && name != keep_name {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| StoreError::io("remove journal", &path, e))?;
            removed += 1;
        }
    }
    if removed > 0 {
        crate::sys::fsync_dir(dir)?;
    }
    Ok(removed)
}

/// Applies a channel's journaled ops, in order, to its snapshot, against the log as it is now:
///
/// - FIN removes the entry; a FIN of a seq at or after the snapshot's cursor marks it done.
/// - REQ / timeout makes the seq owed with its attempts, deferred until its `deliver_at_ns`
///   when that is set (a past time is due at once).
/// - Empty drops every entry and moves the cursor to its position.
///
/// Then the cursor moves to the highest journaled seq + 1 (never past the log's end), and every
/// record it skipped that is not done becomes owed: in flight (so redelivered) with one
/// attempt, or, for a record deferred by its publisher (DPUB), deferred until its due time
/// with none. Ops for seqs at or after the log's end are ignored. The result still goes through
/// [`crate::ChannelState::restore`], which repairs it against the log.
pub fn replay(snapshot: ChannelSnapshot, ops: &[JournalOp], log: &TopicLog) -> ChannelSnapshot {
    let end = log.next_seq();
    let mut cursor = snapshot.cursor.min(end);
    let mut entries: BTreeMap<u64, SnapshotEntry> =
        snapshot.entries.into_iter().map(|e| (e.seq, e)).collect();
    let mut done: HashSet<u64> = HashSet::new();
    let mut high = cursor;
    for op in ops {
        match *op {
            JournalOp::Finish { seq } => {
                if seq >= end {
                    continue;
                }
                entries.remove(&seq);
                if seq >= cursor {
                    done.insert(seq);
                    high = high.max(seq + 1);
                }
            }
            JournalOp::Requeue {
                seq,
                attempts,
                deliver_at_ns,
            } => {
                if seq >= end {
                    continue;
                }
                done.remove(&seq);
                high = high.max(seq + 1);
                let kind = if deliver_at_ns > 0 {
                    EntryKind::Deferred
                } else {
                    EntryKind::Requeued
                };
                entries.insert(
                    seq,
                    SnapshotEntry {
                        seq,
                        attempts,
                        deliver_at_ns,
                        kind,
                    },
                );
            }
            JournalOp::Empty { cursor: to } => {
                entries.clear();
                done.clear();
                cursor = to.min(end);
                high = cursor;
            }
        }
    }
    let first = log.first_seq();
    for seq in cursor.max(first)..high {
        if done.contains(&seq) || entries.contains_key(&seq) {
            continue;
        }
        let deliver_at = match log.read(seq) {
            Ok(Some(r)) => r.deliver_at_ns,
            Ok(None) => continue, // a gap (corrupt record skipped)
            Err(e) => {
                tracing::warn!(seq, error = %e, "cannot read a replayed record; owing it");
                0
            }
        };
        let entry = if deliver_at > 0 {
            SnapshotEntry {
                seq,
                attempts: 0,
                deliver_at_ns: deliver_at,
                kind: EntryKind::Deferred,
            }
        } else {
            SnapshotEntry {
                seq,
                attempts: 1,
                deliver_at_ns: 0,
                kind: EntryKind::InFlight,
            }
        };
        entries.insert(seq, entry);
    }
    ChannelSnapshot {
        cursor: high.max(cursor),
        entries: entries.into_values().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_stop_at_a_bad_tail() {
        let mut buf = Vec::new();
        let a = vec![
            JournalOp::Finish { seq: 7 },
            JournalOp::Requeue {
                seq: 8,
                attempts: 3,
                deliver_at_ns: 99,
            },
            JournalOp::Empty { cursor: 12 },
        ];
        encode_frame(&mut buf, "a", &a).unwrap();
        encode_frame(&mut buf, "b", &[JournalOp::Finish { seq: 1 }]).unwrap();
        let whole = buf.len();
        let c = decode_journal(&buf);
        assert_eq!(c.ops["a"], a);
        assert_eq!(c.ops["b"], vec![JournalOp::Finish { seq: 1 }]);
        assert_eq!(c.valid_bytes, whole as u64);

        // Zero-filled tail (a file extended but not written before the power went).
        let mut zeroed = buf.clone();
        zeroed.extend_from_slice(&[0u8; 64]);
        let c = decode_journal(&zeroed);
        assert_eq!(c.valid_bytes, whole as u64);
        assert_eq!(c.ignored_bytes, 64);

        // Torn last frame: every cut inside it leaves the first frame only.
        let mut first = Vec::new();
        encode_frame(&mut first, "a", &a).unwrap();
        for cut in first.len()..whole {
            let c = decode_journal(&buf[..cut]);
            assert_eq!(c.valid_bytes, first.len() as u64, "cut at {cut}");
            assert!(!c.ops.contains_key("b"));
        }

        // A flipped byte in the payload fails the CRC.
        let mut bad = buf.clone();
        bad[whole - 1] ^= 0xff;
        assert_eq!(decode_journal(&bad).valid_bytes, first.len() as u64);
    }
}
