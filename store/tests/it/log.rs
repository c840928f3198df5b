//! Topic log behaviour: append/read, batches, rotation, retention, locking, in-memory logs,
//! sync, destroy, concurrent readers, metadata.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{body, opts, read_all, rec, segment_files};
use ferry_store::{
    ChannelMeta, ChannelSnapshot, ChannelState, EntryKind, LogOptions, META_FILE, NewRecord,
    SnapshotEntry, StoreError, TopicLog, TopicMeta, load_meta, save_meta,
};

#[test]
fn append_read_and_rotate() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, report) = TopicLog::open(tmp.path(), opts(4096)).unwrap();
    assert_eq!(report.records, 0);
    assert_eq!(log.first_seq(), 1000);
    assert_eq!(log.next_seq(), 1000);
    for i in 0..500u64 {
        let b = body(i, (i % 300) as usize);
        assert_eq!(log.append(rec(&b)).unwrap(), 1000 + i);
    }
    assert_eq!(log.next_seq(), 1500);
    assert!(log.stats().segments > 10, "{:?}", log.stats());
    for i in 0..500u64 {
        let r = log.read(1000 + i).unwrap().unwrap();
        assert_eq!(r.seq, 1000 + i);
        assert_eq!(r.timestamp_ns, 1);
        assert_eq!(&r.body[..], &body(i, (i % 300) as usize)[..]);
    }
    assert!(log.read(999).unwrap().is_none());
    assert!(log.read(1500).unwrap().is_none());
    let all = read_all(&log);
    assert_eq!(all.len(), 500);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, (s, _))| *s == 1000 + i as u64)
    );

    // A reader started in the middle, then seeking.
    let mut r = log.reader(1234);
    assert_eq!(r.next(&log).unwrap().unwrap().seq, 1234);
    assert_eq!(r.position(), 1235);
    r.seek(1100);
    assert_eq!(r.next(&log).unwrap().unwrap().seq, 1100);
    r.seek(2000);
    assert!(r.next(&log).unwrap().is_none());

    // Reopen: everything is there, appends continue.
    drop(log);
    let (log, report) = TopicLog::open(tmp.path(), opts(4096)).unwrap();
    assert_eq!(report.records, 500);
    assert_eq!(report.torn_tail_bytes, 0);
    assert_eq!(report.corrupt_records_skipped, 0);
    assert_eq!(log.first_seq(), 1000);
    assert_eq!(log.next_seq(), 1500);
    assert_eq!(log.append(rec(b"after")).unwrap(), 1500);
    assert_eq!(&log.read(1500).unwrap().unwrap().body[..], b"after");
    assert_eq!(read_all(&log).len(), 501);
}

#[test]
fn batches_span_segments_and_oversized_records_get_their_own() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = TopicLog::open(tmp.path(), opts(1024)).unwrap();
    // First record larger than a whole (still empty) segment.
    let big = body(7, 5000);
    assert_eq!(log.append(rec(&big)).unwrap(), 1000);
    let bodies: Vec<Vec<u8>> = (0..100).map(|i| body(i, 100)).collect();
    let recs: Vec<NewRecord<'_>> = bodies.iter().map(|b| rec(b)).collect();
    assert_eq!(log.append_batch(&recs).unwrap(), 1001..1101);
    assert_eq!(log.append(rec(&big)).unwrap(), 1101);
    assert_eq!(log.append_batch(&[]).unwrap(), 1102..1102);
    assert_eq!(&log.read(1000).unwrap().unwrap().body[..], &big[..]);
    assert_eq!(&log.read(1101).unwrap().unwrap().body[..], &big[..]);
    assert_eq!(&log.read(1050).unwrap().unwrap().body[..], &bodies[49][..]);
    assert_eq!(read_all(&log).len(), 102);
    drop(log);
    let (log, report) = TopicLog::open(tmp.path(), opts(1024)).unwrap();
    assert_eq!(report.records, 102);
    assert_eq!(report.bad_segments_skipped, 0);
    assert_eq!(read_all(&log).len(), 102);
    assert!(matches!(
        log.append(rec(&vec![0u8; ferry_store::MAX_BODY + 1])),
        Err(StoreError::RecordTooLarge { .. })
    ));
}

