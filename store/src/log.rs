//! [`TopicLog`]: the facade the broker uses, over a disk log or an in-memory one.
//!
//! Invariants (both back ends):
//! - Seqs are assigned consecutively by appends; `first_seq() <= next_seq()`, and both only
//!   grow. Gaps can exist only where recovery skipped corrupt data.
//! - A record is readable exactly when its seq is below `next_seq()` and its segment was not
//!   deleted; a batch becomes readable all at once.
//! - `TopicLog` is `Send + Sync`; every method takes `&self`. Appends serialise on a short
//!   writer mutex; reads take no lock on the hot path.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use crate::disk::DiskLog;
use crate::memory::MemLog;
use crate::reader::LogReader;
use crate::{NewRecord, Record, RecoveryReport, StoreError};

/// Options of a disk log (NSQ's flag names in parentheses).
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Largest segment file size (`--max-bytes-per-file`); default 100 MiB. Segment files
    /// start at 64 KiB and grow to this as records arrive, so an idle topic costs little.
    /// A record larger than this gets a segment of its own size.
    pub max_bytes_per_file: u64,
    /// `sync_due()` after this many appends (`--sync-every`); default 2500.
    pub sync_every: u64,
    /// `sync_due()` after this long with unsynced appends (`--sync-timeout`); default 2 s.
    pub sync_timeout: Duration,
    /// First seq of a *new* log; the broker passes the wall clock in ns so message IDs stay
    /// unique across deleting and re-creating a topic. Ignored when the log already exists.
    pub initial_seq: u64,
    /// Hold an exclusive lock on `<dir>/LOCK` while open (default). A caller that already
    /// holds a lock covering the directory (the broker's `brokerd.lock` on its data path, with
    /// one open log per topic in its own map) turns it off to save one open file per log.
    pub dir_lock: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            max_bytes_per_file: 100 * 1024 * 1024,
            sync_every: 2500,
            sync_timeout: Duration::from_secs(2),
            initial_seq: 0,
            dir_lock: true,
        }
    }
}

/// Counters describing a log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Segment files (0 for an in-memory log).
    pub segments: usize,
    /// Bytes of disk allocated to segment files.
    pub disk_bytes: u64,
    /// Corrupt regions skipped by recovery when the log was opened.
    pub corrupt_skipped: u64,
    /// Completed `sync` calls since open.
    pub syncs: u64,
    /// Duration of the last `sync`, in microseconds.
    pub last_sync_micros: u64,
    /// True for an in-memory (ephemeral) log.
    pub is_memory: bool,
    /// Records an in-memory log dropped because it was full.
    pub dropped: u64,
    /// Oldest retained seq.
    pub first_seq: u64,
    /// One past the newest seq.
    pub next_seq: u64,
}

/// A sealed segment of a disk log (see [`TopicLog::sealed_segments`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSpan {
    /// Its first seq.
    pub start_seq: u64,
    /// One past its last seq.
    pub end_seq: u64,
    /// Disk bytes it holds.
    pub bytes: u64,
}

#[derive(Debug)]
pub(crate) enum Backend {
    Disk(Box<DiskLog>),
    Memory(MemLog),
}

/// A topic's log: every message is appended once; channels read it through cursors.
#[derive(Debug)]
pub struct TopicLog {
    pub(crate) backend: Backend,
}

impl TopicLog {
    /// Opens (or creates) the log in `dir`, recovering whatever the files hold. Fails with
    /// [`StoreError::Locked`] if another log has the directory open.
    pub fn open(dir: &Path, opts: LogOptions) -> Result<(TopicLog, RecoveryReport), StoreError> {
        let (log, report) = DiskLog::open(dir, opts)?;
        Ok((
            TopicLog {
                backend: Backend::Disk(Box::new(log)),
            },
            report,
        ))
    }

    /// An ephemeral log that never touches disk and keeps at most `max_records` records
    /// (the oldest are dropped and counted in [`LogStats::dropped`]). Seqs start at 0.
    pub fn in_memory(max_records: usize) -> TopicLog {
        TopicLog::in_memory_from(max_records, 0)
    }

    /// Like [`TopicLog::in_memory`], with seqs starting at `initial_seq`.
    pub fn in_memory_from(max_records: usize, initial_seq: u64) -> TopicLog {
        TopicLog {
            backend: Backend::Memory(MemLog::new(max_records, initial_seq)),
        }
    }

    /// Appends one record; returns its seq. The record is in the page cache when this
    /// returns (a process crash loses nothing); see [`TopicLog::sync`] for power loss.
    pub fn append(&self, rec: NewRecord<'_>) -> Result<u64, StoreError> {
        self.append_batch(std::slice::from_ref(&rec))
            .map(|r| r.start)
    }

