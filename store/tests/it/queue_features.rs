//! `ChannelState`'s rewind, age limit, dead letters and peek, and the log's time search and
//! sealed-segment listing that retention and replay stand on.

use ferry_store::{ChannelState, EntryKind, LogOptions, NewRecord, PeekState, TopicLog};

const SEC: i64 = 1_000_000_000;

fn log_with(times: &[i64]) -> TopicLog {
    let log = TopicLog::in_memory(1000);
    for (i, &t) in times.iter().enumerate() {
        let body = format!("m{i}");
        log.append(NewRecord {
            timestamp_ns: t,
            deliver_at_ns: 0,
            body: body.as_bytes(),
        })
        .unwrap();
    }
    log
}

#[test]
fn seq_at_time_finds_the_first_record_at_or_after_a_time() {
    let log = log_with(&[10, 20, 20, 30, 40]);
    assert_eq!(log.seq_at_time(0).unwrap(), 0);
    assert_eq!(log.seq_at_time(10).unwrap(), 0);
    assert_eq!(log.seq_at_time(11).unwrap(), 1);
    assert_eq!(log.seq_at_time(20).unwrap(), 1);
    assert_eq!(log.seq_at_time(35).unwrap(), 4);
    assert_eq!(log.seq_at_time(41).unwrap(), 5);
    // Deleted records are skipped: the oldest retained one answers for older times.
    log.retain_from(2).unwrap();
    assert_eq!(log.seq_at_time(0).unwrap(), 2);
}

#[test]
fn sealed_segments_list_every_segment_but_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = TopicLog::open(
        dir.path(),
        LogOptions {
            max_bytes_per_file: 4096,
            ..LogOptions::default()
        },
    )
    .unwrap();
    let body = [7u8; 200];
    for i in 0..100 {
        log.append(NewRecord {
            timestamp_ns: i,
            deliver_at_ns: 0,
            body: &body,
        })
        .unwrap();
    }
    let spans = log.sealed_segments();
    assert_eq!(spans.len() + 1, log.stats().segments);
    assert_eq!(spans[0].start_seq, log.first_seq());
    for pair in spans.windows(2) {
        assert_eq!(pair[0].end_seq, pair[1].start_seq);
    }
    assert!(
        spans
            .iter()
            .all(|s| s.bytes >= 4096 && s.end_seq > s.start_seq)
    );
    // Deleting below a segment's end removes exactly the segments before it.
    log.retain_from(spans[2].start_seq).unwrap();
    assert_eq!(log.first_seq(), spans[2].start_seq);
    assert_eq!(log.sealed_segments()[0], spans[2]);
}

#[test]
fn rewind_owes_everything_from_the_point_and_drops_in_flight_after_it() {
    let log = log_with(&[1, 2, 3, 4, 5, 6]);
    let mut ch = ChannelState::new(0);
    let mut delivered = Vec::new();
    while let Some(d) = ch.next(&log, 100, 7, 1000).unwrap() {
        delivered.push(d.record.seq);
    }
    assert_eq!(delivered, [0, 1, 2, 3, 4, 5]);
    ch.finish(0, 7).unwrap();
    ch.finish(1, 7).unwrap();
    ch.requeue(2, 7, 500, 100).unwrap(); // deferred
    ch.requeue(4, 7, 0, 100).unwrap(); // ready
    // In flight: 3 and 5. Rewind to 3: 2 stays owed (deferred), 3.. are read again.
    let r = ch.rewind(3);
    assert_eq!(r.dropped_in_flight, [(3, 7), (5, 7)]);
    assert_eq!(ch.cursor(), 3);
    assert_eq!(ch.in_flight_count(), 0);
    assert_eq!(ch.deferred_count(), 1);
    assert_eq!(ch.depth(&log), 3);
    let again: Vec<u64> = std::iter::from_fn(|| ch.next(&log, 100, 8, 1000).unwrap())
        .map(|d| {
            assert_eq!(d.attempts, 1);
            d.record.seq
        })
        .collect();
    assert_eq!(again, [3, 4, 5]);
    // The snapshot keeps the invariant: every owed entry below the cursor.
    let snap = ch.snapshot();
    assert!(snap.entries.iter().all(|e| e.seq < snap.cursor));
    // The old delivery's FIN fails, as after a timeout... unless it is the new one's owner.
    assert!(ch.finish(3, 7).is_err());
}

