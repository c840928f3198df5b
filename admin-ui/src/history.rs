//! In-memory history for the charts: every `--sample-interval` the sampler task takes a
//! snapshot of the cluster and records, per topic and per channel (summed over brokers), the
//! message count, the requeue and timeout counts (redeliveries, so a channel that is stuck
//! redelivering shows on the rate chart) and the channels' depth (for a topic: the total of
//! its channels', the same number as the topic page's "Channel depth (total)"; the topic's own
//! backlog, kept for a first channel, is not charted). Each series is a ring of at most `--history /
//! --sample-interval + 1` points; there are at most `--max-history-series` series, and a series
//! that has not been seen for a whole history window is dropped.
//!
//! Rates are derived from consecutive points: (count₂ − count₁) / (t₂ − t₁), never negative (a
//! broker restart or an unreachable broker makes the sum go down; that is not a rate).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::alerts::Alerts;
use crate::cluster::{Cluster, Snapshot};

/// A topic (`channel: None`) or one of its channels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    /// Topic name.
    pub topic: String,
    /// Channel name, for a channel series.
    pub channel: Option<String>,
}

impl SeriesKey {
    /// A topic's key.
    pub fn topic(topic: &str) -> SeriesKey {
        SeriesKey {
            topic: topic.to_owned(),
            channel: None,
        }
    }

    /// A channel's key.
    pub fn channel(topic: &str, channel: &str) -> SeriesKey {
        SeriesKey {
            topic: topic.to_owned(),
            channel: Some(channel.to_owned()),
        }
    }
}

/// One sample of one series: counters summed over the brokers that answered.
#[derive(Debug, Clone, Copy, Default)]
struct Point {
    /// Unix seconds.
    t: f64,
    /// Published (topic) or first deliveries (channel).
    messages: u64,
    /// Explicit requeues (REQ), over the topic's channels for a topic.
    requeued: u64,
    /// In-flight timeouts, likewise.
    timed_out: u64,
    /// Messages waiting in the channel (for a topic: in all its channels).
    depth: u64,
}

impl Point {
    /// Adds `other`'s counters (not its time).
    fn add(&mut self, other: &Point) {
        self.messages += other.messages;
        self.requeued += other.requeued;
        self.timed_out += other.timed_out;
        self.depth += other.depth;
    }
}

/// Chart data in uPlot's column layout: `t[i]`, `rate[i]`, `depth[i]`... belong together.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Chart {
    /// Unix seconds.
    pub t: Vec<f64>,
    /// Messages per second since the previous point (`null` for the first): published for a
    /// topic, first deliveries for a channel.
    pub rate: Vec<Option<f64>>,
    /// Requeues per second (redeliveries a consumer asked for).
    pub requeue_rate: Vec<Option<f64>>,
    /// Timeouts per second (redeliveries after the message timeout).
    pub timeout_rate: Vec<Option<f64>>,
    /// Messages waiting in the channel; for a topic, in all its channels.
    pub depth: Vec<u64>,
}

/// The sampled series, behind one lock.
#[derive(Debug)]
pub struct History {
    // Held only to push or copy a few points: never across an await.
    series: Mutex<HashMap<SeriesKey, VecDeque<Point>>>,
    capacity: usize,
    max_series: usize,
    window: Duration,
}

impl History {
    /// Keeps `capacity` points per series, at most `max_series` series, for `window`.
    pub fn new(capacity: usize, max_series: usize, window: Duration) -> History {
        History {
            series: Mutex::new(HashMap::new()),
            capacity: capacity.max(2),
            max_series,
            window,
        }
    }

    /// Records the snapshot's sums as one point per topic and channel.
    pub fn record(&self, snapshot: &Snapshot) {
        let t = unix_secs(snapshot.taken);
        let totals = totals(snapshot);
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        for (key, point) in totals {
            let len = series.len();
            let points = match series.get_mut(&key) {
                Some(p) => p,
                None if len < self.max_series => series.entry(key).or_default(),
                None => continue,
            };
            if points.len() == self.capacity {
                points.pop_front();
            }
            points.push_back(Point { t, ..point });
        }
        let oldest = t - self.window.as_secs_f64();
        series.retain(|_, p| p.back().is_some_and(|last| last.t >= oldest));
    }

    /// The latest rate of a series, in messages per second.
    pub fn rate(&self, key: &SeriesKey) -> Option<f64> {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let points = series.get(key)?;
        let n = points.len();
        if n < 2 {
            return None;
        }
        rate_between(&points[n - 2], &points[n - 1], |p| p.messages)
    }

    /// A series' chart data (empty if never sampled).
    pub fn chart(&self, key: &SeriesKey) -> Chart {
        let points: Vec<Point> = {
            let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
            series
                .get(key)
                .map(|p| p.iter().copied().collect())
                .unwrap_or_default()
        };
        let mut chart = Chart::default();
        for (i, p) in points.iter().enumerate() {
            chart.t.push(p.t);
            chart.depth.push(p.depth);
            let rate = |count: fn(&Point) -> u64| match i {
                0 => None,
                _ => rate_between(&points[i - 1], p, count),
            };
            chart.rate.push(rate(|p| p.messages));
            chart.requeue_rate.push(rate(|p| p.requeued));
            chart.timeout_rate.push(rate(|p| p.timed_out));
        }
        chart
    }