#[test]
fn retain_from_deletes_whole_old_segments_only() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = TopicLog::open(tmp.path(), opts(2048)).unwrap();
    for i in 0..300u64 {
        log.append(rec(&body(i, 100))).unwrap();
    }
    let before = segment_files(tmp.path()).len();
    assert_eq!(log.retain_from(1000).unwrap(), 0);
    let deleted = log.retain_from(1150).unwrap();
    assert!(deleted > 0);
    assert_eq!(segment_files(tmp.path()).len(), before - deleted);
    let first = log.first_seq();
    assert!(first > 1000 && first <= 1150, "first {first}");
    assert!(log.read(first - 1).unwrap().is_none());
    for s in first..1300 {
        assert_eq!(log.read(s).unwrap().unwrap().seq, s);
    }
    // A reader behind the retained part starts at the first retained record.
    assert_eq!(log.reader(0).next(&log).unwrap().unwrap().seq, first);
    // Never the active segment.
    log.retain_from(u64::MAX).unwrap();
    assert_eq!(segment_files(tmp.path()).len(), 1);
    assert_eq!(log.stats().segments, 1);
    let s = log.append(rec(b"x")).unwrap();
    assert_eq!(s, 1300);
    drop(log);
    let (log, _) = TopicLog::open(tmp.path(), opts(2048)).unwrap();
    assert_eq!(log.next_seq(), 1301);
    assert!(log.first_seq() <= 1300);
}

#[test]
fn skip_to_leaves_a_gap_that_readers_and_recovery_pass() {
    let tmp = tempfile::tempdir().unwrap();
    // An empty log starts where it is moved to.
    let (log, _) = TopicLog::open(tmp.path(), opts(4096)).unwrap();
    log.skip_to(5000).unwrap();
    assert_eq!((log.first_seq(), log.next_seq()), (5000, 5000));
    assert_eq!(
        segment_files(tmp.path()).len(),
        1,
        "the empty segment is replaced"
    );
    for i in 0..10u64 {
        assert_eq!(log.append(rec(&body(i, 50))).unwrap(), 5000 + i);
    }
    // A log with records keeps them and continues after the gap.
    log.skip_to(9000).unwrap();
    log.skip_to(8000).unwrap(); // behind: nothing changes
    assert_eq!(log.next_seq(), 9000);
    assert_eq!(log.append(rec(b"after the gap")).unwrap(), 9000);
    let seqs: Vec<u64> = read_all(&log).into_iter().map(|(s, _)| s).collect();
    let want: Vec<u64> = (5000..5010).chain([9000]).collect();
    assert_eq!(seqs, want);
    assert!(log.read(5010).unwrap().is_none());
    assert_eq!(log.reader(6000).next(&log).unwrap().unwrap().seq, 9000);
    drop(log);

    let (log, report) = TopicLog::open(tmp.path(), opts(4096)).unwrap();
    assert_eq!(report.records, 11);
    assert_eq!(report.corrupt_records_skipped, 0);
    assert_eq!((log.first_seq(), log.next_seq()), (5000, 9001));
    assert_eq!(&log.read(9000).unwrap().unwrap().body[..], b"after the gap");
    // A gap moved to and never written to is still there after a restart.
    log.skip_to(12000).unwrap();
    drop(log);
    let (log, _) = TopicLog::open(tmp.path(), opts(4096)).unwrap();
    assert_eq!(log.next_seq(), 12000);
    assert_eq!(log.append(rec(b"x")).unwrap(), 12000);

    // In memory the kept records are dropped.
    let mem = TopicLog::in_memory(100);
    mem.append(rec(b"a")).unwrap();
    mem.skip_to(50).unwrap();
    assert_eq!((mem.first_seq(), mem.next_seq()), (50, 50));
    assert_eq!(mem.append(rec(b"b")).unwrap(), 50);
}