#[test]
fn messages_past_max_age_are_dropped_at_delivery_and_at_the_head() {
    let log = log_with(&[10 * SEC, 11 * SEC, 50 * SEC]);
    let mut ch = ChannelState::new(0);
    ch.set_limits(5 * SEC, 0);
    // At 20 s the first two are too old: dropped, counted, the third delivered.
    assert_eq!(ch.expire_head(&log, 20 * SEC).unwrap(), 2);
    assert_eq!(ch.depth(&log), 1);
    let d = ch.next(&log, 52 * SEC, 1, 60 * SEC).unwrap().unwrap();
    assert_eq!(d.record.seq, 2);
    // Requeued and redelivered too late: dropped (journaled as done, so it stays gone).
    ch.enable_journal();
    ch.requeue(2, 1, 0, 52 * SEC).unwrap();
    ch.take_journal_ops();
    assert!(ch.next(&log, 60 * SEC, 1, 70 * SEC).unwrap().is_none());
    assert_eq!(ch.expired_count(), 3);
    assert_eq!(
        ch.take_journal_ops(),
        [ferry_store::JournalOp::Finish { seq: 2 }]
    );
    assert_eq!(ch.low_water(), 3);
}

#[test]
fn dead_letters_stay_owed_until_confirmed() {
    let log = log_with(&[1, 2]);
    let mut ch = ChannelState::new(0);
    ch.set_limits(0, 2);
    ch.enable_journal();
    for attempt in 1..=2u16 {
        let d = ch.next(&log, 10, 1, 100).unwrap().unwrap();
        assert_eq!((d.record.seq, d.attempts), (0, attempt));
        ch.requeue(0, 1, 0, 10).unwrap();
    }
    // The second REQ reached max_attempts: handed out once, no longer deliverable...
    let letters = ch.take_dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].record.seq, letters[0].attempts), (0, 2));
    assert!(ch.take_dead_letters().is_empty());
    let next = ch.next(&log, 10, 1, 100).unwrap().unwrap();
    assert_eq!(next.record.seq, 1);
    // ...but still owed: a snapshot (a crash now) delivers it again.
    let snap = ch.snapshot();
    assert!(
        snap.entries
            .iter()
            .any(|e| e.seq == 0 && e.kind == EntryKind::Requeued && e.attempts == 2)
    );
    assert_eq!(ch.low_water(), 0);
    ch.take_journal_ops();
    assert!(ch.dead_letter_done(0));
    assert!(!ch.dead_letter_done(0));
    assert_eq!(ch.dead_lettered_count(), 1);
    assert_eq!(
        ch.take_journal_ops(),
        [ferry_store::JournalOp::Finish { seq: 0 }]
    );
    assert!(ch.snapshot().entries.iter().all(|e| e.seq != 0));
    // A failed publish defers it for a retry.
    ch.requeue(1, 1, 0, 10).unwrap();
    let d = ch.next(&log, 10, 1, 100).unwrap().unwrap();
    ch.requeue(d.record.seq, 1, 0, 10).unwrap();
    assert_eq!(ch.take_dead_letters().len(), 1);
    ch.dead_letter_failed(1, 500);
    assert_eq!(ch.deferred_count(), 1);
    assert!(ch.next(&log, 499, 1, 1000).unwrap().is_none());
    assert_eq!(ch.next(&log, 500, 1, 1000).unwrap().unwrap().record.seq, 1);
}

#[test]
fn peek_lists_ready_in_flight_and_deferred_without_changing_anything() {
    let log = TopicLog::in_memory(100);
    for (i, deliver_at) in [0, 0, 0, 900, 0].iter().enumerate() {
        log.append(NewRecord {
            timestamp_ns: i as i64,
            deliver_at_ns: *deliver_at,
            body: b"x",
        })
        .unwrap();
    }
    let mut ch = ChannelState::new(0);
    ch.next(&log, 10, 1, 100).unwrap().unwrap(); // 0 in flight
    ch.next(&log, 10, 1, 100).unwrap().unwrap(); // 1 ...
    ch.requeue(1, 1, 300, 10).unwrap(); // ... deferred to 300
    let before = ch.snapshot();
    let p = ch.peek(&log, 10, 10).unwrap();
    assert_eq!(ch.snapshot(), before);
    let ready: Vec<u64> = p.ready.iter().map(|i| i.record.seq).collect();
    assert_eq!(ready, [2, 4]);
    assert!(p.ready.iter().all(|i| i.state == PeekState::Ready));
    assert_eq!(p.in_flight.len(), 1);
    assert_eq!(
        p.in_flight[0].state,
        PeekState::InFlight { deadline_ns: 100 }
    );
    let deferred: Vec<(u64, PeekState, u16)> = p
        .deferred
        .iter()
        .map(|i| (i.record.seq, i.state, i.attempts))
        .collect();
    assert_eq!(
        deferred,
        [
            (1, PeekState::Deferred { due_ns: 300 }, 1),
            (3, PeekState::Deferred { due_ns: 900 }, 0)
        ]
    );
    // n bounds each list.
    let p = ch.peek(&log, 10, 1).unwrap();
    assert_eq!((p.ready.len(), p.deferred.len()), (1, 1));
    assert_eq!(ch.snapshot(), before);
}
