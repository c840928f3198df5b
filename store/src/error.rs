//! The crate's error type.
//!
//! Every I/O failure carries the operation and the path it concerns, and keeps the
//! `io::Error` as its `#[source]`. Out-of-space conditions (`ENOSPC`, `EDQUOT`) are
//! classified as [`StoreError::DiskFull`] at the point where they are wrapped, so the
//! broker can map them to NSQ's `E_PUB_FAILED` without string matching.

use std::io;
use std::path::PathBuf;

/// Errors returned by the topic log and the metadata functions.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`"open segment"`, `"fsync"`...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Another process (or another `TopicLog` in this one) holds the directory lock.
    #[error("log directory {} is locked by another broker", .0.display())]
    Locked(PathBuf),
    /// The file system is out of space (or quota); nothing was written. Appending works
    /// again once space is freed.
    #[error("disk full: {op} {}: {source}", path.display())]
    DiskFull {
        /// What was being done.
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The operating system's error (`ENOSPC` or `EDQUOT`).
        #[source]
        source: io::Error,
    },
    /// A record body is larger than the on-disk format allows.
    #[error("record body of {len} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// The body's length.
        len: usize,
        /// The largest body accepted.
        max: usize,
    },
    /// The sequence space is used up (the log's next seq would overflow `u64`).
    #[error("sequence numbers exhausted")]
    SeqExhausted,
    /// The log was destroyed.
    #[error("topic log is closed")]
    Closed,
    /// The metadata file exists but cannot be decoded (torn or corrupt).
    #[error("corrupt metadata file {}: {reason}", path.display())]
    CorruptMeta {
        /// The metadata file.
        path: PathBuf,
        /// What was wrong with it.
        reason: &'static str,
    },
}

impl StoreError {
    /// Wraps an `io::Error`, classifying out-of-space errors as [`StoreError::DiskFull`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
            StoreError::DiskFull { op, path, source }
        } else {
            StoreError::Io { op, path, source }
        }
    }

    /// True if the failure was the file system running out of space.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::DiskFull { .. } => true,
            StoreError::Io { source, .. } => {
                matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
            }
            _ => false,
        }
    }
}
