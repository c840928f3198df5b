//! Memory maps of segment files.
//!
//! All memory-map creation happens in [`SegMap::map`], and every dereference of a map's
//! memory happens in this file. The map is a `memmap2::MmapRaw` (`MAP_SHARED`, read-write),
//! which only exposes raw pointers; this module turns them into slices under these
//! invariants, which the rest of the crate upholds:
//!
//! 1. **Only the file is touched, and writes only allocated blocks.** A map may be longer
//!    than its file (the writer maps the active segment at its full capacity, which is
//!    address space only). Each map has an *accessible* length, which only grows: it starts
//!    at the file's length when mapped ([`SegMap::map`]) and is raised only by
//!    [`SegMap::grow`], after the new range was allocated for real (`fallocate`, or zeros
//!    written). The crate never truncates a segment file (recovery zeroes a torn tail
//!    instead; deleting one only unlinks it, and the pages stay valid while mapped), and the
//!    directory lock keeps other brokers out. Every accessor checks its range against the
//!    accessible length, so nothing at or above it is ever touched: no access reaches a
//!    page beyond end-of-file (no `SIGBUS`). Segment files are allocated for real as they
//!    are created and grown, and before anything writes into a file it did not allocate
//!    itself (a reopened active segment, a torn tail in recovery) its holes are filled
//!    (`sys::fill_holes`), so a write never needs a fresh block (no `SIGBUS` on a full
//!    disk).
//! 2. **Committed bytes are immutable.** Each segment has a committed offset, published with
//!    `Release` and read with `Acquire`. The single writer (behind the log's writer mutex) only
//!    writes at or above it; readers only form slices below it. Bytes below the committed
//!    offset are never written again while the log is open, so a `&[u8]` (or a `Bytes` built
//!    on [`MapSlice`]) over them never observes a mutation. The committed offset never
//!    exceeds the accessible length: the writer grows the map before it writes.
//! 3. **Exclusive phases.** Recovery reads and repairs a segment before the log is shared with
//!    any other thread, so it may read or write any accessible range.
//!
//! `madvise(MADV_DONTNEED)` on a `MAP_SHARED` file mapping drops page-table entries only; the
//! data stays in the page cache (dirty pages included) and is faulted back unchanged on the
//! next access, so it is used freely to keep RSS bounded.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use memmap2::{MmapOptions, MmapRaw, UncheckedAdvice};

use crate::sys::allocate;

/// A shared, read-write memory map of one segment file.
pub(crate) struct SegMap {
    raw: MmapRaw,
    /// Bytes from the start of the file that are allocated for real and may be accessed
    /// (module invariant 1). Only grows (`Release` after the allocation, loaded `Acquire`);
    /// never above `raw.len()`.
    accessible: AtomicU64,
    /// `(st_dev, st_ino)` of the mapped file: [`SegMap::grow`] allocates only in it.
    file_id: (u64, u64),
    /// Serialises [`SegMap::grow`], so no allocation (or zero-filling) runs over a range
    /// another grow already made accessible.
    grow_lock: Mutex<()>,
}

impl std::fmt::Debug for SegMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegMap")
            .field("len", &self.raw.len())
            .field("accessible", &self.accessible())
            .finish()
    }
}

impl SegMap {
    /// Maps the first `len` bytes of `file` (`MAP_SHARED`, read-write); the file's current
    /// length (at most `len`) is accessible. This is the only place a map is created.
    ///
    /// SAFETY (argument for every later dereference, see the module docs): `file` is a
    /// segment file that is never truncated while a map of it exists, so its length now
    /// stays valid; the map may extend past the end of the file, but nothing at or above the
    /// accessible length is touched until [`SegMap::grow`] allocated it. The directory lock
    /// keeps other processes from mapping or changing the file. `memmap2` marks `map_raw`
    /// safe because `MmapRaw` hands out only raw pointers; the obligations move to the
    /// accessors below.
    pub fn map(file: &File, len: u64) -> io::Result<SegMap> {
        let meta = file.metadata()?;
        let accessible = meta.len().min(len);
        let len = usize::try_from(len).map_err(io::Error::other)?;
        let raw = MmapOptions::new().len(len).map_raw(file)?;
        Ok(SegMap {
            raw,
            accessible: AtomicU64::new(accessible),
            file_id: (meta.dev(), meta.ino()),
            grow_lock: Mutex::new(()),
        })
    }

