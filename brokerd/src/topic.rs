//! A topic: one log (on disk, or in memory for `#ephemeral`) and its channels.
//!
//! Invariants:
//! - Every message is appended once to `log`; channels are cursors into it, so publishing costs
//!   the same however many channels there are.
//! - A topic with no channel keeps its backlog; the first channel created starts at
//!   `backlog_start` (the oldest message not yet handed to any channel), later channels at the
//!   log's end (NSQ's semantics).
//! - Channel state is as durable as the log: a sync is log sync first, then the channels' FIN /
//!   REQ / timeout / empty ops appended to the topic's journal (`journal.<gen>`) and
//!   fdatasynced, then deletion of segments every channel is past. A crash redelivers only what
//!   was not FINed before the last sync.
//! - The metadata file (paused flags, backlog start, channel list, every channel's queue
//!   snapshot, and the journal generation that continues it) is rewritten atomically only by a
//!   compaction: on each structural change (channel created or deleted, pause, topic empty),
//!   when the journal outgrows max(4 MiB, 4 × the last snapshot), when a journal write failed,
//!   at open when a journal was replayed, and at shutdown. A compaction snapshots every channel
//!   (dropping its pending ops, which the snapshot includes), saves `meta.dat` naming
//!   generation + 1, then deletes the old journal. Because channel creation and deletion
//!   compact, a journal never outlives the channel its ops name.
//! - Metadata writes and journal appends are serialised by `persist`; each channel's ops are
//!   drained (or snapshotted) under that channel's lock, so no op is lost or written twice.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use ferry_store::{
    ChannelMeta, ChannelState, Journal, LogOptions, NewRecord, StoreError, TopicLog, TopicMeta,
};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::channel::{Channel, TopicLink, Waiting};
use crate::clock::now_ns;
use crate::creation::{CreateError, Creations};
use crate::dead_letter::{DeadLetterTx, Origins};
use crate::histogram::AtomicHistogram;
use crate::latency::E2eConfig;
use crate::lookup::RegistryEvent;
use crate::settings::{ChannelSettings, Defaults, Point, Retention, TopicSettings};
use crate::stats::Latency;

/// What a topic takes from the broker's configuration.
#[derive(Debug, Clone)]
pub(crate) struct TopicOptions {
    /// Options of its log on disk.
    pub log: LogOptions,
    /// Capacity of an `#ephemeral` topic's in-memory log.
    pub mem_queue_size: usize,
    /// End-to-end latency tracking for its channels (`None`: off).
    pub e2e: Option<E2eConfig>,
    /// The broker's defaults of topic and channel settings.
    pub defaults: Defaults,
    /// To the broker's dead-letter task.
    pub dead_letters: DeadLetterTx,
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The topic is being deleted or the broker is stopping.
    #[error("exiting")]
    Exiting,
    /// The log could not take the write (disk full, I/O error).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Power-safe mode: the records were appended but the sync that had to cover them
    /// failed, so they may not survive a power loss (they may still be delivered).
    #[error("sync failed: {0}")]
    NotDurable(String),
    /// A replicated topic's group did not commit the publish (no leader or majority within
    /// the wait, or the leader could not be reached).
    #[error("not replicated: {0}")]
    NotReplicated(String),
}

/// How far the group commit has got (power-safe mode, `--sync-every=1`).
#[derive(Debug, Clone, Default)]
struct Durable {
    /// Every seq below this is durable.
    synced: u64,
    /// The latest failed sync tried to cover the seqs below this (0: none failed).
    failed: u64,
    /// Why it failed.
    error: Option<String>,
}

/// What a rewind did (`Topic::rewind_channel`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewind {
    /// The first message the channel delivers again (the log's end if none).
    pub first_seq: u64,
    /// Its publish time (`None`: no retained message is at or after the point).
    pub first_timestamp_ns: Option<i64>,
    /// Messages the channel now owes (depth, in flight and deferred).
    pub owed: u64,
    /// The point was older than the oldest retained message.
    pub clamped: bool,
}

/// The journal is compacted into `meta.dat` once it passes this, or 4× the last snapshot.
const COMPACT_AT_LEAST: u64 = 4 << 20;

/// What `Topic::persist` guards: the journal and the generation it continues.
#[derive(Debug)]
struct Persist {
    /// Generation named by the `meta.dat` on disk.
    generation: u64,
    /// `journal.<generation>` (`None` for in-memory topics).
    journal: Option<Journal>,
    /// Bytes of the last `meta.dat` written or read.
    snapshot_bytes: u64,
    /// The journal may end with a bad frame (failed write) or ops were drained but not
    /// written: the next flush compacts instead of appending.
    must_compact: bool,
    /// The journal is compacted once it is longer than this and 4× `snapshot_bytes`
    /// ([`COMPACT_AT_LEAST`]; lowered by tests).
    compact_at: u64,
}

