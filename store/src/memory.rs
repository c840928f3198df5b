//! The in-memory topic log used by `#ephemeral` topics: never touches disk.
//!
//! Invariants: records are contiguous (`records[i].seq == first + i`); at most `max` are
//! kept, the oldest being dropped (and counted) to make room; `next_seq` and `first_seq`
//! mirror the locked state for cheap lock-free checks.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;

use crate::disk::lock;
use crate::{NewRecord, Record, StoreError};

#[derive(Debug)]
struct MemState {
    records: VecDeque<Record>,
    /// Seq of `records[0]` (= `next` when empty).
    first: u64,
}

/// A bounded in-memory log.
#[derive(Debug)]
pub(crate) struct MemLog {
    /// Short std mutex around the queue: every operation is O(1) (or O(batch)).
    state: Mutex<MemState>,
    next_seq: AtomicU64,
    first_seq: AtomicU64,
    dropped: AtomicU64,
    max: usize,
    closed: AtomicBool,
}

impl MemLog {
    pub fn new(max_records: usize, initial_seq: u64) -> MemLog {
        MemLog {
            state: Mutex::new(MemState {
                records: VecDeque::new(),
                first: initial_seq,
            }),
            next_seq: AtomicU64::new(initial_seq),
            first_seq: AtomicU64::new(initial_seq),
            dropped: AtomicU64::new(0),
            max: max_records,
            closed: AtomicBool::new(false),
        }
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Acquire)
    }

    pub fn first_seq(&self) -> u64 {
        self.first_seq.load(Ordering::Acquire)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn append_batch(&self, recs: &[NewRecord<'_>]) -> Result<Range<u64>, StoreError> {
        let mut st = lock(&self.state);
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let start = self.next_seq();
        let end = start
            .checked_add(recs.len() as u64)
            .ok_or(StoreError::SeqExhausted)?;
        let mut dropped = 0;
        for (i, r) in recs.iter().enumerate() {
            st.records.push_back(Record {
                seq: start + i as u64,
                timestamp_ns: r.timestamp_ns,
                deliver_at_ns: r.deliver_at_ns,
                body: Bytes::copy_from_slice(r.body),
            });
            if st.records.len() > self.max {
                st.records.pop_front();
                dropped += 1;
            }
        }
        st.first = st.records.front().map_or(end, |r| r.seq);
        self.first_seq.store(st.first, Ordering::Release);
        self.next_seq.store(end, Ordering::Release);
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        Ok(start..end)
    }

    pub fn read(&self, seq: u64) -> Option<Record> {
        let st = lock(&self.state);
        let i = seq.checked_sub(st.first)?;
        st.records.get(usize::try_from(i).ok()?).cloned()
    }

    /// The first record with a seq `>= seq`, if any.
    pub fn read_from(&self, seq: u64) -> Option<Record> {
        let st = lock(&self.state);
        let i = seq.saturating_sub(st.first);
        st.records.get(usize::try_from(i).ok()?).cloned()
    }

    /// Drops records below `low_water`; returns how many.
    pub fn retain_from(&self, low_water: u64) -> usize {
        let mut st = lock(&self.state);
        let mut n = 0;
        while st.records.front().is_some_and(|r| r.seq < low_water) {
            st.records.pop_front();
            n += 1;
        }
        if n > 0 {
            st.first = st.records.front().map_or(self.next_seq(), |r| r.seq);
            self.first_seq.store(st.first, Ordering::Release);
        }
        n
    }

    /// Moves the next seq forward to `seq`; the records kept are dropped (and counted), as
    /// records here are contiguous.
    pub fn skip_to(&self, seq: u64) -> Result<(), StoreError> {
        let mut st = lock(&self.state);
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        if seq <= self.next_seq() {
            return Ok(());
        }
        let dropped = st.records.len() as u64;
        st.records.clear();
        st.first = seq;
        self.first_seq.store(seq, Ordering::Release);
        self.next_seq.store(seq, Ordering::Release);
        self.dropped.fetch_add(dropped, Ordering::Relaxed);
        Ok(())
    }

    /// Drops everything and refuses further appends (topic delete).
    pub fn close(&self) {
        let mut st = lock(&self.state);
        self.closed.store(true, Ordering::Release);
        st.records.clear();
        st.first = self.next_seq();
        self.first_seq.store(st.first, Ordering::Release);
    }
}
