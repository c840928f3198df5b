//! Thin wrappers over the file-system calls the store needs beyond `std`: real allocation
//! of file ranges, directory fsync and the directory lock.
//!
//! Invariant: [`allocate`] either allocates every block of the requested range or fails
//! (no sparse files), so a later write through a memory map can never hit `ENOSPC` and
//! raise `SIGBUS`. It may extend the file partly before failing (the extension holds zeros).

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::StoreError;

/// `fallocate(mode 0)` of `[off, off + len)`, retried on `EINTR`; an empty range is a no-op.
fn fallocate(file: &File, off: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(()); // fallocate itself calls an empty range invalid
    }
    let off = libc::off_t::try_from(off).map_err(io::Error::other)?;
    let len = libc::off_t::try_from(len).map_err(io::Error::other)?;
    loop {
        // SAFETY: plain syscall on a valid, open file descriptor; no memory is passed.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, off, len) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// Allocates `[off, off + len)` of `file` for real (`fallocate`, mode 0), extending the file
/// if the range ends past it. Falls back to writing zeros over the range where the file
/// system does not support `fallocate`, so the range must not hold data anyone needs.
pub(crate) fn allocate(file: &File, off: u64, len: u64) -> io::Result<()> {
    match fallocate(file, off, len) {
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => write_zeros(file, off, len),
        other => other,
    }
}

/// Makes sure `[off, off + len)`, which lies inside the file and may hold data, has no holes
/// (a file copied sparsely, say) before it is written through a map: `fallocate` of an
/// allocated range changes nothing. Without `fallocate` support it does nothing (it must not
/// write zeros over data).
pub(crate) fn fill_holes(file: &File, off: u64, len: u64) -> io::Result<()> {
    match fallocate(file, off, len) {
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
        other => other,
    }
}

fn write_zeros(file: &File, off: u64, len: u64) -> io::Result<()> {
    let zeros = vec![0u8; 1 << 16];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], off + done)?;
        done += n as u64;
    }
    Ok(())
}

/// `fsync` of a directory, making renames, creations and deletions in it durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("fsync directory", dir, e))
}

/// How long [`DirLock::acquire`] waits for a lock held by someone else.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

/// An exclusive `flock` on `<dir>/LOCK`, held until dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock, or fails with [`StoreError::Locked`] if anyone holds it (another
    /// process, or another open log in this process: `flock` locks are per open file).
    pub fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        let path = dir.join("LOCK");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::io("open lock file", &path, e))?;
        // A lock can outlive its owner for an instant: a process that forks (to spawn a child)
        // shares the descriptor until the child's exec closes it. Retry briefly before calling
        // the directory taken.
        let deadline = std::time::Instant::now() + LOCK_PATIENCE;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(DirLock { _file: file }),
                Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(StoreError::Locked(dir.to_path_buf()));
                }
                Err(TryLockError::Error(e)) => return Err(StoreError::io("lock", &path, e)),
            }
        }
    }
}
