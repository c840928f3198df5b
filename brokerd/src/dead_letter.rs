//! Dead letters: messages a channel gave up on (`max_attempts` deliveries, then a REQ or a
//! timeout) are published unchanged to the channel's dead-letter topic.
//!
//! Invariants:
//! - A dead letter stays owed by its channel (a snapshot lists it as requeued) until it is in
//!   the dead-letter topic's log and, in power-safe mode, durable there; only then does the
//!   channel drop it (journaled as a FIN). A crash in between delivers it again (and it may
//!   reach the dead-letter topic twice: at least once).
//! - One task per broker ([`start`]) publishes them, batched per target topic; a failure
//!   (disk full, topic being deleted) defers the message in its channel for
//!   [`RETRY_AFTER`], after which it is delivered again.
//! - Where a dead letter came from (topic, channel, attempts, original id and time) is kept by
//!   the dead-letter topic in [`Origins`] (`origins.jsonl` in its directory), for peek.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use ferry_store::DeadLetter;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::warn;

use crate::broker::Broker;
use crate::channel::Channel;
use crate::clock::now_ns;

/// How long a dead letter that could not be published waits in its channel before it is
/// delivered again.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Dead letters travel to the broker's task over this.
pub(crate) type DeadLetterTx = mpsc::UnboundedSender<Job>;

/// One dead letter to publish.
#[derive(Debug)]
pub(crate) struct Job {
    /// The channel that gave up on it (told how it went).
    pub channel: Arc<Channel>,
    /// The dead-letter topic.
    pub target: String,
    /// The message.
    pub letter: DeadLetter,
}

/// Where a dead letter came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Its seq in the dead-letter topic.
    pub seq: u64,
    /// The topic it was published to.
    pub topic: String,
    /// The channel that gave up on it.
    pub channel: String,
    /// Deliveries it had there.
    pub attempts: u16,
    /// Its seq (message ID) there.
    pub id: u64,
    /// When it was published there (ns since the Unix epoch).
    pub timestamp_ns: i64,
}

/// The origins of a topic's dead letters, by seq: in memory, and appended as JSON lines to
/// `origins.jsonl` in the topic's directory (synced with the topic's sync is not needed: it is
/// informational; a torn last line is ignored). Entries below the log's first seq are dropped
/// as segments go.
#[derive(Debug, Default)]
pub struct Origins {
    path: Option<PathBuf>,
    map: Mutex<BTreeMap<u64, Origin>>,
}

const ORIGINS_FILE: &str = "origins.jsonl";

impl Origins {
    /// Loads the origins of a topic in `dir` (none for an in-memory topic), keeping those at or
    /// after `first_seq`; the file is rewritten when some were dropped.
    pub fn load(dir: Option<&Path>, first_seq: u64) -> Origins {
        let Some(dir) = dir else {
            return Origins::default();
        };
        let path = dir.join(ORIGINS_FILE);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut map = BTreeMap::new();
        let mut lines = 0usize;
        for line in text.lines() {
            lines += 1;
            if let Ok(o) = serde_json::from_str::<Origin>(line)
                && o.seq >= first_seq
            {
                map.insert(o.seq, o);
            }
        }
        let origins = Origins {
            path: Some(path),
            map: Mutex::new(map),
        };
        if lines > origins.lock().len() {
            origins.rewrite();
        }
        origins
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Origin>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records origins (appended to the file).
    pub fn record(&self, new: Vec<Origin>) {
        let mut map = self.lock();
        if let Some(path) = &self.path {
            let mut text = String::new();
            for o in &new {
                if let Ok(line) = serde_json::to_string(o) {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(text.as_bytes()));
            if let Err(e) = written {
                warn!(path = %path.display(), error = %e, "cannot record dead-letter origins");
            }
        }
        for o in new {
            map.insert(o.seq, o);
        }
    }

    /// The origin of the dead letter `seq`, if it is one.
    pub fn get(&self, seq: u64) -> Option<Origin> {
        self.lock().get(&seq).cloned()
    }

    /// Forgets origins below `first_seq` (their segments are gone); rewrites the file when it
    /// dropped some.
    pub fn prune(&self, first_seq: u64) {
        let dropped = {
            let mut map = self.lock();
            let before = map.len();
            *map = map.split_off(&first_seq);
            before != map.len()
        };
        if dropped {
            self.rewrite();
        }
    }

    /// Replaces the file with the entries in memory (write, fsync, rename).
    fn rewrite(&self) {
        let Some(path) = &self.path else { return };
        let map = self.lock();
        let tmp = path.with_extension("jsonl.tmp");
        let result = (|| -> std::io::Result<()> {
            if map.is_empty() {
                return match std::fs::remove_file(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                };
            }
            let mut f = std::fs::File::create(&tmp)?;
            for o in map.values() {
                serde_json::to_writer(&mut f, o)?;
                f.write_all(b"\n")?;
            }
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = result {
            warn!(path = %path.display(), error = %e, "cannot rewrite dead-letter origins");
        }
    }
}

/// Starts the broker's dead-letter task (once, from `Server::run`).
pub(crate) fn start(broker: &Arc<Broker>) {
    let Some(rx) = broker.take_dead_letter_rx() else {
        return;
    };
    let weak = Arc::downgrade(broker);
    let cancel = broker.cancel.clone();
    broker.tracker.spawn(async move {
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = run(weak, rx) => {}
        }
    });
}

async fn run(broker: Weak<Broker>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 1024).await > 0 {
        let Some(b) = broker.upgrade() else { return };
        let mut by_target: HashMap<String, Vec<Job>> = HashMap::new();
        for job in batch.drain(..) {
            by_target.entry(job.target.clone()).or_default().push(job);
        }
        for (target, jobs) in by_target {
            let result = publish(&b, &target, &jobs).await;
            for job in jobs {
                let seq = job.letter.record.seq;
                match &result {
                    Ok(()) => job.channel.dead_letter_done(seq),
                    Err(_) => job
                        .channel
                        .dead_letter_failed(seq, now_ns() + RETRY_AFTER.as_nanos() as i64),
                }
            }
            if let Err(e) = result {
                warn!(topic = %target, error = %e, "cannot publish dead letters; they will be delivered again");
            }
        }
    }
}

/// Appends the letters to `target` (created if needed) and waits until they are durable.
async fn publish(broker: &Arc<Broker>, target: &str, jobs: &[Job]) -> anyhow::Result<()> {
    let topic = broker.get_or_create_topic(target).await?;
    let bodies: Vec<&[u8]> = jobs.iter().map(|j| &j.letter.record.body[..]).collect();
    let range = broker.append_to(&topic, &bodies, Duration::ZERO).await?;
    let origins = jobs
        .iter()
        .zip(range.clone())
        .map(|(j, seq)| Origin {
            seq,
            topic: j.channel.topic_name().to_owned(),
            channel: j.channel.name().to_owned(),
            attempts: j.letter.attempts,
            id: j.letter.record.seq,
            timestamp_ns: j.letter.record.timestamp_ns,
        })
        .collect();
    topic.origins().record(origins);
    topic.wait_durable(range.end).await?;
    Ok(())
}