    /// Length of the map in bytes (address space, not necessarily file).
    pub fn len(&self) -> u64 {
        self.raw.len() as u64
    }

    /// Bytes that may be accessed: allocated for real in the file (`Acquire`).
    pub fn accessible(&self) -> u64 {
        self.accessible.load(Ordering::Acquire)
    }

    /// Allocates `[accessible, to)` of `file` for real (`fallocate`, or zeros written where
    /// the file system lacks it) and only then makes it accessible. A no-op if `to` is
    /// already accessible; an error if `to` is past the end of the map or `file` is not the
    /// mapped file. On error (e.g. `ENOSPC`) nothing became accessible.
    pub fn grow(&self, file: &File, to: u64) -> io::Result<()> {
        let _one_at_a_time = self
            .grow_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let from = self.accessible();
        if to <= from {
            return Ok(());
        }
        if to > self.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "segment growth beyond the map",
            ));
        }
        let meta = file.metadata()?;
        if (meta.dev(), meta.ino()) != self.file_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "segment growth in a file that is not the mapped one",
            ));
        }
        // Nothing ever accessed `[from, to)` through this map (invariant 1) and no other grow
        // runs, so writing zeros there (the fallback) overwrites nothing anybody looks at.
        allocate(file, from, to - from)?;
        self.accessible.store(to, Ordering::Release);
        Ok(())
    }

    fn range(&self, off: u64, len: usize) -> Option<usize> {
        let end = off.checked_add(u64::try_from(len).ok()?)?;
        if end > self.accessible() {
            return None;
        }
        usize::try_from(off).ok()
    }

    /// The bytes `[off, off + len)`, or `None` unless the range is accessible.
    ///
    /// # Safety
    /// No thread may write to the range while the returned slice lives: the range lies below
    /// its segment's committed offset (loaded with `Acquire`), or the caller is in an
    /// exclusive phase (recovery).
    pub unsafe fn slice(&self, off: u64, len: usize) -> Option<&[u8]> {
        let off = self.range(off, len)?;
        // SAFETY: `off + len` is accessible (checked above), hence within the map and
        // allocated in the file, which is never truncated (module invariant 1); the map lives
        // as long as `self`, and the caller guarantees nothing writes to the range meanwhile.
        Some(unsafe { std::slice::from_raw_parts(self.raw.as_ptr().add(off), len) })
    }

    /// Copies `data` to `[off, off + data.len())`; returns false (writing nothing) unless the
    /// range is accessible.
    ///
    /// # Safety
    /// The range lies at or above its segment's committed offset (so no reader looks at it)
    /// and the caller is the only writer (holds the writer lock or is in recovery).
    pub unsafe fn write(&self, off: u64, data: &[u8]) -> bool {
        let Some(off) = self.range(off, data.len()) else {
            return false;
        };
        // SAFETY: accessible (checked above), so within the map and allocated in the file
        // (invariant 1); nobody else reads or writes the range (caller's contract), and
        // `data` cannot overlap a range no one else may reference.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.raw.as_mut_ptr().add(off),
                data.len(),
            );
        }
        true
    }

    /// Fills `[off, off + len)` with zeros; returns false (writing nothing) unless the range
    /// is accessible.
    ///
    /// # Safety
    /// Same contract as [`SegMap::write`].
    pub unsafe fn zero(&self, off: u64, len: usize) -> bool {
        let Some(off) = self.range(off, len) else {
            return false;
        };
        // SAFETY: accessible (checked above, invariant 1); the caller is the only one touching
        // the range.
        unsafe { std::ptr::write_bytes(self.raw.as_mut_ptr().add(off), 0, len) };
        true
    }

    /// Drops the pages fully inside `[off, off + len)` from this process's page tables
    /// (`MADV_DONTNEED`). Best effort: errors are ignored.
    pub fn dont_need(&self, off: u64, len: u64) {
        let page = page_size();
        let start = off.div_ceil(page) * page;
        let end = (off.saturating_add(len).min(self.accessible()) / page) * page;
        if end <= start {
            return;
        }
        // SAFETY: MADV_DONTNEED on a MAP_SHARED file mapping only unmaps the pages; their
        // contents stay in the page cache and the next access faults in the same bytes, so no
        // live slice observes a change (module docs). The range is page aligned and
        // accessible.
        let _ = unsafe {
            self.raw.unchecked_advise_range(
                UncheckedAdvice::DontNeed,
                start as usize,
                (end - start) as usize,
            )
        };
    }

    /// `msync(MS_SYNC)` of the accessible part of `[off, off + len)`.
    pub fn flush(&self, off: u64, len: u64) -> io::Result<()> {
        let end = off.saturating_add(len).min(self.accessible());
        if end <= off {
            return Ok(());
        }
        let len = usize::try_from(end - off).map_err(io::Error::other)?;
        let off = usize::try_from(off).map_err(io::Error::other)?;
        self.raw.flush_range(off, len)
    }
}

