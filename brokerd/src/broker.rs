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
use ferry_store::{LogOptions, StoreError};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::client::ClientInfo;
use crate::clock::{now_ns, now_secs};
use crate::config::Config;
use crate::latency::E2eConfig;
use crate::lookup::{LookupPeers, RegistryEvent};
use crate::topic::{Topic, TopicOptions};

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
    lookup_peers: LookupPeers,
    /// Client of the HTTP requests this broker makes (auth servers, lookupd `/channels`),
    /// with `--http-client-connect-timeout` and `--http-client-request-timeout`.
    http_client: reqwest::Client,
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
        let broker = Arc::new(Broker {
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
            },
            mem_queue_size: self.config.mem_queue_size,
            e2e: E2eConfig::new(
                &self.config.e2e_processing_latency_percentiles,
                self.config.e2e_processing_latency_window_time,
            ),
        }
    }

    fn open_topic(&self, name: &str) -> Result<Arc<Topic>, StoreError> {
        Topic::open(
            name,
            &self.topics_dir,
            self.topic_options(),
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

    /// The topic `name`, created if missing (and then registered with lookupd, which is also
    /// asked for the channels it knows of the topic).
    pub fn get_or_create_topic(self: &Arc<Self>, name: &str) -> Result<Arc<Topic>, StoreError> {
        if let Some(t) = self.topics_read().get(name) {
            return Ok(t.clone());
        }
        let mut topics = self.topics_write();
        if let Some(t) = topics.get(name) {
            return Ok(t.clone());
        }
        let topic = self.open_topic(name)?;
        topic.persist_meta();
        info!(topic = name, "topic created");
        topics.insert(name.to_owned(), topic.clone());
        drop(topics);
        self.emit(RegistryEvent::Register {
            topic: name.to_owned(),
            channel: None,
        });
        if !self.config.lookupd_tcp_addresses.is_empty() {
            let (b, t) = (self.clone(), topic.clone());
            self.tracker
                .spawn(async move { crate::lookup::precreate_channels(b, t).await });
        }
        Ok(topic)
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
        topic.destroy();
        info!(topic = name, "topic deleted");
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
            topic.delete_channel(channel);
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
    /// text, and a failed write marks the broker unhealthy. Returns the sequences written.
    pub fn publish(
        self: &Arc<Self>,
        kind: PublishKind,
        topic_name: &str,
        bodies: &[&[u8]],
        defer: Duration,
    ) -> Result<Range<u64>, ProtocolError> {
        let failed = |e: &dyn std::fmt::Display| {
            ProtocolError::new(kind.failed_code(), format!("{} failed {e}", kind.name()))
        };
        let topic = self
            .get_or_create_topic(topic_name)
            .map_err(|e| failed(&e))?;
        let result = topic.publish(bodies, defer);
        self.note_write(&result);
        result.map_err(|e| {
            warn!(topic = topic_name, error = %e, "publish failed");
            failed(&e)
        })
    }

    /// Syncs every durable topic (log, metadata). Used at shutdown.
    pub fn sync_all(&self) {
        for t in self.topics() {
            if let Err(e) = t.sync() {
                warn!(topic = t.name(), error = %e, "final sync failed");
            }
        }
    }
}
