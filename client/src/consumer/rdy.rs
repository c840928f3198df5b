//! The RDY and backoff state machine of a consumer: pure, no I/O, no clock (the caller passes
//! `now`), so it is unit-tested step by step.
//!
//! RDY is a window: a broker sends a connection messages while `in_flight < RDY`. The consumer
//! shares `max_in_flight` among its connections and pauses them all when handlers fail
//! (go-nsq's `consumer.go`, translated):
//!
//! ```text
//!              failure                          timer expires
//!   Normal ─────────────▶ Paused(level, until) ───────────────▶ Testing(level)
//!  (RDY per conn)          (every RDY 0)                        (one random conn RDY 1)
//!     ▲                        ▲                                   │
//!     │ success at level 1     │ failure: level+1 (capped)          │
//!     │                        │ success: level-1 (still > 0)       │
//!     └────────────────────────┴─── neutral: same level ────────────┘
//! ```
//!
//! - RDY per connection = `max(1, max_in_flight / connections)`, capped by the broker's
//!   `max_rdy_count` and by what is left of `max_in_flight`: the total never exceeds
//!   `max_in_flight`, so with more connections than `max_in_flight` some get 0, and
//!   [`RdyState::redistribute`] moves the 1s around every `rdy_redistribute_interval`: a
//!   connection that received nothing for `low_rdy_idle_timeout`, or held RDY for
//!   `low_rdy_timeout`, gives it up to a random one that has none.
//! - Backoff level `n` pauses for `backoff_multiplier × 2ⁿ`, capped at `max_backoff_duration`;
//!   the level only rises while the next pause would not exceed that cap (so a zero cap
//!   disables backoff). Outcomes reported while paused are ignored: they belong to messages
//!   delivered before the pause.
//!
//! Every method returns the RDY changes to send, `(connection, count)`, only for connections
//! whose count changed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A connection's number within its consumer.
pub(crate) type ConnId = u64;

/// What a message's handling says about the consumer's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Finished: lowers the backoff level.
    Success,
    /// Requeued (with backoff) or given up: raises it.
    Failure,
    /// Requeued without backoff, or dropped: no information.
    Neutral,
}

/// The settings the state machine needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RdySettings {
    pub(crate) max_in_flight: u64,
    pub(crate) backoff_multiplier: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) low_rdy_idle_timeout: Duration,
    pub(crate) low_rdy_timeout: Duration,
}

#[derive(Debug, Clone)]
struct ConnRdy {
    rdy: u64,
    max_rdy: u64,
    /// When `rdy` last changed.
    rdy_since: Instant,
    /// When the last message arrived, if one has.
    last_message: Option<Instant>,
}

/// RDY counts of every connection, and the backoff state.
#[derive(Debug)]
pub(crate) struct RdyState {
    settings: RdySettings,
    /// Ordered, so that tests are deterministic.
    conns: BTreeMap<ConnId, ConnRdy>,
    /// Backoff level; 0 = not backing off.
    level: u32,
    /// While paused: when the pause ends.
    paused_until: Option<Instant>,
    /// xorshift64* state, to pick connections at random.
    rng: u64,
}

/// RDY changes to send: `(connection, new count)`.
pub(crate) type Updates = Vec<(ConnId, u64)>;

impl RdyState {
    pub(crate) fn new(settings: RdySettings, seed: u64) -> RdyState {
        RdyState {
            settings,
            conns: BTreeMap::new(),
            level: 0,
            paused_until: None,
            rng: seed | 1,
        }
    }

    /// Whether failures have paused or throttled consumption.
    pub(crate) fn in_backoff(&self) -> bool {
        self.level > 0 || self.paused_until.is_some()
    }

    /// The current backoff level.
    #[cfg(test)]
    pub(crate) fn level(&self) -> u32 {
        self.level
    }

