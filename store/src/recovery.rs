//! Recovery: rebuilding a log's in-memory state from its segment files on open.
//!
//! The scan trusts nothing but what it can verify: a segment counts only if its header has
//! the right magic, version and CRC (and matches its file name); a record counts only if
//! its `len` is sane, its CRC matches and its `seq` is plausible (strictly increasing across
//! the whole log, and no larger than the number of records that could fit in the bytes
//! skipped since the last good one). Whatever the files hold, recovery never panics.
//!
//! - `len == 0` where a record is expected is the end of written data.
//! - A bad record followed by a valid one in the same segment is a *hole*: skipped,
//!   counted, and remembered so readers jump over it.
//! - A bad record with nothing valid after it is a *torn tail*: its bytes (up to the last
//!   non-zero word) are zeroed so appends continue at its start. In the last segment it is
//!   reported as `torn_tail_bytes`; in an earlier one as a corrupt record.
//! - A segment with a bad header is kept in the list as unreadable (readers skip it,
//!   `retain_from` deletes it) and counted.
//!
//! A segment file may have any length from a header up to its capacity (segments grow; a
//! power loss can keep a size change whose data never reached the disk, which then reads
//! as zeros or a torn record). The scan and the repair stay within the file's length.
//!
//! Recovery runs before the log is shared, so it may read and write any part of a map.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::StoreError;
use crate::map::SegMap;
use crate::record::{ALIGN, MIN_LEN, RECORD_HEADER, RecordHeader, checksum, stride_for_len};
use crate::segment::{
    Hole, INDEX_EVERY, IndexEntry, Recovered, SEGMENT_HEADER, Segment, decode_header,
    parse_file_name,
};
use crate::sys::fill_holes;

/// What recovery found when a log was opened.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files found (readable or not).
    pub segments: usize,
    /// Valid records found.
    pub records: u64,
    /// Bytes of a torn record cut off the end of the log (zeroed so appends continue there).
    pub torn_tail_bytes: u64,
    /// Corrupt regions skipped (each is one or more unreadable records).
    pub corrupt_records_skipped: u64,
    /// Bytes in those regions.
    pub corrupt_bytes_skipped: u64,
    /// Segment files with an unreadable header, skipped whole.
    pub bad_segments_skipped: usize,
}

/// The state recovered from a directory.
#[derive(Debug)]
pub(crate) struct RecoveredLog {
    /// Segments in seq order; empty if the directory held none.
    pub segments: Vec<Arc<Segment>>,
    /// One past the largest seq used by any segment; `None` if there were no segments.
    pub next_seq: Option<u64>,
    /// Records in the last segment (if it is readable), to continue its sparse index.
    pub last_records: u64,
    pub report: RecoveryReport,
}

/// Bytes scanned between `MADV_DONTNEED` calls, keeping RSS bounded during recovery.
const ADVISE_CHUNK: u64 = 4 << 20;