/// A topic of the broker.
pub struct Topic {
    name: String,
    ephemeral: bool,
    dir: Option<PathBuf>,
    log: Arc<TopicLog>,
    paused: Arc<AtomicBool>,
    /// A replicated topic's Raft group, once its node runs (`replication.rs`).
    replica: std::sync::OnceLock<ferry_replica::Raft>,
    /// Whether this broker's channels deliver: always for a single-broker topic; for a
    /// replicated one, only while it leads the group.
    leading: Arc<AtomicBool>,
    /// A replicated topic's leader: channel ops journaled here and not yet proposed to the
    /// group (`replication.rs` drains it).
    pub(crate) outbox: Mutex<Vec<(String, Vec<ferry_store::JournalOp>)>>,
    /// Wakes the task that proposes the outbox.
    pub(crate) outbox_ready: Arc<Notify>,
    channels: RwLock<HashMap<String, Arc<Channel>>>,
    /// Channels with a consumer waiting for messages: the only ones a publish wakes.
    waiting: Arc<Waiting>,
    /// Some channel's queue state changed since the last sync (ops to journal, or segments
    /// that may have become deletable).
    dirty: Arc<AtomicBool>,
    /// Channel creations in progress.
    creations: Arc<Creations>,
    backlog_start: Mutex<u64>,
    /// The broker's defaults of the settings.
    defaults: Defaults,
    /// The topic's own settings (persisted in `meta.dat`).
    settings: Mutex<TopicSettings>,
    /// To the broker's dead-letter task (for its channels).
    dead_letters: DeadLetterTx,
    /// Where this topic's dead letters came from (when it is a dead-letter topic).
    origins: Origins,
    /// The oldest retained record's `(seq, timestamp)` once read (`/stats` asks often; reading
    /// it maps a segment); valid while the log's first seq is not past it.
    oldest_cache: Mutex<Option<(u64, i64)>>,
    deleted: AtomicBool,
    /// Serialises metadata writes (they share one temp file name) and journal appends.
    persist: Mutex<Persist>,
    sync_now: Notify,
    sync_timeout: Duration,
    /// `--sync-every=1`: a publish is answered only once a sync covers it (group commit).
    power_safe: bool,
    durable: tokio::sync::watch::Sender<Durable>,
    events: broadcast::Sender<RegistryEvent>,
    pub(crate) cancel: CancellationToken,
    tracker: TaskTracker,
    /// Messages published since start.
    pub message_count: AtomicU64,
    /// Bytes published since start.
    pub message_bytes: AtomicU64,
    /// Time [`Topic::publish`] takes (append and wake-up), per call.
    pub publish_latency: AtomicHistogram,
    /// Time each log sync (msync + fsync) takes.
    pub sync_latency: AtomicHistogram,
    /// Journal appends made durable (write + fdatasync) since start.
    pub journal_syncs: AtomicU64,
    /// Channel ops (FIN, REQ, timeouts, empty) those appends made durable.
    pub journal_ops: AtomicU64,
    /// Compactions (metadata snapshots) since start.
    pub compactions: AtomicU64,
    e2e: Option<E2eConfig>,
}

impl std::fmt::Debug for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topic")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Directory of a durable topic under the broker's topics directory. The suffix keeps names like
/// `.` or `..` (valid topic names) from meaning anything to the filesystem.
pub fn topic_dir(topics_dir: &Path, name: &str) -> PathBuf {
    topics_dir.join(format!("{name}.topic"))
}