#[test]
fn directory_lock_conflict() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = TopicLog::open(tmp.path(), opts(4096)).unwrap();
    match TopicLog::open(tmp.path(), opts(4096)) {
        Err(StoreError::Locked(p)) => assert_eq!(p, tmp.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(log);
    TopicLog::open(tmp.path(), opts(4096)).unwrap();
}

#[test]
fn in_memory_log() {
    let log = TopicLog::in_memory(3);
    assert!(log.stats().is_memory);
    for i in 0..5u64 {
        assert_eq!(log.append(rec(&body(i, 10))).unwrap(), i);
    }
    assert_eq!(log.first_seq(), 2);
    assert_eq!(log.next_seq(), 5);
    assert_eq!(log.stats().dropped, 2);
    assert!(log.read(1).unwrap().is_none());
    assert_eq!(&log.read(3).unwrap().unwrap().body[..], &body(3, 10)[..]);
    assert_eq!(
        read_all(&log).iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    let b: Vec<Vec<u8>> = (0..2).map(|i| body(i, 4)).collect();
    assert_eq!(log.append_batch(&[rec(&b[0]), rec(&b[1])]).unwrap(), 5..7);
    assert_eq!(log.retain_from(5).unwrap(), 1); // records 4, 5, 6 were kept
    assert_eq!(log.first_seq(), 5);
    assert!(!log.sync_due());
    log.sync().unwrap();
    let mut ch = ChannelState::new(log.first_seq());
    let d = ch.next(&log, 0, 1, 10).unwrap().unwrap();
    assert_eq!((d.record.seq, d.attempts), (5, 1));
    log.destroy_in_place().unwrap();
    assert!(matches!(log.append(rec(b"x")), Err(StoreError::Closed)));
}

#[test]
fn sync_due_and_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let o = LogOptions {
        sync_every: 3,
        sync_timeout: Duration::from_secs(3600),
        ..opts(4096)
    };
    let (log, _) = TopicLog::open(tmp.path(), o).unwrap();
    assert!(!log.sync_due());
    log.append(rec(b"a")).unwrap();
    log.append(rec(b"b")).unwrap();
    assert!(!log.sync_due());
    log.append(rec(b"c")).unwrap();
    assert!(log.sync_due());
    log.sync().unwrap();
    assert!(!log.sync_due());
    assert_eq!(log.stats().syncs, 1);
    for i in 0..100 {
        log.append(rec(&body(i, 100))).unwrap(); // rotates: sealed segments get fsynced
    }
    log.sync().unwrap();
    assert_eq!(log.stats().syncs, 2);
    drop(log);

    let o = LogOptions {
        sync_every: 1_000_000,
        sync_timeout: Duration::ZERO,
        ..opts(4096)
    };
    let (log, _) = TopicLog::open(tmp.path(), o).unwrap();
    assert!(!log.sync_due(), "nothing unsynced");
    log.append(rec(b"d")).unwrap();
    assert!(log.sync_due(), "timeout elapsed");
}

#[test]
fn destroy_removes_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("topic");
    let (log, _) = TopicLog::open(&dir, opts(1024)).unwrap();
    for i in 0..50 {
        log.append(rec(&body(i, 100))).unwrap();
    }
    save_meta(&dir, &TopicMeta::default()).unwrap();
    let held = log.read(1001).unwrap().unwrap();
    log.destroy().unwrap();
    assert!(!dir.exists());
    // A body handed out before stays valid.
    assert_eq!(&held.body[..], &body(1, 100)[..]);
    // The directory can be re-created with a new seq range.
    let o = LogOptions {
        initial_seq: 5000,
        ..opts(1024)
    };
    let (log, _) = TopicLog::open(&dir, o).unwrap();
    assert_eq!(log.append(rec(b"new")).unwrap(), 5000);
}

#[test]
fn concurrent_reader_sees_whole_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = TopicLog::open(tmp.path(), opts(4096)).unwrap();
    let log = Arc::new(log);
    const BATCHES: u64 = 300;
    const PER: u64 = 7;
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let log = log.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            for b in 0..BATCHES {
                let bodies: Vec<Vec<u8>> = (0..PER)
                    .map(|i| {
                        let mut v = body(b * PER + i, 90);
                        v[0] = i as u8; // position in batch
                        v
                    })
                    .collect();
                let recs: Vec<NewRecord<'_>> = bodies.iter().map(|b| rec(b)).collect();
                log.append_batch(&recs).unwrap();
            }
            done.store(true, Ordering::Release);
        })
    };
    let mut r = log.reader(0);
    let mut seen = 0u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen < BATCHES * PER {
        assert!(Instant::now() < deadline, "reader stalled at {seen}");
        match r.next(&log).unwrap() {
            Some(rec) => {
                assert_eq!(rec.seq, 1000 + seen);
                assert_eq!(rec.body[0] as u64, seen % PER);
                assert_eq!(&rec.body[1..], &body(seen, 90)[1..]);
                seen += 1;
            }
            None => {
                // Caught up: we must be at a batch boundary.
                assert_eq!(seen % PER, 0, "saw a partial batch");
                std::thread::yield_now();
            }
        }
    }
    writer.join().unwrap();
    assert!(done.load(Ordering::Acquire));
    assert!(r.next(&log).unwrap().is_none());
}

