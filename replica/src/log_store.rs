//! A group's durable Raft log: its entries, its vote and how far it was purged.
//!
//! Entries live in files `log.<first index>` (20 digits) in the group's directory, as frames
//! `[len u32 LE][crc32 u32 LE][postcard entry]`, the entry carrying its own log id. A file
//! rolls over past [`RaftLog::open`]'s `max_file_bytes`. Only an index of where each entry is
//! stays in memory; reads go to the files (the page cache holds what followers are sent).
//! At open the files are scanned and a torn or corrupt tail is cut off: an entry whose write
//! was not reported flushed may be lost, never one that was.
//!
//! `vote` and `purged` are small files `[crc32][postcard value]` replaced atomically (written
//! aside, fsynced, renamed, the directory fsynced): a vote is always durable before it is used.
//!
//! [`SyncMode`] says when an append is reported flushed to openraft: once written to the page
//! cache (a killed process loses nothing; the broker's default), or once fdatasynced by the
//! log's sync thread, which syncs every file written since its last round at once (group
//! commit), so the latency of one fdatasync is shared by every append waiting meanwhile.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{LogId, OptionalSend, RaftLogReader, StorageIOError, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Entry, NodeId, StorageError, TypeConfig};

const FRAME_HEADER: usize = 8;
const LOG_PREFIX: &str = "log.";
const VOTE_FILE: &str = "vote";
const PURGED_FILE: &str = "purged";

/// When an append counts as flushed (and so as stored on this node, for Raft's majority).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Once written (page cache): survives the process, not a power cut.
    Written,
    /// Once fdatasynced: survives a power cut.
    Synced,
}

/// A group's Raft log. Cloning shares it (openraft's reader is a clone).
#[derive(Clone)]
pub struct RaftLog {
    inner: Arc<Mutex<Inner>>,
    syncer: Option<mpsc::Sender<SyncJob>>,
}

struct Inner {
    dir: PathBuf,
    max_file_bytes: u64,
    mode: SyncMode,
    /// Log files by their first index.
    files: BTreeMap<u64, Arc<File>>,
    /// Where each present entry is.
    index: BTreeMap<u64, Loc>,
    /// The file appends go to (the last one) and its length.
    active: Option<(u64, u64)>,
    purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
}

#[derive(Debug, Clone, Copy)]
struct Loc {
    log_id: LogId<NodeId>,
    file: u64,
    offset: u64,
    len: u32,
}

struct SyncJob {
    files: Vec<Arc<File>>,
    done: LogFlushed<TypeConfig>,
}

impl std::fmt::Debug for RaftLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("RaftLog")
            .field("dir", &inner.dir)
            .field("entries", &inner.index.len())
            .field("last_log_id", &inner.last_log_id())
            .finish()
    }
}

