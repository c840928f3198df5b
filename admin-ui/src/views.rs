//! What each page shows, computed from a [`Snapshot`] and the [`History`]: plain data that the
//! HTML templates render and the JSON API returns as it is.
//!
//! Numbers are [`Num`]s (they print with thousands separators and serialize as plain
//! integers); rates are [`Rate`]s. A topic or channel summed over brokers only counts the
//! brokers that answered; the others are listed in `errors`. Of a replicated topic, which
//! every replica holds whole, only one copy counts (the leader's: [`replication::Counted`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::alerts::AlertCounts;
use crate::cluster::Snapshot;
use crate::history::{History, SeriesKey};
use crate::nsq::{ChannelStats, ClientStats, Latency, TopicStats};
use crate::replication::{self, Counted, ReplicationView};
use crate::settings::{self, ChannelSettings, Distinct, Retention};

/// A count that prints as `1,234,567`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Num(pub u64);

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.to_string();
        let mut out = String::with_capacity(digits.len() + digits.len() / 3);
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        f.write_str(&out)
    }
}

impl std::ops::AddAssign<u64> for Num {
    fn add_assign(&mut self, rhs: u64) {
        self.0 = self.0.saturating_add(rhs);
    }
}

/// Disk space; `None` where the broker does not say (nsqd). Prints as `8.0 MiB` or `–`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Bytes(pub Option<u64>);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(n) = self.0 else {
            return f.write_str("–");
        };
        let units = [
            (1u64 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        match units.iter().find(|(size, _)| n >= *size) {
            Some((size, unit)) => write!(f, "{:.1} {unit}", n as f64 / *size as f64),
            None => write!(f, "{n} B"),
        }
    }
}

impl std::ops::AddAssign<Option<u64>> for Bytes {
    /// A sum over brokers: known as soon as one broker says.
    fn add_assign(&mut self, rhs: Option<u64>) {
        if let Some(n) = rhs {
            self.0 = Some(self.0.unwrap_or(0).saturating_add(n));
        }
    }
}

/// Messages per second; `None` until two samples exist. Prints as `12.5/s` or `–`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Rate(pub Option<f64>);

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("–"),
            Some(r) if r >= 100.0 => write!(f, "{}/s", Num(r.round() as u64)),
            Some(r) => write!(f, "{r:.1}/s"),
        }
    }
}

/// One end-to-end latency percentile, as "p99 12.3ms".
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentile {
    /// e.g. "p99".
    pub label: String,
    /// Nanoseconds (the largest over brokers).
    pub value_ns: f64,
    /// e.g. "12.3ms".
    pub display: String,
}

/// Per topic, what the topics list shows.
#[derive(Debug, Clone, Serialize)]
pub struct TopicRow {
    /// Name.
    pub name: String,
    /// The topic's own backlog, summed over brokers: messages kept for a first channel
    /// (a topic with channels hands every message on at once).
    pub depth: Num,
    /// Messages waiting in its channels, summed.
    pub channel_depth: Num,
    /// Messages published.
    pub messages: Num,
    /// Publish rate.
    pub rate: Rate,
    /// Distinct channels.
    pub channels: usize,
    /// Brokers holding it.
    pub brokers: usize,
    /// Paused on any broker.
    pub paused: bool,
    /// Active alerts on it and its channels.
    pub alerts: usize,
    /// Its group, if it is replicated (the counts above are then the leader's).
    pub replication: Option<ReplicationView>,
}

/// The topics list.
#[derive(Debug, Clone, Serialize)]
pub struct TopicsView {
    /// Topics, by name.
    pub topics: Vec<TopicRow>,
    /// Nodes that failed.
    pub errors: Vec<String>,
}

