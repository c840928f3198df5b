//! Model-based test: a topic log plus one `ChannelState`, driven by random operations and
//! checked against a plain in-memory model (`VecDeque`/`BTreeMap`), including closing and
//! reopening the log with the channel restored from saved metadata.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::common::body;
use ferry_store::{
    ChannelError, ChannelMeta, ChannelState, LogOptions, NewRecord, TopicLog, TopicMeta, load_meta,
    save_meta,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append { len: usize, delay: Option<i64> },
    AppendBatch { lens: Vec<usize> },
    Next { owner: u64, timeout: i64 },
    Finish { pick: usize, wrong_owner: bool },
    Requeue { pick: usize, delay: i64 },
    Touch { pick: usize, timeout: i64 },
    Advance { dt: i64 },
    TimeOut,
    RequeueOwner { owner: u64 },
    Reopen,
    Retain,
    Empty,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..120, proptest::option::weighted(0.2, 1i64..200))
            .prop_map(|(len, delay)| Op::Append { len, delay }),
        2 => proptest::collection::vec(0usize..120, 1..12).prop_map(|lens| Op::AppendBatch { lens }),
        8 => (1u64..4, 1i64..200).prop_map(|(owner, timeout)| Op::Next { owner, timeout }),
        4 => (any::<usize>(), proptest::bool::weighted(0.1))
            .prop_map(|(pick, wrong_owner)| Op::Finish { pick, wrong_owner }),
        2 => (any::<usize>(), prop_oneof![Just(0i64), 1i64..150])
            .prop_map(|(pick, delay)| Op::Requeue { pick, delay }),
        1 => (any::<usize>(), 1i64..200).prop_map(|(pick, timeout)| Op::Touch { pick, timeout }),
        3 => (0i64..100).prop_map(|dt| Op::Advance { dt }),
        2 => Just(Op::TimeOut),
        1 => (1u64..4).prop_map(|owner| Op::RequeueOwner { owner }),
        1 => Just(Op::Reopen),
        2 => Just(Op::Retain),
        1 => Just(Op::Empty),
    ]
}

#[derive(Debug, Default)]
struct Model {
    bodies: BTreeMap<u64, (Vec<u8>, i64)>,
    next_seq: u64,
    cursor: u64,
    ready: VecDeque<(u64, u16)>,
    deferred: BTreeSet<(i64, u64, u16)>,
    in_flight: BTreeMap<u64, (u64, u16, i64)>,
}

impl Model {
    fn deliver(&mut self, seq: u64, attempts: u16, owner: u64, deadline: i64) -> (u64, u16) {
        let attempts = attempts.saturating_add(1);
        self.in_flight.insert(seq, (owner, attempts, deadline));
        (seq, attempts)
    }

    fn next(&mut self, now: i64, owner: u64, deadline: i64) -> Option<(u64, u16)> {
        if let Some((seq, att)) = self.ready.pop_front() {
            return Some(self.deliver(seq, att, owner, deadline));
        }
        if let Some(&(at, seq, att)) = self.deferred.first()
            && at <= now
        {
            self.deferred.remove(&(at, seq, att));
            return Some(self.deliver(seq, att, owner, deadline));
        }
        while self.cursor < self.next_seq {
            let seq = self.cursor;
            self.cursor += 1;
            let at = self.bodies[&seq].1;
            if at > now {
                self.deferred.insert((at, seq, 0));
                continue;
            }
            return Some(self.deliver(seq, 0, owner, deadline));
        }
        None
    }

    fn check(&self, seq: u64, owner: u64) -> Result<(), ChannelError> {
        match self.in_flight.get(&seq) {
            None => Err(ChannelError::NotInFlight),
            Some(&(o, _, _)) if o != owner => Err(ChannelError::NotOwner),
            Some(_) => Ok(()),
        }
    }

    fn low_water(&self) -> u64 {
        let mut low = self.cursor;
        low = low.min(self.ready.iter().map(|r| r.0).min().unwrap_or(u64::MAX));
        low = low.min(self.deferred.iter().map(|d| d.1).min().unwrap_or(u64::MAX));
        low.min(self.in_flight.keys().copied().min().unwrap_or(u64::MAX))
    }

