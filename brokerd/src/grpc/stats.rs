//! `/stats` as the gRPC API's typed messages: a field-for-field copy of [`crate::stats::Stats`].

use super::pb;
use crate::client::ClientStats;
use crate::stats::{ChannelStats, Latency, Stats, TopicStats};

/// Converts the `/stats` document.
pub(super) fn to_pb(s: Stats) -> pb::StatsResponse {
    pb::StatsResponse {
        version: s.version,
        health: s.health,
        start_time: s.start_time,
        topics: s.topics.into_iter().map(topic).collect(),
        producers: s.producers.into_iter().map(client).collect(),
    }
}

fn topic(t: TopicStats) -> pb::TopicStats {
    pb::TopicStats {
        topic_name: t.topic_name,
        channels: t.channels.into_iter().map(channel).collect(),
        depth: t.depth,
        backend_depth: t.backend_depth,
        message_count: t.message_count,
        message_bytes: t.message_bytes,
        paused: t.paused,
        e2e_processing_latency: Some(latency(t.e2e_processing_latency)),
        retention_ms: t.retention_ms,
        retention_bytes: t.retention_bytes,
        oldest_timestamp_ms: t.oldest_timestamp_ms,
        oldest_sequence: t.oldest_sequence,
    }
}

fn channel(c: ChannelStats) -> pb::ChannelStats {
    pb::ChannelStats {
        channel_name: c.channel_name,
        depth: c.depth,
        backend_depth: c.backend_depth,
        in_flight_count: c.in_flight_count,
        deferred_count: c.deferred_count,
        message_count: c.message_count,
        requeue_count: c.requeue_count,
        timeout_count: c.timeout_count,
        client_count: c.client_count,
        clients: c.clients.into_iter().map(client).collect(),
        paused: c.paused,
        e2e_processing_latency: Some(latency(c.e2e_processing_latency)),
        expired_count: c.expired_count,
        dead_lettered_count: c.dead_lettered_count,
        max_age_ms: c.max_age_ms,
        max_attempts: c.max_attempts,
        dead_letter_topic: c.dead_letter_topic.unwrap_or_default(),
    }
}

fn client(c: ClientStats) -> pb::ClientStats {
    pb::ClientStats {
        client_id: c.client_id,
        hostname: c.hostname,
        version: c.version.to_owned(),
        remote_address: c.remote_address,
        state: u32::try_from(c.state).unwrap_or_default(),
        ready_count: c.ready_count,
        in_flight_count: c.in_flight_count,
        message_count: c.message_count,
        finish_count: c.finish_count,
        requeue_count: c.requeue_count,
        connect_ts: c.connect_ts,
        sample_rate: i32::try_from(c.sample_rate).unwrap_or_default(),
        deflate: c.deflate,
        snappy: c.snappy,
        user_agent: c.user_agent,
        tls: c.tls,
        authed: c.authed,
        msg_timeout: c.msg_timeout,
        pub_count: c.pub_count,
    }
}

fn latency(l: Latency) -> pb::Latency {
    pb::Latency {
        count: l.count,
        percentiles: l
            .percentiles
            .unwrap_or_default()
            .into_iter()
            .map(|p| pb::Percentile {
                quantile: p.quantile,
                value: p.value,
            })
            .collect(),
    }
}