/// One broker's part of a topic.
#[derive(Debug, Clone, Serialize)]
pub struct TopicBrokerRow {
    /// Broker HTTP address.
    pub node: String,
    /// Messages waiting in the topic's channels, summed (what the depth chart shows).
    pub channel_depth: Num,
    /// The topic's own backlog: messages kept for a first channel (0 once it has one).
    /// nsqd's memory/disk split is not shown: a Ferry topic is one log on disk.
    pub depth: Num,
    /// Disk space of the topic's log (Ferry's `/metrics`; `null` for nsqd).
    pub disk_bytes: Bytes,
    /// Published.
    pub messages: Num,
    /// Channels on this broker.
    pub channels: usize,
    /// Paused here.
    pub paused: bool,
    /// Retention here (the Total row: every broker's).
    pub retention: Distinct<Retention>,
    /// Oldest retained message (Unix ms; 0 = none or unknown; Total: the oldest of all).
    pub oldest_timestamp_ms: u64,
    /// The same as "2026-12-05 10:00:00 UTC (3h 5m ago)", or "–".
    pub oldest: String,
    /// Its role in the topic's group (`leader`, `follower`...; None: not replicated).
    pub role: Option<String>,
    /// Its figures make the totals (every broker of an unreplicated topic; of a replicated
    /// one, the leader).
    pub counted: bool,
}

/// One channel, summed over brokers (topic page) or on one broker (channel page).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChannelRow {
    /// Channel name (topic page) or broker address (channel page).
    pub name: String,
    /// Waiting.
    pub depth: Num,
    /// In flight.
    pub in_flight: Num,
    /// Deferred.
    pub deferred: Num,
    /// Requeued.
    pub requeued: Num,
    /// Timed out.
    pub timed_out: Num,
    /// Dropped for being older than the channel's max age.
    pub expired: Num,
    /// Moved to the dead-letter topic.
    pub dead_lettered: Num,
    /// Max age, max attempts and dead-letter topic: each distinct one over the brokers.
    pub settings: Distinct<ChannelSettings>,
    /// Messages.
    pub messages: Num,
    /// Connected clients.
    pub connections: Num,
    /// Delivery rate.
    pub rate: Rate,
    /// End-to-end latency percentiles (empty when the broker does not track them).
    pub e2e: Vec<Percentile>,
    /// Paused on any broker.
    pub paused: bool,
    /// Active alerts on the channel (topic page).
    pub alerts: usize,
}

/// The topic page.
#[derive(Debug, Clone, Serialize)]
pub struct TopicView {
    /// Name.
    pub name: String,
    /// Held by any broker that answered.
    pub exists: bool,
    /// Paused on any broker.
    pub paused: bool,
    /// Per broker.
    pub brokers: Vec<TopicBrokerRow>,
    /// Sum over brokers.
    pub total: TopicBrokerRow,
    /// Publish rate.
    pub rate: Rate,
    /// End-to-end latency of the topic.
    pub e2e: Vec<Percentile>,
    /// Channels, summed over brokers, by name (of a replicated topic: the leader's figures).
    pub channels: Vec<ChannelRow>,
    /// Its group, if it is replicated.
    pub replication: Option<ReplicationView>,
    /// Nodes that failed.
    pub errors: Vec<String>,
}

/// One client connection on the channel page.
#[derive(Debug, Clone, Serialize)]
pub struct ClientRow {
    /// Broker it is connected to.
    pub node: String,
    /// IDENTIFY client_id.
    pub client_id: String,
    /// IDENTIFY hostname.
    pub hostname: String,
    /// Peer address.
    pub remote_address: String,
    /// IDENTIFY user_agent.
    pub user_agent: String,
    /// Protocol version.
    pub version: String,
    /// TLS, snappy, deflate, sampled, authed.
    pub attributes: Vec<String>,
    /// In flight.
    pub in_flight: Num,
    /// RDY.
    pub ready: Num,
    /// FINed.
    pub finished: Num,
    /// REQed.
    pub requeued: Num,
    /// Delivered.
    pub messages: Num,
    /// Unix seconds.
    pub connect_ts: i64,
    /// "2m 5s ago".
    pub connected_since: String,
}

/// The channel page.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelView {
    /// Topic name.
    pub topic: String,
    /// Channel name.
    pub name: String,
    /// Held by any broker that answered.
    pub exists: bool,
    /// Paused on any broker.
    pub paused: bool,
    /// Per broker (`name` is the broker address).
    pub brokers: Vec<ChannelRow>,
    /// Sum over brokers.
    pub total: ChannelRow,
    /// Client connections, by broker then address.
    pub clients: Vec<ClientRow>,
    /// Nodes that failed.
    pub errors: Vec<String>,
}

