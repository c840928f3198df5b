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
    fn garbage_is_an_error() {
        assert!(parse::<Stats>(b"<html>").is_err());
        assert!(parse::<Stats>(br#"{"topics":"no"}"#).is_err());
    }
}