/// Scans every segment in `dir`; `capacity` is how far a segment may grow (if it is the
/// last one, the writer grows it from its current length).
pub(crate) fn recover(dir: &Path, capacity: u64) -> Result<RecoveredLog, StoreError> {
    let mut bases = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| StoreError::io("read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("read directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(base) = parse_file_name(name) {
            bases.push(base);
        } else if name.ends_with(".seg.tmp") {
            // A segment whose creation was interrupted: never part of the log.
            let path = entry.path();
            std::fs::remove_file(&path)
                .map_err(|e| StoreError::io("remove partial segment", &path, e))?;
        }
    }
    bases.sort_unstable();

    let mut report = RecoveryReport {
        segments: bases.len(),
        ..RecoveryReport::default()
    };
    let mut segments = Vec::with_capacity(bases.len());
    let mut tails = Vec::with_capacity(bases.len());
    let mut expect = 0u64; // smallest seq the next record may have
    let mut next_seq: Option<u64> = None;
    let mut last_records = 0;
    for base in bases {
        let path = dir.join(crate::segment::file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io("open segment", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| StoreError::io("stat segment", &path, e))?
            .len();
        if read_header(&file, len) != Some(base) {
            tracing::warn!(path = %path.display(), "segment header unreadable; skipping segment");
            report.bad_segments_skipped += 1;
            next_seq = Some(next_seq.unwrap_or(0).max(base.saturating_add(1)));
            segments.push(Arc::new(Segment::bad(base, path, len)));
            tails.push(0);
            continue;
        }
        // The file's length, whatever it is (a header up to a full segment), bounds the
        // scan and the repair: the map covers exactly the file.
        let map = SegMap::map(&file, len).map_err(|e| StoreError::io("map segment", &path, e))?;
        let scan = scan(&map, expect.max(base));
        if let Some((start, end)) = scan.zero {
            // Zeroing writes through the map: make sure the range has no holes first.
            fill_holes(&file, start, end - start)
                .map_err(|e| StoreError::io("allocate segment", &path, e))?;
            // SAFETY: recovery is exclusive (the log is not shared yet) and no slice of this
            // map is alive any more.
            unsafe { map.zero(start, (end - start) as usize) };
            tracing::warn!(path = %path.display(), offset = start, bytes = end - start,
                "cut off an unreadable tail");
        }
        map.dont_need(0, len);
        drop(map);
        if scan.corrupt_regions > 0 {
            tracing::warn!(path = %path.display(), regions = scan.corrupt_regions,
                bytes = scan.corrupt_bytes, "skipped corrupt records");
        }
        report.records += scan.rec.records;
        report.corrupt_records_skipped += scan.corrupt_regions;
        report.corrupt_bytes_skipped += scan.corrupt_bytes;
        expect = scan.rec.end_seq;
        next_seq = Some(next_seq.unwrap_or(0).max(scan.rec.end_seq));
        last_records = scan.rec.records;
        tails.push(scan.tail_garbage);
        segments.push(Arc::new(Segment::recovered(
            base, path, capacity, len, scan.rec,
        )));
    }
    // A torn tail is at the end of the log only in the last, readable segment.
    let last_good = segments.last().is_some_and(|s| !s.bad);
    for (i, tail) in tails.iter().copied().enumerate() {
        if tail == 0 {
            continue;
        }
        if last_good && i + 1 == tails.len() {
            report.torn_tail_bytes += tail;
        } else {
            report.corrupt_records_skipped += 1;
            report.corrupt_bytes_skipped += tail;
        }
    }
    Ok(RecoveredLog {
        segments,
        next_seq,
        last_records: if last_good { last_records } else { 0 },
        report,
    })
}

fn read_header(file: &File, len: u64) -> Option<u64> {
    if len < SEGMENT_HEADER + RECORD_HEADER as u64 {
        return None;
    }
    let mut h = [0u8; SEGMENT_HEADER as usize];
    file.read_exact_at(&mut h, 0).ok()?;
    decode_header(&h)
}

/// Result of scanning one segment.
#[derive(Debug, Default)]
struct Scan {
    rec: Recovered,
    corrupt_regions: u64,
    corrupt_bytes: u64,
    /// Bytes of the unreadable tail.
    tail_garbage: u64,
    /// Range to zero (the unreadable tail).
    zero: Option<(u64, u64)>,
}

fn accept(out: &mut Scan, h: &RecordHeader, at: u64, expect: &mut u64) {
    if out.rec.records == 0 {
        out.rec.start_seq = h.seq;
    }
    if out.rec.records.is_multiple_of(INDEX_EVERY) {
        out.rec.index.push(IndexEntry {
            seq: h.seq,
            off: at,
        });
    }
    out.rec.records += 1;
    *expect = h.seq.saturating_add(1);
    out.rec.end_seq = *expect;
}

/// Walks the record chain of one segment; `first` is the smallest acceptable seq.
fn scan(map: &SegMap, first: u64) -> Scan {
    // SAFETY: recovery is exclusive; nothing writes to the map while `data` lives (the
    // zeroing of a torn tail happens after this function returns).
    let Some(data) = (unsafe { map.slice(0, map.accessible() as usize) }) else {
        return Scan::default();
    };
    let cap = data.len() as u64;
    let mut out = Scan {
        rec: Recovered {
            start_seq: first,
            end_seq: first,
            committed: SEGMENT_HEADER,
            ..Recovered::default()
        },
        ..Scan::default()
    };
    let mut expect = first;
    let mut off = SEGMENT_HEADER;
    let mut advised = 0u64;
    loop {
        if off >= advised + 2 * ADVISE_CHUNK {
            map.dont_need(advised, ADVISE_CHUNK);
            advised += ADVISE_CHUNK;
        }
        let Some(len) = word(data, off).map(|w| w as u32) else {
            break;
        };
        if len == 0 {
            break;
        }
        if let Some(h) = candidate(data, off, expect, 0) {
            accept(&mut out, &h, off, &mut expect);
            off += h.stride();
            continue;
        }
        // Corrupt record at `off`: look for the next valid one.
        let start = off;
        let mut nonzero_end = off + ALIGN;
        let mut p = off + ALIGN;
        let mut found = None;
        while let Some(w) = word(data, p) {
            if w != 0 {
                nonzero_end = p + ALIGN;
                if let Some(h) = candidate(data, p, expect, p - start) {
                    found = Some(h);
                    break;
                }
            }
            p += ALIGN;
            if p >= advised + 2 * ADVISE_CHUNK {
                map.dont_need(advised, ADVISE_CHUNK);
                advised += ADVISE_CHUNK;
            }
        }
        match found {
            Some(h) => {
                out.rec.holes.push(Hole { start, resume: p });
                out.corrupt_regions += 1;
                out.corrupt_bytes += p - start;
                accept(&mut out, &h, p, &mut expect);
                off = p + h.stride();
            }
            None => {
                out.tail_garbage = nonzero_end - start;
                out.zero = Some((start, nonzero_end));
                off = start;
                break;
            }
        }
    }
    out.rec.committed = off.min(cap);
    out
}

/// The little-endian u64 at `off` (its low half is a record's `len`), if in bounds.
fn word(data: &[u8], off: u64) -> Option<u64> {
    let off = usize::try_from(off).ok()?;
    let bytes = data.get(off..off.checked_add(8)?)?;
    let mut w = [0u8; 8];
    w.copy_from_slice(bytes);
    Some(u64::from_le_bytes(w))
}

/// The record at `off` if it is valid and its seq is plausible: at least `expect`, and at
/// most one more than the number of minimal records fitting in the `skipped` bytes.
fn candidate(data: &[u8], off: u64, expect: u64, skipped: u64) -> Option<RecordHeader> {
    let start = usize::try_from(off).ok()?;
    let head: &[u8; RECORD_HEADER] = data.get(start..start + RECORD_HEADER)?.try_into().ok()?;
    let h = RecordHeader::decode(head);
    if h.len < MIN_LEN {
        return None;
    }
    let end = off.checked_add(stride_for_len(h.len))?;
    if end > data.len() as u64 {
        return None;
    }
    let max_seq = expect.saturating_add(skipped / stride_for_len(MIN_LEN));
    if h.seq < expect || h.seq > max_seq {
        return None;
    }
    let body_end = start + 8 + h.len as usize;
    if checksum(&head[8..], &data[start + RECORD_HEADER..body_end]) != h.crc {
        return None;
    }
    Some(h)
}
