//! Fixed-bucket latency histograms for `/metrics`, cheap enough for the message path.
//!
//! Why not the `metrics` facade's histograms: `metrics-exporter-prometheus` keeps every recorded
//! sample in a lock-free list until the next upkeep or scrape drains it, which allocates as it
//! grows and costs memory in proportion to the message rate. A broker records a delivery latency
//! per message (over a million a second), so Ferry buckets at record time instead: one bucket
//! search over [`BOUNDS_NS`] and two additions.
//!
//! - [`Histogram`]: plain counters, for state that already sits behind a lock (a channel's
//!   delivery latency is recorded under the channel lock that `take` holds anyway).
//! - [`AtomicHistogram`]: relaxed atomics, for paths without a lock (a topic's publish latency,
//!   its fsync durations).
//!
//! Both render the Prometheus `histogram` type (cumulative `_bucket{le=...}`, `_sum` in seconds,
//! `_count`) through [`Histogram::render`].
//!
//! Why not `hdrhistogram` here (it is used for `/stats`' end-to-end percentiles in
//! [`crate::latency`] and by `ferry bench latency`): its `record` takes `&mut self`, so
//! [`AtomicHistogram`]'s callers (every publishing connection of a topic at once) would need a
//! mutex around it or a per-thread recorder (which changes the callers). Measured on the 2-core
//! dev VM (5 M records per thread, release build): atomic buckets 15 ns a record on one thread
//! and 22-47 ns on two, `Mutex<hdrhistogram>` 18-28 ns on one and 44-90 ns on two; and a lock
//! holder that is preempted stalls every publisher, which atomics never do. For the plain
//! [`Histogram`] (already under a lock) hdrhistogram costs 5.5 ns a record against 3.4 ns for
//! the bucket search, and 32 KB (2 digits, 1 µs to 1 day) to 221 KB (3 digits, 1 ns to 60 s)
//! per histogram against 184 bytes, per channel; and Prometheus wants these fixed `le` bounds
//! anyway, which hdrhistogram's buckets only approximate. So the buckets stay.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets in nanoseconds: 10 µs to 60 s, roughly 1-2.5-5 per decade (the
/// `+Inf` bucket follows). Wide enough for an append (microseconds), an fsync (milliseconds) and a
/// delivery that waited in a backlog (seconds).
pub const BOUNDS_NS: [u64; 21] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
];

/// Number of buckets including `+Inf`.
const BUCKETS: usize = BOUNDS_NS.len() + 1;

fn bucket_of(ns: u64) -> usize {
    BOUNDS_NS.partition_point(|&b| b < ns)
}

/// A histogram of durations in plain counters (the caller provides the exclusion).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Per-bucket (not cumulative) counts; the last is `+Inf`.
    buckets: [u64; BUCKETS],
    /// Sum of the recorded values in ns.
    sum_ns: u64,
}

impl Histogram {
    /// Records one duration in nanoseconds.
    #[inline]
    pub fn record_ns(&mut self, ns: u64) {
        self.buckets[bucket_of(ns)] += 1;
        self.sum_ns = self.sum_ns.wrapping_add(ns);
    }

    /// Records one duration.
    pub fn record(&mut self, d: Duration) {
        self.record_ns(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Sum of the recorded values.
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_ns)
    }

    /// Appends this histogram as the series `name{labels}` (with `_bucket`, `_sum`, `_count`)
    /// in Prometheus text format. `labels` are `(name, value)` pairs; the `# TYPE` line is the
    /// caller's (one per metric name).
    pub fn render(&self, out: &mut String, name: &str, labels: &[(&str, &str)]) {
        let mut cumulative = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            cumulative += n;
            let le = match BOUNDS_NS.get(i) {
                Some(&b) => format_seconds(b),
                None => "+Inf".to_owned(),
            };
            let _ = write!(out, "{name}_bucket{{");
            write_labels(out, labels);
            if !labels.is_empty() {
                out.push(',');
            }
            let _ = writeln!(out, "le=\"{le}\"}} {cumulative}");
        }
        let _ = write!(out, "{name}_sum");
        write_label_set(out, labels);
        let _ = writeln!(out, " {}", self.sum_ns as f64 / 1e9);
        let _ = write!(out, "{name}_count");
        write_label_set(out, labels);
        let _ = writeln!(out, " {cumulative}");
    }
}

/// A histogram of durations in relaxed atomics: `record` from any thread without a lock.
#[derive(Debug, Default)]
pub struct AtomicHistogram {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl AtomicHistogram {
    /// Records one duration.
    #[inline]
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// A copy of the counts (each read is atomic; the copy as a whole is not a snapshot, which a
    /// scrape does not need).
    pub fn snapshot(&self) -> Histogram {
        let mut h = Histogram::default();
        for (dst, src) in h.buckets.iter_mut().zip(&self.buckets) {
            *dst = src.load(Ordering::Relaxed);
        }
        h.sum_ns = self.sum_ns.load(Ordering::Relaxed);
        h
    }
}

/// `ns` as seconds without float noise (`25000` → `0.000025`).
fn format_seconds(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    if frac == 0 {
        return secs.to_string();
    }
    let digits = format!("{frac:09}");
    format!("{secs}.{}", digits.trim_end_matches('0'))
}

/// `a="x",b="y"` with Prometheus escaping of the values.
pub fn write_labels(out: &mut String, labels: &[(&str, &str)]) {
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// `{a="x"}`, or nothing for no labels.
fn write_label_set(out: &mut String, labels: &[(&str, &str)]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    write_labels(out, labels);
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_not_below_them() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(10_000), 0, "le is inclusive");
        assert_eq!(bucket_of(10_001), 1);
        assert_eq!(bucket_of(60_000_000_000), BOUNDS_NS.len() - 1);
        assert_eq!(bucket_of(u64::MAX), BOUNDS_NS.len(), "+Inf");
    }

    #[test]
    fn renders_cumulative_buckets_sum_and_count() {
        let mut h = Histogram::default();
        h.record(Duration::from_micros(5));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(100));
        let mut s = String::new();
        h.render(&mut s, "x_seconds", &[("topic", "t")]);
        assert!(
            s.contains("x_seconds_bucket{topic=\"t\",le=\"0.00001\"} 1\n"),
            "{s}"
        );
        assert!(
            s.contains("x_seconds_bucket{topic=\"t\",le=\"0.005\"} 2\n"),
            "{s}"
        );
        assert!(
            s.contains("x_seconds_bucket{topic=\"t\",le=\"60\"} 2\n"),
            "{s}"
        );
        assert!(
            s.contains("x_seconds_bucket{topic=\"t\",le=\"+Inf\"} 3\n"),
            "{s}"
        );
        assert!(s.contains("x_seconds_sum{topic=\"t\"} 100.003005\n"), "{s}");
        assert!(s.contains("x_seconds_count{topic=\"t\"} 3\n"), "{s}");
    }

    #[test]
    fn atomic_snapshot_matches_plain() {
        let a = AtomicHistogram::default();
        let mut p = Histogram::default();
        for us in [1, 30, 700, 2_000_000] {
            a.record(Duration::from_micros(us));
            p.record(Duration::from_micros(us));
        }
        assert_eq!(a.snapshot(), p);
        assert_eq!(p.count(), 4);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        write_labels(&mut s, &[("a", "x\"y\\z\n")]);
        assert_eq!(s, r#"a="x\"y\\z\n""#);
    }
}
