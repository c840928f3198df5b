//! [`ChannelState`]: one channel's queue over its topic's log.
//!
//! A message the channel still owes is in exactly one place:
//!
//! ```text
//!   log records at or after the cursor ──next()──▶ in flight ──finish()──▶ gone
//!        │ deliver_at > now                  ▲  │ requeue(now) / timeout / owner gone
//!        ▼                                   │  ▼
//!   deferred heap ───────due──────────────▶ (next) ◀── ready queue
//!        ▲                                      │ requeue(later)
//!        └──────────────────────────────────────┘
//! ```
//!
//! Invariants:
//! - Every seq in `ready`, `deferred` and `in_flight` is below the cursor, and appears in at
//!   most one of them.
//! - The deadline heap may hold stale entries (finished, requeued or touched messages), but
//!   its top is always a live in-flight entry (stale tops are popped after every change), and
//!   it is rebuilt when stale entries outnumber live ones, so it stays O(in-flight).
//! - No locking and no clock reads inside: the broker wraps the state in its channel mutex
//!   and passes times in (ns since the Unix epoch, so deferrals survive restarts).
//! - When journaling is on ([`ChannelState::enable_journal`]), every FIN, REQ, timeout,
//!   owner-gone requeue and empty appends its [`JournalOp`] to a pending list, in the order the
//!   changes happen; deliveries are not recorded (the journal's replay infers them). The list is
//!   drained by [`ChannelState::take_journal_ops`] or cleared by
//!   [`ChannelState::snapshot_for_compaction`]; under the channel's lock, draining or
//!   snapshotting is atomic with respect to the changes, so a snapshot plus the ops recorded
//!   after it is always the whole state.
//!
//! Costs: `next`, `finish`, `requeue`, `touch` are O(log n) with no allocation beyond
//! amortised growth of the tables; `requeue_owner` and `low_water` are O(pending).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use crate::{JournalOp, LogReader, Record, StoreError, TopicLog};

/// A message handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The record (its body points into the log).
    pub record: Record,
    /// Delivery attempts including this one.
    pub attempts: u16,
}

/// Why FIN/REQ/TOUCH was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The message is not in flight (already finished, timed out, or unknown).
    #[error("not in flight")]
    NotInFlight,
    /// The message is in flight to another client.
    #[error("not owner")]
    NotOwner,
}

/// A channel's persistent state: its cursor and every message it still owes below it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelSnapshot {
    /// Next seq to read from the log.
    pub cursor: u64,
    /// Owed messages below the cursor, sorted by seq.
    pub entries: Vec<SnapshotEntry>,
}

/// One owed message in a [`ChannelSnapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// The message's seq.
    pub seq: u64,
    /// Deliveries so far.
    pub attempts: u16,
    /// When it is due (only meaningful for [`EntryKind::Deferred`]).
    pub deliver_at_ns: i64,
    /// Where it was.
    pub kind: EntryKind,
}

/// Where an owed message was when the snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// Delivered, awaiting FIN (redelivered after a restart).
    InFlight,
    /// Requeued for immediate redelivery.
    Requeued,
    /// Waiting for its `deliver_at_ns`.
    Deferred,
}

