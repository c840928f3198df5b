//! One segment file of a topic log.
//!
//! ```text
//!  <dir>/<base_seq, 20 digits>.seg: starts at INITIAL_ALLOC bytes (or what its first records
//!  need) and grows up to its capacity (max_bytes_per_file, or one oversized record)
//!
//!  0        8         12        16                24        28        32
//!  +--------+---------+---------+-----------------+---------+---------+-----------+-----+---------+
//!  | magic  | version | flags=0 | base_seq u64 LE | rsvd=0  | crc32   | record... | ... | zeros.. |
//!  |FERRYSEG| u32 LE  | u32     |                 | u32     | of 0..28|           |     |         |
//!  +--------+---------+---------+-----------------+---------+---------+-----------+-----+---------+
//!  |<------------------------ allocated: the file's length, only grows ----------------------->|
//!  |<------------------------ capacity: the writer's map (address space) -------------------------- ...>|
//! ```
//!
//! Invariants:
//! - A segment file is created as `<name>.tmp`, allocated for real (`fallocate`, never
//!   sparse), given its header and only then renamed into place.
//! - Its allocated length (`allocated`, = its file length) only grows, by [`alloc_target`]
//!   steps, and only while it is the active segment, before the writer writes there; its
//!   capacity is fixed. Files of any length from a header up to capacity are valid (files
//!   written before segments grew have their full length).
//! - The file is never truncated (see `map.rs`); recovery zeroes garbage instead.
//! - `committed` (a byte offset, never above `allocated`) only grows, and is stored with
//!   `Release` after the bytes below it are written; once `sealed` is set it never changes
//!   again, nor does `allocated`.
//! - `holes` (corrupt ranges found by recovery) and `start_seq` are fixed at construction;
//!   each hole starts exactly where the record chain expected a record, so a reader that
//!   steps record by record lands on its start and jumps to its end.
//! - The sparse index holds `(seq, offset)` of every 64th record; offsets point at valid
//!   records, so a lookup plus a short forward scan finds any record.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use bytes::Bytes;

use crate::StoreError;
use crate::map::{MapSlice, SegMap};
use crate::record::{MIN_LEN, RECORD_HEADER, Record, RecordHeader};
use crate::sys::allocate;

/// Size of the segment header; the first record starts here.
pub(crate) const SEGMENT_HEADER: u64 = 32;
const MAGIC: [u8; 8] = *b"FERRYSEG";
const VERSION: u32 = 1;
/// One sparse-index entry per this many records.
pub(crate) const INDEX_EVERY: u64 = 64;
/// Bytes a new segment file starts with (unless its first records need more): an idle topic
/// costs this much, not a whole segment.
pub(crate) const INITIAL_ALLOC: u64 = 64 << 10;
/// Largest single growth step of a segment file: growth doubles the file up to this step.
pub(crate) const MAX_GROWTH_STEP: u64 = 16 << 20;

/// The length to grow a file of `allocated` bytes to so that it holds `need` bytes: at least
/// [`INITIAL_ALLOC`], doubling, each step at most [`MAX_GROWTH_STEP`], never past `capacity`
/// (and never below `allocated`). A 100 MiB segment takes its first allocation and 14 steps.
pub(crate) fn alloc_target(allocated: u64, need: u64, capacity: u64) -> u64 {
    let mut t = allocated.max(INITIAL_ALLOC);
    while t < need {
        t = t.saturating_add(t.min(MAX_GROWTH_STEP));
    }
    t.min(capacity).max(allocated)
}

/// File name of the segment whose first seq is `base`.
pub(crate) fn file_name(base: u64) -> String {
    format!("{base:020}.seg")
}

/// `<path>.tmp`: where a segment lives until it is adopted.
fn pending_path_for(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".tmp");
    PathBuf::from(p)
}

