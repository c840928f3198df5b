//! `GET /metrics`: the lookup daemon's figures in Prometheus text format (version 0.0.4).
//!
//! As in the broker, each scrape builds a fresh `metrics_exporter_prometheus::PrometheusRecorder`
//! (`PrometheusBuilder::build_recorder`: no global recorder, no listener of its own), registers
//! every series with its current value read from [`Shared`], and renders it. So several lookup
//! daemons in one process (tests, `ferry dev`) each report their own numbers, and nothing on the
//! request paths touches the metrics machinery beyond two connection counters.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use metrics::{Key, Label, Recorder, Unit};
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::VERSION;
use crate::shared::Shared;

/// Content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

const GAUGES: &[(&str, Option<Unit>, &str)] = &[
    (
        "ferry_lookupd_build_info",
        None,
        "Always 1; the label carries the lookup daemon's version.",
    ),
    (
        "ferry_lookupd_connections",
        Some(Unit::Count),
        "Broker (TCP) connections open now.",
    ),
    (
        "ferry_lookupd_producers",
        Some(Unit::Count),
        "Brokers connected and identified.",
    ),
    (
        "ferry_lookupd_active_producers",
        Some(Unit::Count),
        "Brokers that pinged within --inactive-producer-timeout (those listed by /nodes).",
    ),
    (
        "ferry_lookupd_producer",
        None,
        "1 for each active broker (as /nodes lists it); labels broadcast_address, \
         http_address (broadcast_address:http_port) and tcp_address.",
    ),
    (
        "ferry_lookupd_topics",
        Some(Unit::Count),
        "Topics registered (by brokers or /topic/create).",
    ),
    (
        "ferry_lookupd_channels",
        Some(Unit::Count),
        "Channels registered, over all topics.",
    ),
    (
        "ferry_process_resident_memory_bytes",
        Some(Unit::Bytes),
        "Resident set size of the process (VmRSS).",
    ),
    (
        "ferry_process_open_fds",
        Some(Unit::Count),
        "File descriptors the process has open.",
    ),
];

const COUNTERS: &[(&str, Option<Unit>, &str)] = &[(
    "ferry_lookupd_connections_total",
    Some(Unit::Count),
    "Broker (TCP) connections accepted since start.",
)];

/// The whole `/metrics` document.
pub fn render(shared: &Shared) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    for &(name, unit, help) in GAUGES {
        recorder.describe_gauge(name.into(), unit, help.into());
    }
    for &(name, unit, help) in COUNTERS {
        recorder.describe_counter(name.into(), unit, help.into());
    }
    let gauge = |name: &'static str, labels: Vec<Label>, value: f64| {
        recorder
            .register_gauge(&Key::from_parts(name, labels), &METADATA)
            .set(value);
    };
    let (producers, nodes, topics, channels) = shared.with_db(|db| {
        let topics = db.topics();
        let channels: usize = topics.iter().map(|t| db.channels(t).len()).sum();
        (
            db.peer_count(),
            db.nodes(Instant::now()),
            topics.len(),
            channels,
        )
    });
    let active = nodes.len();
    for node in &nodes {
        let p = &node.producer;
        gauge(
            "ferry_lookupd_producer",
            vec![
                Label::new("broadcast_address", p.broadcast_address.clone()),
                Label::new(
                    "http_address",
                    format!("{}:{}", p.broadcast_address, p.http_port),
                ),
                Label::new(
                    "tcp_address",
                    format!("{}:{}", p.broadcast_address, p.tcp_port),
                ),
            ],
            1.0,
        );
    }
    gauge(
        "ferry_lookupd_build_info",
        vec![Label::new("version", VERSION)],
        1.0,
    );
    gauge(
        "ferry_lookupd_connections",
        vec![],
        shared.open_connections.load(Relaxed) as f64,
    );
    gauge("ferry_lookupd_producers", vec![], producers as f64);
    gauge("ferry_lookupd_active_producers", vec![], active as f64);
    gauge("ferry_lookupd_topics", vec![], topics as f64);
    gauge("ferry_lookupd_channels", vec![], channels as f64);
    if let Some(rss) = read_rss_bytes() {
        gauge("ferry_process_resident_memory_bytes", vec![], rss as f64);
    }
    if let Some(fds) = count_open_fds() {
        gauge("ferry_process_open_fds", vec![], fds as f64);
    }
    recorder
        .register_counter(
            &Key::from_name("ferry_lookupd_connections_total"),
            &METADATA,
        )
        .absolute(shared.connections_total.load(Relaxed));
    recorder.handle().render()
}

/// `VmRSS` of `/proc/self/status` in bytes (`None` off Linux).
fn read_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Entries of `/proc/self/fd` (`None` off Linux).
fn count_open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}
