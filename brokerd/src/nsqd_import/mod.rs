//! Importing an nsqd 1.x data directory on first start.
//!
//! An operator stops nsqd and starts `brokerd --data-path <the same directory>`. Before loading
//! its topics, the broker finds `nsqd.dat`, and unless `nsqd-import.json` says the import was
//! done, copies every topic, channel, paused flag and queued message into its own storage.
//! nsqd's files are only read, never changed, and ignored once the import is done.
//!
//! - `diskqueue.rs`: a streaming reader of one go-diskqueue (nsqd's per-topic and per-channel
//!   queue files).
//! - `plan.rs`: [`scan`] reads `nsqd.dat` and counts every queue into a [`Plan`] (also the
//!   dry run, `ferry import-nsqd`).
//! - `importer.rs`: [`import_on_start`] builds Ferry topics in a staging directory and moves
//!   them into place, recording progress in the marker file.
//!
//! # Mapping
//! ```text
//!  nsqd                                   Ferry topic log of T
//!  T:c1 queue (c1's own backlog)  ──▶  [ c1 records ][ c2 records ]...[ T records ]
//!  T:c2 queue                                │             │          ▲
//!  T queue (not yet copied to channels)      │             │          └─ every channel's cursor
//!                                            └─ c1 entries └─ c2 entries (requeued, attempts kept)
//! ```
//! One channel (the one with the most never-delivered messages) has its never-delivered records
//! placed right before the topic's backlog and starts its cursor at them, so the commonest case
//! (one channel) needs no per-message entries at all. A topic with no channel keeps its backlog
//! for its first channel, as in nsqd. Timestamps and attempts are kept; message IDs become
//! Ferry's (record sequence numbers): nsqd's IDs are not carried over.
//!
//! # Crash safety
//! ```text
//!  1. scan + check (nothing written)       crash ⇒ next start redoes everything
//!  2. build <data>/nsqd-import.staging/    crash ⇒ no marker: staging removed, import redone
//!  3. marker {"state":"committing",...}
//!  4. rename staging/<t>.topic → topics/   crash ⇒ marker says committing: finish the renames
//!  5. marker {"state":"done",...}          crash ⇒ staging leftovers removed
//!  6. remove staging
//! ```
//! Renames and the marker (temp file, fsync, rename, fsync of the directory) are atomic, so a
//! SIGKILL at any point neither loses nor duplicates a message.
//!
//! # Failure policy
//! Corrupt nsqd data (bad JSON, bad queue metadata, an invalid record size, a truncated record,
//! a missing data file) stops the broker with an error naming the file, before anything is
//! written: importing part of a queue silently would lose messages. A Ferry topic that already
//! exists with the name of an nsqd topic is a conflict and stops the broker too. Either way,
//! moving `nsqd.dat` out of the data directory lets the broker start without importing.

mod diskqueue;
mod importer;
mod plan;
#[cfg(test)]
mod testutil;

use std::path::{Path, PathBuf};

pub use diskqueue::{NsqdMessage, QueueMeta, QueueReader};
pub use importer::{
    ImportRecord, ImportState, ImportSummary, ImportedChannel, ImportedTopic, MARKER_FILE,
    STAGING_DIR, import_on_start, read_marker,
};
pub use plan::{
    ChannelPlan, NSQD_METADATA, Plan, QueueCount, TopicPlan, channel_queue, has_nsqd_data, scan,
};

/// Why nsqd data could not be read or imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The directory has no `nsqd.dat`.
    #[error("{} holds no nsqd.dat: not an nsqd 1.x data directory", dir.display())]
    NotNsqd {
        /// The directory.
        dir: PathBuf,
    },
    /// A file system operation failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (`nsqd.dat`, the import marker) does not parse.
    #[error("corrupt {}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// An nsqd file (queue metadata, data) or the marker is malformed.
    #[error("corrupt {}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the offset for data files.
        reason: String,
    },
    /// A Ferry topic of the same name already exists (not from this import).
    #[error(
        "cannot import nsqd topic {topic:?}: Ferry topic directory {} already exists \
         (move it away, or move {} away to start without importing nsqd's data)",
        existing.display(), nsqd_dat.display()
    )]
    Conflict {
        /// The topic.
        topic: String,
        /// Ferry's topic directory.
        existing: PathBuf,
        /// nsqd's metadata file.
        nsqd_dat: PathBuf,
    },
    /// Writing the Ferry topic failed.
    #[error("cannot write imported topic {topic:?}")]
    Store {
        /// The topic.
        topic: String,
        /// The store's error.
        #[source]
        source: ferry_store::StoreError,
    },
}

impl ImportError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> ImportError {
        ImportError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> ImportError {
        ImportError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}
