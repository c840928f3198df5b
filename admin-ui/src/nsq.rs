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

/// A broker's `/stats?format=json` (the model brokerd writes; nsqd's reads too, `null`s stripped
/// by [`parse`]).
pub use ferry_proto::stats::{
    ChannelStats, ClientStats, Latency, Percentile, ReplicaStats, ReplicationStats, Stats,
    TopicStats,
};

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
        assert!(s.topics[0].e2e_processing_latency.percentiles.is_none());
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