    fn next_wakeup(&self) -> Option<i64> {
        let a = self.in_flight.values().map(|f| f.2).min();
        let b = self.deferred.first().map(|d| d.0);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Seqs the channel still owes.
    fn owed(&self) -> BTreeSet<u64> {
        let mut s: BTreeSet<u64> = (self.cursor..self.next_seq).collect();
        s.extend(self.ready.iter().map(|r| r.0));
        s.extend(self.deferred.iter().map(|d| d.1));
        s.extend(self.in_flight.keys());
        s
    }
}

struct Harness {
    dir: Option<tempfile::TempDir>,
    log: Option<TopicLog>,
    ch: ChannelState,
    model: Model,
    now: i64,
    salt: u64,
}

const START: u64 = 1_000_000;

fn log_opts() -> LogOptions {
    LogOptions {
        max_bytes_per_file: 600,
        initial_seq: START,
        ..LogOptions::default()
    }
}

impl Harness {
    fn new(disk: bool) -> Harness {
        let (dir, log) = if disk {
            let dir = tempfile::tempdir().unwrap();
            let (log, _) = TopicLog::open(dir.path(), log_opts()).unwrap();
            (Some(dir), log)
        } else {
            (None, TopicLog::in_memory_from(1 << 20, START))
        };
        Harness {
            dir,
            log: Some(log),
            ch: ChannelState::new(START),
            model: Model {
                next_seq: START,
                cursor: START,
                ..Model::default()
            },
            now: 1_000,
            salt: 0,
        }
    }

    fn log(&self) -> &TopicLog {
        self.log.as_ref().unwrap()
    }

    fn pick(&self, pick: usize) -> (u64, u64) {
        if self.model.in_flight.is_empty() {
            return (START + 999_999, 1);
        }
        let (&seq, &(owner, _, _)) = self
            .model
            .in_flight
            .iter()
            .nth(pick % self.model.in_flight.len())
            .unwrap();
        (seq, owner)
    }

    fn append(&mut self, lens: &[usize], delay: Option<i64>) {
        let deliver_at = delay.map_or(0, |d| self.now + d);
        let bodies: Vec<Vec<u8>> = lens
            .iter()
            .map(|&len| {
                self.salt += 1;
                body(self.salt, len)
            })
            .collect();
        let recs: Vec<NewRecord<'_>> = bodies
            .iter()
            .map(|b| NewRecord {
                timestamp_ns: self.now,
                deliver_at_ns: deliver_at,
                body: b,
            })
            .collect();
        let range = if recs.len() == 1 {
            let s = self.log().append(recs[0]).unwrap();
            s..s + 1
        } else {
            self.log().append_batch(&recs).unwrap()
        };
        assert_eq!(range.start, self.model.next_seq);
        for (s, b) in range.zip(bodies) {
            self.model.bodies.insert(s, (b, deliver_at));
        }
        self.model.next_seq += lens.len() as u64;
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Append { len, delay } => self.append(&[len], delay),
            Op::AppendBatch { ref lens } => self.append(lens, None),
            Op::Next { owner, timeout } => {
                let deadline = self.now + timeout;
                let got = self
                    .ch
                    .next(self.log.as_ref().unwrap(), self.now, owner, deadline)
                    .unwrap();
                let want = self.model.next(self.now, owner, deadline);
                match (got, want) {
                    (None, None) => {}
                    (Some(d), Some((seq, attempts))) => {
                        assert_eq!((d.record.seq, d.attempts), (seq, attempts));
                        let (b, at) = &self.model.bodies[&seq];
                        assert_eq!(&d.record.body[..], &b[..], "body of {seq}");
                        assert_eq!(d.record.deliver_at_ns, *at);
                    }
                    (got, want) => panic!("next: got {got:?}, model {want:?}"),
                }
            }
            Op::Finish { pick, wrong_owner } => {
                let (seq, owner) = self.pick(pick);
                let owner = if wrong_owner { owner + 10 } else { owner };
                let want = self.model.check(seq, owner);
                assert_eq!(self.ch.finish(seq, owner), want);
                if want.is_ok() {
                    self.model.in_flight.remove(&seq);
                }
            }
            Op::Requeue { pick, delay } => {
                let (seq, owner) = self.pick(pick);
                let at = self.now + delay;
                let want = self.model.check(seq, owner);
                assert_eq!(self.ch.requeue(seq, owner, at, self.now), want);
                if want.is_ok() {
                    let (_, att, _) = self.model.in_flight.remove(&seq).unwrap();
                    if at <= self.now {
                        self.model.ready.push_back((seq, att));
                    } else {
                        self.model.deferred.insert((at, seq, att));
                    }
                }
            }
            Op::Touch { pick, timeout } => {
                let (seq, owner) = self.pick(pick);
                let want = self.model.check(seq, owner);
                assert_eq!(self.ch.touch(seq, owner, self.now + timeout), want);
                if want.is_ok() {
                    self.model.in_flight.get_mut(&seq).unwrap().2 = self.now + timeout;
                }
                assert_eq!(
                    self.ch.in_flight_deadline_info(seq),
                    self.model.in_flight.get(&seq).map(|f| (f.0, f.2))
                );
            }
            Op::Advance { dt } => self.now += dt,
            Op::TimeOut => {
                let got = self.ch.take_timed_out(self.now);
                let mut expired: Vec<(i64, u64)> = self
                    .model
                    .in_flight
                    .iter()
                    .filter(|(_, f)| f.2 <= self.now)
                    .map(|(&s, f)| (f.2, s))
                    .collect();
                expired.sort_unstable();
                let mut want = Vec::new();
                for (_, seq) in expired {
                    let (owner, att, _) = self.model.in_flight.remove(&seq).unwrap();
                    self.model.ready.push_back((seq, att));
                    want.push((seq, owner));
                }
                assert_eq!(got, want);
            }
            Op::RequeueOwner { owner } => {
                let seqs: Vec<u64> = self
                    .model
                    .in_flight
                    .iter()
                    .filter(|(_, f)| f.0 == owner)
                    .map(|(&s, _)| s)
                    .collect();
                for &s in &seqs {
                    let (_, att, _) = self.model.in_flight.remove(&s).unwrap();
                    self.model.ready.push_back((s, att));
                }
                assert_eq!(self.ch.requeue_owner(owner), seqs.len());
            }
            Op::Reopen => self.reopen(),
            Op::Retain => {
                let lw = self.ch.low_water();
                assert_eq!(lw, self.model.low_water());
                self.log().retain_from(lw).unwrap();
                assert!(self.log().first_seq() <= lw);
            }
            Op::Empty => {
                self.ch.empty(self.log.as_ref().unwrap());
                let m = &mut self.model;
                m.ready.clear();
                m.deferred.clear();
                m.in_flight.clear();
                m.cursor = m.next_seq;
            }
        }
        self.compare();
    }

