//! Building Ferry topics from an nsqd [`Plan`] and committing them, with the marker file that
//! makes the import happen once (steps and crash cases in the module docs of `nsqd_import`).
//!
//! ```text
//!  <data>/nsqd-import.json              marker: {"state":"committing"|"done", topics, counts}
//!  <data>/nsqd-import.staging/<t>.topic  topics being built (never loaded by the broker)
//! ```

use std::cmp::Reverse;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use ferry_store::{
    ChannelMeta, ChannelSnapshot, EntryKind, LogOptions, NewRecord, SnapshotEntry, StoreError,
    TopicLog, TopicMeta,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::diskqueue::QueueReader;
use super::plan::{
    NSQD_METADATA, QueueCount, TopicPlan, channel_queue, has_nsqd_data, old_nsqd_metadata, scan,
};
use super::{ImportError, Plan};
use crate::clock::{now_ns, now_secs};
use crate::topic::topic_dir;

/// The marker file, in the data directory.
pub const MARKER_FILE: &str = "nsqd-import.json";
/// Where topics are built before they move into `topics/`.
pub const STAGING_DIR: &str = "nsqd-import.staging";
const MARKER_FORMAT: u32 = 1;
/// An append batch is flushed at this many body bytes or records.
const BATCH_BYTES: usize = 4 << 20;
const BATCH_RECORDS: usize = 4096;

/// Where an import stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportState {
    /// Every topic is built in the staging directory; moving them into place may be
    /// unfinished.
    Committing,
    /// Finished: nsqd's files are ignored from now on.
    Done,
}

/// What the marker file records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRecord {
    /// Marker format version.
    pub format: u32,
    /// Progress.
    pub state: ImportState,
    /// nsqd's version from `nsqd.dat`.
    pub nsqd_version: String,
    /// When the import was built, Unix seconds.
    pub imported_at_unix: i64,
    /// Messages copied (each stored nsqd message once).
    pub messages: u64,
    /// Body bytes copied.
    pub bytes: u64,
    /// Imported topics.
    pub topics: Vec<ImportedTopic>,
}

/// One imported topic in [`ImportRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedTopic {
    /// Topic name.
    pub name: String,
    /// Paused flag.
    pub paused: bool,
    /// Messages of the topic's own backlog.
    pub messages: u64,
    /// Its channels.
    pub channels: Vec<ImportedChannel>,
}

/// One imported channel in [`ImportedTopic`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedChannel {
    /// Channel name.
    pub name: String,
    /// Paused flag.
    pub paused: bool,
    /// Messages of the channel's own backlog.
    pub messages: u64,
}

/// What [`import_on_start`] did.
#[derive(Debug, Clone)]
pub struct ImportSummary {
    /// The finished import.
    pub record: ImportRecord,
    /// True when an interrupted import was completed rather than run.
    pub resumed: bool,
    /// Time taken.
    pub elapsed: Duration,
}

/// Reads the marker file; `Ok(None)` if there is none.
pub fn read_marker(data: &Path) -> Result<Option<ImportRecord>, ImportError> {
    let path = data.join(MARKER_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ImportError::io("read", &path, e)),
    };
    let record: ImportRecord =
        serde_json::from_slice(&text).map_err(|source| ImportError::Json {
            path: path.clone(),
            source,
        })?;
    if record.format != MARKER_FORMAT {
        return Err(ImportError::corrupt(
            &path,
            format!("unsupported marker format {}", record.format),
        ));
    }
    Ok(Some(record))
}

/// Replaces the marker atomically and durably (temp file, fsync, rename, fsync directory).
fn write_marker(data: &Path, record: &ImportRecord) -> Result<(), ImportError> {
    let path = data.join(MARKER_FILE);
    let tmp = data.join(format!("{MARKER_FILE}.tmp"));
    let mut json = serde_json::to_vec_pretty(record).map_err(|source| ImportError::Json {
        path: path.clone(),
        source,
    })?;
    json.push(b'\n');
    let mut f = std::fs::File::create(&tmp).map_err(|e| ImportError::io("create", &tmp, e))?;
    f.write_all(&json)
        .and_then(|()| f.sync_all())
        .map_err(|e| ImportError::io("write", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| ImportError::io("rename", &tmp, e))?;
    sync_dir(data)
}

fn sync_dir(dir: &Path) -> Result<(), ImportError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ImportError::io("fsync", dir, e))
}

