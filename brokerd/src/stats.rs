//! `/stats`: a point-in-time view of topics, channels and clients with NSQ's JSON field names
//! (admin tools parse them), and nsqd's plain-text rendering.

use std::fmt::Write as _;

use crate::broker::{Broker, VERSION};
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

pub use ferry_proto::stats::{ChannelStats, Latency, Percentile, Stats, TopicStats};

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
            let limits = ch.limits();
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
                client_count: counts.clients.len() as u64,
                clients,
                paused: ch.is_paused(),
                e2e_processing_latency: ch.e2e_latency(),
                expired_count: counts.expired,
                dead_lettered_count: counts.dead_lettered,
                max_age_ms: limits.max_age.as_millis() as u64,
                max_attempts: u32::from(limits.max_attempts),
                dead_letter_topic: limits.dead_letter_topic,
            });
        }
        let depth = topic.depth();
        let retention = topic.retention();
        let oldest = topic.oldest_info();
        topics.push(TopicStats {
            topic_name: topic.name().to_owned(),
            channels,
            depth,
            backend_depth: if topic.is_ephemeral() { 0 } else { depth },
            message_count: topic.message_count.load(Relaxed),
            message_bytes: topic.message_bytes.load(Relaxed),
            paused: topic.is_paused(),
            e2e_processing_latency: topic.e2e_latency(),
            retention_ms: retention.time.as_millis() as u64,
            retention_bytes: retention.bytes,
            oldest_timestamp_ms: oldest.map_or(0, |(_, ts)| ts.div_euclid(1_000_000)),
            oldest_sequence: oldest.map_or(topic.log().next_seq(), |(seq, _)| seq),
            replication: topic.replica().map(crate::replication::stats),
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

/// nsqd 1.3's plain-text `/stats` layout (`printStats` in nsqd/http.go): a header, `Health:`,
/// then `Topics:` with one line per topic, channel and client (`*P` marks paused ones, `e2e%`
/// lists the configured percentiles), then `Producers:`.
pub fn render_text(stats: &Stats) -> String {
    let mut s = String::new();
    let now = now_secs();
    let uptime = (now - stats.start_time).max(0) as u64;
    let start =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(stats.start_time.max(0) as u64);
    let _ = writeln!(s, "brokerd {}", stats.version);
    let _ = writeln!(s, "start_time {}", humantime::format_rfc3339_seconds(start));
    let _ = writeln!(s, "uptime {}", go_duration_secs(uptime));
    let _ = writeln!(s);
    let _ = writeln!(s, "Health: {}", stats.health);
    if stats.topics.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "Topics: None");
    } else {
        let _ = writeln!(s);
        let _ = write!(s, "Topics:");
    }
    for t in &stats.topics {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{}[{:<15}] depth: {:<5} be-depth: {:<5} msgs: {:<8} e2e%: {}",
            if t.paused { "*P " } else { "   " },
            t.topic_name,
            t.depth,
            t.backend_depth,
            t.message_count,
            t.e2e_processing_latency,
        );
        if t.retention_ms > 0 || t.retention_bytes > 0 {
            let _ = writeln!(
                s,
                "    retention: {} ms, {} bytes; oldest message: {} ms",
                t.retention_ms, t.retention_bytes, t.oldest_timestamp_ms
            );
        }
        for c in &t.channels {
            let _ = writeln!(
                s,
                "{}[{:<25}] depth: {:<5} be-depth: {:<5} inflt: {:<4} def: {:<4} re-q: {:<5} timeout: {:<5} msgs: {:<8} e2e%: {}",
                if c.paused { "   *P " } else { "      " },
                c.channel_name,
                c.depth,
                c.backend_depth,
                c.in_flight_count,
                c.deferred_count,
                c.requeue_count,
                c.timeout_count,
                c.message_count,
                c.e2e_processing_latency,
            );
            if c.expired_count > 0 || c.dead_lettered_count > 0 {
                let _ = writeln!(
                    s,
                    "        expired: {} dead-lettered: {}",
                    c.expired_count, c.dead_lettered_count
                );
            }
            for cl in &c.clients {
                let _ = writeln!(
                    s,
                    "        [{} {:<21}] state: {} inflt: {:<4} rdy: {:<4} fin: {:<8} re-q: {:<8} msgs: {:<8} connected: {}",
                    cl.version,
                    cl.client_id,
                    cl.state,
                    cl.in_flight_count,
                    cl.ready_count,
                    cl.finish_count,
                    cl.requeue_count,
                    cl.message_count,
                    go_duration_secs((now - cl.connect_ts).max(0) as u64),
                );
            }
        }
    }
    if stats.producers.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "Producers: None");
    } else {
        let _ = writeln!(s);
        let _ = write!(s, "Producers:");
        for p in &stats.producers {
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "   [{} {:<21}] msgs: {:<8} connected: {}",
                p.version,
                p.client_id,
                p.pub_count,
                go_duration_secs((now - p.connect_ts).max(0) as u64),
            );
        }
    }
    s
}

