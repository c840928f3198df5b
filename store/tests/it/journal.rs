//! The channel-state journal: ops recorded by `ChannelState`, written by `Journal`, read back
//! by `read_journal` and replayed over a snapshot by `replay`.

use std::io::Write;

use crate::common::{body, rec};
use ferry_store::{
    ChannelMeta, ChannelSnapshot, ChannelState, EntryKind, Journal, JournalOp, NewRecord, TopicLog,
    TopicMeta, journal_path, load_meta, read_journal, remove_other_journals, replay, save_meta,
};

const OWNER: u64 = 1;
const DEADLINE: i64 = 1_000_000;

fn log_with(n: u64) -> TopicLog {
    let log = TopicLog::in_memory(1_000);
    for i in 0..n {
        log.append(rec(&body(i, 8))).unwrap();
    }
    log
}

fn journaled(start: u64) -> ChannelState {
    let mut ch = ChannelState::new(start);
    ch.enable_journal();
    ch
}

/// Writes `ch`'s pending ops to journal generation 0 of `dir` and reads them back.
fn write_and_read(dir: &std::path::Path, ch: &mut ChannelState) -> Vec<JournalOp> {
    let mut j = Journal::open(dir, 0).unwrap();
    j.append(&[("c".to_owned(), ch.take_journal_ops())])
        .unwrap();
    let mut contents = read_journal(dir, 0).unwrap();
    assert_eq!(contents.ignored_bytes, 0);
    contents.ops.remove("c").unwrap_or_default()
}

/// Delivers everything due at `now` and returns `(seq, attempts)`.
fn drain(ch: &mut ChannelState, log: &TopicLog, now: i64) -> Vec<(u64, u16)> {
    let mut out = Vec::new();
    while let Some(d) = ch.next(log, now, 9, DEADLINE).unwrap() {
        out.push((d.record.seq, d.attempts));
    }
    out
}

#[test]
fn ops_are_recorded_in_order_and_only_when_enabled() {
    let log = log_with(4);
    let mut plain = ChannelState::new(0);
    plain.next(&log, 0, OWNER, DEADLINE).unwrap().unwrap();
    plain.finish(0, OWNER).unwrap();
    assert!(plain.take_journal_ops().is_empty());

    let mut ch = journaled(0);
    for _ in 0..4 {
        ch.next(&log, 0, OWNER, 10).unwrap().unwrap();
    }
    ch.finish(0, OWNER).unwrap();
    ch.requeue(1, OWNER, 0, 5).unwrap();
    ch.requeue(2, OWNER, 500, 5).unwrap();
    assert_eq!(ch.take_timed_out(10), vec![(3, OWNER)]);
    ch.empty(&log);
    assert_eq!(
        ch.take_journal_ops(),
        vec![
            JournalOp::Finish { seq: 0 },
            JournalOp::Requeue {
                seq: 1,
                attempts: 1,
                deliver_at_ns: 0
            },
            JournalOp::Requeue {
                seq: 2,
                attempts: 1,
                deliver_at_ns: 500
            },
            JournalOp::Requeue {
                seq: 3,
                attempts: 1,
                deliver_at_ns: 0
            },
            JournalOp::Empty { cursor: 4 },
        ]
    );
    assert!(ch.take_journal_ops().is_empty());
}

#[test]
fn replay_applies_ops_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let log = log_with(10);
    let mut ch = journaled(0);
    let snapshot = ch.snapshot();
    for _ in 0..5 {
        ch.next(&log, 0, OWNER, 10).unwrap().unwrap();
    }
    ch.finish(0, OWNER).unwrap();
    ch.requeue(1, OWNER, 0, 0).unwrap();
    ch.finish(2, OWNER).unwrap();
    assert_eq!(ch.take_timed_out(10), vec![(3, OWNER), (4, OWNER)]);
    // 1 is delivered again and FINed: its REQ comes before its FIN in the journal.
    let again = ch.next(&log, 20, OWNER, 100).unwrap().unwrap();
    assert_eq!(again.record.seq, 1);
    ch.finish(1, OWNER).unwrap();
    // 3 is delivered again, still in flight at the crash.
    assert_eq!(
        ch.next(&log, 20, OWNER, 100).unwrap().unwrap().record.seq,
        3
    );

    let ops = write_and_read(tmp.path(), &mut ch);
    let replayed = replay(snapshot, &ops, &log);
    assert_eq!(replayed.cursor, 5);
    let owed: Vec<(u64, u16)> = replayed
        .entries
        .iter()
        .map(|e| (e.seq, e.attempts))
        .collect();
    assert_eq!(owed, vec![(3, 1), (4, 1)]);
    let mut restored = ChannelState::restore(replayed, &log);
    let delivered = drain(&mut restored, &log, 0);
    assert_eq!(
        delivered,
        vec![(3, 2), (4, 2), (5, 1), (6, 1), (7, 1), (8, 1), (9, 1)]
    );
}

