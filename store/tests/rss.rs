// Its own test binary, not in tests/it/: it measures the process's RSS, no other test's memory.
//! Resident memory stays bounded independent of the backlog: pages behind the writer and
//! behind each reader are released, maps of segments nobody reads are dropped.

#[path = "it/common/mod.rs"]
#[allow(dead_code)] // this binary uses part of it
mod common;

use common::{body, rec};
use ferry_store::{ChannelState, LogOptions, TopicLog};

/// Resident set size in KiB (VmRSS).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn rss_does_not_grow_with_the_backlog() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        max_bytes_per_file: 64 << 20,
        ..LogOptions::default()
    };
    let (log, _) = TopicLog::open(tmp.path(), opts).unwrap();
    const N: u64 = 400_000; // ~93 MB of records: more than a whole segment
    let b = body(1, 200);
    let base = rss_kib();
    let mut peak = base;
    for i in 0..N {
        log.append(rec(&b)).unwrap();
        if i.is_multiple_of(10_000) {
            peak = peak.max(rss_kib());
        }
    }
    let after_write = rss_kib();
    let mut ch = ChannelState::new(log.first_seq());
    let mut n = 0u64;
    while let Some(d) = ch.next(&log, 0, 1, 1).unwrap() {
        assert_eq!(d.record.body.len(), 200);
        ch.finish(d.record.seq, 1).unwrap();
        n += 1;
        if n.is_multiple_of(10_000) {
            peak = peak.max(rss_kib());
        }
    }
    assert_eq!(n, N);
    let growth_mib = peak.saturating_sub(base) / 1024;
    eprintln!(
        "rss: base {} MiB, after writing {} MiB, peak {} MiB",
        base / 1024,
        after_write / 1024,
        peak / 1024
    );
    assert!(
        growth_mib < 40,
        "RSS grew by {growth_mib} MiB for a 93 MB backlog"
    );
}
