//! Memory maps of segment files.
//!
//! All memory-map creation happens in [`SegMap::map`], and every dereference of a map's
//! memory happens in this file. The map is a `memmap2::MmapRaw` (`MAP_SHARED`, read-write),
//! which only exposes raw pointers; this module turns them into slices under these
//! invariants, which the rest of the crate upholds:
//!
//! 1. **No truncation while mapped.** A segment file keeps the length it was preallocated with
//!    (`fallocate`) for as long as any map of it exists: the crate never truncates a segment
//!    file (recovery zeroes a torn tail instead), deleting one only unlinks it (the pages stay
//!    valid while mapped), and the directory lock keeps other brokers out. So no access ever
//!    touches a page beyond end-of-file (no `SIGBUS`), and a write never needs a fresh block
//!    (no `SIGBUS` on a full disk).
//! 2. **Committed bytes are immutable.** Each segment has a committed offset, published with
//!    `Release` and read with `Acquire`. The single writer (behind the log's writer mutex) only
//!    writes at or above it; readers only form slices below it. Bytes below the committed
//!    offset are never written again while the log is open, so a `&[u8]` (or a `Bytes` built
//!    on [`MapSlice`]) over them never observes a mutation.
//! 3. **Exclusive phases.** Recovery reads and repairs a segment before the log is shared with
//!    any other thread, so it may read or write any in-bounds range.
//!
//! `madvise(MADV_DONTNEED)` on a `MAP_SHARED` file mapping drops page-table entries only; the
//! data stays in the page cache (dirty pages included) and is faulted back unchanged on the
//! next access, so it is used freely to keep RSS bounded.

use std::fs::File;
use std::io;
use std::sync::{Arc, OnceLock};

use memmap2::{MmapOptions, MmapRaw, UncheckedAdvice};

/// A shared, read-write memory map of one segment file.
pub(crate) struct SegMap {
    raw: MmapRaw,
}

impl std::fmt::Debug for SegMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegMap")
            .field("len", &self.raw.len())
            .finish()
    }
}

impl SegMap {
    /// Maps the first `len` bytes of `file` (`MAP_SHARED`, read-write). This is the only
    /// place a map is created.
    ///
    /// SAFETY (argument for every later dereference, see the module docs): `file` is a
    /// segment file that was preallocated to at least `len` bytes and is never truncated
    /// while a map of it exists; the directory lock keeps other processes from mapping or
    /// changing it. `memmap2` marks `map_raw` safe because `MmapRaw` hands out only raw
    /// pointers; the obligations move to the accessors below.
    pub fn map(file: &File, len: u64) -> io::Result<SegMap> {
        let len = usize::try_from(len).map_err(io::Error::other)?;
        let raw = MmapOptions::new().len(len).map_raw(file)?;
        Ok(SegMap { raw })
    }

    /// Length of the map in bytes.
    pub fn len(&self) -> u64 {
        self.raw.len() as u64
    }

    fn range(&self, off: u64, len: usize) -> Option<usize> {
        let off = usize::try_from(off).ok()?;
        let end = off.checked_add(len)?;
        (end <= self.raw.len()).then_some(off)
    }

    /// The bytes `[off, off + len)`, or `None` if out of bounds.
    ///
    /// # Safety
    /// No thread may write to the range while the returned slice lives: the range lies below
    /// its segment's committed offset (loaded with `Acquire`), or the caller is in an
    /// exclusive phase (recovery).
    pub unsafe fn slice(&self, off: u64, len: usize) -> Option<&[u8]> {
        let off = self.range(off, len)?;
        // SAFETY: `off + len` is within the map (checked above), the map lives as long as
        // `self`, the file is never truncated (module invariant 1), and the caller
        // guarantees nothing writes to the range meanwhile.
        Some(unsafe { std::slice::from_raw_parts(self.raw.as_ptr().add(off), len) })
    }

    /// Copies `data` to `[off, off + data.len())`; returns false if out of bounds.
    ///
    /// # Safety
    /// The range lies at or above its segment's committed offset (so no reader looks at it)
    /// and the caller is the only writer (holds the writer lock or is in recovery).
    pub unsafe fn write(&self, off: u64, data: &[u8]) -> bool {
        let Some(off) = self.range(off, data.len()) else {
            return false;
        };
        // SAFETY: in bounds (checked above); nobody else reads or writes the range (caller's
        // contract), and `data` cannot overlap a range no one else may reference.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.raw.as_mut_ptr().add(off),
                data.len(),
            );
        }
        true
    }

    /// Fills `[off, off + len)` with zeros; returns false if out of bounds.
    ///
    /// # Safety
    /// Same contract as [`SegMap::write`].
    pub unsafe fn zero(&self, off: u64, len: usize) -> bool {
        let Some(off) = self.range(off, len) else {
            return false;
        };
        // SAFETY: in bounds (checked above); the caller is the only one touching the range.
        unsafe { std::ptr::write_bytes(self.raw.as_mut_ptr().add(off), 0, len) };
        true
    }

    /// Drops the pages fully inside `[off, off + len)` from this process's page tables
    /// (`MADV_DONTNEED`). Best effort: errors are ignored.
    pub fn dont_need(&self, off: u64, len: u64) {
        let page = page_size();
        let start = off.div_ceil(page) * page;
        let end = (off.saturating_add(len).min(self.len()) / page) * page;
        if end <= start {
            return;
        }
        // SAFETY: MADV_DONTNEED on a MAP_SHARED file mapping only unmaps the pages; their
        // contents stay in the page cache and the next access faults in the same bytes, so no
        // live slice observes a change (module docs). The range is page aligned and in bounds.
        let _ = unsafe {
            self.raw.unchecked_advise_range(
                UncheckedAdvice::DontNeed,
                start as usize,
                (end - start) as usize,
            )
        };
    }

    /// `msync(MS_SYNC)` of `[off, off + len)`.
    pub fn flush(&self, off: u64, len: u64) -> io::Result<()> {
        let off = usize::try_from(off).map_err(io::Error::other)?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
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
    /// A view of `[off, off + len)` of `map`, or `None` if out of bounds.
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
        // SAFETY: the range was checked in bounds at construction, the map is kept alive by
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
