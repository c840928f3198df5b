//! `/stats`: a point-in-time view of topics, channels and clients with NSQ's JSON field names
//! (admin tools parse them), and nsqd's plain-text rendering.

use std::fmt::Write as _;

use serde::Serialize;

use crate::broker::{Broker, VERSION};
use crate::client::ClientStats;
use crate::clock::now_secs;

/// What `/stats` may be narrowed to.
#[derive(Debug, Default, Clone)]
pub struct StatsFilter {
    /// Only this topic.
    pub topic: Option<String>,
    /// Only this channel (of the filtered topic).
    pub channel: Option<String>,
    /// Include per-client rows.
    pub include_clients: bool,
}

/// The whole document.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// Broker version.
    pub version: String,
    /// "OK" or "NOK - reason".
    pub health: String,
    /// Unix seconds at start.
    pub start_time: i64,
    /// Topics.
    pub topics: Vec<TopicStats>,
    /// Connected clients that published.
    pub producers: Vec<ClientStats>,
}

/// End-to-end latency summary (empty until latency tracking is enabled).
#[derive(Debug, Default, Serialize)]
pub struct Latency {
    /// Samples in the window.
    pub count: u64,
    /// Percentiles; `null` when disabled, like nsqd.
    pub percentiles: Option<Vec<Percentile>>,
}

/// One percentile.
#[derive(Debug, Serialize)]
pub struct Percentile {
    /// 0..1.
    pub quantile: f64,
    /// Nanoseconds.
    pub value: i64,
}

/// One topic.
#[derive(Debug, Serialize)]
pub struct TopicStats {
    /// Name.
    pub topic_name: String,
    /// Channels.
    pub channels: Vec<ChannelStats>,
    /// Messages not yet handed to any channel (backlog of a topic with no channel).
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
}

/// One channel.
#[derive(Debug, Serialize)]
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
    pub client_count: usize,
    /// Client rows (when asked for).
    pub clients: Vec<ClientStats>,
    /// Paused.
    pub paused: bool,
    /// Latency summary.
    pub e2e_processing_latency: Latency,
}

/// Collects stats.
pub fn collect(broker: &Broker, filter: &StatsFilter) -> Stats {
    use std::sync::atomic::Ordering::Relaxed;
    let mut topics = Vec::new();
    for topic in broker.topics() {
        if filter.topic.as_deref().is_some_and(|t| t != topic.name()) {
            continue;
        }
        let mut channels = Vec::new();
        for ch in topic.channels() {
            if filter.channel.as_deref().is_some_and(|c| c != ch.name()) {
                continue;
            }
            let counts = ch.counts();
            let clients = if filter.include_clients {
                let mut v: Vec<_> = counts.clients.iter().map(|c| c.stats()).collect();
                v.sort_by(|a, b| a.remote_address.cmp(&b.remote_address));
                v
            } else {
                Vec::new()
            };
            channels.push(ChannelStats {
                channel_name: ch.name().to_owned(),
                depth: counts.depth,
                backend_depth: if topic.is_ephemeral() {
                    0
                } else {
                    counts.depth
                },
                in_flight_count: counts.in_flight,
                deferred_count: counts.deferred,
                message_count: ch.message_count.load(Relaxed),
                requeue_count: ch.requeue_count.load(Relaxed),
                timeout_count: ch.timeout_count.load(Relaxed),
                client_count: counts.clients.len(),
                clients,
                paused: ch.is_paused(),
                e2e_processing_latency: Latency::default(),
            });
        }
        let depth = topic.depth();
        topics.push(TopicStats {
            topic_name: topic.name().to_owned(),
            channels,
            depth,
            backend_depth: if topic.is_ephemeral() { 0 } else { depth },
            message_count: topic.message_count.load(Relaxed),
            message_bytes: topic.message_bytes.load(Relaxed),
            paused: topic.is_paused(),
            e2e_processing_latency: Latency::default(),
        });
    }
    let producers = if filter.include_clients {
        broker.producers().iter().map(|c| c.stats()).collect()
    } else {
        Vec::new()
    };
    Stats {
        version: VERSION.to_owned(),
        health: match broker.health() {
            None => "OK".to_owned(),
            Some(p) => format!("NOK - {p}"),
        },
        start_time: broker.start_time,
        topics,
        producers,
    }
}

/// nsqd-style text rendering.
pub fn render_text(stats: &Stats) -> String {
    let mut s = String::new();
    let uptime = (now_secs() - stats.start_time).max(0);
    let _ = writeln!(s, "brokerd {}", stats.version);
    let _ = writeln!(s, "start_time {}", stats.start_time);
    let _ = writeln!(s, "uptime {}s", uptime);
    let _ = writeln!(s);
    let _ = writeln!(s, "Health: {}", stats.health);
    let _ = writeln!(s);
    if stats.topics.is_empty() {
        let _ = writeln!(s, "Topics: None");
        return s;
    }
    let _ = writeln!(s, "Topics:");
    for t in &stats.topics {
        let _ = writeln!(
            s,
            "   [{:<15}] depth: {:<5} be-depth: {:<5} msgs: {:<8} e2e%: {}",
            t.topic_name,
            t.depth,
            t.backend_depth,
            t.message_count,
            if t.paused { "(paused)" } else { "" }
        );
        for c in &t.channels {
            let _ = writeln!(
                s,
                "      [{:<25}] depth: {:<5} be-depth: {:<5} inflt: {:<4} def: {:<4} re-q: {:<5} timeout: {:<5} msgs: {:<8} e2e%: {}",
                c.channel_name,
                c.depth,
                c.backend_depth,
                c.in_flight_count,
                c.deferred_count,
                c.requeue_count,
                c.timeout_count,
                c.message_count,
                if c.paused { "(paused)" } else { "" }
            );
            for cl in &c.clients {
                let _ = writeln!(
                    s,
                    "        [{} {:<21}] state: {} inflt: {:<4} rdy: {:<4} fin: {:<8} re-q: {:<8} msgs: {:<8} connected: {}s",
                    cl.version,
                    cl.client_id,
                    cl.state,
                    cl.in_flight_count,
                    cl.ready_count,
                    cl.finish_count,
                    cl.requeue_count,
                    cl.message_count,
                    (now_secs() - cl.connect_ts).max(0)
                );
            }
        }
    }
    if !stats.producers.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "Producers:");
        for p in &stats.producers {
            let _ = writeln!(
                s,
                "   [{} {:<21}] msgs: {:<8} connected: {}s",
                p.version,
                p.client_id,
                p.pub_count,
                (now_secs() - p.connect_ts).max(0)
            );
        }
    }
    s
}
