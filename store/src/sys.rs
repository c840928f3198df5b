//! Thin wrappers over the file-system calls the store needs beyond `std`: real
//! preallocation, directory fsync and the directory lock.
//!
//! Invariant: [`preallocate`] either allocates every block of the requested range or fails
//! (no sparse files), so a later write through a memory map can never hit `ENOSPC` and
//! raise `SIGBUS`.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::StoreError;

/// Allocates `[0, len)` of `file` for real (`fallocate`, mode 0). Falls back to writing zeros
/// where the file system does not support `fallocate`.
pub(crate) fn preallocate(file: &File, len: u64) -> io::Result<()> {
    let off_len = libc::off_t::try_from(len).map_err(io::Error::other)?;
    loop {
        // SAFETY: plain syscall on a valid, open file descriptor; no memory is passed.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, off_len) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) => return write_zeros(file, len),
            _ => return Err(err),
        }
    }
}

fn write_zeros(mut file: &File, len: u64) -> io::Result<()> {
    let zeros = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])?;
        left -= n as u64;
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