impl RaftLog {
    /// Opens (or creates) the log in `dir`, cutting off a torn tail.
    pub fn open(dir: &Path, mode: SyncMode, max_file_bytes: u64) -> io::Result<RaftLog> {
        fs::create_dir_all(dir)?;
        let mut inner = Inner {
            dir: dir.to_path_buf(),
            max_file_bytes: max_file_bytes.max(4096),
            mode,
            files: BTreeMap::new(),
            index: BTreeMap::new(),
            active: None,
            purged: read_small(&dir.join(PURGED_FILE))?.flatten(),
            vote: read_small(&dir.join(VOTE_FILE))?,
        };
        inner.recover()?;
        let syncer = (mode == SyncMode::Synced).then(spawn_syncer).transpose()?;
        Ok(RaftLog {
            inner: Arc::new(Mutex::new(inner)),
            syncer,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data: every change is made in
        // memory after its file operation succeeded.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last log id present (or purged), for tests and stats.
    pub fn last_log_id(&self) -> Option<LogId<NodeId>> {
        self.lock().last_log_id()
    }

    /// Number of entries present (not purged).
    pub fn len(&self) -> usize {
        self.lock().index.len()
    }

    /// Whether no entry is present.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of log files.
    pub fn file_count(&self) -> usize {
        self.lock().files.len()
    }
}

impl Inner {
    fn last_log_id(&self) -> Option<LogId<NodeId>> {
        self.index
            .last_key_value()
            .map(|(_, loc)| loc.log_id)
            .or(self.purged)
    }

    /// Scans every log file in index order, keeping contiguous, intact entries; the first bad
    /// frame ends the log there (its file is cut, later files removed).
    fn recover(&mut self) -> io::Result<()> {
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for dirent in fs::read_dir(&self.dir)? {
            let dirent = dirent?;
            let name = dirent.file_name();
            let Some(first) = name
                .to_str()
                .and_then(|n| n.strip_prefix(LOG_PREFIX))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            names.push((first, dirent.path()));
        }
        names.sort();
        let mut expected: Option<u64> = None;
        let mut ended = false;
        for (first, path) in names {
            if ended {
                tracing::warn!(path = %path.display(), "raft log: removing a file past a cut tail");
                fs::remove_file(&path)?;
                continue;
            }
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let bytes = fs::read(&path)?;
            let mut offset = 0usize;
            while offset < bytes.len() {
                match decode_frame(&bytes[offset..]) {
                    Some((entry, frame_len)) => {
                        let index = entry.log_id.index;
                        if expected.is_some_and(|e| e != index) {
                            break;
                        }
                        expected = Some(index + 1);
                        if self.purged.is_none_or(|p| index > p.index) {
                            self.index.insert(
                                index,
                                Loc {
                                    log_id: entry.log_id,
                                    file: first,
                                    offset: offset as u64,
                                    len: frame_len as u32,
                                },
                            );
                        }
                        offset += frame_len;
                    }
                    None => break,
                }
            }
            if offset < bytes.len() {
                tracing::warn!(
                    path = %path.display(),
                    kept = offset,
                    cut = bytes.len() - offset,
                    "raft log: cutting a torn or corrupt tail"
                );
                file.set_len(offset as u64)?;
                file.sync_data()?;
                ended = true;
            }
            self.files.insert(first, Arc::new(file));
            self.active = Some((first, offset as u64));
        }
        Ok(())
    }

    fn file_path(&self, first: u64) -> PathBuf {
        self.dir.join(format!("{LOG_PREFIX}{first:020}"))
    }

    /// Writes `entries` (contiguous, following the last one) to the active file, opening a new
    /// one when it is full; returns the files written.
    fn append(&mut self, entries: Vec<Entry>) -> io::Result<Vec<Arc<File>>> {
        let mut written: Vec<Arc<File>> = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut locs: Vec<Loc> = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            let roll = match self.active {
                None => true,
                Some((_, len)) => len + pending.len() as u64 >= self.max_file_bytes,
            };
            if roll {
                self.flush_pending(&mut pending, &mut locs, &mut written)?;
                let path = self.file_path(index);
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)?;
                if self.mode == SyncMode::Synced {
                    File::open(&self.dir)?.sync_all()?;
                }
                self.files.insert(index, Arc::new(file));
                self.active = Some((index, 0));
            }
            let (file, len) = self.active.expect("an active file after a roll");
            let frame = encode_frame(&entry)?;
            locs.push(Loc {
                log_id: entry.log_id,
                file,
                offset: len + pending.len() as u64,
                len: frame.len() as u32,
            });
            pending.extend_from_slice(&frame);
        }
        self.flush_pending(&mut pending, &mut locs, &mut written)?;
        Ok(written)
    }

    fn flush_pending(
        &mut self,
        pending: &mut Vec<u8>,
        locs: &mut Vec<Loc>,
        written: &mut Vec<Arc<File>>,
    ) -> io::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let (first, len) = self.active.expect("pending frames have an active file");
        let file = Arc::clone(&self.files[&first]);
        file.write_all_at(pending, len)?;
        self.active = Some((first, len + pending.len() as u64));
        for loc in locs.drain(..) {
            self.index.insert(loc.log_id.index, loc);
        }
        if !written.iter().any(|f| Arc::ptr_eq(f, &file)) {
            written.push(file);
        }
        pending.clear();
        Ok(())
    }

    /// Removes entries at and after `index`.
    fn truncate(&mut self, index: u64) -> io::Result<()> {
        let Some(loc) = self.index.get(&index).copied() else {
            return Ok(());
        };
        let later: Vec<u64> = self
            .files
            .range((Bound::Excluded(loc.file), Bound::Unbounded))
            .map(|(first, _)| *first)
            .collect();
        for first in later {
            self.files.remove(&first);
            fs::remove_file(self.file_path(first))?;
        }
        let file = &self.files[&loc.file];
        file.set_len(loc.offset)?;
        file.sync_data()?;
        self.active = Some((loc.file, loc.offset));
        self.index.split_off(&index);
        Ok(())
    }