    /// When [`RdyState::on_timer`] must be called next, if ever.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.paused_until
    }

    /// The sum of every connection's RDY.
    pub(crate) fn total_rdy(&self) -> u64 {
        self.conns.values().map(|c| c.rdy).sum()
    }

    /// A connection's RDY, if it exists.
    #[cfg(test)]
    pub(crate) fn rdy(&self, id: ConnId) -> Option<u64> {
        self.conns.get(&id).map(|c| c.rdy)
    }

    /// A new subscribed connection (RDY 0 on the broker) that accepts at most `max_rdy`.
    pub(crate) fn add_conn(&mut self, id: ConnId, max_rdy: u64, now: Instant) -> Updates {
        self.conns.insert(
            id,
            ConnRdy {
                rdy: 0,
                max_rdy,
                rdy_since: now,
                last_message: None,
            },
        );
        let mut out = Updates::new();
        if !self.in_backoff() {
            self.rebalance(now, &mut out);
        } else if self.paused_until.is_none() && self.total_rdy() == 0 {
            self.set(id, 1, now, &mut out);
        }
        out
    }

    /// A connection closed.
    pub(crate) fn remove_conn(&mut self, id: ConnId, now: Instant) -> Updates {
        let mut out = Updates::new();
        let Some(gone) = self.conns.remove(&id) else {
            return out;
        };
        if !self.in_backoff() {
            self.rebalance(now, &mut out);
        } else if self.paused_until.is_none() && gone.rdy > 0 {
            // It was the one testing the waters: let another do it.
            if let Some(other) = self.pick(|_| true) {
                self.set(other, 1, now, &mut out);
            }
        }
        out
    }

    /// Records a message's arrival on `id` (for redistribution).
    pub(crate) fn note_message(&mut self, id: ConnId, at: Instant) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.last_message = Some(conn.last_message.map_or(at, |t| t.max(at)));
        }
    }

    /// Changes `max_in_flight` (go-nsq's `ChangeMaxInFlight`).
    pub(crate) fn set_max_in_flight(&mut self, max_in_flight: u64, now: Instant) -> Updates {
        self.settings.max_in_flight = max_in_flight;
        let mut out = Updates::new();
        if !self.in_backoff() {
            self.rebalance(now, &mut out);
        }
        out
    }

    /// The outcome of one message handled on connection `_id`.
    pub(crate) fn signal(&mut self, _id: ConnId, signal: Signal, now: Instant) -> Updates {
        let mut out = Updates::new();
        if self.paused_until.is_some() {
            return out;
        }
        let mut changed = false;
        match signal {
            Signal::Success if self.level > 0 => {
                self.level -= 1;
                changed = true;
            }
            Signal::Failure if self.pause_for(self.level + 1) <= self.settings.max_backoff => {
                self.level += 1;
                changed = true;
            }
            _ => {}
        }
        if self.level == 0 {
            if changed {
                // Backoff is over: every connection back to its share.
                self.rebalance(now, &mut out);
            }
        } else {
            let pause = self.pause_for(self.level).min(self.settings.max_backoff);
            self.paused_until = Some(now + pause);
            let ids: Vec<ConnId> = self.conns.keys().copied().collect();
            for id in ids {
                self.set(id, 0, now, &mut out);
            }
        }
        out
    }

    /// Ends a pause that is due: one random connection gets RDY 1 to test the waters.
    pub(crate) fn on_timer(&mut self, now: Instant) -> Updates {
        let mut out = Updates::new();
        match self.paused_until {
            Some(until) if until <= now => {
                self.paused_until = None;
                if let Some(id) = self.pick(|_| true) {
                    self.set(id, 1, now, &mut out);
                }
            }
            _ => {}
        }
        out
    }

    /// Moves RDY between connections when they cannot all have some (more connections than
    /// `max_in_flight`, or backing off with several connections). Call it periodically.
    pub(crate) fn redistribute(&mut self, now: Instant) -> Updates {
        let mut out = Updates::new();
        let count = self.conns.len() as u64;
        let needed = count > self.settings.max_in_flight || (self.level > 0 && count > 1);
        if self.paused_until.is_some() || !needed {
            return out;
        }
        let RdySettings {
            low_rdy_idle_timeout,
            low_rdy_timeout,
            ..
        } = self.settings;
        let before: Vec<(ConnId, u64)> = self.conns.iter().map(|(&id, c)| (id, c.rdy)).collect();
        let mut freed = Vec::new();
        for (&id, conn) in &mut self.conns {
            if conn.rdy == 0 {
                continue;
            }
            let active_since = conn
                .last_message
                .map_or(conn.rdy_since, |t| t.max(conn.rdy_since));
            if now.saturating_duration_since(active_since) > low_rdy_idle_timeout
                || now.saturating_duration_since(conn.rdy_since) > low_rdy_timeout
            {
                conn.rdy = 0;
                conn.rdy_since = now;
                freed.push(id);
            }
        }
        let budget = if self.level > 0 {
            1
        } else {
            self.settings.max_in_flight
        };
        let mut available = budget.saturating_sub(self.total_rdy());
        while available > 0 {
            // Prefer connections that did not just give RDY up.
            let pick = self
                .pick(|(id, c)| c.rdy == 0 && !freed.contains(id))
                .or_else(|| self.pick(|(_, c)| c.rdy == 0));
            let Some(id) = pick else { break };
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.rdy = 1;
                conn.rdy_since = now;
            }
            available -= 1;
        }
        // Only the connections whose count changed need a command.
        for (id, old) in before {
            if let Some(conn) = self.conns.get(&id)
                && conn.rdy != old
            {
                out.push((id, conn.rdy));
            }
        }
        out
    }

    /// Sets every connection to its share of `max_in_flight`, without exceeding it in total.
    fn rebalance(&mut self, now: Instant, out: &mut Updates) {
        let share = self.share();
        let mif = self.settings.max_in_flight;
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        // Lower first, so that the budget for raising is known.
        for &id in &ids {
            let want = share.min(self.conns[&id].max_rdy);
            if self.conns[&id].rdy > want {
                self.set(id, want, now, out);
            }
        }
        let mut budget = mif.saturating_sub(self.total_rdy());
        for &id in &ids {
            let conn = &self.conns[&id];
            let want = share.min(conn.max_rdy);
            if conn.rdy < want && budget > 0 {
                let rdy = want.min(conn.rdy + budget);
                budget -= rdy - conn.rdy;
                self.set(id, rdy, now, out);
            }
        }
    }

    /// `max(1, max_in_flight / connections)`, and 0 when `max_in_flight` is 0.
    fn share(&self) -> u64 {
        let count = self.conns.len() as u64;
        if count == 0 {
            return 0;
        }
        let mif = self.settings.max_in_flight;
        (mif / count).max(1).min(mif)
    }

    /// The pause of backoff level `level`.
    fn pause_for(&self, level: u32) -> Duration {
        self.settings
            .backoff_multiplier
            .saturating_mul(2u32.saturating_pow(level))
    }

    fn set(&mut self, id: ConnId, rdy: u64, now: Instant, out: &mut Updates) {
        if let Some(conn) = self.conns.get_mut(&id)
            && conn.rdy != rdy
        {
            conn.rdy = rdy;
            conn.rdy_since = now;
            out.push((id, rdy));
        }
    }

    /// A random connection among those matching `filter`.
    fn pick(&mut self, filter: impl Fn((&ConnId, &ConnRdy)) -> bool) -> Option<ConnId> {
        let candidates: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|&entry| filter(entry))
            .map(|(&id, _)| id)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let index = (self.next_random() % candidates.len() as u64) as usize;
        Some(candidates[index])
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: plenty for spreading RDY.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_in_flight: u64) -> RdySettings {
        RdySettings {
            max_in_flight,
            backoff_multiplier: Duration::from_secs(1),
            max_backoff: Duration::from_secs(120),
            low_rdy_idle_timeout: Duration::from_secs(10),
            low_rdy_timeout: Duration::from_secs(30),
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn max_in_flight_is_shared_between_connections() {
        let t0 = Instant::now();
        let mut s = RdyState::new(settings(10), 1);
        assert_eq!(s.add_conn(1, 2500, t0), [(1, 10)]);
        // The first connection is lowered before the second is raised.
        assert_eq!(s.add_conn(2, 2500, t0), [(1, 5), (2, 5)]);
        assert_eq!(s.add_conn(3, 2500, t0), [(1, 3), (2, 3), (3, 3)]);
        assert_eq!(s.total_rdy(), 9);
        assert_eq!(s.remove_conn(2, t0), [(1, 5), (3, 5)]);
        assert_eq!(s.remove_conn(1, t0), [(3, 10)]);
        assert_eq!(s.remove_conn(3, t0), []);
        assert_eq!(s.total_rdy(), 0);
    }

    #[test]
    fn rdy_is_capped_by_the_broker_max() {
        let t0 = Instant::now();
        let mut s = RdyState::new(settings(5000), 1);
        assert_eq!(s.add_conn(1, 2500, t0), [(1, 2500)]);
        assert_eq!(s.add_conn(2, 100, t0), [(2, 100)]);
    }

    #[test]
    fn zero_max_in_flight_pauses_and_resumes() {
        let t0 = Instant::now();
        let mut s = RdyState::new(settings(0), 1);
        assert_eq!(s.add_conn(1, 2500, t0), []);
        assert_eq!(s.set_max_in_flight(4, t0), [(1, 4)]);
        assert_eq!(s.set_max_in_flight(0, t0), [(1, 0)]);
    }

    #[test]
    fn more_connections_than_max_in_flight_never_exceed_it() {
        let t0 = Instant::now();
        let mut s = RdyState::new(settings(2), 7);
        s.add_conn(1, 2500, t0);
        s.add_conn(2, 2500, t0);
        s.add_conn(3, 2500, t0);
        assert_eq!(s.total_rdy(), 2);
        assert_eq!(s.rdy(3), Some(0));
        // Busy connections keep their RDY.
        let t1 = t0 + secs(5);
        s.note_message(1, t1);
        s.note_message(2, t1);
        assert_eq!(s.redistribute(t1), []);
        // Connection 2 goes idle: its RDY moves to the one that had none.
        let t2 = t0 + secs(16);
        s.note_message(1, t2);
        let moved = s.redistribute(t2);
        assert_eq!(moved, [(2, 0), (3, 1)]);
        assert_eq!(s.total_rdy(), 2);
        // Holding RDY too long (even busy) passes it on too.
        let t3 = t0 + secs(31);
        s.note_message(1, t3);
        s.note_message(3, t3);
        let moved = s.redistribute(t3);
        assert_eq!(moved, [(1, 0), (2, 1)]);
        assert_eq!(s.total_rdy(), 2);
    }

    #[test]
    fn redistribution_is_idle_when_everyone_has_rdy() {
        let t0 = Instant::now();
        let mut s = RdyState::new(settings(10), 1);
        s.add_conn(1, 2500, t0);
        s.add_conn(2, 2500, t0);
        assert_eq!(s.redistribute(t0 + secs(100)), []);
    }

    #[test]
    fn a_failure_pauses_every_connection_then_one_tests_the_waters() {
        let t0 = Instant::now();
        let mut s = RdyState::new(settings(10), 3);
        s.add_conn(1, 2500, t0);
        s.add_conn(2, 2500, t0);
        assert_eq!(s.signal(1, Signal::Failure, t0), [(1, 0), (2, 0)]);
        assert!(s.in_backoff());
        assert_eq!(s.level(), 1);
        assert_eq!(s.next_deadline(), Some(t0 + secs(2)));
        // Outcomes of messages delivered before the pause are ignored.
        assert_eq!(s.signal(2, Signal::Failure, t0 + secs(1)), []);
        assert_eq!(s.signal(2, Signal::Success, t0 + secs(1)), []);
        assert_eq!(s.level(), 1);
        assert_eq!(s.on_timer(t0 + secs(1)), []);
        let test = s.on_timer(t0 + secs(2));
        assert_eq!(test.len(), 1);
        assert_eq!(test[0].1, 1);
        assert_eq!(s.next_deadline(), None);
        assert_eq!(s.total_rdy(), 1);
        // The test message succeeds: level 0, every connection back to its share.
        let back = s.signal(test[0].0, Signal::Success, t0 + secs(3));
        assert_eq!(s.level(), 0);
        assert!(!s.in_backoff());
        assert_eq!(s.rdy(1), Some(5));
        assert_eq!(s.rdy(2), Some(5));
        assert_eq!(back.len(), 2);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_unwinds_one_level_per_success() {
        let t0 = Instant::now();
        let mut s = RdyState::new(settings(1), 3);
        s.add_conn(1, 2500, t0);
        let mut now = t0;
        let mut pauses = Vec::new();
        for _ in 0..9 {
            s.signal(1, Signal::Failure, now);
            let until = s.next_deadline().unwrap();
            pauses.push((until - now).as_secs());
            now = until;
            assert_eq!(s.on_timer(now), [(1, 1)]);
        }
        // 2^7 s would exceed the 120 s cap: the level stops at 6.
        assert_eq!(pauses, [2, 4, 8, 16, 32, 64, 64, 64, 64]);
        assert_eq!(s.level(), 6);
        // A success lowers one level and pauses again, shorter.
        assert_eq!(s.signal(1, Signal::Success, now), [(1, 0)]);
        assert_eq!(s.level(), 5);
        assert_eq!(s.next_deadline(), Some(now + secs(32)));
        // A neutral outcome re-arms the same level.
        now += secs(32);
        s.on_timer(now);
        s.signal(1, Signal::Neutral, now);
        assert_eq!(s.level(), 5);
        assert_eq!(s.next_deadline(), Some(now + secs(32)));
    }

    #[test]
    fn zero_max_backoff_disables_backoff() {
        let t0 = Instant::now();
        let mut cfg = settings(4);
        cfg.max_backoff = Duration::ZERO;
        let mut s = RdyState::new(cfg, 1);
        s.add_conn(1, 2500, t0);
        assert_eq!(s.signal(1, Signal::Failure, t0), []);
        assert!(!s.in_backoff());
        assert_eq!(s.rdy(1), Some(4));
    }

    #[test]
    fn connections_come_and_go_during_backoff() {
        let t0 = Instant::now();
        let mut s = RdyState::new(settings(10), 5);
        s.add_conn(1, 2500, t0);
        s.signal(1, Signal::Failure, t0);
        // Paused: a new connection stays at 0.
        assert_eq!(s.add_conn(2, 2500, t0), []);
        let test = s.on_timer(t0 + secs(2));
        let tester = test[0].0;
        // Testing: a third connection stays at 0, only one has RDY 1.
        assert_eq!(s.add_conn(3, 2500, t0 + secs(2)), []);
        assert_eq!(s.total_rdy(), 1);
        // The tester leaves: another takes over.
        let next = s.remove_conn(tester, t0 + secs(3));
        assert_eq!(next.len(), 1);
        assert_ne!(next[0].0, tester);
        assert_eq!(s.total_rdy(), 1);
    }

    #[test]
    fn the_testing_rdy_moves_away_from_an_idle_connection() {
        let t0 = Instant::now();
        let mut s = RdyState::new(settings(10), 9);
        s.add_conn(1, 2500, t0);
        s.add_conn(2, 2500, t0);
        s.signal(1, Signal::Failure, t0);
        let tester = s.on_timer(t0 + secs(2))[0].0;
        let other = if tester == 1 { 2 } else { 1 };
        let moved = s.redistribute(t0 + secs(13));
        let rdy_of = |id| if id == tester { 0 } else { 1 };
        assert_eq!(moved, [(1, rdy_of(1)), (2, rdy_of(2))]);
        assert_eq!(s.rdy(other), Some(1));
        assert_eq!(s.total_rdy(), 1);
    }

    #[test]
    fn success_outside_backoff_changes_nothing() {
        let t0 = Instant::now();
        let mut s = RdyState::new(settings(10), 1);
        s.add_conn(1, 2500, t0);
        assert_eq!(s.signal(1, Signal::Success, t0), []);
        assert_eq!(s.signal(1, Signal::Neutral, t0), []);
        assert_eq!(s.rdy(1), Some(10));
    }
}
