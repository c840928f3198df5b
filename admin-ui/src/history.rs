//! In-memory history for the charts: every `--sample-interval` the sampler task takes a
//! snapshot of the cluster and records, per topic and per channel (summed over brokers), the
//! message count and the depth. Each series is a ring of at most `--history /
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

#[derive(Debug, Clone, Copy)]
struct Point {
    /// Unix seconds.
    t: f64,
    messages: u64,
    depth: u64,
}

/// Chart data in uPlot's column layout: `t[i]`, `rate[i]`, `depth[i]` belong together.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Chart {
    /// Unix seconds.
    pub t: Vec<f64>,
    /// Messages per second since the previous point (`null` for the first).
    pub rate: Vec<Option<f64>>,
    /// Messages waiting (for a topic: its own depth plus its channels').
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
        for (key, (messages, depth)) in totals {
            let len = series.len();
            let points = match series.get_mut(&key) {
                Some(p) => p,
                None if len < self.max_series => series.entry(key).or_default(),
                None => continue,
            };
            if points.len() == self.capacity {
                points.pop_front();
            }
            points.push_back(Point { t, messages, depth });
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
        rate_between(&points[n - 2], &points[n - 1])
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
            chart.rate.push(match i {
                0 => None,
                _ => rate_between(&points[i - 1], p),
            });
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

fn rate_between(a: &Point, b: &Point) -> Option<f64> {
    let dt = b.t - a.t;
    if dt <= 0.0 {
        return None;
    }
    Some(b.messages.saturating_sub(a.messages) as f64 / dt)
}

/// Per topic and channel: (message count, depth) summed over the brokers that answered.
fn totals(snapshot: &Snapshot) -> BTreeMap<SeriesKey, (u64, u64)> {
    let mut out: BTreeMap<SeriesKey, (u64, u64)> = BTreeMap::new();
    for stats in snapshot.brokers.iter().filter_map(|b| b.ok()) {
        for topic in &stats.topics {
            let channel_depth: u64 = topic.channels.iter().map(|c| c.depth).sum();
            let t = out.entry(SeriesKey::topic(&topic.topic_name)).or_default();
            t.0 += topic.message_count;
            t.1 += topic.depth + channel_depth;
            for ch in &topic.channels {
                let c = out
                    .entry(SeriesKey::channel(&topic.topic_name, &ch.channel_name))
                    .or_default();
                c.0 += ch.message_count;
                c.1 += ch.depth;
            }
        }
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
                    stats: Ok(Stats {
                        topics: vec![TopicStats {
                            topic_name: "t".into(),
                            message_count: messages,
                            channels: vec![ChannelStats {
                                channel_name: "c".into(),
                                message_count: messages,
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
        assert_eq!(chart.depth, [3, 3, 1]);
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
