//! `GET /metrics`: the broker's figures in Prometheus text format (version 0.0.4).
//!
//! # Design: a recorder per scrape, filled from the broker's live state
//! Nothing on the message path talks to the `metrics` facade. Counters already exist as relaxed
//! atomics (topic and channel counts) or as plain integers under the channel lock (FINs, bytes,
//! delivery latency); gauges (depth, in flight, deferred, clients, segments, bytes on disk) are
//! read from the same structures `/stats` uses. Each scrape builds a fresh
//! `metrics_exporter_prometheus::PrometheusRecorder` with `PrometheusBuilder::build_recorder`
//! (no global recorder is installed, no HTTP listener is started), registers every series with its
//! current value through the `metrics::Recorder` interface, and renders it. Consequently:
//! - two brokers in one process (tests, `ferry dev`) each report only their own numbers;
//! - a deleted topic or channel disappears from the next scrape instead of lingering;
//! - the publish and delivery paths pay nothing for metrics beyond the atomics they had.
//!
//! Latency histograms are Ferry's own fixed-bucket ones ([`crate::histogram`]), rendered in the
//! same exposition format after the recorder's output, because the exporter's histograms store
//! every sample until a scrape drains them.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use metrics::{Key, Label, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use crate::broker::{Broker, VERSION};
use crate::histogram::Histogram;
use crate::limits::Listener;

/// Content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Every counter and gauge: name, unit, help. Histograms are in [`HISTOGRAMS`].
const COUNTERS: &[(&str, Option<Unit>, &str)] = &[
    (
        "ferry_topic_messages_total",
        Some(Unit::Count),
        "Messages published to the topic since the broker started.",
    ),
    (
        "ferry_topic_message_bytes_total",
        Some(Unit::Bytes),
        "Body bytes published to the topic since the broker started.",
    ),
    (
        "ferry_topic_corrupt_records_skipped_total",
        Some(Unit::Count),
        "Corrupt regions of the topic's log skipped by recovery when it was opened.",
    ),
    (
        "ferry_topic_journal_syncs_total",
        Some(Unit::Count),
        "Appends of channel state (FIN, REQ, timeouts, empty) to the topic's journal made durable (write + fdatasync).",
    ),
    (
        "ferry_topic_journal_ops_total",
        Some(Unit::Count),
        "Channel ops (FIN, REQ, timeouts, empty) made durable in the topic's journal (compactions include the rest without counting them).",
    ),
    (
        "ferry_topic_dropped_messages_total",
        Some(Unit::Count),
        "Messages an #ephemeral topic dropped because its memory queue was full.",
    ),
    (
        "ferry_channel_messages_total",
        Some(Unit::Count),
        "Messages delivered for the first time on the channel (NSQ's message_count).",
    ),
    (
        "ferry_channel_message_bytes_total",
        Some(Unit::Bytes),
        "Body bytes of first deliveries on the channel.",
    ),
    (
        "ferry_channel_finished_total",
        Some(Unit::Count),
        "Messages finished (FIN) on the channel.",
    ),
    (
        "ferry_channel_messages_expired_total",
        Some(Unit::Count),
        "Messages of the channel dropped, never delivered, for being older than its max_age.",
    ),
    (
        "ferry_channel_messages_dead_lettered_total",
        Some(Unit::Count),
        "Messages of the channel sent to its dead-letter topic after max_attempts deliveries.",
    ),
    (
        "ferry_channel_requeued_total",
        Some(Unit::Count),
        "Explicit requeues (REQ) on the channel.",
    ),
    (
        "ferry_channel_timed_out_total",
        Some(Unit::Count),
        "In-flight messages of the channel that timed out and were redelivered.",
    ),
    (
        "ferry_connections_total",
        Some(Unit::Count),
        "TCP client connections accepted since the broker started.",
    ),
    (
        "ferry_connections_refused_total",
        Some(Unit::Count),
        "Connections (gRPC: subscribe streams) refused because the listener was at --max-connections.",
    ),
];

