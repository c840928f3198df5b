//! The disk-backed topic log: a list of segments, one writer, lock-free readers.
//!
//! Invariants:
//! - Only the holder of the writer mutex writes into a map, and only at or above the
//!   active segment's committed offset.
//! - Visibility is published in this order: record bytes, sparse-index entries, new segments
//!   pushed into the list, each touched segment's committed offset (then its seal), and
//!   finally the log's `next_seq` (`Release`). Readers load `next_seq` (`Acquire`) first and
//!   never return a record with a seq at or above it, which is what makes a batch appear all
//!   at once even when it spans segments.
//! - The list is ordered by base seq; only its last segment is unsealed outside an append,
//!   and `retain_from` never removes the last one.
//! - An append runs four named steps: [`DiskLog::plan`], [`write`], [`commit`],
//!   [`DiskLog::publish`]. Only `plan` allocates disk space (growing the active segment's
//!   file, creating new segments under temporary names), before any byte of the batch is
//!   written, so running out of space leaves the log's records exactly as they were (a growth
//!   that succeeded is kept and used by the next append). The one exception comes even
//!   earlier: an empty active segment too small for the first record is replaced.
//! - Segments start small and grow, except after a hot segment (filled within `HOT_FILL` of
//!   becoming active): the next one is allocated whole, since the kernel serves a file grown
//!   while mapped with more, smaller page faults and a hot writer would pay for them.
//! - Lock order: writer, then segment list. `sync` holds its own mutex and takes the writer
//!   lock only briefly, never across `msync`/`fsync`.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::fault;
use crate::map::{SegMap, page_size};
use crate::record::{
    MAX_BODY, NewRecord, RECORD_HEADER, Record, encode_header, stride_for_body, stride_for_len,
};
use crate::recovery::{RecoveryReport, recover};
use crate::segment::{INDEX_EVERY, SEGMENT_HEADER, Segment, header_at, record_at};
use crate::sys::{DirLock, fill_holes, fsync_dir};
use crate::{LogOptions, LogStats, StoreError};

/// A segment filled within this time after it became active marks its topic as hot: the
/// segments that follow are allocated whole (see `plan`).
const HOT_FILL: Duration = Duration::from_secs(60);

/// Resident bytes the writer (and each reader) keeps mapped behind its position before
/// dropping them with `MADV_DONTNEED`.
pub(crate) const ADVISE_CHUNK: u64 = 4 << 20;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The writer's state.
#[derive(Debug)]
struct Writer {
    seg: Arc<Segment>,
    map: Arc<SegMap>,
    /// Write position in `seg` (= its committed offset between appends).
    off: u64,
    next_seq: u64,
    /// Records in `seg`, for sparse-index sampling.
    seg_records: u64,
    /// Start of the part of `seg` still resident (not yet `MADV_DONTNEED`).
    advised: u64,
    /// `seg` is msynced up to here.
    synced_off: u64,
    unsynced: u64,
    unsynced_since: Option<Instant>,
    /// Sealed since the last sync; need an fsync.
    to_fsync: Vec<Arc<Segment>>,
    /// Segment files created or deleted since the last sync.
    dir_dirty: bool,
    closed: bool,
    /// When `seg` became the active segment (opened, created or replaced).
    seg_since: Instant,
}

/// Where a batch goes: first the rest of the active segment, then new segments.
struct Plan {
    /// Records `[0, active_recs)` of the batch go into the active segment, which then ends
    /// at byte `active_end`.
    active_recs: usize,
    active_end: u64,
    /// Segments created for the other records, in order (none for most batches).
    planned: Vec<Planned>,
}

/// A segment created for a batch, not yet published.
struct Planned {
    seg: Arc<Segment>,
    map: Arc<SegMap>,
    /// The records of the batch that go here; they end at byte `end_off`.
    recs: Range<usize>,
    end_off: u64,
}

impl Plan {
    /// The map of part `k`: 0 is the active segment, `j` is `planned[j - 1]`.
    fn map<'a>(&'a self, w: &'a Writer, k: usize) -> &'a SegMap {
        match k {
            0 => &w.map,
            j => &self.planned[j - 1].map,
        }
    }