    /// Appends records with consecutive seqs; readers see all of them or none. On error
    /// (e.g. [`StoreError::DiskFull`]) nothing was appended.
    pub fn append_batch(&self, recs: &[NewRecord<'_>]) -> Result<Range<u64>, StoreError> {
        match &self.backend {
            Backend::Disk(d) => d.append_batch(recs),
            Backend::Memory(m) => m.append_batch(recs),
        }
    }

    /// Moves the next seq forward to `seq` without writing the seqs between (a gap: a replica
    /// that installs a snapshot whose older records are gone everywhere). No-op if `seq` is
    /// not ahead. An empty log then starts at `seq`.
    pub fn skip_to(&self, seq: u64) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Disk(d) => d.skip_to(seq),
            Backend::Memory(m) => m.skip_to(seq),
        }
    }

    /// Oldest retained seq (= `next_seq()` when empty).
    pub fn first_seq(&self) -> u64 {
        match &self.backend {
            Backend::Disk(d) => d.first_seq(),
            Backend::Memory(m) => m.first_seq(),
        }
    }

    /// One past the newest committed seq.
    pub fn next_seq(&self) -> u64 {
        match &self.backend {
            Backend::Disk(d) => d.next_seq(),
            Backend::Memory(m) => m.next_seq(),
        }
    }

    /// The record with this seq; `None` if it was deleted, skipped as corrupt, or is not
    /// written yet. O(log segments) plus a scan of at most 63 records.
    pub fn read(&self, seq: u64) -> Result<Option<Record>, StoreError> {
        match &self.backend {
            Backend::Disk(d) => d.read(seq),
            Backend::Memory(m) => Ok(m.read(seq)),
        }
    }

    /// A sequential reader starting at the first record with a seq `>= from_seq`.
    pub fn reader(&self, from_seq: u64) -> LogReader {
        LogReader::new(from_seq)
    }

    /// Deletes every segment all of whose seqs are below `low_water`, never the active
    /// (last) one; returns how many. In-memory logs drop records below `low_water` and
    /// return how many records they dropped.
    pub fn retain_from(&self, low_water: u64) -> Result<usize, StoreError> {
        match &self.backend {
            Backend::Disk(d) => d.retain_from(low_water),
            Backend::Memory(m) => Ok(m.retain_from(low_water)),
        }
    }

    /// The sealed segments, oldest first (every segment but the active one; none in memory):
    /// what [`TopicLog::retain_from`] may delete, for retention policies.
    pub fn sealed_segments(&self) -> Vec<SegmentSpan> {
        match &self.backend {
            Backend::Disk(d) => d.sealed_segments(),
            Backend::Memory(_) => Vec::new(),
        }
    }

    /// The first seq at or after which every record (in seq order) was published at or after
    /// `timestamp_ns`, by binary search over the retained records (publish times grow with
    /// seqs; a wall clock that stepped back makes this approximate). `first_seq()` if every
    /// retained record is that recent, `next_seq()` if none is. O(log n) reads.
    pub fn seq_at_time(&self, timestamp_ns: i64) -> Result<u64, StoreError> {
        let (mut lo, mut hi) = (self.first_seq(), self.next_seq());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            // The first record at or after `mid` (gaps are skipped).
            match LogReader::new(mid).next(self)? {
                Some(r) if r.seq < hi && r.timestamp_ns < timestamp_ns => lo = r.seq + 1,
                _ => hi = mid,
            }
        }
        Ok(lo)
    }

    /// True when `sync_every` appends happened since the last sync, or `sync_timeout` passed
    /// with unsynced appends. Always false in memory.
    pub fn sync_due(&self) -> bool {
        match &self.backend {
            Backend::Disk(d) => d.sync_due(),
            Backend::Memory(_) => false,
        }
    }

    /// True when anything (appends, sealed segments, file creations or deletions) awaits a
    /// [`TopicLog::sync`]. An idle log needs none, so its periodic sync costs no I/O. Always
    /// false in memory.
    pub fn needs_sync(&self) -> bool {
        match &self.backend {
            Backend::Disk(d) => d.needs_sync(),
            Backend::Memory(_) => false,
        }
    }

    /// Makes every append so far durable: `msync(MS_SYNC)` of the dirty range, `fsync` of
    /// the segment files written since the last sync, and of the directory if files were
    /// created or deleted. Appends proceed meanwhile (the writer lock is not held across the
    /// disk I/O). Returns the seq it covered: every record below it is durable (in memory,
    /// where nothing is, `next_seq()`).
    pub fn sync(&self) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Disk(d) => d.sync(),
            Backend::Memory(m) => Ok(m.next_seq()),
        }
    }

    /// Deletes the log's files and directory (topic delete).
    pub fn destroy(self) -> Result<(), StoreError> {
        self.destroy_in_place()
    }

    /// Like [`TopicLog::destroy`] for a shared log: afterwards appends fail with
    /// [`StoreError::Closed`]; bodies already handed out stay valid.
    pub fn destroy_in_place(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Disk(d) => d.destroy(),
            Backend::Memory(m) => {
                m.close();
                Ok(())
            }
        }
    }

    /// Counters for `/stats` and metrics.
    pub fn stats(&self) -> LogStats {
        match &self.backend {
            Backend::Disk(d) => d.stats(),
            Backend::Memory(m) => LogStats {
                is_memory: true,
                dropped: m.dropped(),
                first_seq: m.first_seq(),
                next_seq: m.next_seq(),
                ..LogStats::default()
            },
        }
    }

    /// The log's directory (`None` in memory).
    pub fn dir(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Disk(d) => Some(d.dir()),
            Backend::Memory(_) => None,
        }
    }
}