#[test]
fn torn_or_zeroed_tail_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let mut j = Journal::open(tmp.path(), 0).unwrap();
    j.append(&[("a".to_owned(), vec![JournalOp::Finish { seq: 1 }])])
        .unwrap();
    let one = j.len();
    j.append(&[
        ("a".to_owned(), vec![JournalOp::Finish { seq: 2 }]),
        ("b".to_owned(), vec![JournalOp::Empty { cursor: 9 }]),
    ])
    .unwrap();
    let whole = std::fs::read(journal_path(tmp.path(), 0)).unwrap();
    let path = journal_path(tmp.path(), 0);

    // Zero-filled tail: the power went after the file grew, before its data reached the disk.
    let mut zeroed = whole.clone();
    zeroed.extend_from_slice(&[0u8; 100]);
    std::fs::write(&path, &zeroed).unwrap();
    let c = read_journal(tmp.path(), 0).unwrap();
    assert_eq!(c.valid_bytes, whole.len() as u64);
    assert_eq!(c.ignored_bytes, 100);
    assert_eq!(c.ops["b"], vec![JournalOp::Empty { cursor: 9 }]);

    // Every cut inside the second append keeps the first append only (and maybe the first
    // frame of the second).
    for cut in one as usize..whole.len() {
        std::fs::write(&path, &whole[..cut]).unwrap();
        let c = read_journal(tmp.path(), 0).unwrap();
        assert!(c.valid_bytes >= one && c.valid_bytes <= cut as u64);
        assert_eq!(c.ops["a"][0], JournalOp::Finish { seq: 1 });
        assert!(!c.ops.contains_key("b"), "cut at {cut}");
    }

    // The second frame zeroed in place (its blocks allocated but never written).
    let mut holed = whole.clone();
    for b in &mut holed[one as usize..] {
        *b = 0;
    }
    std::fs::write(&path, &holed).unwrap();
    let c = read_journal(tmp.path(), 0).unwrap();
    assert_eq!(c.valid_bytes, one);
    assert_eq!(c.ops["a"], vec![JournalOp::Finish { seq: 1 }]);

    // No file at all: nothing.
    assert!(read_journal(tmp.path(), 7).unwrap().ops.is_empty());
}

#[test]
fn fin_above_the_snapshot_cursor_moves_it_and_owes_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let log = log_with(6);
    // A DPUB record, due later, sits among them.
    let dpub = body(6, 8);
    log.append(NewRecord {
        timestamp_ns: 0,
        deliver_at_ns: 5_000,
        body: &dpub,
    })
    .unwrap();
    log.append(rec(&body(7, 8))).unwrap();
    let mut ch = journaled(0);
    ch.next(&log, 0, OWNER, DEADLINE).unwrap().unwrap();
    ch.next(&log, 0, OWNER, DEADLINE).unwrap().unwrap();
    let snapshot = ch.snapshot(); // cursor 2, seqs 0 and 1 in flight
    assert_eq!(snapshot.cursor, 2);
    ch.take_journal_ops();
    let got = drain(&mut ch, &log, 0);
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [2, 3, 4, 5, 7]);
    ch.finish(3, 9).unwrap();
    ch.finish(7, 9).unwrap();

    let ops = write_and_read(tmp.path(), &mut ch);
    let replayed = replay(snapshot.clone(), &ops, &log);
    assert_eq!(replayed.cursor, 8);
    let owed: Vec<(u64, EntryKind)> = replayed.entries.iter().map(|e| (e.seq, e.kind)).collect();
    assert_eq!(
        owed,
        vec![
            (0, EntryKind::InFlight),
            (1, EntryKind::InFlight),
            (2, EntryKind::InFlight),
            (4, EntryKind::InFlight),
            (5, EntryKind::InFlight),
            (6, EntryKind::Deferred),
        ]
    );
    let dpub_entry = replayed.entries.iter().find(|e| e.seq == 6).unwrap();
    assert_eq!(dpub_entry.deliver_at_ns, 5_000);
    let mut restored = ChannelState::restore(replayed, &log);
    assert_eq!(
        drain(&mut restored, &log, 0)
            .iter()
            .map(|g| g.0)
            .collect::<Vec<_>>(),
        [0, 1, 2, 4, 5]
    );
    assert_eq!(drain(&mut restored, &log, 5_000), vec![(6, 1)]);

    // After a power loss the log may be shorter than the journal's view: ops past its end are
    // ignored and the cursor never passes it.
    let short = log_with(5);
    let replayed = replay(snapshot, &ops, &short);
    assert_eq!(replayed.cursor, 4);
    let owed: Vec<u64> = replayed.entries.iter().map(|e| e.seq).collect();
    assert_eq!(owed, [0, 1, 2]);
}

