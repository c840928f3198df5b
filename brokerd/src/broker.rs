//! The broker's shared state: its topics, its clients, its configuration. One `Arc<Broker>` is
//! shared by every connection task and HTTP handler.
//!
//! Layout of the data directory:
//! ```text
//! <data-path>/
//!   brokerd.lock          flock'ed while a broker runs here
//!   topics/<name>.topic/  one topic log (segments + metadata), see ferry-store
//!   nsqd-import.json      present once nsqd 1.x data found here was imported (nsqd_import)
//!   nsqd.dat, *.diskqueue.*.dat   nsqd's own files: read by the import, never changed
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use ferry_proto::ProtocolError;
use ferry_proto::v2::PublishKind;
use ferry_store::{ChannelMeta, ChannelState, LogOptions, StoreError, TopicLog, TopicMeta};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::client::ClientInfo;
use crate::clock::{now_ns, now_secs};
use crate::config::Config;
use crate::creation::{CreateError, Creations};
use crate::latency::E2eConfig;
use crate::lookup::{LookupPeers, RegistryEvent};
use crate::topic::{PublishError, Topic, TopicOptions, topic_dir};

/// Version reported to clients and in `/info` and `/stats`.
pub const VERSION: &str = concat!("ferry-", env!("CARGO_PKG_VERSION"));

/// The broker.
pub struct Broker {
    /// Configuration in force.
    pub config: Config,
    topics_dir: PathBuf,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    clients: Mutex<HashMap<u64, Arc<ClientInfo>>>,
    next_client_id: AtomicU64,
    /// TCP connections accepted since start.
    pub connections_total: AtomicU64,
    /// `--max-connections` per listener, and the connections refused over it.
    pub limits: crate::limits::ConnLimits,
    /// Unix seconds at start.
    pub start_time: i64,
    health: Mutex<Option<String>>,
    /// Fast check of `health.is_some()` for the publish path.
    unhealthy: std::sync::atomic::AtomicBool,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
    ports: std::sync::OnceLock<crate::http::Ports>,
    events: broadcast::Sender<RegistryEvent>,
    /// Topic creations in progress.
    creations: Arc<Creations>,
    lookup_peers: LookupPeers,
    /// Client of the HTTP requests this broker makes (auth servers, lookupd `/channels`),
    /// with `--http-client-connect-timeout` and `--http-client-request-timeout`.
    http_client: reqwest::Client,
    /// To the dead-letter task, and its end until `Server::run` starts it.
    dead_letters: crate::dead_letter::DeadLetterTx,
    dead_letter_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<crate::dead_letter::Job>>>,
    /// Node id and Raft groups of replicated topics (`replication.rs`).
    replication: Arc<crate::replication::Replication>,
    _lock: File,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("data_path", &self.config.data_path)
            .finish_non_exhaustive()
    }
}

fn lock_data_dir(dir: &Path) -> anyhow::Result<File> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data path {}", dir.display()))?;
    let path = dir.join("brokerd.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    if let Err(e) = file.try_lock() {
        anyhow::bail!(
            "data path {} is in use by another broker ({e})",
            dir.display()
        );
    }
    Ok(file)
}