#[derive(Debug)]
struct Ready {
    seq: u64,
    attempts: u16,
    /// Kept from the in-flight entry when there was one, so redelivery needs no lookup.
    record: Option<Record>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Deferred {
    deliver_at: i64,
    seq: u64,
    attempts: u16,
}

#[derive(Debug)]
struct InFlight {
    owner: u64,
    attempts: u16,
    deadline: i64,
    delivered_at: i64,
    record: Record,
}

/// Multiplicative hashing for seqs (sequential keys, no DoS concern: they are ours).
#[derive(Debug, Default, Clone, Copy)]
struct SeqHasher(u64);

impl Hasher for SeqHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type SeqMap<V> = HashMap<u64, V, BuildHasherDefault<SeqHasher>>;

/// One channel's queue over its topic's log: a cursor, a ready queue (requeued for now), a
/// deferred min-heap by `deliver_at`, and the in-flight table (seq → owner, attempts,
/// deadline, record). Pure logic: no locking, no clock.
#[derive(Debug)]
pub struct ChannelState {
    reader: LogReader,
    ready: VecDeque<Ready>,
    deferred: BinaryHeap<Reverse<Deferred>>,
    in_flight: SeqMap<InFlight>,
    deadlines: BinaryHeap<Reverse<(i64, u64)>>,
    /// Ops not yet written to the topic's journal (`None`: not journaled).
    journal: Option<Vec<JournalOp>>,
    /// Messages older than this (ns since publish) are dropped instead of delivered; 0: never.
    max_age_ns: i64,
    /// Deliveries after which a REQ or timeout dead-letters the message; 0: unlimited.
    max_attempts: u16,
    /// Dead-lettered messages handed to the broker ([`ChannelState::take_dead_letters`]) and
    /// not yet confirmed ([`ChannelState::dead_letter_done`]); still owed until then.
    dead_pending: SeqMap<u16>,
    /// Dead letters not yet taken by the broker.
    dead_new: Vec<DeadLetter>,
    /// Messages dropped for their age since the channel was opened.
    expired: u64,
    /// Messages dead-lettered since the channel was opened.
    dead_lettered: u64,
}

/// A message that reached the channel's `max_attempts` and was then requeued or timed out: the
/// broker publishes it to the dead-letter topic, then calls
/// [`ChannelState::dead_letter_done`] (or [`ChannelState::dead_letter_failed`]).
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The record (body, original seq and timestamp).
    pub record: Record,
    /// Deliveries it had.
    pub attempts: u16,
}

/// Where a message shown by [`ChannelState::peek`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeekState {
    /// Next to be delivered (requeued, due, or at the cursor).
    Ready,
    /// Delivered, awaiting FIN until `deadline_ns`.
    InFlight {
        /// When it times out.
        deadline_ns: i64,
    },
    /// Waiting until `due_ns`.
    Deferred {
        /// When it is due.
        due_ns: i64,
    },
}

/// One message of a [`Peek`].
#[derive(Debug, Clone)]
pub struct PeekItem {
    /// The record.
    pub record: Record,
    /// Deliveries so far.
    pub attempts: u16,
    /// Where it is.
    pub state: PeekState,
}

/// What a channel holds, without changing it ([`ChannelState::peek`]).
#[derive(Debug, Clone, Default)]
pub struct Peek {
    /// The next messages it would deliver, in order.
    pub ready: Vec<PeekItem>,
    /// Messages in flight, by seq.
    pub in_flight: Vec<PeekItem>,
    /// Deferred messages, by due time.
    pub deferred: Vec<PeekItem>,
}

/// What [`ChannelState::rewind`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewound {
    /// The new cursor.
    pub cursor: u64,
    /// In-flight messages at or after it, no longer in flight: `(seq, owner)`.
    pub dropped_in_flight: Vec<(u64, u64)>,
}

impl ChannelState {
    /// A channel whose cursor starts at `start_seq` (the log's first seq for a topic's first
    /// channel, its `next_seq` for later ones).
    pub fn new(start_seq: u64) -> Self {
        ChannelState {
            reader: LogReader::new(start_seq),
            ready: VecDeque::new(),
            deferred: BinaryHeap::new(),
            in_flight: SeqMap::default(),
            deadlines: BinaryHeap::new(),
            journal: None,
            max_age_ns: 0,
            max_attempts: 0,
            dead_pending: SeqMap::default(),
            dead_new: Vec::new(),
            expired: 0,
            dead_lettered: 0,
        }
    }

    /// Sets the age limit (`max_age`, ns; 0: none) and the attempts limit (`max_attempts`; 0:
    /// unlimited). They apply from the next delivery, requeue or timeout.
    pub fn set_limits(&mut self, max_age_ns: i64, max_attempts: u16) {
        self.max_age_ns = max_age_ns.max(0);
        self.max_attempts = max_attempts;
    }