#[test]
fn sync_and_retain_run_while_appending() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = TopicLog::open(tmp.path(), opts(8192)).unwrap();
    let log = Arc::new(log);
    let done = Arc::new(AtomicBool::new(false));
    let syncer = {
        let (log, done) = (log.clone(), done.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !done.load(Ordering::Acquire) {
                log.sync().unwrap();
                n += 1;
            }
            n
        })
    };
    let mut r = log.reader(0);
    let mut next = 1000u64;
    for i in 0..5000u64 {
        log.append(rec(&body(i, 150))).unwrap();
        if i % 7 == 0 {
            while let Some(rec) = r.next(&log).unwrap() {
                assert_eq!(rec.seq, next);
                assert_eq!(&rec.body[..], &body(next - 1000, 150)[..]);
                next += 1;
            }
            log.retain_from(r.position()).unwrap();
        }
    }
    done.store(true, Ordering::Release);
    assert!(syncer.join().unwrap() > 0);
    while let Some(rec) = r.next(&log).unwrap() {
        assert_eq!(rec.seq, next);
        next += 1;
    }
    assert_eq!(next, 6000);
    log.sync().unwrap();
    assert!(!log.sync_due());
    assert!(log.stats().segments <= 2, "{:?}", log.stats());
}

#[test]
fn meta_save_load_and_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(load_meta(tmp.path()).unwrap(), None);
    let meta = TopicMeta {
        paused: true,
        channels: vec![
            ChannelMeta {
                name: "c1".into(),
                paused: false,
                state: ChannelSnapshot {
                    cursor: 42,
                    entries: vec![
                        SnapshotEntry {
                            seq: 3,
                            attempts: 2,
                            deliver_at_ns: 0,
                            kind: EntryKind::InFlight,
                        },
                        SnapshotEntry {
                            seq: 7,
                            attempts: 1,
                            deliver_at_ns: -9,
                            kind: EntryKind::Deferred,
                        },
                        SnapshotEntry {
                            seq: 9,
                            attempts: 65535,
                            deliver_at_ns: i64::MAX,
                            kind: EntryKind::Requeued,
                        },
                    ],
                },
                ..ChannelMeta::default()
            },
            ChannelMeta {
                name: "ünïcode#ephemeral".into(),
                paused: true,
                state: ChannelSnapshot::default(),
                ..ChannelMeta::default()
            },
        ],
        journal_gen: 3,
        backlog_start: 11,
        ..TopicMeta::default()
    };
    save_meta(tmp.path(), &meta).unwrap();
    assert_eq!(load_meta(tmp.path()).unwrap(), Some(meta.clone()));
    let path = tmp.path().join(META_FILE);
    let good = std::fs::read(&path).unwrap();
    // Every single-byte flip and every truncation is an error, never a panic.
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        let r = load_meta(tmp.path());
        assert!(
            matches!(r, Err(StoreError::CorruptMeta { .. })),
            "flip at {i}: {r:?}"
        );
    }
    for n in 0..good.len() {
        std::fs::write(&path, &good[..n]).unwrap();
        assert!(matches!(
            load_meta(tmp.path()),
            Err(StoreError::CorruptMeta { .. })
        ));
    }
    save_meta(tmp.path(), &meta).unwrap();
    assert_eq!(load_meta(tmp.path()).unwrap(), Some(meta));
}

#[test]
fn restore_repairs_snapshots_that_do_not_match_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = TopicLog::open(tmp.path(), opts(1024)).unwrap();
    for i in 0..100 {
        log.append(rec(&body(i, 100))).unwrap();
    }
    log.retain_from(1040).unwrap();
    let first = log.first_seq();
    assert!(first > 1000);
    let entry = |seq, kind| SnapshotEntry {
        seq,
        attempts: 3,
        deliver_at_ns: 500,
        kind,
    };
    // Metadata newer than the data: cursor past the end, entries beyond it.
    let snap = ChannelSnapshot {
        cursor: 5000,
        entries: vec![
            entry(1000, EntryKind::InFlight), // deleted
            entry(1090, EntryKind::InFlight), // ready now
            entry(1095, EntryKind::Deferred), // keeps deliver_at
            entry(1095, EntryKind::Requeued), // duplicate
            entry(4000, EntryKind::Requeued), // never written
        ],
    };
    let mut ch = ChannelState::restore(snap, &log);
    assert_eq!(ch.cursor(), 1100);
    assert_eq!(ch.deferred_count(), 1);
    assert_eq!(ch.next_wakeup(), Some(500));
    let d = ch.next(&log, 0, 9, 100).unwrap().unwrap();
    assert_eq!((d.record.seq, d.attempts), (1090, 4));
    assert!(ch.next(&log, 0, 9, 100).unwrap().is_none());
    let d = ch.next(&log, 500, 9, 100).unwrap().unwrap();
    assert_eq!((d.record.seq, d.attempts), (1095, 4));
    // Metadata older than the data: cursor before the first retained record.
    let ch = ChannelState::restore(
        ChannelSnapshot {
            cursor: 3,
            entries: vec![],
        },
        &log,
    );
    assert_eq!(ch.cursor(), first);
    assert_eq!(ch.low_water(), first);
}

