//! The `/stats?format=json` document, in nsqd's field names: one typed model that brokerd
//! writes and admin-ui, the CLI and the tests read.
//!
//! Every field has a default (`#[serde(default)]`), so a document from nsqd (which lacks Ferry's
//! fields, and may say `null` where a list is empty: strip `null`s before decoding) reads too.
//! Ferry's additions (retention, expiry, dead letters) are plain extra fields that nsqd's
//! readers ignore.

use serde::{Deserialize, Serialize};

/// The whole document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// Broker version (`ferry-0.1.0`, or nsqd's `1.3.0`).
    pub version: String,
    /// `OK` or `NOK - reason`.
    pub health: String,
    /// Unix seconds at start.
    pub start_time: i64,
    /// Topics.
    pub topics: Vec<TopicStats>,
    /// Connected clients that published.
    pub producers: Vec<ClientStats>,
}

impl Stats {
    /// The topic named `name`.
    pub fn topic(&self, name: &str) -> Option<&TopicStats> {
        self.topics.iter().find(|t| t.topic_name == name)
    }

    /// The channel `channel` of topic `topic`.
    pub fn channel(&self, topic: &str, channel: &str) -> Option<&ChannelStats> {
        self.topic(topic)?.channel(channel)
    }
}

/// End-to-end (publish to FIN) latency over nsqd's window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Latency {
    /// Samples in the window.
    pub count: u64,
    /// Percentiles; `null` when tracking is off, as in nsqd.
    pub percentiles: Option<Vec<Percentile>>,
}

impl std::fmt::Display for Latency {
    /// nsqd's `e2e%` column: the values, human-readable, comma-separated (empty when off).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.percentiles.iter().flatten().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(&nanos_to_human(p.value as f64))?;
        }
        Ok(())
    }
}

/// nsqd's `NanoSecondToHuman`: one decimal and the largest unit the value exceeds.
pub fn nanos_to_human(v: f64) -> String {
    let (v, unit) = if v > 1e9 {
        (v / 1e9, "s")
    } else if v > 1e6 {
        (v / 1e6, "ms")
    } else if v > 1e3 {
        (v / 1e3, "us")
    } else {
        (v, "ns")
    };
    format!("{v:.1}{unit}")
}

/// One percentile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Percentile {
    /// 0..1.
    pub quantile: f64,
    /// Nanoseconds.
    pub value: i64,
}

/// One topic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopicStats {
    /// Name.
    pub topic_name: String,
    /// Channels.
    pub channels: Vec<ChannelStats>,
    /// Messages not yet handed to any channel (the backlog a topic with no channel keeps).
    pub depth: u64,
    /// Of which on disk.
    pub backend_depth: u64,
    /// Messages published since start.
    pub message_count: u64,
    /// Bytes published since start.
    pub message_bytes: u64,
    /// Paused.
    pub paused: bool,
    /// Latency summary.
    pub e2e_processing_latency: Latency,
    /// Finished-with messages are kept this long (ms; 0: deleted once consumed). Ferry.
    pub retention_ms: u64,
    /// At most this many bytes of them (0: no byte bound). Ferry.
    pub retention_bytes: u64,
    /// Publish time of the oldest retained message (ms since the Unix epoch; 0: none). Ferry.
    pub oldest_timestamp_ms: i64,
    /// Sequence (message ID) of the oldest retained message (the next one's when none). Ferry.
    pub oldest_sequence: u64,
    /// A replicated topic's group, as this broker sees it (absent for a single-broker topic).
    /// Ferry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationStats>,
}

/// A replicated topic's Raft group seen from one member.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicationStats {
    /// `leader`, `follower`, `candidate` or `learner`.
    pub role: String,
    /// Whether this broker's channels deliver the topic's messages now: it leads and a
    /// majority answered it lately (a leader cut off from the others stops at once).
    pub delivering: bool,
    /// This broker's node id.
    pub node_id: u64,
    /// Current term.
    pub term: u64,
    /// The leader's node id, if one is known.
    pub leader: Option<u64>,
    /// Highest log index known committed (the leader's; 0 before any).
    pub commit_index: u64,
    /// Highest log index applied here.
    pub last_applied: u64,
    /// Last log index of this replica's latest snapshot (none yet: `None`).
    pub snapshot_index: Option<u64>,
    /// Highest log index deleted from this replica's Raft log (none yet: `None`); what
    /// remains of the log is the entries after it.
    pub purged_index: Option<u64>,
    /// Every member.
    pub replicas: Vec<ReplicaStats>,
}

