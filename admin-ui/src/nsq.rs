//! The JSON documents admin-ui reads from brokers and lookup daemons, in NSQ's field names.
//!
//! Parsing is lenient on purpose: every field is optional (a missing one takes its default),
//! `null` counts as missing (Go encodes nil slices as `null`), unknown fields are ignored, and
//! the `{"status_code":200,"status_txt":"OK","data":{...}}` envelope of older nsqd and
//! nsqlookupd releases is unwrapped. So the same code reads Ferry's brokerd, nsqd 1.x (with or
//! without the envelope) and nsqlookupd.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Parses an upstream JSON body: unwraps the legacy envelope, drops `null`s, then decodes.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    let mut value: Value = serde_json::from_slice(body)?;
    if let Value::Object(map) = &mut value
        && map.contains_key("status_code")
        && let Some(data) = map.remove("data")
    {
        value = data;
    }
    strip_nulls(&mut value);
    serde_json::from_value(value)
}

/// Removes every object member whose value is `null`, recursively, so `#[serde(default)]`
/// applies to it; `null` array items become empty objects' defaults where they occur.
fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => {
            items.retain(|v| !v.is_null());
            items.iter_mut().for_each(strip_nulls);
        }
        _ => {}
    }
}

/// A broker's `/stats?format=json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// Broker version ("1.3.0", "ferry-0.1.0").
    pub version: String,
    /// "OK" or "NOK - reason".
    pub health: String,
    /// Unix seconds.
    pub start_time: i64,
    /// Topics.
    pub topics: Vec<TopicStats>,
}

/// End-to-end processing latency as nsqd reports it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Latency {
    /// Samples in the window.
    pub count: u64,
    /// Percentiles (`null` in nsqd when disabled).
    pub percentiles: Vec<Percentile>,
}

/// One percentile; values are nanoseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Percentile {
    /// 0..1.
    pub quantile: f64,
    /// Nanoseconds.
    pub value: f64,
}

/// One topic of one broker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TopicStats {
    /// Name.
    pub topic_name: String,
    /// Channels.
    pub channels: Vec<ChannelStats>,
    /// Messages waiting in the topic itself (memory + disk).
    pub depth: u64,
    /// Of which on disk.
    pub backend_depth: u64,
    /// Messages published since the broker started.
    pub message_count: u64,
    /// Bytes published (nsqd ≥ 1.2).
    pub message_bytes: u64,
    /// Paused.
    pub paused: bool,
    /// Latency.
    pub e2e_processing_latency: Latency,
    /// Messages older than this are deleted (ms; 0 = off; Ferry #17).
    pub retention_ms: u64,
    /// The log is cut to this many bytes (0 = off; Ferry #17).
    pub retention_bytes: u64,
    /// Timestamp of the oldest retained message (Unix ms; 0 = empty log or unknown).
    pub oldest_timestamp_ms: u64,
}

/// One channel of one broker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelStats {
    /// Name.
    pub channel_name: String,
    /// Waiting messages (memory + disk).
    pub depth: u64,
    /// Of which on disk.
    pub backend_depth: u64,
    /// In flight.
    pub in_flight_count: u64,
    /// Deferred.
    pub deferred_count: u64,
    /// Messages handed to this channel.
    pub message_count: u64,
    /// Explicit requeues.
    pub requeue_count: u64,
    /// Timeouts.
    pub timeout_count: u64,
    /// Connected clients.
    pub client_count: u64,
    /// Client rows.
    pub clients: Vec<ClientStats>,
    /// Paused.
    pub paused: bool,
    /// Latency.
    pub e2e_processing_latency: Latency,
    /// Messages dropped for being older than `max_age_ms` (Ferry #17).
    pub expired_count: u64,
    /// Messages moved to the dead-letter topic after `max_attempts` (Ferry #17).
    pub dead_lettered_count: u64,
    /// Oldest a message may be when delivered (ms; 0 = off).
    pub max_age_ms: u64,
    /// Deliveries before a message is dead-lettered (0 = unlimited).
    pub max_attempts: u64,
    /// Where dead letters go (None when `max_attempts` is 0, or on brokers without #17).
    pub dead_letter_topic: Option<String>,
}

/// One client connection.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientStats {
    /// IDENTIFY client_id (`name` in old nsqd).
    #[serde(alias = "name")]
    pub client_id: String,
    /// IDENTIFY hostname.
    pub hostname: String,
    /// Protocol version ("V2").
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
    /// Requeued.
    pub requeue_count: u64,
    /// Unix seconds.
    pub connect_ts: i64,
    /// Sampling percentage (0 = off).
    pub sample_rate: i64,
    /// Deflate negotiated.
    pub deflate: bool,
    /// Snappy negotiated.
    pub snappy: bool,
    /// IDENTIFY user_agent.
    pub user_agent: String,
    /// TLS negotiated.
    pub tls: bool,
    /// TLS version (nsqd).
    pub tls_version: String,
    /// AUTHed.
    pub authed: bool,
    /// AUTH identity (nsqd).
    pub auth_identity: String,
}