const GAUGES: &[(&str, Option<Unit>, &str)] = &[
    (
        "ferry_build_info",
        None,
        "Always 1; the label carries the broker's version.",
    ),
    (
        "ferry_healthy",
        None,
        "1 when the storage is healthy (/ping answers OK), else 0.",
    ),
    (
        "ferry_connections",
        Some(Unit::Count),
        "TCP client connections open now.",
    ),
    ("ferry_topics", Some(Unit::Count), "Topics on this broker."),
    (
        "ferry_topic_depth",
        Some(Unit::Count),
        "Messages kept for a topic that has no channel yet (NSQ's topic depth).",
    ),
    (
        "ferry_topic_channels",
        Some(Unit::Count),
        "Channels of the topic.",
    ),
    ("ferry_topic_paused", None, "1 when the topic is paused."),
    (
        "ferry_topic_segments",
        Some(Unit::Count),
        "Segment files of the topic's log (0 for #ephemeral topics).",
    ),
    (
        "ferry_topic_disk_bytes",
        Some(Unit::Bytes),
        "Disk space allocated to the topic's segment files.",
    ),
    (
        "ferry_replication_leader",
        None,
        "1 when this broker leads the replicated topic's group (only the leader delivers), else 0.",
    ),
    (
        "ferry_replication_term",
        Some(Unit::Count),
        "Raft term of the replicated topic's group as this broker knows it; a rise is an election.",
    ),
    (
        "ferry_replication_commit_index",
        Some(Unit::Count),
        "Raft log index the group has committed (on a follower: what it applied).",
    ),
    (
        "ferry_replication_replicas",
        Some(Unit::Count),
        "Members of the replicated topic's group.",
    ),
    (
        "ferry_replication_lag_entries",
        Some(Unit::Count),
        "Raft log entries a replica is behind its leader (reported by the leader, per replica).",
    ),
    (
        "ferry_channel_depth",
        Some(Unit::Count),
        "Messages waiting on the channel (not in flight, not deferred).",
    ),
    (
        "ferry_channel_in_flight",
        Some(Unit::Count),
        "Messages of the channel delivered and not yet finished, requeued or timed out.",
    ),
    (
        "ferry_channel_deferred",
        Some(Unit::Count),
        "Messages of the channel waiting for a later delivery time (DPUB, REQ with delay).",
    ),
    (
        "ferry_channel_clients",
        Some(Unit::Count),
        "Clients subscribed to the channel.",
    ),
    (
        "ferry_channel_paused",
        None,
        "1 when the channel is paused.",
    ),
    (
        "ferry_process_resident_memory_bytes",
        Some(Unit::Bytes),
        "Resident set size of the broker process (VmRSS).",
    ),
    (
        "ferry_process_open_fds",
        Some(Unit::Count),
        "File descriptors the broker process has open.",
    ),
];

/// Histograms: name, help.
const HISTOGRAMS: &[(&str, &str)] = &[
    (
        "ferry_topic_publish_latency_seconds",
        "Time to append a PUB/MPUB/DPUB to the topic's log and wake its channels (the reply follows at once).",
    ),
    (
        "ferry_topic_fsync_duration_seconds",
        "Time each sync of the topic's log (msync + fsync) took.",
    ),
    (
        "ferry_channel_delivery_latency_seconds",
        "Time from publish (or deliver-at, if later) to first delivery on the channel.",
    ),
];

/// Builds a recorder and registers values in it.
struct Scrape {
    recorder: PrometheusRecorder,
}

impl Scrape {
    fn new() -> Scrape {
        let recorder = PrometheusBuilder::new().build_recorder();
        for &(name, unit, help) in COUNTERS {
            recorder.describe_counter(name.into(), unit, help.into());
        }
        for &(name, unit, help) in GAUGES {
            recorder.describe_gauge(name.into(), unit, help.into());
        }
        Scrape { recorder }
    }