    /// Where the batch ends, in the last segment it touches.
    fn end_off(&self) -> u64 {
        self.planned.last().map_or(self.active_end, |p| p.end_off)
    }
}

/// What [`write`] leaves for [`commit`].
struct Written {
    /// Part (as in [`Plan::map`]), offset and `len` of the batch's first record: storing that
    /// `len` is the commit point.
    first: (usize, u64, u32),
    /// Sparse-index entries `(part, seq, offset)`, added once the batch is committed.
    index: Vec<(usize, u64, u64)>,
    /// Records in the last segment the batch touches, the batch's included.
    seg_records: u64,
}

/// Deletes the files of segments a failed batch created (still under their temporary names).
fn discard(planned: &[Planned]) {
    for p in planned {
        let _ = std::fs::remove_file(p.seg.pending_path());
    }
}

/// Step 2, write: copies the batch's records to where [`DiskLog::plan`] put them, each
/// record's `len` last and the batch's first `len` not at all (that is [`commit`]), then a
/// zeroed `len` behind the batch. A crash here leaves an end marker in front of the whole
/// batch and new segments still under their temporary names (recovery deletes them); the
/// next batch's end marker cuts off the leftovers, so they are never taken for records.
fn write(
    w: &Writer,
    plan: &Plan,
    recs: &[NewRecord<'_>],
    start: u64,
) -> Result<Written, StoreError> {
    let mut first = (0, w.off, 0);
    let mut index = Vec::new();
    let mut seg_records = w.seg_records;
    for k in 0..=plan.planned.len() {
        let (range, mut off, path) = match k {
            0 => (0..plan.active_recs, w.off, &w.seg.path),
            j => {
                seg_records = 0;
                let p = &plan.planned[j - 1];
                (p.recs.clone(), SEGMENT_HEADER, &p.seg.path)
            }
        };
        let map = plan.map(w, k);
        for (i, r) in range.clone().zip(&recs[range]) {
            let seq = start + i as u64;
            let (header, len) = encode_header(seq, r);
            // SAFETY: `off` is at or above the segment's committed offset (the active one's
            // is `w.off`; planned segments are unpublished), so no reader looks at these
            // bytes, and we hold the writer lock.
            let written = unsafe {
                map.write(off + 4, &header[4..])
                    && map.write(off + RECORD_HEADER as u64, r.body)
                    && (i == 0 || map.write(off, &len.to_le_bytes()))
            };
            if !written {
                // `plan` reserved room for every record; nothing is committed yet.
                return Err(StoreError::io(
                    "write record",
                    path,
                    std::io::Error::other("record past the allocated part of its segment"),
                ));
            }
            if i == 0 {
                first = (k, off, len);
            }
            if seg_records.is_multiple_of(INDEX_EVERY) {
                index.push((k, seq, off));
            }
            seg_records += 1;
            off += stride_for_len(len);
        }
    }
    // SAFETY: the end of the batch is above every committed offset. At the end of the
    // allocated part of a segment this writes nothing (`write` checks), which is right: bytes
    // there were never written and read as zeros once allocated.
    let _ = unsafe {
        plan.map(w, plan.planned.len())
            .write(plan.end_off(), &0u32.to_le_bytes())
    };
    Ok(Written {
        first,
        index,
        seg_records,
    })
}

/// Step 3, commit: stores the batch's first `len`, after which recovery finds the whole
/// batch, then gives the new segments their real names. If a rename fails, that `len`
/// becomes an end marker again and the new segments are deleted: nothing was published.
fn commit(w: &Writer, plan: &Plan, written: &Written) -> Result<(), StoreError> {
    let (k, off, len) = written.first;
    let map = plan.map(w, k);
    // SAFETY: as in `write`; the batch is still unpublished. This is the commit point.
    unsafe { map.write(off, &len.to_le_bytes()) };
    for (j, p) in plan.planned.iter().enumerate() {
        if let Err(e) = p.seg.adopt() {
            // SAFETY: as above.
            unsafe { map.write(off, &0u32.to_le_bytes()) };
            for q in &plan.planned[..j] {
                let _ = std::fs::remove_file(&q.seg.path);
            }
            discard(&plan.planned[j..]);
            return Err(e);
        }
    }
    Ok(())
}

/// Makes `seg` (mapped as `map`, empty) the writer's segment; returns the previous one, sealed.
fn start_segment(w: &mut Writer, seg: Arc<Segment>, map: Arc<SegMap>) -> Arc<Segment> {
    let previous = std::mem::replace(&mut w.seg, seg);
    previous.seal();
    w.map = map;
    w.seg_since = Instant::now();
    w.off = SEGMENT_HEADER;
    w.seg_records = 0;
    w.advised = 0;
    w.synced_off = 0;
    w.dir_dirty = true;
    previous
}

/// A topic log stored in segment files under one directory.
#[derive(Debug)]
pub(crate) struct DiskLog {
    dir: PathBuf,
    seg_capacity: u64,
    sync_every: u64,
    sync_timeout: Duration,
    _lock: Option<DirLock>,
    /// Appends are serialised by this one short std mutex: there is a single write position,
    /// and the critical section is a CRC and a memcpy (plus, a handful of times per segment,
    /// an `fallocate` to grow it, and once per segment creating the next file). Readers
    /// never take it.
    writer: Mutex<Writer>,
    segments: RwLock<Vec<Arc<Segment>>>,
    next_seq: AtomicU64,
    first_seq: AtomicU64,
    /// Serialises `sync` calls without blocking appends.
    sync_lock: Mutex<()>,
    corrupt_skipped: u64,
    syncs: AtomicU64,
    last_sync_micros: AtomicU64,
    /// Random reads so far; every [`RANDOM_READS_PER_ADVISE`] of them the pages they
    /// faulted in are released.
    random_reads: AtomicU64,
}

/// Each random read faults in about one page; releasing a segment's pages after this many
/// keeps their resident footprint near 4 MiB even when redeliveries touch pages the writer
/// already released.
const RANDOM_READS_PER_ADVISE: u64 = 1024;

impl DiskLog {
    pub fn open(dir: &Path, opts: LogOptions) -> Result<(DiskLog, RecoveryReport), StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io("create directory", dir, e))?;
        let dir_lock = if opts.dir_lock {
            Some(DirLock::acquire(dir)?)
        } else {
            None
        };
        let seg_capacity = opts.max_bytes_per_file.max(SEGMENT_HEADER + 64).div_ceil(8) * 8;
        let rec = recover(dir, seg_capacity)?;
        let mut segments = rec.segments;
        let mut dir_dirty = false;
        let next_seq = rec.next_seq.unwrap_or(opts.initial_seq);
        let (seg, map, seg_records) = match segments.last() {
            Some(last) if !last.bad => {
                let map = last.map()?;
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&last.path)
                    .map_err(|e| StoreError::io("open segment", &last.path, e))?;
                // The writer continues at `committed` in the file's existing length. We
                // allocated all of it, but a file copied sparsely would have holes there.
                let (from, to) = (last.committed(), last.allocated());
                fill_holes(&file, from, to.saturating_sub(from))
                    .map_err(|e| StoreError::io("allocate segment", &last.path, e))?;
                (last.clone(), map, rec.last_records)
            }
            _ => {
                // The writer holds no file: it opens its segment's when it grows or syncs it,
                // so an idle log costs no open file.
                let (seg, map, _file) = Segment::create(dir, next_seq, seg_capacity, 0)?;
                segments.push(seg.clone());
                dir_dirty = true;
                (seg, map, 0)
            }
        };
        for s in &segments[..segments.len() - 1] {
            s.seal();
        }
        if fault::enabled() {
            // What a previous run left is on disk as found.
            for s in &segments {
                fault::record_synced(&s.path, s.allocated());
            }
        }
        let first_seq = segments
            .first()
            .map_or(next_seq, |s| s.start_seq)
            .min(next_seq);
        let off = seg.committed();
        let report = rec.report;
        let log = DiskLog {
            dir: dir.to_path_buf(),
            seg_capacity,
            sync_every: opts.sync_every.max(1),
            sync_timeout: opts.sync_timeout,
            _lock: dir_lock,
            writer: Mutex::new(Writer {
                seg,
                map,
                off,
                next_seq,
                seg_records,
                advised: 0,
                synced_off: off,
                unsynced: 0,
                unsynced_since: None,
                to_fsync: Vec::new(),
                dir_dirty,
                closed: false,
                seg_since: Instant::now(),
            }),
            segments: RwLock::new(segments),
            next_seq: AtomicU64::new(next_seq),
            first_seq: AtomicU64::new(first_seq),
            sync_lock: Mutex::new(()),
            corrupt_skipped: report.corrupt_records_skipped,
            syncs: AtomicU64::new(0),
            last_sync_micros: AtomicU64::new(0),
            random_reads: AtomicU64::new(0),
        };
        Ok((log, report))
    }

    /// One past the newest visible seq (`Acquire`).
    pub fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Acquire)
    }

    pub fn first_seq(&self) -> u64 {
        self.first_seq.load(Ordering::Acquire).min(self.next_seq())
    }

    fn segments(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Segment>>> {
        self.segments.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn segments_mut(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<Segment>>> {
        self.segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The segment that holds `seq` if any does: the last one whose base is `<= seq`, or the
    /// first one if `seq` precedes them all.
    pub fn locate(&self, seq: u64) -> Option<Arc<Segment>> {
        let segs = self.segments();
        let i = segs.partition_point(|s| s.base <= seq);
        segs.get(i.saturating_sub(1)).cloned()
    }

    /// The segment after `seg`: the next one in the list, or, if `seg` was removed from the
    /// list (retained away or replaced), the first one whose base is `>= seg.base`.
    pub fn segment_after(&self, seg: &Arc<Segment>) -> Option<Arc<Segment>> {
        let segs = self.segments();
        let i = segs.partition_point(|s| s.base < seg.base);
        match segs.get(i) {
            Some(s) if Arc::ptr_eq(s, seg) => segs.get(i + 1).cloned(),
            Some(s) => Some(s.clone()),
            None => None,
        }
    }

    pub fn append_batch(&self, recs: &[NewRecord<'_>]) -> Result<Range<u64>, StoreError> {
        if let Some(r) = recs.iter().find(|r| r.body.len() > MAX_BODY) {
            return Err(StoreError::RecordTooLarge {
                len: r.body.len(),
                max: MAX_BODY,
            });
        }
        let mut guard = lock(&self.writer);
        let w = &mut *guard;
        if w.closed {
            return Err(StoreError::Closed);
        }
        let start = w.next_seq;
        let end_seq = start
            .checked_add(recs.len() as u64)
            .ok_or(StoreError::SeqExhausted)?;
        let Some(first) = recs.first() else {
            return Ok(start..start);
        };
        let first_need = SEGMENT_HEADER + stride_for_body(first.body.len());
        if w.off == SEGMENT_HEADER && first_need > w.seg.capacity {
            // The active segment is empty and too small for this record: replace it by one
            // that fits (same base, so the new file takes its name).
            self.replace_empty_active(w, self.seg_capacity.max(first_need), first_need)?;
        }
        let plan = self.plan(w, recs, start)?;
        let written = match write(w, &plan, recs, start) {
            Ok(written) => written,
            Err(e) => {
                discard(&plan.planned);
                return Err(e);
            }
        };
        commit(w, &plan, &written)?;
        self.publish(w, plan, written, recs.len(), end_seq);
        Ok(start..end_seq)
    }

    /// Step 1, plan: decides where each record goes and makes room for all of them before
    /// anything is written: grows the active segment's file to cover its share
    /// ([`Segment::reserve`]) and creates the new segments the rest needs, under temporary
    /// names and just big enough for their records. On error nothing of the batch exists.
    fn plan(&self, w: &Writer, recs: &[NewRecord<'_>], start: u64) -> Result<Plan, StoreError> {
        let mut active_recs = recs.len();
        let mut active_end = w.off;
        // (records, end offset, capacity) of each new segment.
        let mut layout: Vec<(Range<usize>, u64, u64)> = Vec::new();
        let mut off = w.off;
        let mut cap = w.seg.capacity;
        // A topic that filled its segment quickly is hot: its next segments are allocated
        // whole at once, as a file grown while mapped costs the writer more page faults. A
        // slow topic's next segment starts small again.
        for (i, r) in recs.iter().enumerate() {
            let stride = stride_for_body(r.body.len());
            if off + stride > cap {
                match layout.last_mut() {
                    None => (active_recs, active_end) = (i, off),
                    Some(last) => (last.0.end, last.1) = (i, off),
                }
                cap = self.seg_capacity.max(SEGMENT_HEADER + stride);
                layout.push((i..recs.len(), SEGMENT_HEADER, cap));
                off = SEGMENT_HEADER;
            }
            off += stride;
        }
        match layout.last_mut() {
            None => active_end = off,
            Some(last) => last.1 = off,
        }
        w.seg.reserve(&w.map, active_end)?;
        let mut planned = Vec::with_capacity(layout.len());
        for (recs, end_off, capacity) in layout {
            let base = start + recs.start as u64;
            let hot = w.seg_since.elapsed() < HOT_FILL;
            let need = if hot { capacity } else { end_off };
            match Segment::create_pending(&self.dir, base, capacity, need) {
                Ok((seg, map, _file)) => planned.push(Planned {
                    seg,
                    map,
                    recs,
                    end_off,
                }),
                Err(e) => {
                    discard(&planned);
                    return Err(e);
                }
            }
        }
        Ok(Plan {
            active_recs,
            active_end,
            planned,
        })
    }

    /// Step 4, publish: makes the committed batch visible in the order the module docs give
    /// (sparse-index entries, new segments in the list, committed offsets and seals, then
    /// `next_seq`), and moves the writer on to the last segment the batch touched.
    fn publish(&self, w: &mut Writer, plan: Plan, written: Written, count: usize, end_seq: u64) {
        let start = w.next_seq;
        let end_off = plan.end_off();
        let Plan {
            active_recs,
            active_end,
            mut planned,
        } = plan;
        for (k, seq, off) in written.index {
            match k {
                0 => w.seg.index_push(seq, off),
                j => planned[j - 1].seg.index_push(seq, off),
            }
        }
        if !planned.is_empty() {
            let mut segs = self.segments_mut();
            segs.extend(planned.iter().map(|p| p.seg.clone()));
        }
        w.seg.publish(active_end, start + active_recs as u64);
        if let Some((last, middle)) = planned.split_last() {
            w.seg.seal();
            for p in middle {
                p.seg.publish(p.end_off, start + p.recs.end as u64);
                p.seg.seal();
            }
            last.seg.publish(last.end_off, start + last.recs.end as u64);
        }
        self.next_seq.store(end_seq, Ordering::Release);

        // Writer bookkeeping.
        if let Some(last) = planned.pop() {
            let old = std::mem::replace(&mut w.seg, last.seg);
            w.to_fsync.push(old);
            w.to_fsync.extend(planned.into_iter().map(|p| p.seg));
            w.map = last.map;
            w.advised = 0;
            w.synced_off = 0;
            w.dir_dirty = true;
            w.seg_since = Instant::now();
        }
        w.off = end_off;
        w.seg_records = written.seg_records;
        w.next_seq = end_seq;
        w.unsynced += count as u64;
        if w.unsynced_since.is_none() {
            w.unsynced_since = Some(Instant::now());
        }
        if w.off >= w.advised + 2 * ADVISE_CHUNK {
            let page = page_size();
            let upto = (w.off - ADVISE_CHUNK) / page * page;
            w.map.dont_need(w.advised, upto - w.advised);
            w.advised = upto;
        }
    }

    /// Moves the write position forward to `seq`: the seqs between are never written (a gap,
    /// as retention or a skipped corrupt region leaves). The next record is written to a new
    /// segment based at `seq` (the active one is sealed, or replaced if it holds nothing). An
    /// empty log then starts at `seq`.
    pub fn skip_to(&self, seq: u64) -> Result<(), StoreError> {
        let mut guard = lock(&self.writer);
        let w = &mut *guard;
        if w.closed {
            return Err(StoreError::Closed);
        }
        if seq <= w.next_seq {
            return Ok(());
        }
        let was_empty = self.first_seq() >= w.next_seq;
        let (seg, map, _file) = Segment::create(&self.dir, seq, self.seg_capacity, 0)?;
        let old = {
            let mut segs = self.segments_mut();
            if w.off == SEGMENT_HEADER {
                // Nothing in the active segment: the new one takes its place.
                segs.pop();
                segs.push(seg.clone());
                Some(w.seg.path.clone())
            } else {
                segs.push(seg.clone());
                None
            }
        };
        let previous = start_segment(w, seg, map);
        w.next_seq = seq;
        if was_empty {
            self.first_seq.store(seq, Ordering::Release);
        }
        self.next_seq.store(seq, Ordering::Release);
        match old {
            // An empty segment left behind is harmless: recovery reads it as empty.
            Some(path) => {
                if let Err(e) = std::fs::remove_file(&path)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove an empty segment");
                }
            }
            None => w.to_fsync.push(previous),
        }
        Ok(())
    }

    /// Swaps the empty active segment for a new one with the same base that can grow to
    /// `capacity` bytes and has room for `need` already.
    fn replace_empty_active(
        &self,
        w: &mut Writer,
        capacity: u64,
        need: u64,
    ) -> Result<(), StoreError> {
        let (seg, map, _file) = Segment::create(&self.dir, w.seg.base, capacity, need)?;
        {
            let mut segs = self.segments_mut();
            if let Some(last) = segs.last_mut() {
                *last = seg.clone();
            }
        }
        start_segment(w, seg, map);
        Ok(())
    }

    pub fn read(&self, seq: u64) -> Result<Option<Record>, StoreError> {
        if seq >= self.next_seq() {
            return Ok(None);
        }
        let Some(seg) = self.locate(seq) else {
            return Ok(None);
        };
        if seg.bad || seq < seg.start_seq {
            return Ok(None);
        }
        let map = match seg.map() {
            Ok(map) => map,
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None); // deleted by retain_from meanwhile
            }
            Err(e) => return Err(e),
        };
        let committed = seg.committed();
        let reads = self.random_reads.fetch_add(1, Ordering::Relaxed) + 1;
        if reads.is_multiple_of(RANDOM_READS_PER_ADVISE) {
            // Safe at any time for a shared file map (see map.rs); others simply refault.
            map.dont_need(0, committed);
        }
        let mut off = seg.index_lookup(seq);
        loop {
            if let Some(resume) = seg.hole_at(off) {
                off = resume;
                continue;
            }
            let Some(h) = header_at(&map, off, committed) else {
                return Ok(None);
            };
            if h.seq == seq {
                return Ok(Some(record_at(&map, off, &h)));
            }
            if h.seq > seq {
                return Ok(None);
            }
            off += h.stride();
        }
    }

    pub fn sealed_segments(&self) -> Vec<crate::SegmentSpan> {
        let segs = self.segments();
        let mut out = Vec::with_capacity(segs.len());
        for (k, s) in segs.iter().enumerate() {
            if k + 1 == segs.len() || !s.is_sealed() {
                break;
            }
            let end_seq = if s.bad { segs[k + 1].base } else { s.end_seq() };
            out.push(crate::SegmentSpan {
                start_seq: s.start_seq,
                end_seq,
                bytes: s.allocated(),
            });
        }
        out
    }

    pub fn retain_from(&self, low_water: u64) -> Result<usize, StoreError> {
        let removed: Vec<Arc<Segment>> = {
            let mut segs = self.segments_mut();
            let mut k = 0;
            while k + 1 < segs.len() {
                let s = &segs[k];
                if !s.is_sealed() {
                    break;
                }
                let end = if s.bad { segs[k + 1].base } else { s.end_seq() };
                if end > low_water {
                    break;
                }
                k += 1;
            }
            let removed: Vec<_> = segs.drain(..k).collect();
            if let Some(first) = segs.first() {
                self.first_seq.fetch_max(first.start_seq, Ordering::AcqRel);
            }
            removed
        };
        if removed.is_empty() {
            return Ok(0);
        }
        let mut result = Ok(removed.len());
        for s in &removed {
            match std::fs::remove_file(&s.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    if result.is_ok() {
                        result = Err(StoreError::io("delete segment", &s.path, e));
                    }
                }
            }
        }
        lock(&self.writer).dir_dirty = true;
        result
    }

    pub fn sync_due(&self) -> bool {
        let w = lock(&self.writer);
        w.unsynced >= self.sync_every
            || (w.unsynced > 0
                && w.unsynced_since
                    .is_some_and(|t| t.elapsed() >= self.sync_timeout))
    }

    pub fn needs_sync(&self) -> bool {
        let w = lock(&self.writer);
        !w.closed
            && (w.unsynced > 0 || w.off > w.synced_off || !w.to_fsync.is_empty() || w.dir_dirty)
    }

    /// Returns the seq the sync covered: every record below it is durable.
    pub fn sync(&self) -> Result<u64, StoreError> {
        let _one_at_a_time = lock(&self.sync_lock);
        let started = Instant::now();
        let (seg, map, from, to, sealed, dir_dirty, count, covered) = {
            let mut w = lock(&self.writer);
            if w.closed {
                return Ok(w.next_seq);
            }
            (
                w.seg.clone(),
                w.map.clone(),
                w.synced_off,
                w.off,
                std::mem::take(&mut w.to_fsync),
                std::mem::take(&mut w.dir_dirty),
                w.unsynced,
                w.next_seq,
            )
        };
        // Outside the writer lock: appends continue while the disk works.
        let result = (|| {
            if to > from {
                map.flush(from, to - from)
                    .map_err(|e| StoreError::io("msync", &seg.path, e))?;
            }
            for s in std::iter::once(&seg).chain(&sealed) {
                // Opened for the sync only (a deleted topic's files are gone: nothing to do).
                match File::open(&s.path).and_then(|f| f.sync_data()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io("fsync", &s.path, e)),
                }
            }
            if dir_dirty {
                fsync_dir(&self.dir)?;
            }
            if fault::enabled() {
                fault::record_synced(&seg.path, to);
                for s in &sealed {
                    fault::record_synced(&s.path, s.committed());
                }
            }
            Ok(())
        })();
        let mut w = lock(&self.writer);
        match result {
            Ok(()) => {
                if Arc::ptr_eq(&w.seg, &seg) {
                    w.synced_off = w.synced_off.max(to);
                }
                w.unsynced = w.unsynced.saturating_sub(count);
                w.unsynced_since = (w.unsynced > 0).then(Instant::now);
                drop(w);
                self.syncs.fetch_add(1, Ordering::Relaxed);
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.last_sync_micros.store(micros, Ordering::Relaxed);
                Ok(covered)
            }
            Err(e) => {
                w.to_fsync.extend(sealed);
                w.dir_dirty |= dir_dirty;
                Err(e)
            }
        }
    }

    pub fn destroy(&self) -> Result<(), StoreError> {
        {
            let mut w = lock(&self.writer);
            if w.closed {
                return Ok(());
            }
            w.closed = true;
        }
        drop(std::mem::take(&mut *self.segments_mut()));
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("remove directory", &self.dir, e)),
        }
    }

    pub fn stats(&self) -> LogStats {
        let (segments, disk_bytes) = {
            let segs = self.segments();
            (segs.len(), segs.iter().map(|s| s.allocated()).sum())
        };
        LogStats {
            segments,
            disk_bytes,
            corrupt_skipped: self.corrupt_skipped,
            syncs: self.syncs.load(Ordering::Relaxed),
            last_sync_micros: self.last_sync_micros.load(Ordering::Relaxed),
            is_memory: false,
            dropped: 0,
            first_seq: self.first_seq(),
            next_seq: self.next_seq(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