    /// Forgets entries up to `log_id` and deletes the files that hold nothing else.
    fn purge(&mut self, log_id: LogId<NodeId>) -> io::Result<()> {
        write_small(
            &self.dir,
            PURGED_FILE,
            &Some(log_id),
            self.mode == SyncMode::Synced,
        )?;
        self.purged = Some(log_id);
        self.index = self.index.split_off(&(log_id.index + 1));
        // A file is wholly purged when the next file starts at or before the purge point + 1;
        // the active file always stays.
        let firsts: Vec<u64> = self.files.keys().copied().collect();
        for pair in firsts.windows(2) {
            if pair[1] <= log_id.index + 1 {
                self.files.remove(&pair[0]);
                fs::remove_file(self.file_path(pair[0]))?;
            }
        }
        Ok(())
    }

    fn read(&self, range: impl RangeBounds<u64>) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for loc in self.index.range(range).map(|(_, loc)| *loc) {
            let mut buf = vec![0u8; loc.len as usize];
            self.files[&loc.file].read_exact_at(&mut buf, loc.offset)?;
            let (entry, _) = decode_frame(&buf).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("raft log: entry {} does not read back", loc.log_id.index),
                )
            })?;
            out.push(entry);
        }
        Ok(out)
    }
}

fn encode_frame(entry: &Entry) -> io::Result<Vec<u8>> {
    let payload = postcard::to_stdvec(entry).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(FRAME_HEADER + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// The entry at the start of `bytes` and its frame's length, or `None` for a torn, zeroed or
/// corrupt frame.
fn decode_frame(bytes: &[u8]) -> Option<(Entry, usize)> {
    let header = bytes.get(..FRAME_HEADER)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if len == 0 {
        return None;
    }
    let payload = bytes.get(FRAME_HEADER..FRAME_HEADER + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let entry = postcard::from_bytes(payload).ok()?;
    Some((entry, FRAME_HEADER + len))
}

/// Reads a small `[crc][postcard]` file; `None` when it does not exist.
pub(crate) fn read_small<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let damaged = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: damaged ({why})", path.display()),
        )
    };
    let (crc, payload) = bytes
        .split_at_checked(4)
        .ok_or_else(|| damaged("too short"))?;
    if crc32fast::hash(payload).to_le_bytes() != crc {
        return Err(damaged("checksum"));
    }
    postcard::from_bytes(payload)
        .map(Some)
        .map_err(|e| damaged(&e.to_string()))
}

/// Replaces `dir/name` with `[crc][postcard value]` atomically; with `sync`, durably.
pub(crate) fn write_small<T: Serialize>(
    dir: &Path,
    name: &str,
    value: &T,
    sync: bool,
) -> io::Result<()> {
    let payload = postcard::to_stdvec(value).map_err(io::Error::other)?;
    let mut bytes = crc32fast::hash(&payload).to_le_bytes().to_vec();
    bytes.extend_from_slice(&payload);
    let tmp = dir.join(format!("{name}.tmp"));
    let file = File::create(&tmp)?;
    file.write_all_at(&bytes, 0)?;
    if sync {
        file.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    if sync {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The sync thread: each round takes every job queued, fdatasyncs each file once, then reports
/// the jobs flushed in order.
fn spawn_syncer() -> io::Result<mpsc::Sender<SyncJob>> {
    let (tx, rx) = mpsc::channel::<SyncJob>();
    std::thread::Builder::new()
        .name("raft-log-sync".to_string())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut jobs = vec![first];
                jobs.extend(rx.try_iter());
                let mut files: Vec<&Arc<File>> = Vec::new();
                for file in jobs.iter().flat_map(|j| &j.files) {
                    if !files.iter().any(|f| Arc::ptr_eq(f, file)) {
                        files.push(file);
                    }
                }
                let result = files.iter().try_for_each(|f| f.sync_data());
                let failed = result.as_ref().err().map(|e| e.to_string());
                for job in jobs {
                    let res = match &failed {
                        None => Ok(()),
                        Some(e) => Err(io::Error::other(e.clone())),
                    };
                    job.done.log_io_completed(res);
                }
            }
        })?;
    Ok(tx)
}

fn storage_err(e: StorageIOError<NodeId>) -> StorageError {
    e.into()
}

impl RaftLogReader<TypeConfig> for RaftLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.lock()
            .read(range)
            .map_err(|e| storage_err(StorageIOError::read_logs(&e)))
    }
}