    /// Messages dropped for their age since the channel was opened.
    pub fn expired_count(&self) -> u64 {
        self.expired
    }

    /// Messages dead-lettered since the channel was opened.
    pub fn dead_lettered_count(&self) -> u64 {
        self.dead_lettered
    }

    /// True if a message published at `timestamp_ns` is too old to deliver at `now_ns`.
    fn too_old(&self, timestamp_ns: i64, now_ns: i64) -> bool {
        self.max_age_ns > 0 && timestamp_ns < now_ns.saturating_sub(self.max_age_ns)
    }

    /// Counts an owed entry (below the cursor) dropped for its age; journaled as done.
    fn expire_entry(&mut self, seq: u64) {
        self.expired += 1;
        self.record(JournalOp::Finish { seq });
    }

    /// Starts recording [`JournalOp`]s for the topic's journal (durable channels only: nothing
    /// drains the list of an ephemeral one).
    pub fn enable_journal(&mut self) {
        self.journal.get_or_insert_with(Vec::new);
    }

    /// Ops recorded since the last call (or snapshot for compaction), in order.
    pub fn take_journal_ops(&mut self) -> Vec<JournalOp> {
        self.journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// True when ops await the journal.
    pub fn has_journal_ops(&self) -> bool {
        self.journal.as_ref().is_some_and(|j| !j.is_empty())
    }

    /// [`ChannelState::snapshot`] for a compaction: the pending ops are discarded, since the
    /// snapshot includes them.
    pub fn snapshot_for_compaction(&mut self) -> ChannelSnapshot {
        if let Some(j) = self.journal.as_mut() {
            j.clear();
        }
        self.snapshot()
    }

    fn record(&mut self, op: JournalOp) {
        if let Some(j) = self.journal.as_mut() {
            j.push(op);
        }
    }

    /// Rebuilds a channel from a snapshot, repairing it against the log: the cursor is
    /// clamped into `[first_seq, next_seq]`, entries whose record no longer exists (or that
    /// lie at or after the cursor, or repeat) are dropped, in-flight entries become ready
    /// now (they must be redelivered), deferred ones keep their `deliver_at`.
    pub fn restore(snapshot: ChannelSnapshot, log: &TopicLog) -> Self {
        let first = log.first_seq();
        let next = log.next_seq();
        let cursor = snapshot.cursor.clamp(first, next.max(first));
        let mut entries = snapshot.entries;
        entries.sort_by_key(|e| e.seq);
        entries.dedup_by_key(|e| e.seq);
        let mut st = ChannelState::new(cursor);
        // Holding the last record read keeps its segment mapped for the next lookup.
        let mut _keep_mapped: Option<Record> = None;
        for e in entries {
            if e.seq < first || e.seq >= cursor {
                continue;
            }
            match log.read(e.seq) {
                Ok(Some(r)) => _keep_mapped = Some(r),
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!(seq = e.seq, error = %err, "cannot check a restored entry; keeping it");
                }
            }
            match e.kind {
                EntryKind::InFlight | EntryKind::Requeued => st.ready.push_back(Ready {
                    seq: e.seq,
                    attempts: e.attempts,
                    record: None,
                }),
                EntryKind::Deferred => st.deferred.push(Reverse(Deferred {
                    deliver_at: e.deliver_at_ns,
                    seq: e.seq,
                    attempts: e.attempts,
                })),
            }
        }
        st
    }