#[test]
fn channel_basics() {
    let log = TopicLog::in_memory(100);
    for i in 0..3 {
        log.append(rec(&body(i, 5))).unwrap();
    }
    let dpub = body(9, 5);
    log.append(NewRecord {
        timestamp_ns: 0,
        deliver_at_ns: 1_000,
        body: &dpub,
    })
    .unwrap();
    let mut ch = ChannelState::new(0);
    assert!(ch.has_ready(&log, 0));
    assert_eq!(ch.depth(&log), 4);
    let a = ch.next(&log, 0, 1, 50).unwrap().unwrap();
    let b = ch.next(&log, 0, 2, 60).unwrap().unwrap();
    assert_eq!((a.record.seq, b.record.seq), (0, 1));
    assert_eq!(ch.finish(0, 2), Err(ferry_store::ChannelError::NotOwner));
    assert_eq!(ch.finish(5, 1), Err(ferry_store::ChannelError::NotInFlight));
    assert_eq!(ch.in_flight_deadline_info(0), Some((1, 50)));
    assert_eq!(ch.next_wakeup(), Some(50));
    ch.touch(0, 1, 70).unwrap();
    assert_eq!(ch.next_wakeup(), Some(60));
    ch.finish(1, 2).unwrap();
    assert_eq!(ch.next_wakeup(), Some(70));
    let c = ch.next(&log, 0, 1, 80).unwrap().unwrap();
    assert_eq!(c.record.seq, 2);
    // The DPUB record is deferred, not delivered.
    assert!(ch.next(&log, 0, 1, 80).unwrap().is_none());
    assert_eq!(ch.deferred_count(), 1);
    assert!(!ch.has_ready(&log, 0));
    assert!(ch.has_ready(&log, 1_000));
    assert_eq!(ch.low_water(), 0);
    assert_eq!(ch.take_timed_out(75), vec![(0, 1)]);
    assert_eq!(ch.requeue_owner(1), 1);
    assert_eq!(ch.in_flight_count(), 0);
    let again = ch.next(&log, 0, 3, 90).unwrap().unwrap();
    assert_eq!((again.record.seq, again.attempts), (0, 2));
    ch.requeue(0, 3, 2_000, 0).unwrap();
    assert_eq!(ch.deferred_count(), 2);
    ch.empty(&log);
    assert_eq!(ch.depth(&log), 0);
    assert_eq!(ch.deferred_count(), 0);
    assert_eq!(ch.low_water(), 4);
    assert!(ch.next(&log, i64::MAX, 1, 0).unwrap().is_none());
}

#[test]
fn deferred_records_at_the_cursor_count_as_deferred_at_once() {
    let log = TopicLog::in_memory(100);
    let later = |i: i64| NewRecord {
        timestamp_ns: 0,
        deliver_at_ns: 1_000 + i,
        body: b"later",
    };
    log.append(later(0)).unwrap();
    log.append(later(1)).unwrap();
    log.append(rec(b"now")).unwrap();
    log.append(later(2)).unwrap();
    let mut ch = ChannelState::new(0);
    assert_eq!((ch.depth(&log), ch.deferred_count()), (4, 0));
    // The two DPUBs before the first due record move; the one behind it waits its turn.
    assert_eq!(ch.absorb_deferred(&log, 0).unwrap(), 2);
    assert_eq!((ch.depth(&log), ch.deferred_count()), (2, 2));
    assert_eq!(ch.absorb_deferred(&log, 0).unwrap(), 0);
    let now = ch.next(&log, 0, 1, 50).unwrap().unwrap();
    assert_eq!(&now.record.body[..], b"now");
    assert_eq!(ch.absorb_deferred(&log, 0).unwrap(), 1);
    assert_eq!((ch.depth(&log), ch.deferred_count()), (0, 3));
    assert_eq!(ch.next_wakeup(), Some(50));
    ch.finish(2, 1).unwrap();
    assert_eq!(ch.next_wakeup(), Some(1_000));
    // Once due, they come out in due order.
    let seqs: Vec<u64> = (0..3)
        .map(|_| ch.next(&log, 5_000, 1, 9_000).unwrap().unwrap().record.seq)
        .collect();
    assert_eq!(seqs, [0, 1, 3]);
}
