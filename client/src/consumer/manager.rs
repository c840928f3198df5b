//! The manager task: sole owner of the consumer's [`RdyState`], and the only sender of RDY.
//!
//! ```text
//! supervisors ── Connected / Disconnected ──┐
//! messages ───── Signal (failures; anything  ├─▶ manager ── RDY n ──▶ connection writers
//!                while backing off)          │     ▲
//! Consumer ───── MaxInFlight ────────────────┘     └─ timers: backoff end, redistribution tick
//! ```
//!
//! After each step it publishes `RdyState::in_backoff` so that successes outside backoff (the
//! common case) never need to reach it. It ends when the consumer stops.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use ferry_proto::v2::Command;
use tokio::sync::mpsc;
use tracing::debug;

use super::Shared;
use super::broker::ConsumerConn;
use super::rdy::{ConnId, RdySettings, RdyState, Signal};

/// What the manager task is told.
#[derive(Debug)]
pub(super) enum Event {
    Connected(Arc<ConsumerConn>, u64),
    Disconnected(ConnId),
    Signal(ConnId, Signal),
    MaxInFlight(u64),
}

/// The manager task: sole owner of the RDY state.
pub(super) async fn manage(shared: Arc<Shared>, mut events: mpsc::UnboundedReceiver<Event>) {
    let config = &shared.config;
    let mut rdy = RdyState::new(
        RdySettings {
            max_in_flight: config.max_in_flight,
            backoff_multiplier: config.backoff_multiplier,
            max_backoff: config.max_backoff_duration,
            low_rdy_idle_timeout: config.low_rdy_idle_timeout,
            low_rdy_timeout: config.low_rdy_timeout,
        },
        rand::random(),
    );
    // Each connection, and its `received` count at the last redistribution tick.
    let mut conns: HashMap<ConnId, (Arc<ConsumerConn>, u64)> = HashMap::new();
    let period = config.rdy_redistribute_interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = rdy.next_deadline().map(tokio::time::Instant::from_std);
        let updates = tokio::select! {
            _ = shared.stop.cancelled() => return,
            event = events.recv() => {
                let Some(event) = event else { return };
                let now = Instant::now();
                match event {
                    Event::Connected(conn, max_rdy) => {
                        let id = conn.id;
                        conns.insert(id, (conn, 0));
                        rdy.add_conn(id, max_rdy, now)
                    }
                    Event::Disconnected(id) => {
                        conns.remove(&id);
                        rdy.remove_conn(id, now)
                    }
                    Event::Signal(id, signal) => rdy.signal(id, signal, now),
                    Event::MaxInFlight(n) => rdy.set_max_in_flight(n, now),
                }
            }
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                rdy.on_timer(Instant::now())
            }
            _ = tick.tick() => {
                let now = Instant::now();
                for (conn, seen) in conns.values_mut() {
                    let received = conn.received.load(Ordering::Relaxed);
                    if received != *seen {
                        *seen = received;
                        rdy.note_message(conn.id, now);
                    }
                }
                rdy.redistribute(now)
            }
        };
        shared.in_backoff.store(rdy.in_backoff(), Ordering::Release);
        for (id, count) in updates {
            if let Some((conn, _)) = conns.get(&id) {
                debug!(broker = %conn.sender.addr(), rdy = count, "RDY");
                // In order; a dead connection's error is reported by its supervisor.
                let _ = conn.sender.send(Command::Rdy(count)).await;
            }
        }
    }
}
