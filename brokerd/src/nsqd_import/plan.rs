//! Scanning an nsqd 1.x data directory into a [`Plan`]: which topics and channels it holds,
//! their paused flags, and how many messages (and body bytes) each queue holds. Read-only;
//! used by the import at start-up and by `ferry import-nsqd` (the dry run).
//!
//! `<data>/nsqd.dat` is JSON: `{"version":"1.3.0","topics":[{"name":"t","paused":false,
//! "channels":[{"name":"c","paused":true}]}]}`. Ephemeral topics and channels are never in it;
//! names that are not valid are skipped with a warning, as nsqd does when it loads the file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ImportError;
use super::diskqueue::QueueReader;

/// nsqd 1.x's metadata file, in its data directory.
pub const NSQD_METADATA: &str = "nsqd.dat";

/// What a queue holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCount {
    /// Messages.
    pub messages: u64,
    /// Bytes of their bodies.
    pub bytes: u64,
    /// Messages nsqd already delivered at least once (attempts > 0).
    pub retried: u64,
}

impl QueueCount {
    /// Counts one message.
    pub fn add(&mut self, body_len: usize, attempts: u16) {
        self.messages += 1;
        self.bytes += body_len as u64;
        self.retried += u64::from(attempts > 0);
    }

    /// Adds another count to this one.
    pub fn merge(&mut self, other: QueueCount) {
        self.messages += other.messages;
        self.bytes += other.bytes;
        self.retried += other.retried;
    }
}

/// One channel of an nsqd topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPlan {
    /// Channel name.
    pub name: String,
    /// Paused in nsqd.
    pub paused: bool,
    /// The channel's own backlog (its disk queue `<topic>:<channel>`).
    pub queue: QueueCount,
}

/// One nsqd topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPlan {
    /// Topic name.
    pub name: String,
    /// Paused in nsqd.
    pub paused: bool,
    /// The topic's backlog: messages not yet copied to its channels (each goes to every
    /// channel, or to the first channel created when there is none).
    pub queue: QueueCount,
    /// Its channels.
    pub channels: Vec<ChannelPlan>,
}

/// Everything an nsqd data directory holds, counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The data directory.
    pub dir: PathBuf,
    /// nsqd's version from `nsqd.dat`.
    pub nsqd_version: String,
    /// Topics to import, in `nsqd.dat`'s order.
    pub topics: Vec<TopicPlan>,
    /// What was skipped and other oddities (invalid names, depth mismatches).
    pub warnings: Vec<String>,
}

impl Plan {
    /// Number of channels over all topics.
    pub fn channel_count(&self) -> usize {
        self.topics.iter().map(|t| t.channels.len()).sum()
    }

    /// Messages and bytes stored in nsqd's queues (each stored message once).
    pub fn stored(&self) -> QueueCount {
        let mut total = QueueCount::default();
        for t in &self.topics {
            total.merge(t.queue);
            for c in &t.channels {
                total.merge(c.queue);
            }
        }
        total
    }
}

#[derive(Debug, Deserialize)]
struct NsqdMeta {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    topics: Option<Vec<NsqdTopic>>,
}

#[derive(Debug, Deserialize)]
struct NsqdTopic {
    name: String,
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    channels: Option<Vec<NsqdChannel>>,
}

#[derive(Debug, Deserialize)]
struct NsqdChannel {
    name: String,
    #[serde(default)]
    paused: bool,
}

/// True when `dir` holds nsqd 1.x metadata (`nsqd.dat`).
pub fn has_nsqd_data(dir: &Path) -> bool {
    dir.join(NSQD_METADATA).is_file()
}

/// An old nsqd's metadata file (`nsqd.<node-id>.dat`, before 1.0) in `dir`, if any: it is
/// not imported.
pub fn old_nsqd_metadata(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("nsqd.") && n.ends_with(".dat") && n != NSQD_METADATA
            })
        })
}

/// Reads `nsqd.dat` and counts every queue it refers to (reading each once, streaming).
pub fn scan(dir: &Path) -> Result<Plan, ImportError> {
    let path = dir.join(NSQD_METADATA);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ImportError::NotNsqd {
                dir: dir.to_path_buf(),
            });
        }
        Err(e) => return Err(ImportError::io("read", &path, e)),
    };
    let meta: NsqdMeta = serde_json::from_slice(&text).map_err(|source| ImportError::Json {
        path: path.clone(),
        source,
    })?;
    let mut plan = Plan {
        dir: dir.to_path_buf(),
        nsqd_version: meta.version.unwrap_or_default(),
        topics: Vec::new(),
        warnings: Vec::new(),
    };
    let mut seen = HashSet::new();
    for t in meta.topics.unwrap_or_default() {
        if !ferry_proto::names::is_valid_topic_name(&t.name)
            || ferry_proto::names::is_ephemeral(&t.name)
        {
            plan.warnings
                .push(format!("skipping invalid topic name {:?}", t.name));
            continue;
        }
        if !seen.insert(t.name.clone()) {
            plan.warnings
                .push(format!("skipping duplicate topic {:?}", t.name));
            continue;
        }
        let queue = count_queue(dir, &t.name, &mut plan.warnings)?;
        let mut topic = TopicPlan {
            name: t.name,
            paused: t.paused,
            queue,
            channels: Vec::new(),
        };
        let mut seen_ch = HashSet::new();
        for c in t.channels.unwrap_or_default() {
            if !ferry_proto::names::is_valid_channel_name(&c.name)
                || ferry_proto::names::is_ephemeral(&c.name)
            {
                plan.warnings.push(format!(
                    "skipping invalid channel name {:?} of topic {:?}",
                    c.name, topic.name
                ));
                continue;
            }
            if !seen_ch.insert(c.name.clone()) {
                plan.warnings.push(format!(
                    "skipping duplicate channel {:?} of topic {:?}",
                    c.name, topic.name
                ));
                continue;
            }
            let queue = count_queue(
                dir,
                &channel_queue(&topic.name, &c.name),
                &mut plan.warnings,
            )?;
            topic.channels.push(ChannelPlan {
                name: c.name,
                paused: c.paused,
                queue,
            });
        }
        plan.topics.push(topic);
    }
    Ok(plan)
}

/// nsqd's disk queue name of a channel.
pub fn channel_queue(topic: &str, channel: &str) -> String {
    format!("{topic}:{channel}")
}

fn count_queue(
    dir: &Path,
    name: &str,
    warnings: &mut Vec<String>,
) -> Result<QueueCount, ImportError> {
    let mut reader = QueueReader::open(dir, name)?;
    let mut count = QueueCount::default();
    while let Some(m) = reader.next_message()? {
        count.add(m.body.len(), m.attempts);
    }
    if let Some(meta) = reader.meta()
        && u64::try_from(meta.depth).ok() != Some(count.messages)
    {
        warnings.push(format!(
            "queue {name:?}: its metadata says depth {} but it holds {} messages (importing what it holds)",
            meta.depth, count.messages
        ));
    }
    Ok(count)
}