/// The owner behind a `Bytes` that points into a map: keeps the map alive.
pub(crate) struct MapSlice {
    map: Arc<SegMap>,
    off: usize,
    len: usize,
}

impl MapSlice {
    /// A view of `[off, off + len)` of `map`, or `None` unless the range is accessible.
    ///
    /// # Safety
    /// The range must stay immutable for as long as the map lives: it lies below its
    /// segment's committed offset (module invariant 2).
    pub unsafe fn new(map: Arc<SegMap>, off: u64, len: usize) -> Option<MapSlice> {
        let off = map.range(off, len)?;
        Some(MapSlice { map, off, len })
    }
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the range was accessible at construction and stays so (the accessible
        // length only grows, the file is never truncated), the map is kept alive by
        // `self.map`, and `MapSlice::new`'s contract makes the bytes immutable.
        unsafe { std::slice::from_raw_parts(self.map.raw.as_ptr().add(self.off), self.len) }
    }
}

/// The system page size.
pub(crate) fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions; it only reads a system constant.
        let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if v > 0 { v as u64 } else { 4096 }
    })
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn access_stops_at_the_allocated_length_and_grow_moves_it() {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(dir.path().join(name))
                .unwrap()
        };
        let file = open("a");
        allocate(&file, 0, 4096).unwrap();
        let map = SegMap::map(&file, 1 << 20).unwrap();
        assert_eq!((map.len(), map.accessible()), (1 << 20, 4096));
        // SAFETY: this test is the map's only user.
        unsafe {
            assert!(map.write(4092, &[1; 4]));
            assert!(!map.write(4093, &[1; 4]), "crosses the allocated length");
            assert!(!map.zero(4096, 8));
            assert!(map.slice(4096, 1).is_none());
            assert!(MapSlice::new(Arc::new(SegMap::map(&file, 8192).unwrap()), 4000, 97).is_none());
        }
        assert!(map.grow(&open("b"), 8192).is_err(), "not the mapped file");
        assert!(map.grow(&file, (1 << 20) + 8).is_err(), "past the map");
        assert_eq!(map.accessible(), 4096);
        map.grow(&file, 8192).unwrap();
        let meta = file.metadata().unwrap();
        assert_eq!(meta.len(), 8192);
        assert!(meta.blocks() * 512 >= 8192, "grown range is allocated");
        // SAFETY: as above.
        unsafe {
            assert!(map.write(8000, &[2; 192]));
            assert_eq!(map.slice(8000, 192).unwrap(), &[2; 192][..]);
            assert_eq!(map.slice(4092, 4).unwrap(), &[1; 4][..]);
        }
        map.grow(&file, 4096).unwrap(); // never shrinks
        assert_eq!(map.accessible(), 8192);
        // A map made later starts at the file's length.
        assert_eq!(SegMap::map(&file, 1 << 20).unwrap().accessible(), 8192);
        assert_eq!(SegMap::map(&file, 100).unwrap().accessible(), 100);
    }
}