impl RaftLogStorage<TypeConfig> for RaftLog {
    type LogReader = RaftLog;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.lock();
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: inner.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let mut inner = self.lock();
        write_small(&inner.dir, VOTE_FILE, vote, true)
            .map_err(|e| storage_err(StorageIOError::write_vote(&e)))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let written = self
            .lock()
            .append(entries.into_iter().collect())
            .map_err(|e| storage_err(StorageIOError::write_logs(&e)))?;
        match &self.syncer {
            None => callback.log_io_completed(Ok(())),
            Some(syncer) => {
                if let Err(mpsc::SendError(job)) = syncer.send(SyncJob {
                    files: written,
                    done: callback,
                }) {
                    job.done
                        .log_io_completed(Err(io::Error::other("raft log sync thread ended")));
                }
            }
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        self.lock()
            .truncate(log_id.index)
            .map_err(|e| storage_err(StorageIOError::write_logs(&e)))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        self.lock()
            .purge(log_id)
            .map_err(|e| storage_err(StorageIOError::write_logs(&e)))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::{Batch, Command};

    fn log_id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn publish(term: u64, index: u64, body: &str) -> Entry {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Normal(Command::Publish {
                batch: Batch::new(index as i64, 0, &[body.as_bytes()]),
            }),
        }
    }

    fn write(log: &RaftLog, entries: Vec<Entry>) {
        log.lock().append(entries).unwrap();
    }

    fn indexes(log: &RaftLog) -> Vec<u64> {
        log.lock()
            .read(..)
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect()
    }

    #[test]
    fn entries_roll_over_files_and_read_back_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = RaftLog::open(dir.path(), SyncMode::Written, 4096).unwrap();
        let body = "x".repeat(500);
        write(&log, (1..=40).map(|i| publish(1, i, &body)).collect());
        assert!(log.file_count() > 3, "{} files", log.file_count());
        drop(log);
        let log = RaftLog::open(dir.path(), SyncMode::Written, 4096).unwrap();
        assert_eq!(indexes(&log), (1..=40).collect::<Vec<_>>());
        assert_eq!(log.last_log_id(), Some(log_id(1, 40)));
    }

    #[test]
    fn a_torn_tail_is_cut_at_the_last_whole_entry() {
        let dir = tempfile::tempdir().unwrap();
        let log = RaftLog::open(dir.path(), SyncMode::Written, 1 << 20).unwrap();
        write(&log, (1..=5).map(|i| publish(1, i, "hello")).collect());
        drop(log);
        let path = dir.path().join(format!("{LOG_PREFIX}{:020}", 1));
        let len = fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 3).unwrap();
        drop(file);
        let log = RaftLog::open(dir.path(), SyncMode::Written, 1 << 20).unwrap();
        assert_eq!(indexes(&log), vec![1, 2, 3, 4]);
        write(&log, vec![publish(2, 5, "again")]);
        drop(log);
        let log = RaftLog::open(dir.path(), SyncMode::Written, 1 << 20).unwrap();
        assert_eq!(indexes(&log), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn truncate_and_purge_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = RaftLog::open(dir.path(), SyncMode::Synced, 4096).unwrap();
        let body = "y".repeat(700);
        write(&log, (1..=30).map(|i| publish(1, i, &body)).collect());
        let files = log.file_count();
        log.lock().truncate(21).unwrap();
        write(&log, (21..=25).map(|i| publish(2, i, &body)).collect());
        log.lock().purge(log_id(1, 12)).unwrap();
        assert!(log.file_count() < files);
        drop(log);
        let log = RaftLog::open(dir.path(), SyncMode::Synced, 4096).unwrap();
        assert_eq!(indexes(&log), (13..=25).collect::<Vec<_>>());
        assert_eq!(log.last_log_id(), Some(log_id(2, 25)));
        assert_eq!(log.lock().purged, Some(log_id(1, 12)));
    }

    #[test]
    fn a_damaged_vote_file_is_an_error_not_a_fresh_vote() {
        let dir = tempfile::tempdir().unwrap();
        write_small(dir.path(), VOTE_FILE, &Vote::<NodeId>::new(3, 7), true).unwrap();
        let log = RaftLog::open(dir.path(), SyncMode::Written, 4096).unwrap();
        assert_eq!(log.lock().vote, Some(Vote::new(3, 7)));
        drop(log);
        let path = dir.path().join(VOTE_FILE);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        assert!(RaftLog::open(dir.path(), SyncMode::Written, 4096).is_err());
    }
}