/// One broker on the nodes page.
#[derive(Debug, Clone, Serialize)]
pub struct NodeRow {
    /// Host name.
    pub hostname: String,
    /// Address clients use.
    pub broadcast_address: String,
    /// HTTP address admin-ui asks.
    pub http_address: String,
    /// TCP port (0 when unknown).
    pub tcp_port: u16,
    /// HTTP port (0 when unknown).
    pub http_port: u16,
    /// Version.
    pub version: String,
    /// Topics it holds (from its stats, else from lookupd).
    pub topics: Vec<String>,
    /// Tombstoned topics (lookupd).
    pub tombstoned: Vec<String>,
    /// "OK", "NOK - ...", or the error reaching it.
    pub health: String,
    /// Reachable and healthy.
    pub ok: bool,
}

/// The nodes page.
#[derive(Debug, Clone, Serialize)]
pub struct NodesView {
    /// Brokers, by address.
    pub nodes: Vec<NodeRow>,
    /// Lookupd addresses asked.
    pub lookupds: Vec<String>,
    /// Nodes that failed.
    pub errors: Vec<String>,
}

impl TopicsView {
    /// With each topic's count of active alerts.
    pub fn with_alerts(mut self, counts: &AlertCounts) -> TopicsView {
        for t in &mut self.topics {
            t.alerts = counts.topic(&t.name);
        }
        self
    }
}

impl TopicView {
    /// With each channel's count of active alerts.
    pub fn with_alerts(mut self, counts: &AlertCounts) -> TopicView {
        for c in &mut self.channels {
            c.alerts = counts.channel(&self.name, &c.name);
        }
        self
    }
}

/// The topics list.
pub fn topics(snapshot: &Snapshot, history: &History) -> TopicsView {
    let mut rows: BTreeMap<String, TopicRow> = BTreeMap::new();
    let mut channels: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    let mut replicated: BTreeSet<&str> = BTreeSet::new();
    let counted = Counted::of(snapshot);
    for (b, t) in replication::copies(snapshot) {
        let row = rows
            .entry(t.topic_name.clone())
            .or_insert_with(|| empty_topic_row(&t.topic_name));
        if counted.counts(&b.addr, &t.topic_name) {
            row.depth += t.depth;
            row.channel_depth += t.channels.iter().map(|c| c.depth).sum::<u64>();
            row.messages += t.message_count;
        }
        row.brokers += 1;
        row.paused |= t.paused;
        if t.replication.is_some() {
            replicated.insert(&t.topic_name);
        }
        channels
            .entry(t.topic_name.clone())
            .or_default()
            .extend(t.channels.iter().map(|c| c.channel_name.as_str()));
    }
    for name in snapshot.lookupd_topics() {
        rows.entry(name.clone())
            .or_insert_with(|| empty_topic_row(&name));
    }
    for (name, row) in rows.iter_mut() {
        row.channels = channels.get(name).map_or(0, BTreeSet::len);
        row.rate = Rate(history.rate(&SeriesKey::topic(name)));
        if replicated.contains(name.as_str()) {
            row.replication = replication::view(snapshot, name);
        }
    }
    TopicsView {
        topics: rows.into_values().collect(),
        errors: snapshot.errors(),
    }
}

fn empty_topic_row(name: &str) -> TopicRow {
    TopicRow {
        name: name.to_owned(),
        depth: Num(0),
        channel_depth: Num(0),
        messages: Num(0),
        rate: Rate(None),
        channels: 0,
        brokers: 0,
        paused: false,
        alerts: 0,
        replication: None,
    }
}