impl Broker {
    /// Locks the data directory and loads every topic found there.
    pub fn open(config: Config, cancel: CancellationToken) -> anyhow::Result<Arc<Broker>> {
        let lock = lock_data_dir(&config.data_path)?;
        let topics_dir = config.data_path.join("topics");
        std::fs::create_dir_all(&topics_dir)
            .with_context(|| format!("cannot create {}", topics_dir.display()))?;
        let http_client = reqwest::Client::builder()
            .connect_timeout(config.http_client_connect_timeout)
            .timeout(config.http_client_request_timeout)
            .build()
            .context("cannot build the HTTP client")?;
        let limits = crate::limits::ConnLimits::new(config.max_connections);
        let (dead_letters, dead_letter_rx) = tokio::sync::mpsc::unbounded_channel();
        let replication = Arc::new(crate::replication::Replication::open(
            &config.data_path,
            config.http_client_connect_timeout,
        )?);
        let broker = Arc::new(Broker {
            replication,
            dead_letters,
            dead_letter_rx: Mutex::new(Some(dead_letter_rx)),
            http_client,
            config,
            topics_dir,
            topics: RwLock::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
            next_client_id: AtomicU64::new(1),
            connections_total: AtomicU64::new(0),
            limits,
            start_time: now_secs(),
            health: Mutex::new(None),
            unhealthy: std::sync::atomic::AtomicBool::new(false),
            cancel,
            tracker: TaskTracker::new(),
            ports: std::sync::OnceLock::new(),
            events: broadcast::channel(4096).0,
            creations: Arc::default(),
            lookup_peers: LookupPeers::default(),
            _lock: lock,
        });
        // An nsqd 1.x data directory is imported once, before Ferry's topics are loaded.
        let data_path = &broker.config.data_path;
        crate::nsqd_import::import_on_start(
            data_path,
            &broker.topics_dir,
            &broker.topic_options().log,
        )
        .with_context(|| format!("cannot import the nsqd data in {}", data_path.display()))?;
        broker.load_topics()?;
        Ok(broker)
    }