/// A broker's `/info`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BrokerInfo {
    /// Version.
    pub version: String,
    /// Address clients should use.
    pub broadcast_address: String,
    /// Host name.
    pub hostname: String,
    /// HTTP port.
    pub http_port: u16,
    /// TCP port.
    pub tcp_port: u16,
    /// Unix seconds.
    pub start_time: i64,
}

/// One broker as a lookup daemon knows it (`/nodes`, `/lookup`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Producer {
    /// Address the broker's registration connection came from.
    pub remote_address: String,
    /// Host name.
    pub hostname: String,
    /// Address clients should use.
    pub broadcast_address: String,
    /// TCP port.
    pub tcp_port: u16,
    /// HTTP port.
    pub http_port: u16,
    /// Version.
    pub version: String,
    /// One per topic: tombstoned on this lookupd (`/nodes` only).
    pub tombstones: Vec<bool>,
    /// Registered topics (`/nodes` only).
    pub topics: Vec<String>,
}

impl Producer {
    /// The broker's HTTP address, `broadcast_address:http_port` (IPv6 in brackets).
    pub fn http_address(&self) -> String {
        join_host_port(&self.broadcast_address, self.http_port)
    }
}

/// `host:port`, bracketing an IPv6 literal.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// lookupd `/nodes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Nodes {
    /// Brokers.
    pub producers: Vec<Producer>,
}

/// lookupd `/topics`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Topics {
    /// Topic names.
    pub topics: Vec<String>,
}

/// lookupd `/channels?topic=`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Channels {
    /// Channel names.
    pub channels: Vec<String>,
}

/// lookupd `/lookup?topic=`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Lookup {
    /// Channel names.
    pub channels: Vec<String>,
    /// Brokers holding the topic.
    pub producers: Vec<Producer>,
}

/// brokerd `/topic/config` (GET, or POST's answer).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TopicConfig {
    /// Retention as brokerd prints it ("24h"; "0" = off).
    pub retention: String,
    /// Retention in ms (0 = off).
    pub retention_ms: u64,
    /// Size retention in bytes (0 = off).
    pub retention_bytes: u64,
}

/// brokerd `/channel/config` (GET, or POST's answer).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelConfig {
    /// Max age as brokerd prints it ("10m").
    pub max_age: String,
    /// Max age in ms (0 = off).
    pub max_age_ms: u64,
    /// Deliveries before dead-lettering (0 = unlimited).
    pub max_attempts: u64,
    /// Where dead letters go.
    pub dead_letter_topic: Option<String>,
}

/// brokerd `/channel/rewind`'s answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Rewind {
    /// Sequence of the first message the channel owes again.
    pub first_sequence: u64,
    /// Its message ID.
    pub first_id: String,
    /// Its timestamp (Unix ms); None when no retained message is at or after the time asked.
    pub first_timestamp_ms: Option<u64>,
    /// Messages the channel now owes (depth + in flight + deferred).
    pub owed: u64,
    /// The time asked was older than the oldest retained message.
    pub clamped: bool,
}

/// brokerd `/channel/peek`: what a channel would deliver next, and what it holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Peek {
    /// Waiting messages.
    pub depth: u64,
    /// In flight.
    pub in_flight_count: u64,
    /// Deferred.
    pub deferred_count: u64,
    /// The next messages it would deliver, in order.
    pub messages: Vec<PeekMessage>,
    /// Messages in flight.
    pub in_flight: Vec<PeekMessage>,
    /// Deferred messages.
    pub deferred: Vec<PeekMessage>,
}

/// One message of a [`Peek`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PeekMessage {
    /// 16 hex digits.
    pub id: String,
    /// Sequence in the topic log.
    pub sequence: u64,
    /// Published (Unix ms).
    pub timestamp_ms: u64,
    /// Deliveries so far.
    pub attempts: u64,
    /// "ready", "in_flight" or "deferred".
    pub state: String,
    /// The body as text, or base64 (see `body_encoding`); cut at brokerd's `--max-peek-bytes`.
    pub body: String,
    /// "utf8" or "base64".
    pub body_encoding: String,
    /// Size of the whole body.
    pub body_bytes: u64,
    /// `body` is only the start of it.
    pub truncated: bool,
    /// When an in-flight message times out (Unix ms).
    pub deadline_ms: Option<u64>,
    /// When a deferred message becomes ready (Unix ms).
    pub due_ms: Option<u64>,
    /// Where a dead letter came from.
    pub origin: Option<Origin>,
}

