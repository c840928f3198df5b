//! [`LogReader`]: a sequential cursor over a topic log.
//!
//! Invariants:
//! - `pos` is the smallest seq the reader may still return; every record before the
//!   cursor's byte offset has a seq below `pos`.
//! - The reader never forms a slice at or beyond its segment's committed offset, and never
//!   returns a record whose seq is at or above the log's `next_seq` as loaded (`Acquire`) at
//!   the start of the call, so a batch is seen whole or not at all.
//! - When it returns `None` having reached the writer, `pos` moves up to that `next_seq`:
//!   nothing below it is left unread, so gaps at the end do not look like a backlog.
//! - It holds at most one segment map, and drops the pages it has read behind it in
//!   [`ADVISE_CHUNK`] steps, so a reader's resident memory is bounded whatever the backlog.

use std::sync::Arc;

use crate::disk::{ADVISE_CHUNK, DiskLog};
use crate::log::Backend;
use crate::map::{SegMap, page_size};
use crate::segment::{SEGMENT_HEADER, Segment, header_at, record_at};
use crate::{Record, StoreError, TopicLog};

/// Where a disk reader is.
#[derive(Debug)]
struct Cursor {
    seg: Arc<Segment>,
    map: Arc<SegMap>,
    off: u64,
    /// Pages below this offset were dropped from the page tables.
    advised: u64,
}

/// A sequential reader over a [`TopicLog`]; O(1) per record, skips gaps. Create it with
/// [`TopicLog::reader`] and always pass the same log to [`LogReader::next`].
#[derive(Debug)]
pub struct LogReader {
    pos: u64,
    cur: Option<Cursor>,
}

impl LogReader {
    pub(crate) fn new(from_seq: u64) -> LogReader {
        LogReader {
            pos: from_seq,
            cur: None,
        }
    }

    /// The next seq this reader will consider (the channel's cursor).
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Moves the reader to `seq` (forwards or backwards).
    pub fn seek(&mut self, seq: u64) {
        self.pos = seq;
        self.cur = None;
    }

    /// The next record with a seq `>= position()`, or `None` if there is none yet.
    pub fn next(&mut self, log: &TopicLog) -> Result<Option<Record>, StoreError> {
        match &log.backend {
            Backend::Disk(d) => self.next_disk(d),
            Backend::Memory(m) => {
                let n = m.next_seq();
                if self.pos >= n {
                    return Ok(None);
                }
                match m.read_from(self.pos) {
                    Some(r) => {
                        self.pos = r.seq + 1;
                        Ok(Some(r))
                    }
                    None => {
                        self.pos = self.pos.max(n);
                        Ok(None)
                    }
                }
            }
        }
    }

    fn next_disk(&mut self, d: &DiskLog) -> Result<Option<Record>, StoreError> {
        let n = d.next_seq();
        if self.pos >= n {
            return Ok(None);
        }
        loop {
            if self.cur.is_none() {
                let Some(seg) = d.locate(self.pos) else {
                    return Ok(None);
                };
                if !self.enter(d, seg)? {
                    self.pos = self.pos.max(n);
                    return Ok(None);
                }
            }
            let Some(cur) = self.cur.as_mut() else {
                return Ok(None);
            };
            if let Some(resume) = cur.seg.hole_at(cur.off) {
                cur.off = resume;
                continue;
            }
            if let Some(h) = header_at(&cur.map, cur.off, cur.seg.committed()) {
                if h.seq >= n {
                    // Part of a batch that is not published yet.
                    self.pos = self.pos.max(n);
                    return Ok(None);
                }
                let off = cur.off;
                cur.off += h.stride();
                if h.seq < self.pos {
                    continue;
                }
                let rec = record_at(&cur.map, off, &h);
                self.pos = h.seq + 1;
                if cur.off >= cur.advised + 2 * ADVISE_CHUNK {
                    let page = page_size();
                    let upto = (cur.off - ADVISE_CHUNK) / page * page;
                    cur.map
                        .dont_need(cur.advised, upto.saturating_sub(cur.advised));
                    cur.advised = upto;
                }
                return Ok(Some(rec));
            }
            if !cur.seg.is_sealed() {
                // Caught up with the writer.
                self.pos = self.pos.max(n);
                return Ok(None);
            }
            // Sealed: its committed offset is final (stored before the seal); look again in
            // case it grew between the two loads, then move on.
            if header_at(&cur.map, cur.off, cur.seg.committed()).is_some() {
                continue;
            }
            let seg = cur.seg.clone();
            self.cur = None;
            let Some(next) = d.segment_after(&seg) else {
                self.pos = self.pos.max(n);
                return Ok(None);
            };
            if !self.enter(d, next)? {
                self.pos = self.pos.max(n);
                return Ok(None);
            }
        }
    }

    /// Points the cursor into `seg`, or the first readable segment after it; false if none.
    fn enter(&mut self, d: &DiskLog, mut seg: Arc<Segment>) -> Result<bool, StoreError> {
        loop {
            if !seg.bad {
                match seg.map() {
                    Ok(map) => {
                        let off = if self.pos > seg.start_seq {
                            seg.index_lookup(self.pos)
                        } else {
                            SEGMENT_HEADER
                        };
                        self.cur = Some(Cursor {
                            seg,
                            map,
                            off,
                            advised: off / page_size() * page_size(),
                        });
                        return Ok(true);
                    }
                    // Deleted by retain_from after we found it: move on.
                    Err(StoreError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            match d.segment_after(&seg) {
                Some(s) => seg = s,
                None => return Ok(false),
            }
        }
    }
}