/// One member of a group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicaStats {
    /// Node id.
    pub node_id: u64,
    /// Its HTTP address (broadcast address and port).
    pub address: String,
    /// `leader`, `voter` or `learner`.
    pub state: String,
    /// Highest log index the leader knows it holds (the leader only reports this).
    pub matched: Option<u64>,
    /// Entries it is behind the leader's log (the leader only reports this).
    pub lag: Option<u64>,
}

impl TopicStats {
    /// The channel named `name`.
    pub fn channel(&self, name: &str) -> Option<&ChannelStats> {
        self.channels.iter().find(|c| c.channel_name == name)
    }
}

/// One channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelStats {
    /// Name.
    pub channel_name: String,
    /// Waiting messages.
    pub depth: u64,
    /// Of which on disk.
    pub backend_depth: u64,
    /// In flight.
    pub in_flight_count: u64,
    /// Deferred.
    pub deferred_count: u64,
    /// Delivered for the first time since start.
    pub message_count: u64,
    /// Explicit REQs.
    pub requeue_count: u64,
    /// Timeouts.
    pub timeout_count: u64,
    /// Subscribed clients.
    pub client_count: u64,
    /// Client rows (when asked for).
    pub clients: Vec<ClientStats>,
    /// Paused.
    pub paused: bool,
    /// Latency summary.
    pub e2e_processing_latency: Latency,
    /// Messages dropped for being older than `max_age` since start. Ferry.
    pub expired_count: u64,
    /// Messages sent to the dead-letter topic since start. Ferry.
    pub dead_lettered_count: u64,
    /// Messages older than this (ms) are dropped, not delivered (0: no limit). Ferry.
    pub max_age_ms: u64,
    /// Deliveries after which a REQ or timeout dead-letters a message (0: unlimited). Ferry.
    pub max_attempts: u32,
    /// Where dead letters go (`null` when `max_attempts` is 0). Ferry.
    pub dead_letter_topic: Option<String>,
}

/// One client connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientStats {
    /// IDENTIFY client_id (`name` in old nsqd).
    #[serde(alias = "name")]
    pub client_id: String,
    /// IDENTIFY hostname.
    pub hostname: String,
    /// Protocol version, `V2`.
    pub version: String,
    /// Peer address.
    pub remote_address: String,
    /// 0 init, 1 disconnected, 2 connected, 3 subscribed, 4 closing.
    pub state: i64,
    /// RDY.
    pub ready_count: u64,
    /// In flight.
    pub in_flight_count: u64,
    /// Delivered.
    pub message_count: u64,
    /// FINed.
    pub finish_count: u64,
    /// REQed.
    pub requeue_count: u64,
    /// Unix seconds at connect.
    pub connect_ts: i64,
    /// Sample rate (0: off).
    pub sample_rate: i64,
    /// Deflate negotiated.
    pub deflate: bool,
    /// Snappy negotiated.
    pub snappy: bool,
    /// IDENTIFY user_agent.
    pub user_agent: String,
    /// TLS negotiated.
    pub tls: bool,
    /// TLS version (nsqd; Ferry leaves it out).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tls_version: String,
    /// AUTH done.
    pub authed: bool,
    /// Identity from the auth server.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub auth_identity: String,
    /// Identity URL from the auth server.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub auth_identity_url: String,
    /// Effective msg timeout (ms).
    pub msg_timeout: i64,
    /// Messages published by this client.
    pub pub_count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_nsqd_document_reads_with_defaults_and_round_trips() {
        let nsqd = r#"{"version":"1.3.0","health":"OK","start_time":1,"topics":[{"topic_name":"t",
            "channels":[{"channel_name":"c","depth":2,"clients":[{"name":"old","state":3}],
            "e2e_processing_latency":{"count":0}}],"depth":0,"message_count":5}],"producers":[]}"#;
        let s: Stats = serde_json::from_str(nsqd).unwrap();
        let c = s.channel("t", "c").unwrap();
        assert_eq!((c.depth, c.clients[0].client_id.as_str()), (2, "old"));
        assert_eq!((c.expired_count, c.dead_letter_topic.as_deref()), (0, None));
        let again: Stats = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
        let text = serde_json::to_string(&Latency::default()).unwrap();
        assert_eq!(text, r#"{"count":0,"percentiles":null}"#);
    }
}