    fn load_topics(&self) -> anyhow::Result<()> {
        let entries = std::fs::read_dir(&self.topics_dir)
            .with_context(|| format!("cannot list {}", self.topics_dir.display()))?;
        for entry in entries {
            let entry = entry.context("cannot read topics directory")?;
            let file_name = entry.file_name();
            if file_name
                .to_str()
                .is_some_and(|n| n.ends_with(STAGING_SUFFIX))
            {
                // A topic whose creation did not finish (crash, full disk): it never existed.
                info!(dir = ?entry.path(), "removing an unfinished topic creation");
                remove_dir_if_present(&entry.path())
                    .with_context(|| format!("cannot remove {}", entry.path().display()))?;
                continue;
            }
            let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".topic")) else {
                continue;
            };
            if !ferry_proto::names::is_valid_topic_name(name)
                || ferry_proto::names::is_ephemeral(name)
            {
                warn!(dir = ?entry.path(), "ignoring directory that is not a topic");
                continue;
            }
            let topic = self
                .open_topic(name)
                .with_context(|| format!("cannot open topic {name:?}"))?;
            info!(
                topic = name,
                channels = topic.channels().len(),
                messages = topic.log().next_seq() - topic.log().first_seq(),
                "topic loaded"
            );
            self.topics_write().insert(name.to_owned(), topic);
        }
        Ok(())
    }

    fn topic_options(&self) -> TopicOptions {
        TopicOptions {
            log: LogOptions {
                max_bytes_per_file: self.config.max_bytes_per_file,
                sync_every: self.config.sync_every,
                sync_timeout: self.config.sync_timeout,
                // Sequences (and so message IDs) of a new topic start at the clock, so a topic
                // that is deleted and created again never reuses an ID.
                initial_seq: now_ns().max(1) as u64,
                // `brokerd.lock` covers the data path and the broker opens each topic once:
                // no per-topic lock file held open (one fd less per topic).
                dir_lock: false,
            },
            mem_queue_size: self.config.mem_queue_size,
            defaults: crate::settings::Defaults::from_config(&self.config),
            dead_letters: self.dead_letters.clone(),
            e2e: E2eConfig::new(
                &self.config.e2e_processing_latency_percentiles,
                self.config.e2e_processing_latency_window_time,
            ),
        }
    }

    /// The dead-letter task's end of its queue (taken once, when the task starts).
    pub(crate) fn take_dead_letter_rx(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<crate::dead_letter::Job>> {
        self.dead_letter_rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn open_topic(&self, name: &str) -> Result<Arc<Topic>, StoreError> {
        self.open_topic_with(name, self.topic_options())
    }

    fn open_topic_with(&self, name: &str, options: TopicOptions) -> Result<Arc<Topic>, StoreError> {
        Topic::open(
            name,
            &self.topics_dir,
            options,
            self.events.clone(),
            self.cancel.child_token(),
            self.tracker.clone(),
        )
    }

    fn topics_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Topic>>> {
        self.topics.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn topics_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Topic>>> {
        self.topics.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the bound ports (once).
    pub(crate) fn set_ports(&self, ports: crate::http::Ports) {
        let _ = self.ports.set(ports);
    }

    /// Bound ports (zeros before binding).
    pub fn ports(&self) -> crate::http::Ports {
        self.ports
            .get()
            .copied()
            .unwrap_or(crate::http::Ports { tcp: 0, http: 0 })
    }

    /// The ports others reach this broker on (`--broadcast-tcp-port`, `--broadcast-http-port`,
    /// else the listening ports): registered with lookupd and used as its Raft address.
    pub fn broadcast_ports(&self) -> crate::http::Ports {
        let ports = self.ports();
        let or = |flag: u16, port: u16| if flag == 0 { port } else { flag };
        crate::http::Ports {
            tcp: or(self.config.broadcast_tcp_port, ports.tcp),
            http: or(self.config.broadcast_http_port, ports.http),
        }
    }

    /// Node id and Raft groups of this broker's replicated topics.
    pub fn replication(&self) -> &Arc<crate::replication::Replication> {
        &self.replication
    }

    /// The replicated topic `name`, created if missing as an empty replica whose log starts at
    /// `first_seq`, its Raft node running before anyone can use it. An existing topic is
    /// returned as it is (replicated or not).
    pub(crate) async fn get_or_create_replicated_topic(
        self: &Arc<Self>,
        name: &str,
        first_seq: u64,
    ) -> Result<Arc<Topic>, CreateError> {
        self.find_or_create_topic(name, Some(first_seq)).await
    }

    /// The topic `name`, created if missing. A new topic learns the channels lookupd knows for
    /// it before anyone can publish to it or subscribe (bounded by the HTTP client's timeouts),
    /// so those channels get its first message; it is then registered with lookupd.
    ///
    /// Creation runs off the runtime threads (`spawn_blocking`), holds no lock that other
    /// topics need, and happens once however many callers ask at the same time. Its files are
    /// built under a temporary name and renamed into place, so a failed (disk full) or
    /// interrupted creation leaves nothing that would come back as a topic after a restart.
    pub async fn get_or_create_topic(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<Arc<Topic>, CreateError> {
        self.find_or_create_topic(name, None).await
    }

    /// The topic `name`, or one made once however many ask (a replica of a group starting at
    /// `replica_from`, if given).
    async fn find_or_create_topic(
        self: &Arc<Self>,
        name: &str,
        replica_from: Option<u64>,
    ) -> Result<Arc<Topic>, CreateError> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        if self.cancel.is_cancelled() {
            return Err(CreateError::Exiting);
        }
        let create = || {
            let (broker, name) = (self.clone(), name.to_owned());
            async move { broker.create_topic_with(&name, replica_from).await }
        };
        self.creations
            .find_or_create(name, || self.topic(name), create)
            .await
    }

    /// Creates a topic that does not exist yet (see [`Broker::get_or_create_topic`]); with
    /// `replica_from`, a replica of a group whose log starts at that sequence, its Raft node
    /// started before the topic is visible.
    async fn create_topic_with(
        self: &Arc<Self>,
        name: &str,
        replica_from: Option<u64>,
    ) -> Result<Arc<Topic>, CreateError> {
        let channels = crate::lookup::channels_known(self, name).await;
        let broker = self.clone();
        let topic_name = name.to_owned();
        let known = channels.clone();
        let topic = tokio::task::spawn_blocking(move || {
            broker.build_topic(&topic_name, &known, replica_from)
        })
        .await??;
        if replica_from.is_some()
            && let Err(e) = self.start_replica(&topic).await
        {
            warn!(topic = name, error = %e, "cannot start the replica's raft node");
            topic.destroy();
            return Err(CreateError::Replica(e.to_string()));
        }
        self.topics_write().insert(name.to_owned(), topic.clone());
        info!(topic = name, channels = channels.len(), "topic created");
        self.emit(RegistryEvent::Register {
            topic: name.to_owned(),
            channel: None,
        });
        for channel in channels {
            info!(topic = name, channel, "channel created from lookupd");
            self.emit(RegistryEvent::Register {
                topic: name.to_owned(),
                channel: Some(channel),
            });
        }
        Ok(topic)
    }

    /// Makes a new topic's files (blocking I/O) with `channels` starting at its first message,
    /// and opens it. The files are made in `<name>.topic.new` and renamed into place only when
    /// complete; on any error they are removed.
    fn build_topic(
        &self,
        name: &str,
        channels: &[String],
        replica_from: Option<u64>,
    ) -> Result<Arc<Topic>, StoreError> {
        let mut options = self.topic_options();
        if let Some(first_seq) = replica_from {
            options.log.initial_seq = first_seq;
        }
        if ferry_proto::names::is_ephemeral(name) {
            let topic = self.open_topic_with(name, options)?;
            topic.add_new_channels(channels);
            return Ok(topic);
        }
        let dir = topic_dir(&self.topics_dir, name);
        let staging = staging_dir(&self.topics_dir, name);
        let staged = stage_topic(
            &staging,
            &dir,
            &options.log,
            channels,
            replica_from.is_some(),
        );
        if let Err(e) = staged {
            if let Err(e) = remove_dir_if_present(&staging) {
                warn!(topic = name, error = %e, "cannot remove a failed topic's files");
            }
            return Err(e);
        }
        self.open_topic_with(name, options).inspect_err(|_| {
            // Nobody has seen the topic yet: leave nothing behind.
            if let Err(e) = remove_dir_if_present(&dir) {
                warn!(topic = name, error = %e, "cannot remove a failed topic's files");
            }
        })
    }

    /// Tells the lookup registration tasks (if any) about a new or removed topic or channel.
    pub(crate) fn emit(&self, ev: RegistryEvent) {
        // No receivers (no lookupd configured) is fine.
        let _ = self.events.send(ev);
    }

    /// Registry events, for a lookupd registration task.
    pub(crate) fn subscribe_events(&self) -> broadcast::Receiver<RegistryEvent> {
        self.events.subscribe()
    }

    /// The client for this broker's own HTTP requests (auth servers, lookupd `/channels`).
    pub fn http_client(&self) -> &reqwest::Client {
        &self.http_client
    }

    /// The lookupds this broker registered with.
    pub fn lookup_peers(&self) -> &LookupPeers {
        &self.lookup_peers
    }

    /// An existing topic.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics_read().get(name).cloned()
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut v: Vec<_> = self.topics_read().values().cloned().collect();
        v.sort_by(|a, b| a.name().cmp(b.name()));
        v
    }

    /// Deletes a topic with its channels and files. False if it did not exist.
    pub fn delete_topic(&self, name: &str) -> bool {
        let Some(topic) = self.topics_write().remove(name) else {
            return false;
        };
        let channels: Vec<String> = topic
            .channels()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        // A replica's node stops with it; the group goes on with the other members (deleting
        // a replicated topic everywhere is the caller's to do, broker by broker).
        if topic.replica().is_some() {
            let replication = self.replication.clone();
            let topic_name = name.to_owned();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { replication.remove(&topic_name).await });
            }
        }
        topic.destroy();
        if !topic.is_ephemeral()
            && let Err(e) = fsync_dir(&self.topics_dir)
        {
            warn!(topic = name, error = %e, "cannot fsync the topics directory after a delete");
        }
        info!(topic = name, "topic deleted");
        // As nsqd: its channels leave every lookupd, then the topic.
        for channel in channels {
            self.emit(RegistryEvent::Unregister {
                topic: name.to_owned(),
                channel: Some(channel),
            });
        }
        self.emit(RegistryEvent::Unregister {
            topic: name.to_owned(),
            channel: None,
        });
        true
    }

    /// Deletes an ephemeral channel whose last client left, and its ephemeral topic when that was
    /// its last channel.
    pub fn reap_ephemeral(&self, topic: &Topic, channel: &str) {
        if topic
            .channel(channel)
            .is_some_and(|c| c.client_count() == 0)
        {
            // A failed save is logged; the channel is gone from memory anyway.
            let _ = topic.delete_channel(channel);
        }
        if topic.is_ephemeral() && topic.channels().is_empty() {
            let mut topics = self.topics_write();
            if topics
                .get(topic.name())
                .is_some_and(|t| std::ptr::eq(Arc::as_ptr(t), topic) && t.channels().is_empty())
            {
                let t = topics.remove(topic.name());
                drop(topics);
                if let Some(t) = t {
                    t.destroy();
                    info!(topic = t.name(), "ephemeral topic deleted");
                    self.emit(RegistryEvent::Unregister {
                        topic: t.name().to_owned(),
                        channel: None,
                    });
                }
            }
        }
    }

    /// A client id for the broker's own use (a redrive's consumer), never listed as a client.
    pub(crate) fn internal_client(&self) -> Arc<ClientInfo> {
        let id = self.next_client_id.fetch_add(1, Ordering::Relaxed);
        let local = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        Arc::new(ClientInfo::new(id, local, now_secs()))
    }

    /// Registers a new client connection.
    pub fn add_client(&self, remote: std::net::SocketAddr) -> Arc<ClientInfo> {
        let id = self.next_client_id.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        let info = Arc::new(ClientInfo::new(id, remote, now_secs()));
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, info.clone());
        info
    }

    /// Forgets a client connection.
    pub fn remove_client(&self, id: u64) {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// Connected clients that have published.
    pub fn producers(&self) -> Vec<Arc<ClientInfo>> {
        let clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let mut v: Vec<_> = clients
            .values()
            .filter(|c| c.is_producer.load(Ordering::Relaxed))
            .cloned()
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// Number of connected clients (TCP connections and gRPC subscribers).
    pub fn client_count(&self) -> usize {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// `None` when healthy, else why not (storage errors).
    pub fn health(&self) -> Option<String> {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records a storage problem (shown by `/ping` and `/stats`) or clears it.
    pub fn set_health(&self, problem: Option<String>) {
        self.unhealthy.store(problem.is_some(), Ordering::Release);
        *self.health.lock().unwrap_or_else(PoisonError::into_inner) = problem;
    }

    /// Records the outcome of a write to a log: a failure makes the broker unhealthy (`/ping`
    /// answers 500) until a later write succeeds.
    pub fn note_write<T, E: std::fmt::Display>(&self, result: &Result<T, E>) {
        match result {
            Ok(_) if self.unhealthy.load(Ordering::Acquire) => self.set_health(None),
            Ok(_) => {}
            Err(e) => self.set_health(Some(format!("failed to write to the log: {e}"))),
        }
    }

    /// Publishes a batch that passed [`ferry_proto::v2::check_publish`] (or the V2 decoder) to
    /// `topic_name`, created if missing: the one publish path behind PUB/MPUB/DPUB and gRPC's
    /// `Publish`. A failure is `E_PUB_FAILED` (`E_MPUB_FAILED`, `E_DPUB_FAILED`) with nsqd's
    /// text, and a failed write marks the broker unhealthy. Returns the sequences written, once
    /// they are durable (see [`Topic::wait_durable`]).
    pub async fn publish(
        self: &Arc<Self>,
        kind: PublishKind,
        topic_name: &str,
        bodies: &[&[u8]],
        defer: Duration,
    ) -> Result<Range<u64>, ProtocolError> {
        let (topic, range) = self.append(kind, topic_name, bodies, defer).await?;
        let durable = topic.wait_durable(range.end).await;
        self.note_write(&durable);
        durable
            .map(|()| range)
            .map_err(|e| publish_failed(kind, topic_name, &e))
    }

    /// The first half of [`Broker::publish`]: creates the topic if missing and appends `bodies`
    /// as one batch (all or none), without waiting for durability. The caller must not
    /// acknowledge the records before `topic.wait_durable(range.end)` resolves, and should pass
    /// its outcome to [`Broker::note_write`]. The V2 connection uses this to keep reading and
    /// appending while a sync is under way.
    pub async fn append(
        self: &Arc<Self>,
        kind: PublishKind,
        topic_name: &str,
        bodies: &[&[u8]],
        defer: Duration,
    ) -> Result<(Arc<Topic>, Range<u64>), ProtocolError> {
        let topic = self.get_or_create_topic(topic_name).await.map_err(|e| {
            warn!(topic = topic_name, error = %e, "cannot create topic");
            ProtocolError::new(kind.failed_code(), format!("{} failed {e}", kind.name()))
        })?;
        let result = self.append_to(&topic, bodies, defer).await;
        if result.is_err() {
            self.note_write(&result);
        }
        match result {
            Ok(range) => Ok((topic, range)),
            Err(e) => Err(publish_failed(kind, topic_name, &e)),
        }
    }

    /// Appends `bodies` to `topic` (all or none): through its group when it is replicated
    /// (answered once committed), else to its log.
    pub async fn append_to(
        &self,
        topic: &Topic,
        bodies: &[&[u8]],
        defer: Duration,
    ) -> Result<Range<u64>, PublishError> {
        match topic.replica() {
            Some(raft) => self.propose_publish(topic, raft, bodies, defer).await,
            None => topic.publish(bodies, defer),
        }
    }

    /// Syncs every durable topic (log, journal) and compacts its metadata. Used at shutdown.
    pub fn sync_all(&self) {
        for t in self.topics() {
            if let Err(e) = t.final_sync() {
                warn!(topic = t.name(), error = %e, "final sync failed");
            }
        }
    }
}

/// `E_PUB_FAILED` (or MPUB's, DPUB's) for a publish to `topic_name` that failed with `e`
/// (logged).
pub fn publish_failed(
    kind: PublishKind,
    topic_name: &str,
    e: &dyn std::fmt::Display,
) -> ProtocolError {
    warn!(topic = topic_name, error = %e, "publish failed");
    ProtocolError::new(kind.failed_code(), format!("{} failed {e}", kind.name()))
}

/// What a topic directory is called while its creation is under way.
const STAGING_SUFFIX: &str = ".topic.new";

/// `<topics>/<name>.topic.new`: where a new topic's files are made before they are renamed to
/// [`topic_dir`]. No topic directory ends this way (they end in `.topic`).
fn staging_dir(topics_dir: &Path, name: &str) -> PathBuf {
    topics_dir.join(format!("{name}{STAGING_SUFFIX}"))
}

/// Makes a new topic's log and (if it starts with channels) its metadata in `staging`, then
/// renames `staging` to `dir`.
fn stage_topic(
    staging: &Path,
    dir: &Path,
    log: &LogOptions,
    channels: &[String],
    replicated: bool,
) -> Result<(), StoreError> {
    remove_dir_if_present(staging)?;
    let (log, _) = TopicLog::open(staging, log.clone())?;
    if replicated {
        let raft = staging.join(crate::replication::RAFT_DIR);
        std::fs::create_dir(&raft).map_err(|e| StoreError::Io {
            op: "create raft directory",
            path: raft,
            source: e,
        })?;
    }
    if !channels.is_empty() {
        let start = log.next_seq();
        let meta = TopicMeta {
            paused: false,
            channels: channels
                .iter()
                .map(|name| ChannelMeta {
                    name: name.clone(),
                    paused: false,
                    state: ChannelState::new(start).snapshot(),
                    ..ChannelMeta::default()
                })
                .collect(),
            ..TopicMeta::default()
        };
        ferry_store::save_meta(staging, &meta)?;
    }
    // Closed (unlocked) before it moves; the topic opens it again at its real place.
    drop(log);
    std::fs::rename(staging, dir).map_err(|e| StoreError::Io {
        op: "rename topic directory",
        path: dir.to_path_buf(),
        source: e,
    })?;
    // The rename must survive a power loss too.
    match dir.parent() {
        Some(topics) => fsync_dir(topics),
        None => Ok(()),
    }
}

/// fsyncs a directory (its entries: renames, creations, deletions).
fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::Io {
            op: "fsync directory",
            path: dir.to_path_buf(),
            source: e,
        })
}

fn remove_dir_if_present(dir: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::Io {
            op: "remove directory",
            path: dir.to_path_buf(),
            source: e,
        }),
    }
}