    /// The state to persist: cursor and every owed message, sorted by seq.
    pub fn snapshot(&self) -> ChannelSnapshot {
        let mut entries: Vec<SnapshotEntry> =
            Vec::with_capacity(self.ready.len() + self.deferred.len() + self.in_flight.len());
        entries.extend(self.in_flight.iter().map(|(&seq, f)| SnapshotEntry {
            seq,
            attempts: f.attempts,
            deliver_at_ns: 0,
            kind: EntryKind::InFlight,
        }));
        entries.extend(self.ready.iter().map(|r| SnapshotEntry {
            seq: r.seq,
            attempts: r.attempts,
            deliver_at_ns: 0,
            kind: EntryKind::Requeued,
        }));
        entries.extend(self.deferred.iter().map(|Reverse(d)| SnapshotEntry {
            seq: d.seq,
            attempts: d.attempts,
            deliver_at_ns: d.deliver_at,
            kind: EntryKind::Deferred,
        }));
        // Not yet in the dead-letter topic: owed again after a restart.
        entries.extend(
            self.dead_pending
                .iter()
                .map(|(&seq, &attempts)| SnapshotEntry {
                    seq,
                    attempts,
                    deliver_at_ns: 0,
                    kind: EntryKind::Requeued,
                }),
        );
        entries.sort_by_key(|e| e.seq);
        ChannelSnapshot {
            cursor: self.reader.position(),
            entries,
        }
    }

    /// The next message for `owner` at `now_ns`: first a ready entry, then a due deferred
    /// one, then the record at the cursor (a record whose `deliver_at` is later than `now_ns`
    /// goes to the deferred heap instead). It is marked in flight until `deadline_ns`, with
    /// attempts + 1 (saturating). Entries whose record vanished are dropped.
    pub fn next(
        &mut self,
        log: &TopicLog,
        now_ns: i64,
        owner: u64,
        deadline_ns: i64,
    ) -> Result<Option<Delivery>, StoreError> {
        while let Some(entry) = self.ready.pop_front() {
            let record = match entry.record {
                Some(r) => r,
                None => match log.read(entry.seq) {
                    Ok(Some(r)) => r,
                    Ok(None) => continue,
                    Err(e) => {
                        self.ready.push_front(entry);
                        return Err(e);
                    }
                },
            };
            if self.too_old(record.timestamp_ns, now_ns) {
                self.expire_entry(entry.seq);
                continue;
            }
            return Ok(Some(self.dispatch(
                record,
                entry.attempts,
                owner,
                now_ns,
                deadline_ns,
            )));
        }
        while let Some(Reverse(d)) = self.deferred.peek().copied() {
            if d.deliver_at > now_ns {
                break;
            }
            self.deferred.pop();
            match log.read(d.seq) {
                Ok(Some(r)) if self.too_old(r.timestamp_ns, now_ns) => {
                    self.expire_entry(d.seq);
                }
                Ok(Some(r)) => {
                    return Ok(Some(self.dispatch(
                        r,
                        d.attempts,
                        owner,
                        now_ns,
                        deadline_ns,
                    )));
                }
                Ok(None) => continue,
                Err(e) => {
                    self.deferred.push(Reverse(d));
                    return Err(e);
                }
            }
        }
        while let Some(record) = self.reader.next(log)? {
            if record.deliver_at_ns > now_ns {
                self.deferred.push(Reverse(Deferred {
                    deliver_at: record.deliver_at_ns,
                    seq: record.seq,
                    attempts: 0,
                }));
                continue;
            }
            if self.too_old(record.timestamp_ns, now_ns) {
                // Passed by the cursor: nothing to journal (a replay that owes it again drops
                // it again, since it only gets older).
                self.expired += 1;
                continue;
            }
            return Ok(Some(self.dispatch(record, 0, owner, now_ns, deadline_ns)));
        }
        Ok(None)
    }

    fn dispatch(
        &mut self,
        record: Record,
        attempts: u16,
        owner: u64,
        now: i64,
        deadline: i64,
    ) -> Delivery {
        let attempts = attempts.saturating_add(1);
        self.deadlines.push(Reverse((deadline, record.seq)));
        self.in_flight.insert(
            record.seq,
            InFlight {
                owner,
                attempts,
                deadline,
                delivered_at: now,
                record: record.clone(),
            },
        );
        Delivery { record, attempts }
    }