impl Topic {
    /// Opens (or creates) a topic. Durable topics recover their log and metadata from `dir`.
    pub(crate) fn open(
        name: &str,
        topics_dir: &Path,
        options: TopicOptions,
        events: broadcast::Sender<RegistryEvent>,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Result<Arc<Topic>, StoreError> {
        let ephemeral = ferry_proto::names::is_ephemeral(name);
        let TopicOptions {
            log: opts,
            mem_queue_size,
            e2e,
            defaults,
            dead_letters,
        } = options;
        let sync_timeout = opts.sync_timeout;
        let power_safe = opts.sync_every <= 1 && !ephemeral;
        let mut journal_ops = ferry_store::JournalContents::default();
        let mut persist = Persist {
            generation: 0,
            journal: None,
            snapshot_bytes: 0,
            must_compact: false,
            compact_at: COMPACT_AT_LEAST,
        };
        let (log, dir, meta) = if ephemeral {
            (
                TopicLog::in_memory_from(mem_queue_size, opts.initial_seq),
                None,
                None,
            )
        } else {
            let dir = topic_dir(topics_dir, name);
            let (log, report) = TopicLog::open(&dir, opts)?;
            if report.torn_tail_bytes > 0
                || report.corrupt_records_skipped > 0
                || report.bad_segments_skipped > 0
            {
                warn!(topic = name, ?report, "log recovered with damage");
            }
            let meta = match ferry_store::load_meta(&dir) {
                Ok(m) => m,
                Err(e) => {
                    warn!(topic = name, error = %e, "topic metadata unreadable; channels restart from the log");
                    None
                }
            };
            persist.generation = meta.as_ref().map_or(0, |m| m.journal_gen);
            persist.snapshot_bytes =
                std::fs::metadata(dir.join(ferry_store::META_FILE)).map_or(0, |m| m.len());
            if let Err(e) = ferry_store::remove_other_journals(&dir, persist.generation) {
                warn!(topic = name, error = %e, "cannot remove stale journals");
            }
            match ferry_store::read_journal(&dir, persist.generation) {
                Ok(c) => journal_ops = c,
                Err(e) => {
                    warn!(topic = name, error = %e, "channel journal unreadable; channels restart from their snapshot");
                    persist.must_compact = true;
                }
            }
            if journal_ops.ignored_bytes > 0 {
                warn!(
                    topic = name,
                    bytes = journal_ops.ignored_bytes,
                    "ignored a torn channel journal tail"
                );
            }
            persist.journal = Some(Journal::open(&dir, persist.generation)?);
            (log, Some(dir), meta)
        };
        let log = Arc::new(log);
        let meta = meta.unwrap_or_default();
        let paused = Arc::new(AtomicBool::new(meta.paused));
        let first = log.first_seq();
        // A replayed journal is folded into a new snapshot before anything is appended (so no
        // frame is ever written after a torn tail).
        if journal_ops.valid_bytes + journal_ops.ignored_bytes > 0 {
            persist.must_compact = true;
        }
        let origins = Origins::load(dir.as_deref(), first);
        let topic = Arc::new(Topic {
            name: name.to_owned(),
            ephemeral,
            dir,
            log: log.clone(),
            paused: paused.clone(),
            replica: std::sync::OnceLock::new(),
            leading: Arc::new(AtomicBool::new(true)),
            outbox: Mutex::default(),
            outbox_ready: Arc::default(),
            channels: RwLock::new(HashMap::new()),
            waiting: Arc::default(),
            dirty: Arc::default(),
            creations: Arc::default(),
            backlog_start: Mutex::new(first.max(meta.backlog_start.min(log.next_seq()))),
            defaults,
            settings: Mutex::new(meta.settings.clone()),
            dead_letters,
            origins,
            oldest_cache: Mutex::new(None),
            deleted: AtomicBool::new(false),
            persist: Mutex::new(persist),
            sync_now: Notify::new(),
            sync_timeout,
            power_safe,
            durable: tokio::sync::watch::Sender::new(Durable::default()),
            events,
            cancel,
            tracker,
            message_count: AtomicU64::new(0),
            message_bytes: AtomicU64::new(0),
            publish_latency: AtomicHistogram::default(),
            sync_latency: AtomicHistogram::default(),
            journal_syncs: AtomicU64::new(0),
            journal_ops: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
            e2e,
        });
        for cm in meta.channels {
            if !ferry_proto::names::is_valid_channel_name(&cm.name) {
                warn!(
                    topic = name,
                    channel = cm.name,
                    "skipping invalid channel name in metadata"
                );
                continue;
            }
            let snapshot = match journal_ops.ops.get(&cm.name) {
                Some(ops) => ferry_store::replay(cm.state, ops, &log),
                None => cm.state,
            };
            let state = ChannelState::restore(snapshot, &log);
            let ch = topic.new_channel(&cm.name, state, cm.paused);
            ch.set_settings(cm.settings);
            topic.channels_write().insert(cm.name, ch.clone());
            ch.start();
        }
        if !ephemeral {
            if topic.lock_persist().must_compact
                && let Err(e) = topic.compact_now()
            {
                warn!(topic = name, error = %e, "cannot compact the channel journal");
            }
            // Segments consumed before a crash may still await deletion.
            if log.stats().segments > 1 {
                topic.mark_dirty();
            }
            let t = topic.clone();
            topic.tracker.spawn(async move { t.run_sync().await });
        }
        Ok(topic)
    }

    /// The topic's Raft group, if it is replicated and its node runs.
    pub fn replica(&self) -> Option<&ferry_replica::Raft> {
        self.replica.get()
    }

    /// Makes this a replicated topic run by `raft`; its channels deliver only while it leads.
    pub(crate) fn set_replica(&self, raft: ferry_replica::Raft) {
        self.leading.store(false, Ordering::Release);
        let _ = self.replica.set(raft);
    }

    /// Whether this broker leads the topic's group (a replicated topic), whether or not it
    /// delivers at the moment: its channel ops are the group's.
    pub(crate) fn leads_group(&self) -> bool {
        self.replica
            .get()
            .is_some_and(|r| r.metrics().borrow().state == openraft::ServerState::Leader)
    }

    /// Whether this broker's channels deliver (see `leading`).
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    /// Starts or stops this replica's deliveries as it gains or loses its group's lead; a new
    /// leader wakes the consumers already waiting on its channels.
    pub(crate) fn set_leading(&self, leading: bool) {
        let was = self.leading.swap(leading, Ordering::AcqRel);
        if leading && !was {
            for channel in self.channels() {
                channel.notify_ready();
            }
        }
    }

    /// Applies queue ops of channel `name` that the group's leader made (a follower); saved
    /// by the next sync's compaction. A channel this replica does not have yet (its consumers
    /// only reached the leader) is created at the lowest message the ops name, so what the
    /// leader had not finished from there on stays owed here too.
    pub(crate) fn apply_channel_ops(&self, name: &str, ops: &[ferry_store::JournalOp]) {
        use ferry_store::JournalOp;
        let channel = match self.channel(name) {
            Some(channel) => channel,
            None => {
                let start = ops
                    .iter()
                    .map(|op| match *op {
                        JournalOp::Finish { seq } | JournalOp::Requeue { seq, .. } => seq,
                        JournalOp::Empty { cursor } => cursor,
                    })
                    .min();
                match self.create_durable_channel(name, start) {
                    Ok(channel) => channel,
                    Err(e) => {
                        warn!(topic = %self.name, channel = name, error = %e, "cannot make a replicated channel");
                        return;
                    }
                }
            }
        };
        channel.apply_replicated_ops(ops);
        self.lock_persist().must_compact = true;
        self.mark_dirty();
    }

    /// A replicated topic's state without its messages (its snapshot's manifest): every
    /// durable channel's state, paused flag and settings, the topic's settings.
    pub(crate) fn replica_manifest(&self) -> std::io::Result<Vec<u8>> {
        let meta = TopicMeta {
            paused: self.is_paused(),
            channels: Self::meta_of(&self.channels(), Channel::snapshot),
            journal_gen: 0,
            backlog_start: 0,
            settings: self.settings_lock().clone(),
        };
        ferry_store::encode_meta(&meta)
    }

    /// Replaces the channels' state by a replicated topic's snapshot's (`manifest`, made by
    /// [`Topic::replica_manifest`] on a member whose log ended at `next_seq`, as this
    /// replica's does now). What a channel owes from `next_seq` on is delivered again from
    /// its cursor. Channels the manifest does not name are kept.
    pub(crate) fn install_manifest(&self, manifest: &[u8], next_seq: u64) -> std::io::Result<()> {
        let meta = ferry_store::decode_meta(manifest)
            .map_err(|why| std::io::Error::new(std::io::ErrorKind::InvalidData, why))?;
        *self.settings_lock() = meta.settings;
        for mut channel in meta.channels {
            let state = &mut channel.state;
            state.cursor = state.cursor.min(next_seq);
            let cursor = state.cursor;
            state.entries.retain(|e| e.seq < cursor);
            let ch = match self.channel(&channel.name) {
                Some(ch) => ch,
                None => self
                    .create_durable_channel(&channel.name, Some(cursor))
                    .map_err(std::io::Error::other)?,
            };
            ch.install_replicated(channel);
        }
        self.set_paused(meta.paused)
            .map_err(std::io::Error::other)?;
        self.lock_persist().must_compact = true;
        self.mark_dirty();
        Ok(())
    }

    /// The topic's directory (durable topics).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Topic name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True for `#ephemeral` topics.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// The topic's log.
    pub fn log(&self) -> &TopicLog {
        &self.log
    }

    /// Paused flag.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    fn channels_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Channel>>> {
        self.channels.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn channels_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Channel>>> {
        self.channels
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_persist(&self) -> std::sync::MutexGuard<'_, Persist> {
        self.persist.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A channel of this topic, not yet in its map nor started. A durable channel of a durable
    /// topic records its ops for the journal.
    fn new_channel(&self, name: &str, mut state: ChannelState, paused: bool) -> Arc<Channel> {
        if self.dir.is_some() && !ferry_proto::names::is_ephemeral(name) {
            state.enable_journal();
        }
        Arc::new_cyclic(|me| {
            Channel::new(
                &self.name,
                name,
                TopicLink {
                    log: self.log.clone(),
                    paused: self.paused.clone(),
                    leading: self.leading.clone(),
                    waiting: self.waiting.clone(),
                    dirty: self.dirty.clone(),
                    tracker: self.tracker.clone(),
                    defaults: self.defaults,
                    dead_letters: self.dead_letters.clone(),
                },
                state,
                paused,
                self.cancel.child_token(),
            )
            .with_handle(me.clone())
            .with_e2e(self.e2e.as_ref())
        })
    }

    /// Where a new channel starts: at `start` when given (clamped into the retained log), else
    /// at the topic's backlog if it is the first, else at the end.
    fn start_for_new(&self, first: bool, start: Option<u64>) -> u64 {
        if let Some(seq) = start {
            return seq.clamp(self.log.first_seq(), self.log.next_seq());
        }
        if first {
            *self
                .backlog_start
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        } else {
            self.log.next_seq()
        }
    }

    /// The publish time and delivery time of a publish made now with `defer` (DPUB).
    pub fn stamp(defer: Duration) -> (i64, i64) {
        let now = now_ns();
        let deliver_at = if defer.is_zero() {
            0
        } else {
            now.saturating_add(defer.as_nanos() as i64)
        };
        (now, deliver_at)
    }

    /// Appends messages (all or none) and wakes the channels. `defer` delays delivery (DPUB).
    /// A replicated topic's messages go through its group instead
    /// ([`Broker::append`](crate::broker::Broker::append)); this appends them locally.
    pub fn publish(&self, bodies: &[&[u8]], defer: Duration) -> Result<Range<u64>, PublishError> {
        let (now, deliver_at) = Topic::stamp(defer);
        let recs: Vec<NewRecord<'_>> = bodies
            .iter()
            .map(|b| NewRecord {
                timestamp_ns: now,
                deliver_at_ns: deliver_at,
                body: b,
            })
            .collect();
        self.append_records(&recs)
    }

    /// Appends records as they are (a replicated topic's committed publish keeps the leader's
    /// times) and wakes the channels.
    pub(crate) fn append_records(
        &self,
        recs: &[NewRecord<'_>],
    ) -> Result<Range<u64>, PublishError> {
        if self.deleted.load(Ordering::Acquire) || self.cancel.is_cancelled() {
            return Err(PublishError::Exiting);
        }
        let started = Instant::now();
        let range = match recs {
            [one] => {
                let seq = self.log.append(*one)?;
                seq..seq + 1
            }
            _ => self.log.append_batch(recs)?,
        };
        self.message_count
            .fetch_add(recs.len() as u64, Ordering::Relaxed);
        let bytes: usize = recs.iter().map(|r| r.body.len()).sum();
        self.message_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        // Only channels with a consumer waiting are woken: idle channels cost nothing here.
        self.waiting.wake_all();
        if !self.ephemeral && self.log.sync_due() {
            self.sync_now.notify_one();
        }
        self.publish_latency.record(started.elapsed());
        Ok(range)
    }

    /// Resolves once every record below `end` is durable: at once unless the broker runs
    /// power-safe (`--sync-every=1`), else when the group commit's next sync covers them. All
    /// publishes waiting at that moment, from any connection, share that one sync.
    pub async fn wait_durable(&self, end: u64) -> Result<(), PublishError> {
        // A replicated topic's publish is answered once committed on a majority.
        if !self.power_safe || self.replica().is_some() {
            return Ok(());
        }
        let mut rx = self.durable.subscribe();
        loop {
            {
                let d = rx.borrow_and_update();
                if d.synced >= end {
                    return Ok(());
                }
                if d.failed >= end {
                    let why = d.error.clone().unwrap_or_else(|| "exiting".into());
                    return Err(PublishError::NotDurable(why));
                }
            }
            self.sync_now.notify_one();
            if rx.changed().await.is_err() {
                return Err(PublishError::Exiting);
            }
        }
    }

    /// Tells the records' waiters how a sync that tried to cover the seqs below `tried` went.
    fn note_synced(&self, tried: u64, result: &Result<u64, StoreError>) {
        if !self.power_safe {
            return;
        }
        self.durable.send_modify(|d| match result {
            Ok(covered) => d.synced = d.synced.max(*covered),
            Err(e) => {
                d.failed = d.failed.max(tried);
                d.error = Some(e.to_string());
            }
        });
    }

    /// The channel `name`, created if missing: at the topic's backlog if it is the first
    /// channel, else at the log's end (NSQ's semantics). Concurrent callers end with the same
    /// channel. A durable channel is in the metadata file (written off the runtime threads)
    /// before anyone can use it, and a creation that fails leaves no trace.
    pub async fn get_or_create_channel(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<Arc<Channel>, CreateError> {
        self.get_or_create_channel_at(name, None).await
    }

    /// [`Topic::get_or_create_channel`], a new channel starting at `start` (a seq, clamped
    /// into the retained log) when given. An existing channel is returned as it is.
    pub async fn get_or_create_channel_at(
        self: &Arc<Self>,
        name: &str,
        start: Option<u64>,
    ) -> Result<Arc<Channel>, CreateError> {
        if let Some(ch) = self.channel(name) {
            return Ok(ch);
        }
        if self.deleted.load(Ordering::Acquire) {
            return Err(CreateError::Exiting);
        }
        if self.dir.is_none() || ferry_proto::names::is_ephemeral(name) {
            return self.add_channel_now(name, start);
        }
        let create = || {
            let (topic, name) = (self.clone(), name.to_owned());
            async move {
                tokio::task::spawn_blocking(move || topic.create_durable_channel(&name, start))
                    .await?
            }
        };
        self.creations
            .find_or_create(name, || self.channel(name), create)
            .await
    }

    /// Adds a channel that has no file to write (ephemeral channel or topic), atomically under
    /// the map's lock.
    fn add_channel_now(&self, name: &str, start: Option<u64>) -> Result<Arc<Channel>, CreateError> {
        let (ch, start) = {
            let mut channels = self.channels_write();
            if self.deleted.load(Ordering::Acquire) {
                return Err(CreateError::Exiting);
            }
            if let Some(ch) = channels.get(name) {
                return Ok(ch.clone());
            }
            let start = self.start_for_new(channels.is_empty(), start);
            let ch = self.new_channel(name, ChannelState::new(start), false);
            channels.insert(name.to_owned(), ch.clone());
            (ch, start)
        };
        self.channel_created(&ch, start);
        Ok(ch)
    }

    /// Blocking: saves the metadata with the new channel in it, then makes the channel visible.
    /// Called by one creator at a time for `name` (see [`Creations`]).
    fn create_durable_channel(
        &self,
        name: &str,
        start: Option<u64>,
    ) -> Result<Arc<Channel>, CreateError> {
        if self.dir.is_none() {
            return self.add_channel_now(name, start);
        }
        // Held until the channel is in the map, so that every later metadata write has it.
        let mut persist = self.lock_persist();
        let start = {
            let channels = self.channels_read();
            if let Some(ch) = channels.get(name) {
                return Ok(ch.clone());
            }
            self.start_for_new(channels.is_empty(), start)
        };
        let ch = self.new_channel(name, ChannelState::new(start), false);
        if self.deleted.load(Ordering::Acquire) {
            return Err(CreateError::Exiting);
        }
        // A compaction: the journal that follows it can never name an older channel of the
        // same name.
        self.compact(&mut persist, Some(&ch))?;
        {
            let mut channels = self.channels_write();
            if self.deleted.load(Ordering::Acquire) {
                return Err(CreateError::Exiting);
            }
            channels.insert(name.to_owned(), ch.clone());
        }
        self.channel_created(&ch, start);
        Ok(ch)
    }

    /// Hands channel ops to the task that proposes them to the group (a replicated topic's
    /// leader).
    fn replicate_channel_ops(
        &self,
        batches: impl IntoIterator<Item = (String, Vec<ferry_store::JournalOp>)>,
    ) {
        let mut outbox = self.outbox.lock().unwrap_or_else(PoisonError::into_inner);
        let before = outbox.len();
        outbox.extend(batches);
        if outbox.len() > before {
            self.outbox_ready.notify_one();
        }
    }

    /// Starts a channel just added to the map (its cursor at `start`) and tells lookupd; a
    /// replicated topic's leader tells its group, whose replicas make the channel at the same
    /// point (an empty channel there is what `Empty` leaves).
    fn channel_created(&self, ch: &Arc<Channel>, start: u64) {
        if !ch.is_ephemeral() && self.leads_group() {
            self.replicate_channel_ops([(
                ch.name().to_owned(),
                vec![ferry_store::JournalOp::Empty { cursor: start }],
            )]);
        }
        ch.start();
        info!(topic = %self.name, channel = ch.name(), "channel created");
        self.emit_channel(ch.name(), true);
    }

    /// Adds channels (lookupd's) at the first message of a new topic that nobody can see yet;
    /// the caller announces them.
    pub(crate) fn add_new_channels(&self, names: &[String]) {
        let start = self.log.first_seq();
        for name in names {
            let ch = self.new_channel(name, ChannelState::new(start), false);
            self.channels_write().insert(name.clone(), ch.clone());
            ch.start();
        }
    }

    fn emit_channel(&self, name: &str, created: bool) {
        let (topic, channel) = (self.name.clone(), Some(name.to_owned()));
        let ev = if created {
            RegistryEvent::Register { topic, channel }
        } else {
            RegistryEvent::Unregister { topic, channel }
        };
        let _ = self.events.send(ev);
    }

    /// An existing channel.
    pub fn channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.channels_read().get(name).cloned()
    }

    /// All channels, sorted by name.
    pub fn channels(&self) -> Vec<Arc<Channel>> {
        let mut v: Vec<_> = self.channels_read().values().cloned().collect();
        v.sort_by(|a, b| a.name().cmp(b.name()));
        v
    }

    /// Deletes a channel (durably: the metadata is compacted before this returns; blocking
    /// I/O). Returns false if it did not exist; an error if the channel is gone but that could
    /// not be saved.
    pub fn delete_channel(&self, name: &str) -> Result<bool, StoreError> {
        let removed = {
            let mut channels = self.channels_write();
            let removed = channels.remove(name);
            if removed.is_some() && channels.is_empty() {
                *self
                    .backlog_start
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = self.log.next_seq();
            }
            removed
        };
        let Some(ch) = removed else { return Ok(false) };
        ch.cancel.cancel();
        info!(topic = %self.name, channel = name, "channel deleted");
        let saved = self.persist_meta();
        // The low-water mark may have moved: the next sync deletes what nobody needs.
        self.mark_dirty();
        self.emit_channel(name, false);
        saved.map(|()| true)
    }

    /// Pauses or unpauses the whole topic (durably, before it returns; blocking I/O). An error
    /// means the flag changed but could not be saved.
    pub fn set_paused(&self, paused: bool) -> Result<(), StoreError> {
        self.paused.store(paused, Ordering::Release);
        if !paused {
            for ch in self.channels_read().values() {
                ch.notify_ready();
            }
        }
        self.persist_meta()
    }

    /// Pauses or unpauses one channel (durably, before it returns; blocking I/O). False if the
    /// channel does not exist.
    pub fn set_channel_paused(&self, name: &str, paused: bool) -> Result<bool, StoreError> {
        let Some(ch) = self.channel(name) else {
            return Ok(false);
        };
        ch.set_paused(paused);
        self.persist_meta().map(|()| true)
    }

    /// Drops the topic's own backlog (messages no channel has been handed yet). Channels keep
    /// their messages, as in nsqd. Durable before it returns (blocking I/O): the new backlog
    /// start is saved in the metadata.
    pub fn empty(&self) -> Result<(), StoreError> {
        if self.channels_read().is_empty() {
            *self
                .backlog_start
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = self.log.next_seq();
            self.mark_dirty();
            self.persist_meta()?;
        }
        Ok(())
    }

    /// Channel empty, durable before it returns (blocking I/O: the channel's journal op is
    /// written and fdatasynced). False if the channel does not exist.
    pub fn empty_channel(&self, name: &str) -> Result<bool, StoreError> {
        let Some(ch) = self.channel(name) else {
            return Ok(false);
        };
        ch.empty();
        self.flush_journal_now().inspect_err(|e| {
            warn!(topic = %self.name, channel = name, error = %e, "could not journal a channel empty");
        })?;
        Ok(true)
    }

    fn settings_lock(&self) -> std::sync::MutexGuard<'_, TopicSettings> {
        self.settings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The topic's own settings (unset ones follow the broker's flags).
    pub fn settings(&self) -> TopicSettings {
        self.settings_lock().clone()
    }

    /// The retention in effect.
    pub fn retention(&self) -> Retention {
        Retention::effective(&self.settings_lock(), &self.defaults)
    }

    /// Sets the retention time and/or bytes (those given), durably before it returns
    /// (blocking I/O: a compaction). An error means it changed but could not be saved.
    pub fn set_retention(
        &self,
        time: Option<Duration>,
        bytes: Option<u64>,
    ) -> Result<(), StoreError> {
        {
            let mut s = self.settings_lock();
            if let Some(t) = time {
                s.retention_ns = Some(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX));
            }
            if let Some(b) = bytes {
                s.retention_bytes = Some(b);
            }
        }
        // A shorter retention may free segments at the next sync.
        self.mark_dirty();
        self.persist_meta()
    }

    /// Changes a channel's settings with `update`, durably before it returns (blocking I/O).
    /// False if the channel does not exist.
    pub fn set_channel_settings(
        &self,
        name: &str,
        update: impl FnOnce(&mut ChannelSettings),
    ) -> Result<bool, StoreError> {
        let Some(ch) = self.channel(name) else {
            return Ok(false);
        };
        let mut settings = ch.settings();
        update(&mut settings);
        ch.set_settings(settings);
        self.persist_meta().map(|()| true)
    }

    /// Where this topic's dead letters came from.
    pub fn origins(&self) -> &Origins {
        &self.origins
    }

    /// The oldest retained message.
    pub fn oldest(&self) -> Result<Option<ferry_store::Record>, StoreError> {
        self.log.reader(self.log.first_seq()).next(&self.log)
    }

    /// The oldest retained message's `(seq, publish time)`, remembered until the log's first
    /// seq moves past it (an empty log is looked at again each time).
    pub fn oldest_info(&self) -> Option<(u64, i64)> {
        let first = self.log.first_seq();
        let mut cache = self
            .oldest_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((seq, ts)) = *cache
            && seq >= first
        {
            return Some((seq, ts));
        }
        *cache = self
            .oldest()
            .ok()
            .flatten()
            .map(|r| (r.seq, r.timestamp_ns));
        *cache
    }

    /// The seq a point of the topic's history names, and whether the point was older than the
    /// oldest retained message (then the seq is that message's).
    pub fn resolve_point(&self, point: Point) -> Result<(u64, bool), StoreError> {
        match point {
            Point::Earliest => Ok((self.log.first_seq(), false)),
            Point::Latest => Ok((self.log.next_seq(), false)),
            Point::At(t) => {
                let seq = self.log.seq_at_time(t)?;
                let clamped = self.oldest()?.is_some_and(|r| r.timestamp_ns > t);
                Ok((seq, clamped))
            }
        }
    }

    /// Rewinds (or forwards) a channel to `point`: it delivers again every retained message
    /// published at or after it. Durable before it returns (blocking I/O: a compaction).
    /// `None` if the channel does not exist.
    pub fn rewind_channel(&self, name: &str, point: Point) -> Result<Option<Rewind>, StoreError> {
        let Some(ch) = self.channel(name) else {
            return Ok(None);
        };
        let (seq, owed, clamped) = {
            // Held across the change and its compaction, so no journal append separates them.
            let mut persist = self.lock_persist();
            let (seq, clamped) = self.resolve_point(point)?;
            let owed = ch.rewind(seq);
            self.compact(&mut persist, None)?;
            (seq, owed, clamped)
        };
        let first = self.log.reader(seq).next(&self.log)?;
        info!(topic = %self.name, channel = name, seq, owed, "channel rewound");
        Ok(Some(Rewind {
            first_seq: first.as_ref().map_or(seq, |r| r.seq),
            first_timestamp_ns: first.map(|r| r.timestamp_ns),
            owed,
            clamped,
        }))
    }

    /// The seq below which finished-with segments may be deleted, given the channels' `low`
    /// water mark and the topic's retention: walking the finished-with (sealed, wholly below
    /// `low`) segments from the newest, a segment is kept while it is younger than the
    /// retention time (its newest message) and within the retention bytes (counting it and
    /// the newer ones); the first that fails either bound goes, with every older one.
    fn retention_low(&self, low: u64) -> u64 {
        let retention = self.retention();
        if !retention.is_on() {
            return low;
        }
        let spans = self.log.sealed_segments();
        let done: Vec<_> = spans.iter().take_while(|s| s.end_seq <= low).collect();
        let age = i64::try_from(retention.time.as_nanos()).unwrap_or(i64::MAX);
        let horizon = now_ns().saturating_sub(age);
        let mut keep_from = low;
        let mut bytes = 0u64;
        for span in done.iter().rev() {
            bytes = bytes.saturating_add(span.bytes);
            let too_big = retention.bytes > 0 && bytes > retention.bytes;
            let too_old = !retention.time.is_zero() && {
                // Its newest message (a gap there counts as old).
                match self.log.read(span.end_seq.saturating_sub(1)) {
                    Ok(Some(r)) => r.timestamp_ns < horizon,
                    Ok(None) => true,
                    Err(_) => false,
                }
            };
            if too_big || too_old {
                break;
            }
            keep_from = span.start_seq;
        }
        keep_from.min(low)
    }

    /// Makes the next sync look at the channels (journal ops) and delete segments nobody needs.
    fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// Messages held for a future first channel (NSQ's topic depth).
    pub fn depth(&self) -> u64 {
        if self.channels_read().is_empty() {
            let start = *self
                .backlog_start
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.log
                .next_seq()
                .saturating_sub(start.max(self.log.first_seq()))
        } else {
            0
        }
    }

    /// End-to-end latency over all its channels (nsqd's topic aggregate); count 0 and no
    /// percentiles when tracking is off.
    pub fn e2e_latency(&self) -> Latency {
        let Some(cfg) = &self.e2e else {
            return Latency::default();
        };
        let mut merged = E2eConfig::empty_histogram();
        for ch in self.channels() {
            ch.merge_e2e_into(&mut merged);
        }
        cfg.summarize(&merged)
    }

    /// Marks the topic deleted, stops its tasks and removes its files.
    pub(crate) fn destroy(&self) {
        self.deleted.store(true, Ordering::Release);
        let channels: Vec<_> = self.channels_write().drain().map(|(_, c)| c).collect();
        for ch in &channels {
            ch.cancel.cancel();
        }
        self.cancel.cancel();
        // Closes the log (later appends fail) and removes its directory; bodies already handed
        // to connections stay valid.
        let _guard = self.lock_persist();
        if let Err(e) = self.log.destroy_in_place() {
            warn!(topic = %self.name, error = %e, "could not remove topic files");
        }
    }

    /// Writes the metadata file now (structural changes must survive a crash right after): a
    /// compaction. A failure is logged and returned (the next sync compacts again).
    pub(crate) fn persist_meta(&self) -> Result<(), StoreError> {
        self.compact_now().inspect_err(|e| {
            warn!(topic = %self.name, error = %e, "could not save topic metadata");
        })
    }

    /// Compacts now (a no-op for in-memory or deleted topics).
    fn compact_now(&self) -> Result<(), StoreError> {
        let mut persist = self.lock_persist();
        self.compact(&mut persist, None)
    }

    /// The metadata of the durable ones of `channels`, each state taken by `state`.
    fn meta_of(
        channels: &[Arc<Channel>],
        state: fn(&Channel) -> ferry_store::ChannelSnapshot,
    ) -> Vec<ChannelMeta> {
        channels
            .iter()
            .filter(|c| !c.is_ephemeral())
            .map(|c| ChannelMeta {
                name: c.name().to_owned(),
                paused: c.is_paused(),
                state: state(c),
                settings: c.settings(),
            })
            .collect()
    }

    /// Snapshots every durable channel (and `extra`, a channel about to be added) into
    /// `meta.dat` naming the next journal generation, then deletes the old journal. The pending
    /// ops of each channel are dropped as it is snapshotted (the snapshot includes them). On
    /// failure the next flush compacts again (ops dropped meanwhile are only in memory).
    fn compact(&self, p: &mut Persist, extra: Option<&Arc<Channel>>) -> Result<(), StoreError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        if self.deleted.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut channels = self.channels();
        channels.extend(extra.cloned());
        let backlog_start = *self
            .backlog_start
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let meta = TopicMeta {
            paused: self.is_paused(),
            channels: Self::meta_of(&channels, Channel::snapshot_for_compaction),
            journal_gen: p.generation + 1,
            backlog_start,
            settings: self.settings_lock().clone(),
        };
        // From here until the save succeeds, ops are in no journal.
        p.must_compact = true;
        ferry_store::save_meta(dir, &meta)?;
        let old = ferry_store::journal_path(dir, p.generation);
        p.generation += 1;
        // Never appended to again (must_compact stays set until the new one is open).
        p.journal = None;
        p.journal = Some(Journal::open(dir, p.generation)?);
        p.must_compact = false;
        p.snapshot_bytes =
            std::fs::metadata(dir.join(ferry_store::META_FILE)).map_or(0, |m| m.len());
        self.compactions.fetch_add(1, Ordering::Relaxed);
        // The new metadata no longer names it; a leftover is removed at the next open.
        if let Err(e) = std::fs::remove_file(&old)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(topic = %self.name, error = %e, "cannot remove an old journal");
        }
        Ok(())
    }

    /// Appends every channel's pending ops to the journal and fdatasyncs it (or compacts when
    /// a compaction is due or required).
    fn flush_journal(&self, p: &mut Persist) -> Result<(), StoreError> {
        if self.dir.is_none() || self.deleted.load(Ordering::Acquire) {
            return Ok(());
        }
        // A replicated topic's leader sends its ops to the group even when a compaction
        // saves them here.
        let replicating = self.leads_group();
        if p.must_compact && !replicating {
            return self.compact(p, None);
        }
        let batches: Vec<(String, Vec<ferry_store::JournalOp>)> = self
            .channels()
            .iter()
            .filter(|c| !c.is_ephemeral())
            .map(|c| (c.name().to_owned(), c.take_journal_ops()))
            .filter(|(_, ops)| !ops.is_empty())
            .collect();
        if replicating {
            self.replicate_channel_ops(batches.iter().cloned());
        }
        if p.must_compact {
            return self.compact(p, None);
        }
        if batches.is_empty() {
            return Ok(());
        }
        let Some(journal) = p.journal.as_mut() else {
            return Ok(());
        };
        if let Err(e) = journal.append(&batches) {
            // The drained ops are in no file, and the journal may end with part of a frame.
            p.must_compact = true;
            return Err(e);
        }
        self.journal_syncs.fetch_add(1, Ordering::Relaxed);
        let ops: usize = batches.iter().map(|(_, ops)| ops.len()).sum();
        self.journal_ops.fetch_add(ops as u64, Ordering::Relaxed);
        if journal.len() > p.compact_at.max(p.snapshot_bytes.saturating_mul(4)) {
            self.compact(p, None)?;
        }
        Ok(())
    }

    /// Journals every channel's pending ops now (operator actions answered only once durable).
    fn flush_journal_now(&self) -> Result<(), StoreError> {
        let mut persist = self.lock_persist();
        self.flush_journal(&mut persist)
    }

    /// True when a sync has work: unsynced appends or changed channel state.
    fn sync_wanted(&self) -> bool {
        !self.ephemeral
            && !self.deleted.load(Ordering::Acquire)
            && (self.log.needs_sync()
                || self.dirty.load(Ordering::Acquire)
                || (!self.retention().time.is_zero() && self.log.stats().segments > 1))
    }

    /// Log sync, journal append (channel ops) + fdatasync, then deletion of fully consumed
    /// segments; only what changed since the last sync (an idle topic costs no I/O).
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        if self.ephemeral || self.deleted.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.log.needs_sync() {
            let started = Instant::now();
            let tried = self.log.next_seq();
            let result = self.log.sync();
            // Counted before the waiters are told: a publisher that got its OK sees the sync
            // in /metrics.
            if result.is_ok() {
                self.sync_latency.record(started.elapsed());
            }
            self.note_synced(tried, &result);
            result?;
        }
        // Retention by time frees segments as time passes, without any channel activity.
        let retaining = self.retention().is_on() && self.log.stats().segments > 1;
        if !self.dirty.load(Ordering::Acquire) && !retaining {
            return Ok(());
        }
        if self.dirty.load(Ordering::Acquire) {
            let mut persist = self.lock_persist();
            if self.deleted.load(Ordering::Acquire) {
                return Ok(());
            }
            // Cleared before the ops are drained: a change racing with it sets the flag again.
            self.dirty.store(false, Ordering::Release);
            if let Err(e) = self.flush_journal(&mut persist) {
                self.dirty.store(true, Ordering::Release);
                return Err(e);
            }
        }
        let low = {
            let channels = self.channels_read();
            if channels.is_empty() {
                *self
                    .backlog_start
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
            } else {
                channels.values().map(|c| c.low_water()).min().unwrap_or(0)
            }
        };
        if self.log.retain_from(self.retention_low(low))? > 0 {
            self.origins.prune(self.log.first_seq());
        }
        Ok(())
    }

    /// The last sync at shutdown: [`Topic::sync`], then a compaction, so the next start has no
    /// journal to replay.
    pub(crate) fn final_sync(&self) -> Result<(), StoreError> {
        self.sync()?;
        if self.ephemeral || self.deleted.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut persist = self.lock_persist();
        let journaled = persist.journal.as_ref().is_some_and(|j| !j.is_empty());
        if journaled || persist.must_compact {
            self.compact(&mut persist, None)?;
        }
        Ok(())
    }

    async fn run_sync(self: Arc<Self>) {
        let period = self.sync_period();
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = self.sync_now.notified() => {}
                _ = tokio::time::sleep(period) => {}
            }
            if !self.sync_wanted() {
                continue;
            }
            let t = self.clone();
            match tokio::task::spawn_blocking(move || t.sync()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(topic = %self.name, error = %e, "topic sync failed"),
                Err(e) => warn!(topic = %self.name, error = %e, "topic sync task failed"),
            }
        }
        // Nothing will sync this topic any more: publishes still waiting give up.
        self.durable.send_modify(|d| {
            d.failed = u64::MAX;
            d.error.get_or_insert_with(|| "exiting".into());
        });
    }

    fn sync_period(&self) -> Duration {
        // Synced at least every `sync_timeout`; `sync_every` wakes the task sooner under load.
        self.sync_timeout.max(Duration::from_millis(10))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::client::ClientInfo;

    fn options() -> TopicOptions {
        TopicOptions {
            log: LogOptions {
                // Synced only when the test says so.
                sync_timeout: Duration::from_secs(3600),
                sync_every: 1 << 30,
                dir_lock: false,
                ..LogOptions::default()
            },
            mem_queue_size: 100,
            e2e: None,
            defaults: Defaults::default(),
            dead_letters: tokio::sync::mpsc::unbounded_channel().0,
        }
    }

    fn open(dir: &Path) -> (Arc<Topic>, TaskTracker, CancellationToken) {
        let (tracker, cancel) = (TaskTracker::new(), CancellationToken::new());
        let events = broadcast::channel(16).0;
        let topic =
            Topic::open("t", dir, options(), events, cancel.clone(), tracker.clone()).unwrap();
        (topic, tracker, cancel)
    }

    async fn close(topic: Arc<Topic>, tracker: TaskTracker, cancel: CancellationToken) {
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
        drop(topic);
    }

    fn journals(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("journal."))
            .collect();
        v.sort();
        v
    }

    /// Syncs journal FINs without rewriting the snapshot; compacts on a structural change and
    /// when the journal outgrows its threshold; a reopen replays the journal.
    #[tokio::test]
    async fn sync_journals_and_compaction_folds_the_journal_into_the_snapshot() {
        let tmp = tempfile::tempdir().unwrap();
        let tdir = topic_dir(tmp.path(), "t");
        let (topic, tracker, cancel) = open(tmp.path());
        let ch = topic.get_or_create_channel("c").await.unwrap();
        let generation = ferry_store::load_meta(&tdir).unwrap().unwrap().journal_gen;
        let bodies: Vec<Vec<u8>> = (0..10).map(|i| vec![i as u8]).collect();
        let refs: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
        topic.publish(&refs, Duration::ZERO).unwrap();
        let client = ClientInfo::new(1, "127.0.0.1:1".parse().unwrap(), 0);
        let got = ch.take(&client, 10, Duration::from_secs(60), 0).unwrap();
        assert_eq!(got.len(), 10);
        let seqs: Vec<u64> = got.iter().map(|d| d.record.seq).collect();
        for &seq in &seqs[..6] {
            ch.finish(&client, seq).unwrap();
        }
        let meta_before = std::fs::read(tdir.join(ferry_store::META_FILE)).unwrap();
        topic.sync().unwrap();
        // The FINs went to the journal; the snapshot was not rewritten.
        assert_eq!(topic.journal_ops.load(Ordering::Relaxed), 6);
        assert_eq!(journals(&tdir), vec![format!("journal.{generation}")]);
        assert_eq!(
            std::fs::read(tdir.join(ferry_store::META_FILE)).unwrap(),
            meta_before
        );

        // A structural change compacts: the next generation, the old journal gone.
        topic.set_channel_paused("c", false).unwrap();
        let meta = ferry_store::load_meta(&tdir).unwrap().unwrap();
        assert_eq!(meta.journal_gen, generation + 1);
        assert!(journals(&tdir).is_empty());
        let owed: Vec<u64> = meta.channels[0]
            .state
            .entries
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(owed, seqs[6..]);

        // Past the size threshold, a sync compacts by itself.
        {
            let mut p = topic.lock_persist();
            p.compact_at = 1;
            p.snapshot_bytes = 0;
        }
        ch.finish(&client, seqs[6]).unwrap();
        topic.sync().unwrap();
        let meta = ferry_store::load_meta(&tdir).unwrap().unwrap();
        assert_eq!(meta.journal_gen, generation + 2);
        assert!(journals(&tdir).is_empty());
        topic.lock_persist().compact_at = COMPACT_AT_LEAST;

        // Journaled, then a "crash" (no final sync): the reopen replays the journal.
        ch.finish(&client, seqs[7]).unwrap();
        ch.requeue(&client, seqs[8], Duration::from_secs(600))
            .unwrap();
        topic.sync().unwrap();
        assert_eq!(journals(&tdir), vec![format!("journal.{}", generation + 2)]);
        drop(ch);
        close(topic, tracker, cancel).await;
        let (topic, tracker, cancel) = open(tmp.path());
        // Folded into a new snapshot at open.
        assert!(journals(&tdir).is_empty());
        let ch = topic.channel("c").unwrap();
        let counts = ch.counts();
        // seqs[8] deferred for 10 minutes; seqs[9] owed now (it was in flight).
        assert_eq!((counts.depth, counts.deferred), (1, 1));
        let again = ch.take(&client, 10, Duration::from_secs(60), 0).unwrap();
        let again: Vec<u64> = again.iter().map(|d| d.record.seq).collect();
        assert_eq!(again, [seqs[9]]);
        drop(ch);
        close(topic, tracker, cancel).await;
    }
}