/// The topic page.
pub fn topic(snapshot: &Snapshot, history: &History, name: &str) -> TopicView {
    let mut total = topic_broker_row("Total", None);
    let mut brokers = Vec::new();
    let mut channels: BTreeMap<String, ChannelRow> = BTreeMap::new();
    let mut e2e = Vec::new();
    let counted = Counted::of(snapshot);
    for b in &snapshot.brokers {
        let Some(t) = b.ok().and_then(|s| find_topic(&s.topics, name)) else {
            continue;
        };
        let mut row = topic_broker_row(&b.addr, Some(t));
        row.counted = counted.counts(&b.addr, name);
        // Disk is used on every replica; messages and depth are the counted copy's.
        row.disk_bytes = Bytes(b.disk_bytes.get(name).copied());
        total.disk_bytes += row.disk_bytes.0;
        if row.counted {
            total.depth += t.depth;
            total.channel_depth += row.channel_depth.0;
            total.messages += t.message_count;
        }
        total.paused |= t.paused;
        total.retention.add(Retention::of(t));
        let oldest_ms = t.oldest_timestamp_ms.max(0) as u64;
        if oldest_ms > 0
            && (total.oldest_timestamp_ms == 0 || oldest_ms < total.oldest_timestamp_ms)
        {
            total.oldest_timestamp_ms = oldest_ms;
        }
        brokers.push(row);
        merge_latency(&mut e2e, &t.e2e_processing_latency);
        for ch in &t.channels {
            let row = channels
                .entry(ch.channel_name.clone())
                .or_insert_with(|| ChannelRow {
                    name: ch.channel_name.clone(),
                    ..ChannelRow::default()
                });
            if counted.counts(&b.addr, name) {
                add_channel(row, ch);
            } else {
                row.paused |= ch.paused;
            }
        }
    }
    total.channels = channels.len();
    total.oldest = oldest(total.oldest_timestamp_ms);
    for row in channels.values_mut() {
        row.rate = Rate(history.rate(&SeriesKey::channel(name, &row.name)));
    }
    TopicView {
        name: name.to_owned(),
        exists: !brokers.is_empty(),
        paused: total.paused,
        brokers,
        total,
        rate: Rate(history.rate(&SeriesKey::topic(name))),
        e2e,
        channels: channels.into_values().collect(),
        replication: replication::view(snapshot, name),
        errors: snapshot.errors(),
    }
}

fn topic_broker_row(node: &str, t: Option<&TopicStats>) -> TopicBrokerRow {
    let (depth, channel_depth, messages, channels, paused) = t.map_or((0, 0, 0, 0, false), |t| {
        (
            t.depth,
            t.channels.iter().map(|c| c.depth).sum(),
            t.message_count,
            t.channels.len(),
            t.paused,
        )
    });
    let mut retention = Distinct::default();
    if let Some(t) = t {
        retention.add(Retention::of(t));
    }
    let oldest_timestamp_ms = t.map_or(0, |t| t.oldest_timestamp_ms.max(0) as u64);
    TopicBrokerRow {
        retention,
        oldest_timestamp_ms,
        oldest: oldest(oldest_timestamp_ms),
        node: node.to_owned(),
        depth: Num(depth),
        channel_depth: Num(channel_depth),
        disk_bytes: Bytes(None),
        messages: Num(messages),
        channels,
        paused,
        role: t.and_then(|t| t.replication.as_ref().map(|r| r.role.clone())),
        counted: true,
    }
}

fn add_channel(row: &mut ChannelRow, ch: &ChannelStats) {
    row.depth += ch.depth;
    row.in_flight += ch.in_flight_count;
    row.deferred += ch.deferred_count;
    row.requeued += ch.requeue_count;
    row.timed_out += ch.timeout_count;
    row.expired += ch.expired_count;
    row.dead_lettered += ch.dead_lettered_count;
    row.settings.add(ChannelSettings::of(ch));
    row.messages += ch.message_count;
    // nsqd's client_count; fall back to the rows for documents that omit it.
    row.connections += ch.client_count.max(ch.clients.len() as u64);
    row.paused |= ch.paused;
    merge_latency(&mut row.e2e, &ch.e2e_processing_latency);
}

