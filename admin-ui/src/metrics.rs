//! What admin-ui reads from a Ferry broker's Prometheus `/metrics` that `/stats` lacks: the
//! disk space of each topic's log (`ferry_topic_disk_bytes{topic="..."}`). nsqd has no such
//! endpoint; its brokers (and a Ferry broker whose `/metrics` cannot be had) simply have no
//! disk figures, and the pages hide the cells.

use std::collections::BTreeMap;

/// The series read.
const DISK_BYTES: &str = "ferry_topic_disk_bytes";

/// Topic name → bytes of disk its log takes, from Prometheus' text format. Lines that are not
/// `ferry_topic_disk_bytes{...topic="name"...} value` are skipped.
pub fn topic_disk_bytes(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let labels = line.strip_prefix(DISK_BYTES)?.strip_prefix('{')?;
            let (labels, value) = labels.split_once('}')?;
            let topic = labels
                .split(',')
                .find_map(|l| l.trim().strip_prefix("topic=\"")?.strip_suffix('"'))?;
            let value: f64 = value.split_whitespace().next()?.parse().ok()?;
            // Bytes are whole and never negative; the exporter may print them as floats.
            (value.is_finite() && value >= 0.0).then(|| (topic.to_owned(), value as u64))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_bytes_per_topic() {
        let text = "# HELP ferry_topic_disk_bytes Disk space allocated to the topic's segment files.\n\
                    # TYPE ferry_topic_disk_bytes gauge\n\
                    ferry_topic_disk_bytes{topic=\"orders\"} 8388608\n\
                    ferry_topic_disk_bytes{instance=\"b1\",topic=\"t#ephemeral\"} 0\n\
                    ferry_topic_disk_bytes{topic=\"big\"} 1.5e9\n\
                    ferry_topic_disk_bytes_total{topic=\"other\"} 1\n\
                    ferry_topic_segments{topic=\"orders\"} 1\n\
                    ferry_topic_disk_bytes{topic=\"bad\"} NaN\n";
        let m = topic_disk_bytes(text);
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!(m["orders"], 8_388_608);
        assert_eq!(m["t#ephemeral"], 0);
        assert_eq!(m["big"], 1_500_000_000);
    }
}