/// Removes the staging directory; true if there was one.
fn remove_staging(staging: &Path) -> Result<bool, ImportError> {
    match std::fs::remove_dir_all(staging) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ImportError::io("remove", staging, e)),
    }
}

/// Removes what a crash left in the staging directory.
fn remove_stale_staging(staging: &Path) -> Result<(), ImportError> {
    if remove_staging(staging)? {
        info!(dir = %staging.display(), "removed what an interrupted nsqd import left");
    }
    Ok(())
}

/// At broker start, before topics are loaded: imports the nsqd 1.x data in `data` unless
/// there is none or the marker says it was imported; finishes an interrupted import.
/// `log` gives the options of the topic logs it creates. Blocking file I/O.
pub fn import_on_start(
    data: &Path,
    topics_dir: &Path,
    log: &LogOptions,
) -> Result<Option<ImportSummary>, ImportError> {
    let started = Instant::now();
    let staging = data.join(STAGING_DIR);
    match read_marker(data)? {
        Some(record) if record.state == ImportState::Done => {
            remove_stale_staging(&staging)?;
            info!(
                marker = %data.join(MARKER_FILE).display(),
                "nsqd data was imported before; ignoring nsqd's files"
            );
            return Ok(None);
        }
        Some(mut record) => {
            info!("finishing an interrupted nsqd import");
            commit(data, topics_dir, &mut record)?;
            log_import(&record, started.elapsed());
            return Ok(Some(ImportSummary {
                record,
                resumed: true,
                elapsed: started.elapsed(),
            }));
        }
        None => {}
    }
    // A staging directory without a marker is what a crash during the build leaves.
    remove_stale_staging(&staging)?;
    if !has_nsqd_data(data) {
        if let Some(old) = old_nsqd_metadata(data) {
            warn!(
                file = %old.display(),
                "old nsqd metadata (nsqd.<id>.dat) is not imported: only nsqd 1.x's nsqd.dat is"
            );
        }
        return Ok(None);
    }
    info!(dir = %data.display(), "found nsqd data; importing it");
    let plan = scan(data)?;
    for w in &plan.warnings {
        warn!(dir = %data.display(), "nsqd import: {w}");
    }
    for t in &plan.topics {
        let existing = topic_dir(topics_dir, &t.name);
        if existing.exists() {
            return Err(ImportError::Conflict {
                topic: t.name.clone(),
                existing,
                nsqd_dat: data.join(NSQD_METADATA),
            });
        }
    }
    std::fs::create_dir_all(&staging).map_err(|e| ImportError::io("create", &staging, e))?;
    let mut record = match stage(&plan, &staging, log) {
        Ok(r) => r,
        Err(e) => {
            // Best effort; the next start removes it anyway.
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    sync_dir(&staging)?;
    write_marker(data, &record)?;
    commit(data, topics_dir, &mut record)?;
    log_import(&record, started.elapsed());
    Ok(Some(ImportSummary {
        record,
        resumed: false,
        elapsed: started.elapsed(),
    }))
}

/// Builds every topic of `plan` under `staging`; returns the marker to commit.
fn stage(plan: &Plan, staging: &Path, log: &LogOptions) -> Result<ImportRecord, ImportError> {
    let mut record = ImportRecord {
        format: MARKER_FORMAT,
        state: ImportState::Committing,
        nsqd_version: plan.nsqd_version.clone(),
        imported_at_unix: now_secs(),
        messages: 0,
        bytes: 0,
        topics: Vec::with_capacity(plan.topics.len()),
    };
    let mut batch = Batch::default();
    for t in &plan.topics {
        let (topic, count) = stage_topic(&plan.dir, staging, t, log, &mut batch)?;
        record.messages += count.messages;
        record.bytes += count.bytes;
        record.topics.push(topic);
    }
    Ok(record)
}

/// Which records of a queue to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pick {
    All,
    /// attempts > 0
    Retried,
    /// attempts == 0
    Fresh,
}

/// Builds one topic: every channel's own backlog, then the topic's backlog (see the mapping
/// in the module docs). Returns the topic for the marker and what was copied.
fn stage_topic(
    data: &Path,
    staging: &Path,
    plan: &TopicPlan,
    log: &LogOptions,
    batch: &mut Batch,
) -> Result<(ImportedTopic, QueueCount), ImportError> {
    let dir = topic_dir(staging, &plan.name);
    let store_err = |source: StoreError| ImportError::Store {
        topic: plan.name.clone(),
        source,
    };
    let opts = LogOptions {
        // As for a topic created by a publish: IDs never repeat one used before.
        initial_seq: now_ns().max(1) as u64,
        ..log.clone()
    };
    let (tlog, _) = TopicLog::open(&dir, opts).map_err(store_err)?;
    // The channel whose never-delivered messages are covered by its cursor (no entries).
    let cursor_channel = plan
        .channels
        .iter()
        .enumerate()
        .map(|(i, c)| (c.queue.messages - c.queue.retried, Reverse(i)))
        .filter(|&(fresh, _)| fresh > 0)
        .max()
        .map(|(_, Reverse(i))| i);

    // The cursor channel goes last, so its fresh records end right where the topic's
    // backlog starts.
    let mut order: Vec<usize> = (0..plan.channels.len())
        .filter(|&i| Some(i) != cursor_channel)
        .collect();
    order.extend(cursor_channel);

    let mut total = QueueCount::default();
    let mut counts = vec![QueueCount::default(); plan.channels.len()];
    let mut states = vec![ChannelSnapshot::default(); plan.channels.len()];
    for i in order {
        let queue = channel_queue(&plan.name, &plan.channels[i].name);
        let mut entries = Vec::new();
        let mut owed = |seq, attempts| entries.push(requeued(seq, attempts));
        let mut copy = |pick, on_record: &mut dyn FnMut(u64, u16)| {
            copy_queue(&tlog, &plan.name, data, &queue, pick, batch, on_record)
        };
        let cursor = if Some(i) == cursor_channel {
            counts[i].merge(copy(Pick::Retried, &mut owed)?);
            let cursor = tlog.next_seq();
            counts[i].merge(copy(Pick::Fresh, &mut |_, _| {})?);
            cursor
        } else {
            counts[i].merge(copy(Pick::All, &mut owed)?);
            // Set below: the other channels start at the topic's backlog.
            u64::MAX
        };
        total.merge(counts[i]);
        states[i] = ChannelSnapshot { cursor, entries };
    }
    let topic_start = tlog.next_seq();
    let channels: Vec<ChannelMeta> = plan
        .channels
        .iter()
        .zip(states)
        .map(|(c, mut state)| {
            if state.cursor == u64::MAX {
                state.cursor = topic_start;
            }
            ChannelMeta {
                name: c.name.clone(),
                paused: c.paused,
                state,
                ..ChannelMeta::default()
            }
        })
        .collect();
    let backlog = copy_queue(
        &tlog,
        &plan.name,
        data,
        &plan.name,
        Pick::All,
        batch,
        &mut |_, _| {},
    )?;
    total.merge(backlog);
    tlog.sync().map_err(store_err)?;
    ferry_store::save_meta(
        &dir,
        &TopicMeta {
            paused: plan.paused,
            channels,
            ..TopicMeta::default()
        },
    )
    .map_err(store_err)?;
    drop(tlog);
    let topic = ImportedTopic {
        name: plan.name.clone(),
        paused: plan.paused,
        messages: backlog.messages,
        channels: plan
            .channels
            .iter()
            .zip(&counts)
            .map(|(c, n)| ImportedChannel {
                name: c.name.clone(),
                paused: c.paused,
                messages: n.messages,
            })
            .collect(),
    };
    Ok((topic, total))
}

fn requeued(seq: u64, attempts: u16) -> SnapshotEntry {
    SnapshotEntry {
        seq,
        attempts,
        deliver_at_ns: 0,
        kind: EntryKind::Requeued,
    }
}

/// Appends the records of queue `queue` that `pick` selects to `log`, in order, calling
/// `on_record(seq, nsqd_attempts)` for each once it is appended.
fn copy_queue(
    log: &TopicLog,
    topic: &str,
    data: &Path,
    queue: &str,
    pick: Pick,
    batch: &mut Batch,
    on_record: &mut dyn FnMut(u64, u16),
) -> Result<QueueCount, ImportError> {
    let store_err = |source: StoreError| ImportError::Store {
        topic: topic.to_owned(),
        source,
    };
    let mut reader = QueueReader::open(data, queue)?;
    let mut count = QueueCount::default();
    while let Some(m) = reader.next_message()? {
        let keep = match pick {
            Pick::All => true,
            Pick::Retried => m.attempts > 0,
            Pick::Fresh => m.attempts == 0,
        };
        if !keep {
            continue;
        }
        count.add(m.body.len(), m.attempts);
        batch.push(m.timestamp_ns, m.attempts, m.body);
        if batch.is_full() {
            batch.flush(log, on_record).map_err(store_err)?;
        }
    }
    batch.flush(log, on_record).map_err(store_err)?;
    Ok(count)
}

/// Records waiting to be appended in one batch: bodies copied into one buffer.
#[derive(Debug, Default)]
struct Batch {
    bodies: Vec<u8>,
    /// (timestamp, nsqd attempts, end of the body in `bodies`)
    items: Vec<(i64, u16, usize)>,
}

impl Batch {
    fn push(&mut self, timestamp_ns: i64, attempts: u16, body: &[u8]) {
        self.bodies.extend_from_slice(body);
        self.items.push((timestamp_ns, attempts, self.bodies.len()));
    }

    fn is_full(&self) -> bool {
        self.bodies.len() >= BATCH_BYTES || self.items.len() >= BATCH_RECORDS
    }

    fn flush(
        &mut self,
        log: &TopicLog,
        on_record: &mut dyn FnMut(u64, u16),
    ) -> Result<(), StoreError> {
        if self.items.is_empty() {
            return Ok(());
        }
        let mut start = 0;
        let recs: Vec<NewRecord<'_>> = self
            .items
            .iter()
            .map(|&(timestamp_ns, _, end)| {
                let body = &self.bodies[start..end];
                start = end;
                NewRecord {
                    timestamp_ns,
                    deliver_at_ns: 0,
                    body,
                }
            })
            .collect();
        let seqs = log.append_batch(&recs)?;
        for (seq, &(_, attempts, _)) in seqs.zip(&self.items) {
            on_record(seq, attempts);
        }
        self.items.clear();
        self.bodies.clear();
        Ok(())
    }
}

/// Moves every staged topic of `record` into `topics_dir` (those a crash already moved are
/// left), then marks the import done and removes the staging directory.
fn commit(data: &Path, topics_dir: &Path, record: &mut ImportRecord) -> Result<(), ImportError> {
    let staging = data.join(STAGING_DIR);
    for t in &record.topics {
        let src = topic_dir(&staging, &t.name);
        let dst = topic_dir(topics_dir, &t.name);
        match (src.exists(), dst.exists()) {
            (true, false) => {
                std::fs::rename(&src, &dst).map_err(|e| ImportError::io("move", &src, e))?;
            }
            // Moved before a crash.
            (false, true) => {}
            (true, true) => {
                return Err(ImportError::Conflict {
                    topic: t.name.clone(),
                    existing: dst,
                    nsqd_dat: data.join(NSQD_METADATA),
                });
            }
            (false, false) => {
                return Err(ImportError::corrupt(
                    &data.join(MARKER_FILE),
                    format!(
                        "imported topic {:?} is neither in {} nor in {}",
                        t.name,
                        staging.display(),
                        topics_dir.display()
                    ),
                ));
            }
        }
    }
    sync_dir(topics_dir)?;
    record.state = ImportState::Done;
    write_marker(data, record)?;
    remove_staging(&staging).map(drop)
}

fn log_import(record: &ImportRecord, elapsed: Duration) {
    let mut channels = 0;
    for t in &record.topics {
        channels += t.channels.len();
        let list: Vec<String> = t
            .channels
            .iter()
            .map(|c| {
                let paused = if c.paused { "(paused)" } else { "" };
                format!("{}={}{paused}", c.name, c.messages)
            })
            .collect();
        let list = if list.is_empty() {
            "none".to_owned()
        } else {
            list.join(",")
        };
        info!(
            topic = %t.name,
            paused = t.paused,
            topic_backlog = t.messages,
            channels = %list,
            "imported nsqd topic"
        );
    }
    info!(
        topics = record.topics.len(),
        channels,
        messages = record.messages,
        bytes = record.bytes,
        nsqd_version = %record.nsqd_version,
        elapsed_ms = elapsed.as_millis() as u64,
        "nsqd data imported; nsqd's files are left as they were and ignored from now on"
    );
}

#[cfg(test)]
#[path = "importer_tests.rs"]
mod tests;