    fn owned(&self, seq: u64, owner: u64) -> Result<(), ChannelError> {
        match self.in_flight.get(&seq) {
            None => Err(ChannelError::NotInFlight),
            Some(f) if f.owner != owner => Err(ChannelError::NotOwner),
            Some(_) => Ok(()),
        }
    }

    /// FIN: the message is done.
    pub fn finish(&mut self, seq: u64, owner: u64) -> Result<(), ChannelError> {
        self.owned(seq, owner)?;
        self.in_flight.remove(&seq);
        self.record(JournalOp::Finish { seq });
        self.prune_deadlines();
        Ok(())
    }

    /// REQ: back to the ready queue if `deliver_at_ns <= now_ns`, else deferred until then.
    /// Attempts are kept.
    pub fn requeue(
        &mut self,
        seq: u64,
        owner: u64,
        deliver_at_ns: i64,
        now_ns: i64,
    ) -> Result<(), ChannelError> {
        self.owned(seq, owner)?;
        let Some(f) = self.in_flight.remove(&seq) else {
            return Err(ChannelError::NotInFlight);
        };
        let at = if deliver_at_ns <= now_ns {
            0
        } else {
            deliver_at_ns
        };
        self.owe_again(f, at);
        self.prune_deadlines();
        Ok(())
    }

    /// A message leaves flight without a FIN (REQ, timeout, owner gone): owed again, due at
    /// `deliver_at_ns` (0: now), or dead-lettered when it has had `max_attempts` deliveries.
    fn owe_again(&mut self, f: InFlight, deliver_at_ns: i64) {
        let seq = f.record.seq;
        if self.max_attempts > 0 && f.attempts >= self.max_attempts {
            // Still owed (a snapshot lists it) until the broker confirms the dead letter.
            self.dead_pending.insert(seq, f.attempts);
            self.dead_new.push(DeadLetter {
                record: f.record,
                attempts: f.attempts,
            });
            return;
        }
        self.record(JournalOp::Requeue {
            seq,
            attempts: f.attempts,
            deliver_at_ns,
        });
        if deliver_at_ns == 0 {
            self.ready.push_back(Ready {
                seq,
                attempts: f.attempts,
                record: Some(f.record),
            });
        } else {
            self.deferred.push(Reverse(Deferred {
                deliver_at: deliver_at_ns,
                seq,
                attempts: f.attempts,
            }));
        }
    }

    /// Dead letters to publish, oldest first (each is then confirmed or failed once).
    pub fn take_dead_letters(&mut self) -> Vec<DeadLetter> {
        std::mem::take(&mut self.dead_new)
    }

    /// The dead letter `seq` is in its dead-letter topic: it leaves the channel (journaled as
    /// finished). False if the channel no longer owed it (emptied or rewound meanwhile).
    pub fn dead_letter_done(&mut self, seq: u64) -> bool {
        if self.dead_pending.remove(&seq).is_none() {
            return false;
        }
        self.dead_lettered += 1;
        self.record(JournalOp::Finish { seq });
        true
    }

    /// The dead letter `seq` could not be published: it is deferred until `retry_at_ns` and
    /// will be delivered again (and dead-lettered again if it is requeued).
    pub fn dead_letter_failed(&mut self, seq: u64, retry_at_ns: i64) {
        if let Some(attempts) = self.dead_pending.remove(&seq) {
            self.record(JournalOp::Requeue {
                seq,
                attempts,
                deliver_at_ns: retry_at_ns,
            });
            self.deferred.push(Reverse(Deferred {
                deliver_at: retry_at_ns,
                seq,
                attempts,
            }));
        }
    }

    /// TOUCH: moves the message's deadline.
    pub fn touch(
        &mut self,
        seq: u64,
        owner: u64,
        new_deadline_ns: i64,
    ) -> Result<(), ChannelError> {
        self.owned(seq, owner)?;
        if let Some(f) = self.in_flight.get_mut(&seq) {
            f.deadline = new_deadline_ns;
            self.deadlines.push(Reverse((new_deadline_ns, seq)));
        }
        self.prune_deadlines();
        Ok(())
    }