/// The channel page.
pub fn channel(snapshot: &Snapshot, history: &History, topic: &str, name: &str) -> ChannelView {
    let mut total = ChannelRow {
        name: "Total".into(),
        ..ChannelRow::default()
    };
    let mut brokers = Vec::new();
    let mut clients = Vec::new();
    let now = now_secs();
    let counted = Counted::of(snapshot);
    for b in &snapshot.brokers {
        let Some(ch) = b
            .ok()
            .and_then(|s| find_topic(&s.topics, topic))
            .and_then(|t| t.channels.iter().find(|c| c.channel_name == name))
        else {
            continue;
        };
        let mut row = ChannelRow {
            name: b.addr.clone(),
            ..ChannelRow::default()
        };
        add_channel(&mut row, ch);
        if counted.counts(&b.addr, topic) {
            add_channel(&mut total, ch);
        } else {
            total.paused |= ch.paused;
        }
        brokers.push(row);
        clients.extend(ch.clients.iter().map(|c| client_row(&b.addr, c, now)));
    }
    total.rate = Rate(history.rate(&SeriesKey::channel(topic, name)));
    ChannelView {
        topic: topic.to_owned(),
        name: name.to_owned(),
        exists: !brokers.is_empty(),
        paused: total.paused,
        brokers,
        total,
        clients,
        errors: snapshot.errors(),
    }
}

fn client_row(node: &str, c: &ClientStats, now: i64) -> ClientRow {
    let mut attributes = Vec::new();
    if c.tls {
        attributes.push(if c.tls_version.is_empty() {
            "TLS".to_owned()
        } else {
            format!("TLS {}", c.tls_version)
        });
    }
    if c.snappy {
        attributes.push("snappy".into());
    }
    if c.deflate {
        attributes.push("deflate".into());
    }
    if c.sample_rate > 0 {
        attributes.push(format!("sampled {}%", c.sample_rate));
    }
    if c.authed {
        attributes.push(if c.auth_identity.is_empty() {
            "authed".to_owned()
        } else {
            format!("authed as {}", c.auth_identity)
        });
    }
    ClientRow {
        node: node.to_owned(),
        client_id: c.client_id.clone(),
        hostname: c.hostname.clone(),
        remote_address: c.remote_address.clone(),
        user_agent: c.user_agent.clone(),
        version: c.version.clone(),
        attributes,
        in_flight: Num(c.in_flight_count),
        ready: Num(c.ready_count),
        finished: Num(c.finish_count),
        requeued: Num(c.requeue_count),
        messages: Num(c.message_count),
        connect_ts: c.connect_ts,
        connected_since: if c.connect_ts > 0 {
            format!("{} ago", short_duration(now - c.connect_ts))
        } else {
            "–".into()
        },
    }
}

/// The nodes page.
pub fn nodes(snapshot: &Snapshot) -> NodesView {
    let nodes = snapshot
        .brokers
        .iter()
        .map(|b| {
            let p = b.producer.as_ref();
            let info = b.info.as_ref();
            let pick = |from_p: Option<&str>, from_i: Option<&str>| {
                from_p
                    .filter(|s| !s.is_empty())
                    .or(from_i.filter(|s| !s.is_empty()))
                    .unwrap_or("")
                    .to_owned()
            };
            let topics: Vec<String> = match b.ok() {
                Some(s) => s.topics.iter().map(|t| t.topic_name.clone()).collect(),
                None => p.map(|p| p.topics.clone()).unwrap_or_default(),
            };
            let tombstoned = p
                .map(|p| {
                    p.topics
                        .iter()
                        .zip(&p.tombstones)
                        .filter(|(_, dead)| **dead)
                        .map(|(t, _)| t.clone())
                        .collect()
                })
                .unwrap_or_default();
            let (health, ok) = match &b.stats {
                Ok(s) if s.health.is_empty() || s.health == "OK" => ("OK".to_owned(), true),
                Ok(s) => (s.health.clone(), false),
                Err(e) => (e.clone(), false),
            };
            let version = pick(
                p.map(|p| p.version.as_str()),
                info.map(|i| i.version.as_str())
                    .or(b.ok().map(|s| s.version.as_str())),
            );
            NodeRow {
                hostname: pick(
                    p.map(|p| p.hostname.as_str()),
                    info.map(|i| i.hostname.as_str()),
                ),
                broadcast_address: pick(
                    p.map(|p| p.broadcast_address.as_str()),
                    info.map(|i| i.broadcast_address.as_str()),
                ),
                http_address: b.addr.clone(),
                tcp_port: p
                    .map(|p| p.tcp_port)
                    .or(info.map(|i| i.tcp_port))
                    .unwrap_or(0),
                http_port: p
                    .map(|p| p.http_port)
                    .or(info.map(|i| i.http_port))
                    .unwrap_or(0),
                version,
                topics,
                tombstoned,
                health,
                ok,
            }
        })
        .collect();
    NodesView {
        nodes,
        lookupds: snapshot.lookupds.iter().map(|l| l.addr.clone()).collect(),
        errors: snapshot.errors(),
    }
}