    /// Snapshot, save metadata, close and reopen the log, restore from the loaded metadata.
    fn reopen(&mut self) {
        let meta = TopicMeta {
            paused: false,
            channels: vec![ChannelMeta {
                name: "ch".into(),
                paused: false,
                state: self.ch.snapshot(),
                ..ChannelMeta::default()
            }],
            ..TopicMeta::default()
        };
        let snapshot = if let Some(dir) = &self.dir {
            save_meta(dir.path(), &meta).unwrap();
            self.log = None; // close (unmaps, releases the lock)
            let (log, report) = TopicLog::open(dir.path(), log_opts()).unwrap();
            assert_eq!(report.corrupt_records_skipped, 0);
            assert_eq!(report.torn_tail_bytes, 0);
            self.log = Some(log);
            let loaded = load_meta(dir.path()).unwrap().unwrap();
            assert_eq!(loaded, meta);
            loaded.channels[0].state.clone()
        } else {
            meta.channels[0].state.clone()
        };
        self.ch = ChannelState::restore(snapshot, self.log.as_ref().unwrap());
        let m = &mut self.model;
        let mut ready: Vec<(u64, u16)> = m.ready.drain(..).collect();
        ready.extend(m.in_flight.iter().map(|(&s, f)| (s, f.1)));
        m.in_flight.clear();
        ready.sort_unstable();
        m.ready = ready.into();
        assert_eq!(self.log().next_seq(), self.model.next_seq);
    }

    fn compare(&self) {
        let log = self.log.as_ref().unwrap();
        let m = &self.model;
        assert_eq!(self.ch.in_flight_count(), m.in_flight.len());
        assert_eq!(self.ch.deferred_count(), m.deferred.len());
        assert_eq!(
            self.ch.depth(log),
            m.next_seq - m.cursor + m.ready.len() as u64
        );
        assert_eq!(self.ch.low_water(), m.low_water());
        assert_eq!(self.ch.next_wakeup(), m.next_wakeup());
        let has_ready = !m.ready.is_empty()
            || m.deferred.first().is_some_and(|d| d.0 <= self.now)
            || m.cursor < m.next_seq;
        assert_eq!(self.ch.has_ready(log, self.now), has_ready);
        assert_eq!(log.next_seq(), m.next_seq);
    }

    /// Everything not finished is still delivered eventually, with its body.
    fn drain(&mut self) {
        let far = i64::MAX / 4;
        self.ch.take_timed_out(far);
        let owed = self.model.owed();
        let mut got = BTreeSet::new();
        let log = self.log.as_ref().unwrap();
        while let Some(d) = self.ch.next(log, far, 1, far + 1).unwrap() {
            assert_eq!(&d.record.body[..], &self.model.bodies[&d.record.seq].0[..]);
            assert!(got.insert(d.record.seq), "{} delivered twice", d.record.seq);
            self.ch.finish(d.record.seq, 1).unwrap();
        }
        assert_eq!(got, owed);
        assert_eq!(self.ch.low_water(), self.model.next_seq);
    }
}

fn run(ops: &[Op], disk: bool) {
    let mut h = Harness::new(disk);
    for op in ops {
        h.apply(op);
    }
    h.reopen();
    h.compare();
    h.drain();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn disk_log_and_channel_match_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(&ops, true);
    }

    #[test]
    fn memory_log_and_channel_match_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(&ops, false);
    }
}