/// Whole seconds as Go prints a `time.Duration` ("0s", "45s", "3m7s", "26h0m5s").
fn go_duration_secs(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration_secs(0), "0s");
        assert_eq!(go_duration_secs(59), "59s");
        assert_eq!(go_duration_secs(187), "3m7s");
        assert_eq!(go_duration_secs(93_605), "26h0m5s");
    }

    #[test]
    fn e2e_column_matches_nsqd() {
        let l = Latency {
            count: 3,
            percentiles: Some(vec![
                Percentile {
                    quantile: 0.99,
                    value: 1_500_000_000,
                },
                Percentile {
                    quantile: 0.5,
                    value: 2_340_000,
                },
                Percentile {
                    quantile: 0.1,
                    value: 1_000,
                },
            ]),
        };
        assert_eq!(l.to_string(), "1.5s, 2.3ms, 1000.0ns");
        assert_eq!(Latency::default().to_string(), "");
    }

    #[test]
    fn text_layout_is_nsqds() {
        let stats = Stats {
            version: "ferry-0.1.0".into(),
            health: "OK".into(),
            start_time: now_secs(),
            topics: vec![TopicStats {
                topic_name: "t".into(),
                channels: vec![ChannelStats {
                    channel_name: "c".into(),
                    depth: 1,
                    backend_depth: 1,
                    in_flight_count: 2,
                    deferred_count: 0,
                    message_count: 3,
                    requeue_count: 0,
                    timeout_count: 0,
                    client_count: 0,
                    clients: vec![],
                    paused: true,
                    e2e_processing_latency: Latency::default(),
                    expired_count: 0,
                    dead_lettered_count: 0,
                    max_age_ms: 0,
                    max_attempts: 0,
                    dead_letter_topic: None,
                }],
                depth: 0,
                backend_depth: 0,
                message_count: 3,
                message_bytes: 9,
                paused: false,
                e2e_processing_latency: Latency::default(),
                retention_ms: 0,
                retention_bytes: 0,
                oldest_timestamp_ms: 0,
                oldest_sequence: 0,
                replication: None,
            }],
            producers: vec![],
        };
        let text = render_text(&stats);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("brokerd ferry-0.1.0"), "{text}");
        assert!(lines[1].starts_with("start_time 20"), "{text}");
        assert_eq!(lines[2], "uptime 0s");
        assert_eq!(lines[4], "Health: OK");
        assert_eq!(lines[6], "Topics:");
        assert_eq!(
            lines[7],
            "   [t              ] depth: 0     be-depth: 0     msgs: 3        e2e%: "
        );
        assert_eq!(
            lines[8],
            "   *P [c                        ] depth: 1     be-depth: 1     inflt: 2    def: 0    re-q: 0     timeout: 0     msgs: 3        e2e%: "
        );
        assert_eq!(lines[10], "Producers: None");
    }
}