/// The oldest retained message's time and age, or "–".
fn oldest(ms: u64) -> String {
    if ms == 0 {
        return "–".into();
    }
    format!("{} ({})", settings::time_ms(ms), settings::relative_ms(ms))
}

fn find_topic<'a>(topics: &'a [TopicStats], name: &str) -> Option<&'a TopicStats> {
    topics.iter().find(|t| t.topic_name == name)
}

/// Adds `latency`'s percentiles into `into`, keeping the largest value per quantile.
fn merge_latency(into: &mut Vec<Percentile>, latency: &Latency) {
    for p in latency.percentiles.iter().flatten() {
        let value = p.value as f64;
        let label = quantile_label(p.quantile);
        match into.iter_mut().find(|x| x.label == label) {
            Some(x) if x.value_ns >= value => {}
            Some(x) => {
                x.value_ns = value;
                x.display = nanos(value);
            }
            None => into.push(Percentile {
                label,
                value_ns: value,
                display: nanos(value),
            }),
        }
    }
}

fn quantile_label(q: f64) -> String {
    let pct = format!("{:.2}", q * 100.0);
    format!("p{}", pct.trim_end_matches('0').trim_end_matches('.'))
}

/// Nanoseconds as "850µs", "12.3ms", "1.5s".
pub fn nanos(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.1}s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.1}ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.0}µs", ns / 1e3)
    } else {
        format!("{ns:.0}ns")
    }
}