#[test]
fn requeue_with_a_delay_survives_with_its_due_time() {
    let tmp = tempfile::tempdir().unwrap();
    let log = log_with(3);
    let mut ch = journaled(0);
    let snapshot = ch.snapshot();
    for _ in 0..3 {
        ch.next(&log, 0, OWNER, DEADLINE).unwrap().unwrap();
    }
    ch.requeue(1, OWNER, 7_000, 100).unwrap();
    ch.finish(0, OWNER).unwrap();
    ch.finish(2, OWNER).unwrap();
    let ops = write_and_read(tmp.path(), &mut ch);
    let replayed = replay(snapshot, &ops, &log);
    assert_eq!(replayed.cursor, 3);
    assert_eq!(replayed.entries.len(), 1);
    let e = replayed.entries[0];
    assert_eq!(
        (e.seq, e.attempts, e.deliver_at_ns, e.kind),
        (1, 1, 7_000, EntryKind::Deferred)
    );
    let mut restored = ChannelState::restore(replayed, &log);
    assert_eq!(restored.deferred_count(), 1);
    assert!(drain(&mut restored, &log, 6_999).is_empty());
    assert_eq!(drain(&mut restored, &log, 7_000), vec![(1, 2)]);
}

#[test]
fn empty_replays_to_nothing_owed() {
    let tmp = tempfile::tempdir().unwrap();
    let log = log_with(5);
    let mut ch = journaled(0);
    let snapshot = ch.snapshot();
    for _ in 0..3 {
        ch.next(&log, 0, OWNER, DEADLINE).unwrap().unwrap();
    }
    ch.requeue(0, OWNER, 9_000, 0).unwrap();
    ch.empty(&log);
    // Published after the empty, delivered and FINed: nothing before it comes back.
    log.append(rec(&body(5, 8))).unwrap();
    log.append(rec(&body(6, 8))).unwrap();
    assert_eq!(drain(&mut ch, &log, 0), vec![(5, 1), (6, 1)]);
    ch.finish(6, 9).unwrap();
    let ops = write_and_read(tmp.path(), &mut ch);
    let replayed = replay(snapshot, &ops, &log);
    assert_eq!(replayed.cursor, 7);
    let owed: Vec<u64> = replayed.entries.iter().map(|e| e.seq).collect();
    assert_eq!(owed, [5]);
}

#[test]
fn compaction_snapshot_includes_and_drops_the_pending_ops() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = log_with(4);
    let mut ch = journaled(0);
    for _ in 0..4 {
        ch.next(&log, 0, OWNER, DEADLINE).unwrap().unwrap();
    }
    ch.finish(0, OWNER).unwrap();
    ch.requeue(1, OWNER, 0, 0).unwrap();
    // Generation 0: a snapshot taken earlier plus a journal of what followed.
    let mut j = Journal::open(dir, 0).unwrap();
    j.append(&[("c".to_owned(), ch.take_journal_ops())])
        .unwrap();
    ch.finish(2, OWNER).unwrap();
    assert!(ch.has_journal_ops());

    // Compaction: snapshot (dropping the pending FIN of 2), metadata naming generation 1, old
    // journal deleted.
    let snapshot = ch.snapshot_for_compaction();
    assert!(!ch.has_journal_ops());
    assert!(ch.take_journal_ops().is_empty());
    let meta = TopicMeta {
        channels: vec![ChannelMeta {
            name: "c".into(),
            paused: false,
            state: snapshot.clone(),
            ..ChannelMeta::default()
        }],
        journal_gen: 1,
        ..TopicMeta::default()
    };
    save_meta(dir, &meta).unwrap();
    assert_eq!(remove_other_journals(dir, 1).unwrap(), 1);
    assert!(!journal_path(dir, 0).exists());

    // Later ops go to generation 1, which continues the snapshot.
    ch.finish(3, OWNER).unwrap();
    let mut j = Journal::open(dir, 1).unwrap();
    j.append(&[("c".to_owned(), ch.take_journal_ops())])
        .unwrap();
    let loaded = load_meta(dir).unwrap().unwrap();
    assert_eq!(loaded.journal_gen, 1);
    let contents = read_journal(dir, loaded.journal_gen).unwrap();
    let replayed = replay(loaded.channels[0].state.clone(), &contents.ops["c"], &log);
    assert_eq!(
        replayed,
        ChannelSnapshot {
            cursor: 4,
            entries: vec![ferry_store::SnapshotEntry {
                seq: 1,
                attempts: 1,
                deliver_at_ns: 0,
                kind: EntryKind::Requeued,
            }],
        }
    );
}

#[test]
fn appends_go_to_the_end_of_an_existing_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut j = Journal::open(tmp.path(), 3).unwrap();
    assert!(j.is_empty());
    j.append(&[("x".to_owned(), vec![JournalOp::Finish { seq: 1 }])])
        .unwrap();
    // Nothing to write: no frame, no I/O.
    j.append(&[("x".to_owned(), Vec::new())]).unwrap();
    let len = j.len();
    drop(j);
    let mut j = Journal::open(tmp.path(), 3).unwrap();
    assert_eq!(j.len(), len);
    j.append(&[("x".to_owned(), vec![JournalOp::Finish { seq: 2 }])])
        .unwrap();
    let c = read_journal(tmp.path(), 3).unwrap();
    assert_eq!(
        c.ops["x"],
        vec![JournalOp::Finish { seq: 1 }, JournalOp::Finish { seq: 2 }]
    );
    // A foreign byte appended by hand (not a frame) is ignored.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(journal_path(tmp.path(), 3))
        .unwrap();
    f.write_all(b"F").unwrap();
    assert_eq!(read_journal(tmp.path(), 3).unwrap().ignored_bytes, 1);
}
