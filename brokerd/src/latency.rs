//! End-to-end processing latency (publish → FIN) over a sliding window, reported in `/stats` as
//! nsqd does (`e2e_processing_latency: {count, percentiles: [{quantile, value}]}`, values in ns).
//!
//! nsqd keeps two quantile streams and swaps them every half window, answering from both; so does
//! this module, with an HDR histogram per half (fixed memory, 2 significant digits: a reported
//! value is within 1% of the true one) instead of keeping samples. What a query covers is
//! therefore between half a window and a whole window of FINs.
//!
//! A channel owns one [`E2eWindow`] inside its queue lock (FIN holds that lock anyway); a topic's
//! figures merge its channels' windows at query time, like nsqd's topic aggregate.

use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::stats::{Latency, Percentile};

/// Highest latency told apart (longer ones count as this): one day, in ns.
const HIGHEST_NS: u64 = 86_400 * 1_000_000_000;
/// Lowest latency told apart: 1 µs, in ns.
const LOWEST_NS: u64 = 1_000;
/// Significant decimal digits kept.
const SIGFIG: u8 = 2;

/// What to track (from `--e2e-processing-latency-percentile` / `-window-time`).
#[derive(Debug, Clone)]
pub struct E2eConfig {
    /// Quantiles in (0, 1], in the order given.
    pub percentiles: Arc<[f64]>,
    /// Window the percentiles describe.
    pub window: Duration,
}

impl E2eConfig {
    /// `None` when no percentile is asked for (nsqd's default: tracking off).
    pub fn new(percentiles: &[f64], window: Duration) -> Option<E2eConfig> {
        (!percentiles.is_empty()).then(|| E2eConfig {
            percentiles: percentiles.into(),
            window,
        })
    }

    /// An empty histogram with the bounds every window uses (so they can be added together).
    pub fn empty_histogram() -> Histogram<u64> {
        Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, SIGFIG)
            .expect("constant histogram bounds are valid")
    }

    /// The `/stats` summary of `merged`.
    pub fn summarize(&self, merged: &Histogram<u64>) -> Latency {
        Latency {
            count: merged.len(),
            percentiles: Some(
                self.percentiles
                    .iter()
                    .map(|&q| Percentile {
                        quantile: q,
                        value: i64::try_from(merged.value_at_quantile(q)).unwrap_or(i64::MAX),
                    })
                    .collect(),
            ),
        }
    }
}

/// Two half-window histograms; the current one takes new samples.
#[derive(Debug)]
pub struct E2eWindow {
    halves: [Histogram<u64>; 2],
    current: usize,
    /// When the current half started (ns since the epoch).
    moved_at: i64,
    half_ns: i64,
}

impl E2eWindow {
    /// An empty window starting at `now_ns`.
    pub fn new(cfg: &E2eConfig, now_ns: i64) -> E2eWindow {
        E2eWindow {
            halves: [E2eConfig::empty_histogram(), E2eConfig::empty_histogram()],
            current: 0,
            moved_at: now_ns,
            half_ns: i64::try_from(cfg.window.as_nanos() / 2)
                .unwrap_or(i64::MAX)
                .max(1),
        }
    }

    /// Swaps halves for every half window that passed (dropping the older half's samples).
    fn advance(&mut self, now_ns: i64) {
        let elapsed = now_ns.saturating_sub(self.moved_at);
        if elapsed < self.half_ns {
            return;
        }
        if elapsed >= 2 * self.half_ns.min(i64::MAX / 2) {
            // Idle for a whole window or more: everything is stale.
            self.halves[0].reset();
            self.halves[1].reset();
            self.moved_at = now_ns;
            return;
        }
        self.current ^= 1;
        self.halves[self.current].reset();
        self.moved_at += self.half_ns;
    }

    /// Records a message published at `published_ns` and finished at `now_ns`.
    pub fn record(&mut self, published_ns: i64, now_ns: i64) {
        self.advance(now_ns);
        let latency = now_ns.saturating_sub(published_ns).max(0) as u64;
        self.halves[self.current].saturating_record(latency);
    }

    /// Adds this window's samples (as of `now_ns`) to `into`.
    pub fn merge_into(&mut self, now_ns: i64, into: &mut Histogram<u64>) {
        self.advance(now_ns);
        for h in &self.halves {
            // Same bounds everywhere, so adding cannot fail.
            let _ = into.add(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    fn cfg(window_ms: u64) -> E2eConfig {
        E2eConfig::new(&[0.5, 0.99], Duration::from_millis(window_ms)).unwrap()
    }

    fn query(w: &mut E2eWindow, c: &E2eConfig, now: i64) -> Latency {
        let mut h = E2eConfig::empty_histogram();
        w.merge_into(now, &mut h);
        c.summarize(&h)
    }

    #[test]
    fn no_percentiles_means_off() {
        assert!(E2eConfig::new(&[], Duration::from_secs(600)).is_none());
    }

    #[test]
    fn percentiles_of_recorded_latencies() {
        let c = cfg(60_000);
        let mut w = E2eWindow::new(&c, 0);
        for i in 1..=100 {
            w.record(0, i * MS);
        }
        let l = query(&mut w, &c, 100 * MS);
        assert_eq!(l.count, 100);
        let p = l.percentiles.unwrap();
        assert_eq!(p[0].quantile, 0.5);
        let within = |v: i64, want: i64| (v - want).abs() <= want / 50;
        assert!(within(p[0].value, 50 * MS), "{:?}", p[0]);
        assert!(within(p[1].value, 99 * MS), "{:?}", p[1]);
    }

    #[test]
    fn old_samples_leave_the_window() {
        let c = cfg(1_000);
        let mut w = E2eWindow::new(&c, 0);
        w.record(0, 10 * MS);
        // Half a window later the sample is in the older half: still counted.
        assert_eq!(query(&mut w, &c, 600 * MS).count, 1);
        w.record(600 * MS, 610 * MS);
        assert_eq!(query(&mut w, &c, 700 * MS).count, 2);
        // Another half later, the first half is dropped.
        assert_eq!(query(&mut w, &c, 1_100 * MS).count, 1);
        // Long idle: nothing left.
        assert_eq!(query(&mut w, &c, 60_000 * MS).count, 0);
    }
}