/// Seconds as "3d 4h", "2h 5m", "4m 10s", "12s".
pub fn short_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {sec}s")
    } else {
        format!("{sec}s")
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two brokers holding topic `t` with channel `c`, their retention and settings differing.
    fn two_brokers() -> Snapshot {
        use crate::cluster::BrokerSnap;
        use crate::nsq::Stats;
        let broker = |addr: &str, oldest: i64, retention_ms: u64, max_attempts: u32| {
            let channel = ChannelStats {
                channel_name: "c".into(),
                expired_count: 2,
                dead_lettered_count: 1,
                max_age_ms: 600_000,
                max_attempts,
                ..ChannelStats::default()
            };
            let topic = TopicStats {
                topic_name: "t".into(),
                channels: vec![channel],
                retention_ms,
                oldest_timestamp_ms: oldest,
                ..TopicStats::default()
            };
            BrokerSnap {
                addr: addr.into(),
                producer: None,
                info: None,
                disk_bytes: [("t".to_owned(), 3 << 20)].into(),
                stats: Ok(Stats {
                    topics: vec![topic],
                    ..Stats::default()
                }),
            }
        };
        Snapshot {
            taken: SystemTime::now(),
            lookupds: Vec::new(),
            brokers: vec![
                broker("a:4151", 0, 3_600_000, 5),
                broker("b:4151", 1_764_900_000_000, 3_600_000, 3),
            ],
        }
    }

    #[test]
    fn settings_and_counts_over_brokers() {
        let history = History::new(2, 10, std::time::Duration::from_secs(60));
        let snap = two_brokers();
        let t = topic(&snap, &history, "t");
        assert_eq!(t.total.retention.time(), "1h", "both brokers agree");
        assert_eq!(t.total.retention.size(), "off");
        assert_eq!(
            t.total.oldest_timestamp_ms, 1_764_900_000_000,
            "an empty log is not oldest"
        );
        assert!(
            t.total.oldest.starts_with("2025-12-05 02:00:00 UTC ("),
            "{}",
            t.total.oldest
        );
        assert_eq!(t.brokers[0].oldest, "–");
        let c = &t.channels[0];
        assert_eq!((c.expired, c.dead_lettered), (Num(4), Num(2)));
        assert_eq!(c.settings.max_age(), "10m", "both brokers agree");
        assert_eq!(c.settings.max_attempts(), "mixed");
        assert_eq!(t.brokers[0].disk_bytes, Bytes(Some(3 << 20)));
        assert_eq!(t.total.disk_bytes.to_string(), "6.0 MiB");
        let ch = channel(&snap, &history, "t", "c");
        assert_eq!(ch.brokers[1].settings.max_attempts(), "3");
        assert_eq!(ch.total.expired, Num(4));
    }

    #[test]
    fn a_replicated_topic_counts_once() {
        use crate::replication::tests::{copy, member, snapshot};
        let members = vec![
            member(1, "a:1", "voter", 10, 0),
            member(2, "b:1", "leader", 10, 0),
            member(3, "c:1", "voter", 10, 0),
        ];
        let snap = snapshot(
            0,
            vec![
                copy("a:1", 1, "follower", Some(2), 7, members.clone()),
                copy("b:1", 2, "leader", Some(2), 7, members.clone()),
                copy("c:1", 3, "follower", Some(2), 7, members),
            ],
        );
        let history = History::new(2, 10, std::time::Duration::from_secs(60));
        let list = topics(&snap, &history);
        let row = &list.topics[0];
        assert_eq!(
            (row.channel_depth, row.messages, row.brokers),
            (Num(7), Num(7), 3)
        );
        assert_eq!(
            row.replication.as_ref().unwrap().summary(),
            "3/3 · leader b:1"
        );
        let t = topic(&snap, &history, "t");
        assert_eq!((t.total.channel_depth, t.total.messages), (Num(7), Num(7)));
        assert_eq!(t.channels[0].depth, Num(7));
        assert_eq!(t.brokers.len(), 3, "every replica's own row");
        let counted: Vec<bool> = t.brokers.iter().map(|b| b.counted).collect();
        assert_eq!(counted, [false, true, false]);
        assert_eq!(t.brokers[0].role.as_deref(), Some("follower"));
        assert_eq!(t.replication.unwrap().replicas.len(), 3);
        assert_eq!(channel(&snap, &history, "t", "c").total.depth, Num(7));
        history.record(&snap);
        assert_eq!(history.chart(&SeriesKey::topic("t")).depth, [7]);
    }

    #[test]
    fn numbers_print_with_separators() {
        assert_eq!(Num(0).to_string(), "0");
        assert_eq!(Num(999).to_string(), "999");
        assert_eq!(Num(1000).to_string(), "1,000");
        assert_eq!(Num(1_234_567).to_string(), "1,234,567");
        assert_eq!(Rate(None).to_string(), "–");
        assert_eq!(Rate(Some(2.25)).to_string(), "2.2/s");
        assert_eq!(Rate(Some(12_345.4)).to_string(), "12,345/s");
        assert_eq!(Bytes(None).to_string(), "–");
        assert_eq!(Bytes(Some(512)).to_string(), "512 B");
        assert_eq!(Bytes(Some(1536)).to_string(), "1.5 KiB");
        assert_eq!(Bytes(Some(8 << 30)).to_string(), "8.0 GiB");
        let mut sum = Bytes(None);
        sum += None;
        assert_eq!(sum, Bytes(None), "no broker says");
        sum += Some(0);
        assert_eq!(sum, Bytes(Some(0)));
    }

    #[test]
    fn durations_and_latencies() {
        assert_eq!(short_duration(5), "5s");
        assert_eq!(short_duration(125), "2m 5s");
        assert_eq!(short_duration(7300), "2h 1m");
        assert_eq!(short_duration(90_000), "1d 1h");
        assert_eq!(nanos(1_500_000.0), "1.5ms");
        assert_eq!(quantile_label(0.99), "p99");
        assert_eq!(quantile_label(0.999), "p99.9");
    }

    #[test]
    fn latency_merge_keeps_the_worst() {
        let mut into = Vec::new();
        let lat = |v| Latency {
            count: 1,
            percentiles: Some(vec![crate::nsq::Percentile {
                quantile: 0.99,
                value: v,
            }]),
        };
        merge_latency(&mut into, &lat(2_000_000));
        merge_latency(&mut into, &lat(1_000_000));
        merge_latency(&mut into, &lat(3_000_000));
        assert_eq!(into.len(), 1);
        assert_eq!(into[0].display, "3.0ms");
    }
}