    fn counter(&self, name: &'static str, labels: &[(&'static str, &str)], value: u64) {
        self.recorder
            .register_counter(&key(name, labels), &METADATA)
            .absolute(value);
    }

    fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)], value: f64) {
        self.recorder
            .register_gauge(&key(name, labels), &METADATA)
            .set(value);
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|&(k, v)| Label::new(k, v.to_owned()))
        .collect();
    Key::from_parts(name, labels)
}

/// Owned label pairs of one series.
type OwnedLabels = Vec<(&'static str, String)>;

/// Histogram series gathered during a scrape, rendered after the recorder's output: one list per
/// entry of [`HISTOGRAMS`].
#[derive(Default)]
struct HistogramSeries {
    by_metric: [Vec<(OwnedLabels, Histogram)>; HISTOGRAMS.len()],
}

impl HistogramSeries {
    fn add(&mut self, metric: usize, labels: &[(&'static str, &str)], h: Histogram) {
        let labels = labels.iter().map(|&(k, v)| (k, v.to_owned())).collect();
        self.by_metric[metric].push((labels, h));
    }

    fn render(&self, out: &mut String) {
        for (&(name, help), series) in HISTOGRAMS.iter().zip(&self.by_metric) {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} histogram");
            for (labels, h) in series {
                let labels: Vec<(&str, &str)> =
                    labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                h.render(out, name, &labels);
            }
            out.push('\n');
        }
    }
}

const PUBLISH_LATENCY: usize = 0;
const FSYNC_DURATION: usize = 1;
const DELIVERY_LATENCY: usize = 2;

/// The whole `/metrics` document for `broker`.
pub fn render(broker: &Broker) -> String {
    let scrape = Scrape::new();
    let mut histograms = HistogramSeries::default();
    scrape.gauge("ferry_build_info", &[("version", VERSION)], 1.0);
    scrape.gauge(
        "ferry_healthy",
        &[],
        if broker.health().is_none() { 1.0 } else { 0.0 },
    );
    scrape.gauge("ferry_connections", &[], broker.client_count() as f64);
    scrape.counter(
        "ferry_connections_total",
        &[],
        broker.connections_total.load(Relaxed),
    );
    for listener in Listener::ALL {
        scrape.counter(
            "ferry_connections_refused_total",
            &[("listener", listener.as_str())],
            broker.limits.refused_total(listener),
        );
    }
    let topics = broker.topics();
    scrape.gauge("ferry_topics", &[], topics.len() as f64);
    for topic in &topics {
        let t: &[(&'static str, &str)] = &[("topic", topic.name())];
        let log = topic.log().stats();
        let channels = topic.channels();
        scrape.counter(
            "ferry_topic_messages_total",
            t,
            topic.message_count.load(Relaxed),
        );
        scrape.counter(
            "ferry_topic_message_bytes_total",
            t,
            topic.message_bytes.load(Relaxed),
        );
        scrape.counter(
            "ferry_topic_corrupt_records_skipped_total",
            t,
            log.corrupt_skipped,
        );
        scrape.counter("ferry_topic_dropped_messages_total", t, log.dropped);
        scrape.counter(
            "ferry_topic_journal_syncs_total",
            t,
            topic.journal_syncs.load(Relaxed),
        );
        scrape.counter(
            "ferry_topic_journal_ops_total",
            t,
            topic.journal_ops.load(Relaxed),
        );
        scrape.gauge("ferry_topic_depth", t, topic.depth() as f64);
        scrape.gauge("ferry_topic_channels", t, channels.len() as f64);
        scrape.gauge("ferry_topic_paused", t, flag(topic.is_paused()));
        scrape.gauge("ferry_topic_segments", t, log.segments as f64);
        scrape.gauge("ferry_topic_disk_bytes", t, log.disk_bytes as f64);
        if let Some(raft) = topic.replica() {
            let r = crate::replication::stats(raft);
            scrape.gauge("ferry_replication_leader", t, flag(r.role == "leader"));
            scrape.gauge("ferry_replication_term", t, r.term as f64);
            scrape.gauge("ferry_replication_commit_index", t, r.commit_index as f64);
            scrape.gauge("ferry_replication_replicas", t, r.replicas.len() as f64);
            for replica in r.replicas.iter().filter(|_| r.role == "leader") {
                // A member the leader has not heard from has no matched index: it is behind by
                // the whole log.
                let lag = replica.lag.unwrap_or(r.commit_index.max(r.last_applied));
                scrape.gauge(
                    "ferry_replication_lag_entries",
                    &[("topic", topic.name()), ("replica", &replica.address)],
                    lag as f64,
                );
            }
        }
        histograms.add(PUBLISH_LATENCY, t, topic.publish_latency.snapshot());
        if !log.is_memory {
            histograms.add(FSYNC_DURATION, t, topic.sync_latency.snapshot());
        }
        for ch in &channels {
            let l: &[(&'static str, &str)] = &[("topic", topic.name()), ("channel", ch.name())];
            let m = ch.metrics();
            scrape.counter(
                "ferry_channel_messages_total",
                l,
                ch.message_count.load(Relaxed),
            );
            scrape.counter("ferry_channel_message_bytes_total", l, m.delivered_bytes);
            scrape.counter("ferry_channel_finished_total", l, m.finished);
            scrape.counter("ferry_channel_messages_expired_total", l, m.expired);
            scrape.counter(
                "ferry_channel_messages_dead_lettered_total",
                l,
                m.dead_lettered,
            );
            scrape.counter(
                "ferry_channel_requeued_total",
                l,
                ch.requeue_count.load(Relaxed),
            );
            scrape.counter(
                "ferry_channel_timed_out_total",
                l,
                ch.timeout_count.load(Relaxed),
            );
            scrape.gauge("ferry_channel_depth", l, m.depth as f64);
            scrape.gauge("ferry_channel_in_flight", l, m.in_flight as f64);
            scrape.gauge("ferry_channel_deferred", l, m.deferred as f64);
            scrape.gauge("ferry_channel_clients", l, m.clients as f64);
            scrape.gauge("ferry_channel_paused", l, flag(ch.is_paused()));
            histograms.add(DELIVERY_LATENCY, l, m.delivery_latency);
        }
    }
    let process = ProcessStats::read();
    if let Some(rss) = process.rss_bytes {
        scrape.gauge("ferry_process_resident_memory_bytes", &[], rss as f64);
    }
    if let Some(fds) = process.open_fds {
        scrape.gauge("ferry_process_open_fds", &[], fds as f64);
    }
    let mut out = scrape.recorder.handle().render();
    histograms.render(&mut out);
    out
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// Resident memory and open file descriptors of this process, from `/proc` (`None` where it
/// cannot be read, e.g. not on Linux).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessStats {
    /// `VmRSS` of `/proc/self/status`, in bytes.
    pub rss_bytes: Option<u64>,
    /// Entries of `/proc/self/fd`.
    pub open_fds: Option<u64>,
}

impl ProcessStats {
    /// Reads the current figures.
    pub fn read() -> ProcessStats {
        let rss_bytes = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| parse_vm_rss(&status));
        // Counting includes the descriptor read_dir itself holds open, as Prometheus' Go and
        // Python clients do.
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as u64);
        ProcessStats {
            rss_bytes,
            open_fds,
        }
    }
}

/// `VmRSS:    1234 kB` → bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_parsed_from_proc_status() {
        let status = "Name:\tbrokerd\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads: 3\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn this_process_has_rss_and_fds() {
        let p = ProcessStats::read();
        assert!(p.rss_bytes.unwrap() > 0);
        assert!(p.open_fds.unwrap() >= 3);
    }
}