/// Inverse of [`file_name`]; `None` for any other name.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Encodes a segment header.
pub(crate) fn encode_header(base: u64) -> [u8; SEGMENT_HEADER as usize] {
    let mut h = [0u8; SEGMENT_HEADER as usize];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&base.to_le_bytes());
    let crc = crc32fast::hash(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Decodes a segment header: the base seq, or `None` if magic, version or CRC is wrong.
pub(crate) fn decode_header(h: &[u8; SEGMENT_HEADER as usize]) -> Option<u64> {
    let crc = u32::from_le_bytes([h[28], h[29], h[30], h[31]]);
    if h[0..8] != MAGIC || crc32fast::hash(&h[0..28]) != crc {
        return None;
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != VERSION {
        return None;
    }
    let mut base = [0u8; 8];
    base.copy_from_slice(&h[16..24]);
    Some(u64::from_le_bytes(base))
}

/// A corrupt byte range skipped by recovery: `[start, resume)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hole {
    pub start: u64,
    pub resume: u64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexEntry {
    pub seq: u64,
    pub off: u64,
}

/// What recovery learned about a segment.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    pub start_seq: u64,
    pub end_seq: u64,
    pub committed: u64,
    pub records: u64,
    pub holes: Vec<Hole>,
    pub index: Vec<IndexEntry>,
}

/// Shared state of one segment; held in the log's segment list and by readers.
#[derive(Debug)]
pub(crate) struct Segment {
    /// First seq this segment may hold (from its header and name).
    pub base: u64,
    pub path: PathBuf,
    /// Most bytes the file may grow to (the length of the writer's map).
    pub capacity: u64,
    /// Bytes allocated in the file (its length as far as this log knows): grows only while
    /// the segment is active, before anything is written there (`Release`/`Acquire`).
    allocated: AtomicU64,
    /// Header unreadable: the segment holds nothing readable and is kept only until
    /// `retain_from` deletes it.
    pub bad: bool,
    /// Seq of the first record (`base` if none).
    pub start_seq: u64,
    committed: AtomicU64,
    end_seq: AtomicU64,
    sealed: AtomicBool,
    holes: Vec<Hole>,
    index: RwLock<Vec<IndexEntry>>,
    map: Mutex<Weak<SegMap>>,
}

impl Segment {
    /// A segment recovered from disk: a file of `allocated` bytes that may grow to
    /// `capacity` (`>= allocated`) if it becomes the active segment.
    pub fn recovered(
        base: u64,
        path: PathBuf,
        capacity: u64,
        allocated: u64,
        r: Recovered,
    ) -> Segment {
        Segment {
            base,
            path,
            capacity: capacity.max(allocated),
            allocated: AtomicU64::new(allocated),
            bad: false,
            start_seq: r.start_seq,
            committed: AtomicU64::new(r.committed),
            end_seq: AtomicU64::new(r.end_seq),
            sealed: AtomicBool::new(false),
            holes: r.holes,
            index: RwLock::new(r.index),
            map: Mutex::new(Weak::new()),
        }
    }

    /// A segment whose header could not be read.
    pub fn bad(base: u64, path: PathBuf, file_len: u64) -> Segment {
        Segment {
            bad: true,
            sealed: AtomicBool::new(true),
            ..Segment::recovered(
                base,
                path,
                file_len,
                file_len,
                Recovered {
                    start_seq: base,
                    end_seq: base,
                    ..Recovered::default()
                },
            )
        }
    }

    /// Creates and maps a new empty segment file `<dir>/<base>.seg` that can grow to
    /// `capacity` bytes, with `[0, alloc_target(0, need, capacity))` allocated for real. Out
    /// of space is [`StoreError::DiskFull`]; on any error no file is left behind.
    pub fn create(
        dir: &Path,
        base: u64,
        capacity: u64,
        need: u64,
    ) -> Result<(Arc<Segment>, Arc<SegMap>, File), StoreError> {
        let (seg, map, file) = Segment::create_pending(dir, base, capacity, need)?;
        if let Err(e) = seg.adopt() {
            let _ = std::fs::remove_file(seg.pending_path());
            return Err(e);
        }
        Ok((seg, map, file))
    }

    /// Like [`Segment::create`], but the file keeps its temporary name
    /// ([`Segment::pending_path`]) until [`Segment::adopt`]: recovery deletes such a file, so a
    /// segment that a batch opened is not part of the log unless the batch committed.
    pub fn create_pending(
        dir: &Path,
        base: u64,
        capacity: u64,
        need: u64,
    ) -> Result<(Arc<Segment>, Arc<SegMap>, File), StoreError> {
        let path = dir.join(file_name(base));
        let tmp = pending_path_for(&path);
        let allocated = alloc_target(0, need.max(SEGMENT_HEADER), capacity);
        let result = (|| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(|e| StoreError::io("create segment", &tmp, e))?;
            allocate(&file, 0, allocated)
                .map_err(|e| StoreError::io("allocate segment", &tmp, e))?;
            file.write_all_at(&encode_header(base), 0)
                .map_err(|e| StoreError::io("write segment header", &tmp, e))?;
            let map =
                SegMap::map(&file, capacity).map_err(|e| StoreError::io("map segment", &tmp, e))?;
            Ok((file, map))
        })();
        let (file, map) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let seg = Segment::recovered(
            base,
            path,
            capacity,
            allocated,
            Recovered {
                start_seq: base,
                end_seq: base,
                committed: SEGMENT_HEADER,
                ..Recovered::default()
            },
        );
        let map = Arc::new(map);
        seg.remember_map(&map);
        Ok((Arc::new(seg), map, file))
    }

    /// The segment's map, shared with every other user of this segment; mapped on demand
    /// and unmapped when the last user drops it. While a segment is active the writer holds
    /// its map (mapped at capacity, growing in place), so everyone shares that one. A map made
    /// here is of a segment that no longer grows (sealed) or not yet (on open): its
    /// accessible length is the file's length, read from the file itself, which is right
    /// whatever this thread last saw of `allocated`. Unsealed segments are mapped at capacity
    /// so that they can grow.
    pub fn map(&self) -> Result<Arc<SegMap>, StoreError> {
        let mut slot = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(map) = slot.upgrade() {
            return Ok(map);
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|e| StoreError::io("open segment", &self.path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| StoreError::io("stat segment", &self.path, e))?
            .len();
        let len = if self.is_sealed() {
            file_len
        } else {
            self.capacity.max(file_len)
        };
        let map =
            SegMap::map(&file, len).map_err(|e| StoreError::io("map segment", &self.path, e))?;
        let map = Arc::new(map);
        *slot = Arc::downgrade(&map);
        Ok(map)
    }

    /// Bytes allocated in the file (`Acquire`).
    pub fn allocated(&self) -> u64 {
        self.allocated.load(Ordering::Acquire)
    }

    /// Makes `[0, need)` writable (`need <= capacity`): grows the file and `map` (this
    /// segment's map, the writer's) to [`alloc_target`] if it is shorter, opening the file
    /// for that moment only.
    /// On error (out of space: [`StoreError::DiskFull`]) the segment is as it was.
    pub fn reserve(&self, map: &SegMap, need: u64) -> Result<(), StoreError> {
        let allocated = self.allocated();
        if need <= allocated {
            return Ok(());
        }
        let target = alloc_target(allocated, need, self.capacity);
        // Opened for the growth only: the writer holds no file between appends.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|e| StoreError::io("open segment", &self.path, e))?;
        map.grow(&file, target)
            .map_err(|e| StoreError::io("grow segment", &self.path, e))?;
        self.allocated.store(target, Ordering::Release);
        Ok(())
    }

    /// The temporary name of a segment made by [`Segment::create_pending`].
    pub fn pending_path(&self) -> PathBuf {
        pending_path_for(&self.path)
    }

    /// Gives a pending segment its real name, making it part of the log on disk.
    pub fn adopt(&self) -> Result<(), StoreError> {
        std::fs::rename(self.pending_path(), &self.path)
            .map_err(|e| StoreError::io("rename segment", &self.path, e))
    }

    /// Lets later [`Segment::map`] calls share `map`.
    pub fn remember_map(&self, map: &Arc<SegMap>) {
        *self.map.lock().unwrap_or_else(PoisonError::into_inner) = Arc::downgrade(map);
    }

    /// End of the readable records (`Acquire`).
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// One past the last committed record's seq.
    pub fn end_seq(&self) -> u64 {
        self.end_seq.load(Ordering::Acquire)
    }

    /// Makes records up to byte `committed` (seqs below `end_seq`) readable.
    pub fn publish(&self, committed: u64, end_seq: u64) {
        self.end_seq.store(end_seq, Ordering::Release);
        self.committed.store(committed, Ordering::Release);
    }

    /// Marks the segment as complete: no record will be added.
    pub fn seal(&self) {
        self.sealed.store(true, Ordering::Release);
    }

    /// Whether the segment is complete.
    pub fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    /// If a corrupt range starts at `off`, the offset of the next valid record.
    pub fn hole_at(&self, off: u64) -> Option<u64> {
        if self.holes.is_empty() {
            return None;
        }
        self.holes
            .binary_search_by_key(&off, |h| h.start)
            .ok()
            .map(|i| self.holes[i].resume)
    }

    /// Records `(seq, off)` in the sparse index.
    pub fn index_push(&self, seq: u64, off: u64) {
        self.index
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(IndexEntry { seq, off });
    }

    /// Offset of the last indexed record with a seq `<= seq` (or of the first record).
    pub fn index_lookup(&self, seq: u64) -> u64 {
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        let i = index.partition_point(|e| e.seq <= seq);
        if i == 0 {
            SEGMENT_HEADER
        } else {
            index[i - 1].off
        }
    }
}

/// Decodes the header of the record at `off` if the whole record lies below `committed`;
/// `None` means no (sane) record there.
pub(crate) fn header_at(map: &SegMap, off: u64, committed: u64) -> Option<RecordHeader> {
    if off.checked_add(RECORD_HEADER as u64)? > committed {
        return None;
    }
    // SAFETY: the range is below the segment's committed offset (checked above, `committed`
    // was loaded with Acquire or comes from the writer itself), so it is immutable.
    let bytes = unsafe { map.slice(off, RECORD_HEADER) }?;
    let h = RecordHeader::decode(bytes.try_into().ok()?);
    if h.len < MIN_LEN || off.checked_add(h.stride())? > committed {
        return None;
    }
    Some(h)
}

/// The record at `off` whose header is `h` (from [`header_at`] with the same `committed`).
pub(crate) fn record_at(map: &Arc<SegMap>, off: u64, h: &RecordHeader) -> Record {
    let body_len = h.body_len();
    let body = if body_len == 0 {
        Bytes::new()
    } else {
        // SAFETY: `header_at` checked that the whole record lies below the committed offset,
        // so the body range is immutable for the map's lifetime.
        match unsafe { MapSlice::new(map.clone(), off + RECORD_HEADER as u64, body_len) } {
            Some(slice) => Bytes::from_owner(slice),
            None => Bytes::new(),
        }
    };
    Record {
        seq: h.seq,
        timestamp_ns: h.timestamp_ns,
        deliver_at_ns: h.deliver_at_ns,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_headers() {
        assert_eq!(file_name(42), "00000000000000000042.seg");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("0042.seg"), None);
        assert_eq!(parse_file_name("0000000000000000004x.seg"), None);
        let mut h = encode_header(7);
        assert_eq!(decode_header(&h), Some(7));
        h[17] ^= 1;
        assert_eq!(decode_header(&h), None);
    }

    #[test]
    fn growth_doubles_in_capped_steps_up_to_capacity() {
        const MIB: u64 = 1 << 20;
        assert_eq!(alloc_target(0, SEGMENT_HEADER, 100 * MIB), INITIAL_ALLOC);
        assert_eq!(alloc_target(0, 100, 4096), 4096);
        assert_eq!(
            alloc_target(INITIAL_ALLOC, INITIAL_ALLOC + 1, MIB),
            2 * INITIAL_ALLOC
        );
        assert_eq!(alloc_target(INITIAL_ALLOC, 300 << 10, MIB), 512 << 10);
        assert_eq!(alloc_target(16 * MIB, 16 * MIB + 1, 100 * MIB), 32 * MIB);
        assert_eq!(alloc_target(96 * MIB, 97 * MIB, 100 * MIB), 100 * MIB);
        assert_eq!(
            alloc_target(200 << 10, 100, MIB),
            200 << 10,
            "never shrinks"
        );
        assert_eq!(
            alloc_target(5000, 6000, 8000),
            8000,
            "a short file gets the first step"
        );
        // An odd length left by a crash keeps growing.
        assert_eq!(alloc_target(70_001, 70_002, MIB), 140_002);
        let mut steps = 0;
        let mut len = 0;
        while len < 100 * MIB {
            len = alloc_target(len, len + 1, 100 * MIB);
            steps += 1;
        }
        assert_eq!(steps, 15, "first allocation + 14 growth steps");
    }
}