    /// When an in-flight message was delivered (ns), to cap how far TOUCH may extend it.
    pub fn delivered_at(&self, seq: u64) -> Option<i64> {
        self.in_flight.get(&seq).map(|f| f.delivered_at)
    }

    /// Publish time (ns) of an in-flight message, for end-to-end latency at FIN.
    pub fn published_at(&self, seq: u64) -> Option<i64> {
        self.in_flight.get(&seq).map(|f| f.record.timestamp_ns)
    }

    /// `(owner, deadline)` of an in-flight message.
    pub fn in_flight_deadline_info(&self, seq: u64) -> Option<(u64, i64)> {
        self.in_flight.get(&seq).map(|f| (f.owner, f.deadline))
    }

    /// A client went away: its in-flight messages go back to the ready queue (in seq
    /// order); returns how many.
    pub fn requeue_owner(&mut self, owner: u64) -> usize {
        let mut seqs: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.owner == owner)
            .map(|(&s, _)| s)
            .collect();
        seqs.sort_unstable();
        for &seq in &seqs {
            if let Some(f) = self.in_flight.remove(&seq) {
                self.owe_again(f, 0);
            }
        }
        self.prune_deadlines();
        seqs.len()
    }

    /// In-flight messages whose deadline is `<= now_ns` go back to the ready queue (in
    /// deadline order); returns their `(seq, owner)`.
    pub fn take_timed_out(&mut self, now_ns: i64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        while let Some(&Reverse((deadline, seq))) = self.deadlines.peek() {
            if deadline > now_ns {
                break;
            }
            self.deadlines.pop();
            let live = self
                .in_flight
                .get(&seq)
                .is_some_and(|f| f.deadline == deadline);
            if !live {
                continue;
            }
            if let Some(f) = self.in_flight.remove(&seq) {
                out.push((seq, f.owner));
                self.owe_again(f, 0);
            }
        }
        self.prune_deadlines();
        out
    }

    /// Pops stale heap tops; rebuilds the heap when stale entries dominate.
    fn prune_deadlines(&mut self) {
        if self.deadlines.len() > 2 * self.in_flight.len() + 64 {
            self.deadlines = self
                .in_flight
                .iter()
                .map(|(&seq, f)| Reverse((f.deadline, seq)))
                .collect();
            return;
        }
        while let Some(&Reverse((deadline, seq))) = self.deadlines.peek() {
            if self
                .in_flight
                .get(&seq)
                .is_some_and(|f| f.deadline == deadline)
            {
                break;
            }
            self.deadlines.pop();
        }
    }

    /// The earliest in-flight deadline or deferred due time, if any.
    pub fn next_wakeup(&self) -> Option<i64> {
        let deadline = self.deadlines.peek().map(|Reverse((d, _))| *d);
        let due = self.deferred.peek().map(|Reverse(d)| d.deliver_at);
        match (deadline, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves the publisher-deferred (DPUB) records at the cursor, up to the first record that is
    /// due, into the deferred heap, as [`ChannelState::next`] would when it reached them; so a
    /// caught-up channel counts a DPUB as deferred at once (as nsqd does) rather than in its
    /// depth. Returns how many moved; re-arm the channel's timer when that is not zero.
    pub fn absorb_deferred(&mut self, log: &TopicLog, now_ns: i64) -> Result<usize, StoreError> {
        let mut moved = 0;
        loop {
            let at = self.reader.position();
            match self.reader.next(log)? {
                Some(record) if record.deliver_at_ns > now_ns => {
                    self.deferred.push(Reverse(Deferred {
                        deliver_at: record.deliver_at_ns,
                        seq: record.seq,
                        attempts: 0,
                    }));
                    moved += 1;
                }
                Some(_) => {
                    self.reader.seek(at);
                    return Ok(moved);
                }
                None => return Ok(moved),
            }
        }
    }

    /// Whether [`ChannelState::next`] may have something to deliver at `now_ns` (a
    /// deferred-by-publisher record at the cursor can make it return `None` once, after
    /// which this is accurate again).
    pub fn has_ready(&self, log: &TopicLog, now_ns: i64) -> bool {
        !self.ready.is_empty()
            || self
                .deferred
                .peek()
                .is_some_and(|Reverse(d)| d.deliver_at <= now_ns)
            || self.reader.position() < log.next_seq()
    }

    /// Channel empty: drops queued, in-flight and deferred messages; the cursor moves to the
    /// log's end.
    pub fn empty(&mut self, log: &TopicLog) {
        self.ready.clear();
        self.deferred.clear();
        self.in_flight.clear();
        self.deadlines.clear();
        self.dead_pending.clear();
        self.dead_new.clear();
        let cursor = log.next_seq();
        self.reader.seek(cursor);
        self.record(JournalOp::Empty { cursor });
    }

    /// Moves the cursor to `to` (back to replay, or forward to skip): every record at or
    /// after it is owed (again) from the log, so owed entries at or after it are dropped (the
    /// cursor reaches them again; a requeue delay is forgotten) and in-flight ones leave flight
    /// (their FIN then fails, as after a timeout). Entries below `to` stay owed. The caller
    /// saves the new state (a compaction): the journal has no op for this.
    pub fn rewind(&mut self, to: u64) -> Rewound {
        self.ready.retain(|r| r.seq < to);
        self.deferred.retain(|Reverse(d)| d.seq < to);
        self.dead_pending.retain(|&seq, _| seq < to);
        self.dead_new.retain(|d| d.record.seq < to);
        let mut dropped: Vec<(u64, u64)> = self
            .in_flight
            .iter()
            .filter(|&(&seq, _)| seq >= to)
            .map(|(&seq, f)| (seq, f.owner))
            .collect();
        dropped.sort_unstable();
        for (seq, _) in &dropped {
            self.in_flight.remove(seq);
        }
        self.prune_deadlines();
        self.reader.seek(to);
        Rewound {
            cursor: to,
            dropped_in_flight: dropped,
        }
    }

    /// Drops the messages at the head of the channel (ready queue, then the cursor) that are
    /// past `max_age`, as a delivery would, so depth counts only deliverable messages. Stops at
    /// the first message young enough (the log is in publish order). Returns how many.
    pub fn expire_head(&mut self, log: &TopicLog, now_ns: i64) -> Result<u64, StoreError> {
        if self.max_age_ns == 0 {
            return Ok(0);
        }
        let before = self.expired;
        while let Some(entry) = self.ready.front() {
            let ts = match &entry.record {
                Some(r) => r.timestamp_ns,
                None => match log.read(entry.seq)? {
                    Some(r) => r.timestamp_ns,
                    None => i64::MIN,
                },
            };
            if !self.too_old(ts, now_ns) {
                break;
            }
            let seq = entry.seq;
            self.ready.pop_front();
            self.expire_entry(seq);
        }
        loop {
            let at = self.reader.position();
            match self.reader.next(log)? {
                Some(r) if r.deliver_at_ns <= now_ns && self.too_old(r.timestamp_ns, now_ns) => {
                    self.expired += 1;
                }
                Some(_) => {
                    self.reader.seek(at);
                    break;
                }
                None => break,
            }
        }
        Ok(self.expired - before)
    }

    /// The channel's messages without changing anything: up to `n` it would deliver next, in
    /// order (skipping what it would drop for age), up to `n` in flight (by seq) and up to `n`
    /// deferred (by due time, including publisher-deferred records just past the cursor).
    pub fn peek(&self, log: &TopicLog, now_ns: i64, n: usize) -> Result<Peek, StoreError> {
        let mut out = Peek::default();
        let mut deferred: Vec<(i64, u64, u16, Option<Record>)> = Vec::new();
        for r in &self.ready {
            if out.ready.len() >= n {
                break;
            }
            let record = match &r.record {
                Some(rec) => rec.clone(),
                None => match log.read(r.seq)? {
                    Some(rec) => rec,
                    None => continue,
                },
            };
            if self.too_old(record.timestamp_ns, now_ns) {
                continue;
            }
            out.ready.push(PeekItem {
                record,
                attempts: r.attempts,
                state: PeekState::Ready,
            });
        }
        let mut heap: Vec<Deferred> = self.deferred.iter().map(|Reverse(d)| *d).collect();
        heap.sort_unstable();
        for d in &heap {
            if d.deliver_at <= now_ns {
                if out.ready.len() < n
                    && let Some(record) = log.read(d.seq)?
                    && !self.too_old(record.timestamp_ns, now_ns)
                {
                    out.ready.push(PeekItem {
                        record,
                        attempts: d.attempts,
                        state: PeekState::Ready,
                    });
                }
            } else {
                deferred.push((d.deliver_at, d.seq, d.attempts, None));
            }
        }
        // The cursor's records, read by a reader of our own (the channel's stays put). At most
        // a bounded number of records is looked at, so a peek costs O(n) reads even when the
        // head of the log is all expired or deferred.
        let mut reader = LogReader::new(self.reader.position());
        let mut looked = 0usize;
        while out.ready.len() < n && looked < n.saturating_mul(4).max(1024) {
            let Some(record) = reader.next(log)? else {
                break;
            };
            looked += 1;
            if record.deliver_at_ns > now_ns {
                if deferred.len() < n {
                    deferred.push((record.deliver_at_ns, record.seq, 0, Some(record)));
                }
                continue;
            }
            if self.too_old(record.timestamp_ns, now_ns) {
                continue;
            }
            out.ready.push(PeekItem {
                record,
                attempts: 0,
                state: PeekState::Ready,
            });
        }
        let mut flying: Vec<(&u64, &InFlight)> = self.in_flight.iter().collect();
        flying.sort_unstable_by_key(|(seq, _)| **seq);
        out.in_flight = flying
            .into_iter()
            .take(n)
            .map(|(_, f)| PeekItem {
                record: f.record.clone(),
                attempts: f.attempts,
                state: PeekState::InFlight {
                    deadline_ns: f.deadline,
                },
            })
            .collect();
        deferred.sort_unstable_by_key(|&(due, seq, _, _)| (due, seq));
        for (due, seq, attempts, record) in deferred {
            if out.deferred.len() >= n {
                break;
            }
            let record = match record {
                Some(r) => r,
                None => match log.read(seq)? {
                    Some(r) => r,
                    None => continue,
                },
            };
            out.deferred.push(PeekItem {
                record,
                attempts,
                state: PeekState::Deferred { due_ns: due },
            });
        }
        Ok(out)
    }

    /// The smallest seq the channel still owes (the cursor, or a pending entry below it).
    pub fn low_water(&self) -> u64 {
        let mut low = self.reader.position();
        low = low.min(self.ready.iter().map(|r| r.seq).min().unwrap_or(u64::MAX));
        low = low.min(
            self.deferred
                .iter()
                .map(|Reverse(d)| d.seq)
                .min()
                .unwrap_or(u64::MAX),
        );
        low = low.min(self.dead_pending.keys().copied().min().unwrap_or(u64::MAX));
        low.min(self.in_flight.keys().copied().min().unwrap_or(u64::MAX))
    }

    /// Messages waiting to be delivered now or later from the cursor, plus the ready queue
    /// (NSQ's depth; deferred and in-flight are counted separately; gaps are ignored).
    pub fn depth(&self, log: &TopicLog) -> u64 {
        log.next_seq().saturating_sub(self.reader.position()) + self.ready.len() as u64
    }

    /// Messages in flight.
    pub fn in_flight_count(&self) -> usize {
        self.in_flight.len()
    }

    /// Messages deferred.
    pub fn deferred_count(&self) -> usize {
        self.deferred.len()
    }

    /// The cursor: next seq to read from the log.
    pub fn cursor(&self) -> u64 {
        self.reader.position()
    }
}
