//! Ferry's topic log: a segmented, memory-mapped, CRC-checked log per topic, with channels
//! as cursors into it.
//!
//! # Layout
//! ```text
//!  <dir>/                         one topic (the broker uses <data-path>/topics/<name>.topic/)
//!      LOCK                       flock'd while a log has it open (unless the caller holds a
//!                                 lock of its own: LogOptions::dir_lock; brokerd does)
//!      01700000000000000000.seg   segments, named by their first seq (20 digits), each
//!      01700000000000451234.seg   starting with a header; the last one is being appended to
//!      01700000000000460000.seg.tmp  a segment an append created, until that append commits
//!      meta.dat                   snapshot: paused flags, backlog start, topic and channel
//!                                 settings, every channel's cursor and owed entries, and the
//!                                 journal generation that continues it (save_meta/load_meta)
//!      journal.<gen>              channel ops since that snapshot: FIN, REQ, timeout, empty
//!                                 (Journal::append, read_journal, replay)
//! ```
//!
//! - [`TopicLog`] (`log.rs`, `disk.rs`, `memory.rs`): append once, read by seq or
//!   sequentially ([`LogReader`], `reader.rs`). Segment files (`segment.rs`) start small,
//!   grow up to `max_bytes_per_file`, are allocated for real (never sparse) and mapped
//!   (`map.rs`, the only place that dereferences a map); records
//!   (`record.rs`) carry length, CRC and seq, so recovery (`recovery.rs`) can cut a torn
//!   tail and skip corrupt regions.
//! - [`ChannelState`] (`channel.rs`): cursor, ready queue, deferred heap, in-flight table.
//! - [`save_meta`] / [`load_meta`] (`meta.rs`): atomic snapshots of channel state.
//! - [`Journal`] (`journal.rs`): the append-only journal of channel ops after a snapshot;
//!   [`replay`] applies it to a snapshot (a FIN above the snapshot's cursor proves delivery, so
//!   deliveries themselves are never written).
//!
//! # Invariants the broker can rely on
//! - An append that returned is in the page cache: killing the process loses nothing.
//!   [`TopicLog::sync`] makes it survive power loss.
//! - Readers see only committed records; a batch appears whole.
//! - Memory does not grow with the backlog: segments nobody reads are unmapped, pages behind
//!   the writer and each reader are released, and the index is sparse.
//! - Opening a log never panics, whatever its files hold; what was skipped is reported in
//!   [`RecoveryReport`].
//! - [`TopicLog`], [`LogReader`] and [`ChannelState`] are `Send + Sync`; `ChannelState`
//!   has no lock inside (wrap it in the channel's mutex).

mod channel;
mod disk;
mod error;
pub mod fault;
mod journal;
mod log;
mod map;
mod memory;
mod meta;
pub mod os;
mod reader;
mod record;
mod recovery;
mod segment;
mod sys;

pub use channel::{
    ChannelError, ChannelSnapshot, ChannelState, DeadLetter, Delivery, EntryKind, Peek, PeekItem,
    PeekState, Rewound, SnapshotEntry,
};
pub use error::StoreError;
pub use journal::{
    Journal, JournalContents, JournalOp, journal_path, read_journal, remove_other_journals, replay,
};
pub use log::{LogOptions, LogStats, SegmentSpan, TopicLog};
pub use meta::{
    ChannelMeta, ChannelSettings, META_FILE, TopicMeta, TopicSettings, decode_meta, encode_meta,
    load_meta, save_meta,
};
pub use reader::LogReader;
pub use record::{MAX_BODY, NewRecord, Record};
pub use recovery::RecoveryReport;

#[cfg(test)]
mod tests {
    #[test]
    fn shared_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<crate::TopicLog>();
        check::<crate::LogReader>();
        check::<crate::ChannelState>();
        check::<crate::Record>();
    }
}