    /// Number of series kept.
    pub fn len(&self) -> usize {
        self.series.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when nothing has been sampled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The per-second rate of the counter `count` between two points.
fn rate_between(a: &Point, b: &Point, count: fn(&Point) -> u64) -> Option<f64> {
    let dt = b.t - a.t;
    if dt <= 0.0 {
        return None;
    }
    Some(count(b).saturating_sub(count(a)) as f64 / dt)
}

/// Per topic and channel: the counters summed over the brokers that answered (`t` unset),
/// a replicated topic's from its counted copy only.
fn totals(snapshot: &Snapshot) -> BTreeMap<SeriesKey, Point> {
    let mut out: BTreeMap<SeriesKey, Point> = BTreeMap::new();
    // A replicated topic once (its leader's copy), not once per replica.
    for (_, topic) in crate::replication::counted(snapshot) {
        // The topic's point: its publishes, and its channels' redeliveries and depth.
        let mut channels = Point::default();
        for ch in &topic.channels {
            let p = Point {
                t: 0.0,
                messages: ch.message_count,
                requeued: ch.requeue_count,
                timed_out: ch.timeout_count,
                depth: ch.depth,
            };
            out.entry(SeriesKey::channel(&topic.topic_name, &ch.channel_name))
                .or_default()
                .add(&p);
            channels.add(&p);
        }
        let p = Point {
            messages: topic.message_count,
            ..channels
        };
        out.entry(SeriesKey::topic(&topic.topic_name))
            .or_default()
            .add(&p);
    }
    out
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The sampler: a fresh snapshot every `interval` (the first at once), recorded into
/// `history`, evaluated by the alert rules, and left in the cluster's cache for the pages.
/// Returns when `shutdown` fires.
pub async fn run_sampler(
    cluster: Arc<Cluster>,
    history: Arc<History>,
    alerts: Arc<Alerts>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let snapshot = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = cluster.snapshot(Duration::ZERO) => s,
        };
        history.record(&snapshot);
        alerts.observe(&snapshot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::BrokerSnap;
    use crate::nsq::{ChannelStats, Stats, TopicStats};

    fn snap(t: f64, brokers: &[(u64, u64)]) -> Snapshot {
        Snapshot {
            taken: UNIX_EPOCH + Duration::from_secs_f64(t),
            lookupds: Vec::new(),
            brokers: brokers
                .iter()
                .enumerate()
                .map(|(i, &(messages, depth))| BrokerSnap {
                    addr: format!("b{i}:1"),
                    producer: None,
                    info: None,
                    disk_bytes: Default::default(),
                    stats: Ok(Stats {
                        topics: vec![TopicStats {
                            topic_name: "t".into(),
                            message_count: messages,
                            channels: vec![ChannelStats {
                                channel_name: "c".into(),
                                message_count: messages,
                                requeue_count: 2 * messages,
                                timeout_count: messages / 10,
                                depth,
                                ..ChannelStats::default()
                            }],
                            ..TopicStats::default()
                        }],
                        ..Stats::default()
                    }),
                })
                .collect(),
        }
    }

    #[test]
    fn rates_sum_brokers_and_never_go_negative() {
        let h = History::new(10, 100, Duration::from_secs(3600));
        h.record(&snap(100.0, &[(10, 1), (20, 2)]));
        assert_eq!(h.rate(&SeriesKey::topic("t")), None);
        h.record(&snap(102.0, &[(30, 1), (40, 2)]));
        assert_eq!(h.rate(&SeriesKey::topic("t")), Some(20.0));
        assert_eq!(h.rate(&SeriesKey::channel("t", "c")), Some(20.0));
        h.record(&snap(104.0, &[(30, 1)]));
        assert_eq!(h.rate(&SeriesKey::topic("t")), Some(0.0));
        let chart = h.chart(&SeriesKey::channel("t", "c"));
        assert_eq!(chart.t, [100.0, 102.0, 104.0]);
        assert_eq!(chart.rate, [None, Some(20.0), Some(0.0)]);
        assert_eq!(chart.requeue_rate, [None, Some(40.0), Some(0.0)]);
        assert_eq!(chart.timeout_rate, [None, Some(2.0), Some(0.0)]);
        assert_eq!(chart.depth, [3, 3, 1]);
        // A topic's depth is its channels' total, not its own backlog.
        let mut with_backlog = snap(106.0, &[(30, 1)]);
        if let Ok(stats) = &mut with_backlog.brokers[0].stats {
            stats.topics[0].depth = 500;
        }
        h.record(&with_backlog);
        let chart = h.chart(&SeriesKey::topic("t"));
        assert_eq!(chart.depth, [3, 3, 1, 1]);
        assert_eq!(chart.requeue_rate.last(), Some(&Some(0.0)));
    }

    #[test]
    fn rings_and_series_are_bounded() {
        let h = History::new(3, 1, Duration::from_secs(10));
        for i in 0u32..5 {
            h.record(&snap(f64::from(i), &[(u64::from(i), 0)]));
        }
        assert_eq!(h.chart(&SeriesKey::topic("t")).t, [2.0, 3.0, 4.0]);
        assert_eq!(h.len(), 1, "the channel series did not fit");
        h.record(&Snapshot {
            taken: UNIX_EPOCH + Duration::from_secs(100),
            lookupds: Vec::new(),
            brokers: Vec::new(),
        });
        assert!(h.is_empty(), "series unseen for a window are dropped");
    }
}