/// Where a dead letter was dead-lettered.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Origin {
    /// Topic.
    pub topic: String,
    /// Channel.
    pub channel: String,
    /// Deliveries it had there.
    pub attempts: u64,
    /// Its ID there.
    pub id: String,
    /// Its timestamp there (Unix ms).
    pub timestamp_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_and_missing_fields_take_defaults() {
        let body = br#"{"version":"1.2.1","health":"OK","start_time":1,
            "topics":[{"topic_name":"t","channels":null,"depth":3,
              "e2e_processing_latency":{"count":0,"percentiles":null}}],
            "memory":{"heap_objects":1}}"#;
        let s: Stats = parse(body).unwrap();
        assert_eq!(s.topics[0].topic_name, "t");
        assert_eq!(s.topics[0].depth, 3);
        assert!(s.topics[0].channels.is_empty());
        assert!(s.topics[0].e2e_processing_latency.percentiles.is_empty());
    }

    #[test]
    fn legacy_envelope_is_unwrapped() {
        let body = br#"{"status_code":200,"status_txt":"OK",
            "data":{"version":"0.3.8","topics":[{"topic_name":"x","channels":[
              {"channel_name":"c","depth":2,"clients":[{"name":"old","state":3}]}]}]}}"#;
        let s: Stats = parse(body).unwrap();
        assert_eq!(s.version, "0.3.8");
        let ch = &s.topics[0].channels[0];
        assert_eq!(ch.depth, 2);
        assert_eq!(ch.clients[0].client_id, "old");
    }

    #[test]
    fn producer_address_brackets_ipv6() {
        let p = Producer {
            broadcast_address: "::1".into(),
            http_port: 4151,
            ..Producer::default()
        };
        assert_eq!(p.http_address(), "[::1]:4151");
        assert_eq!(join_host_port("h", 1), "h:1");
    }

    #[test]
    fn retention_and_dead_letter_fields_are_read_and_default_to_off() {
        let body = br#"{"topics":[{"topic_name":"t","retention_ms":86400000,
            "retention_bytes":10000000000,"oldest_timestamp_ms":1764900000000,"oldest_sequence":9,
            "channels":[{"channel_name":"c","expired_count":3,"dead_lettered_count":2,
              "max_age_ms":600000,"max_attempts":5,"dead_letter_topic":"t.dead"},
              {"channel_name":"old","dead_letter_topic":null}]}]}"#;
        let s: Stats = parse(body).unwrap();
        let t = &s.topics[0];
        assert_eq!(
            (t.retention_ms, t.retention_bytes, t.oldest_timestamp_ms),
            (86_400_000, 10_000_000_000, 1_764_900_000_000)
        );
        let c = &t.channels[0];
        assert_eq!((c.expired_count, c.dead_lettered_count), (3, 2));
        assert_eq!((c.max_age_ms, c.max_attempts), (600_000, 5));
        assert_eq!(c.dead_letter_topic.as_deref(), Some("t.dead"));
        let old = &t.channels[1];
        assert_eq!((old.expired_count, old.max_attempts), (0, 0));
        assert_eq!(old.dead_letter_topic, None);
    }

    #[test]
    fn peek_and_rewind_answers_parse() {
        let body = br#"{"topic":"T","channel":"C","depth":5,"in_flight_count":1,"deferred_count":0,
            "messages":[{"id":"000000000000007b","sequence":123,"timestamp_ms":1764900000000,
              "attempts":2,"state":"ready","body":"aGk=","body_encoding":"base64","body_bytes":2,
              "truncated":false,"origin":{"topic":"T","channel":"C","attempts":5,"id":"x","timestamp_ms":1}}],
            "in_flight":[{"id":"a","state":"in_flight","deadline_ms":7}],"deferred":null}"#;
        let p: Peek = parse(body).unwrap();
        assert_eq!(p.messages[0].sequence, 123);
        assert_eq!(p.messages[0].origin.as_ref().unwrap().attempts, 5);
        assert_eq!(p.in_flight[0].deadline_ms, Some(7));
        assert!(p.deferred.is_empty());
        let r: Rewind =
            parse(br#"{"first_sequence":1,"first_timestamp_ms":null,"owed":0}"#).unwrap();
        assert_eq!((r.first_timestamp_ms, r.owed, r.clamped), (None, 0, false));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse::<Stats>(b"<html>").is_err());
        assert!(parse::<Stats>(br#"{"topics":"no"}"#).is_err());
    }
}
