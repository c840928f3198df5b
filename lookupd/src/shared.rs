//! State shared by every broker connection and HTTP handler: the registration database behind
//! one lock, and what this lookupd says about itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::VERSION;
use crate::config::Config;
use crate::db::{PeerId, RegistrationDb};

/// The daemon's shared state.
#[derive(Debug)]
pub struct Shared {
    /// The one lock. Every section is a few map operations on plain data and never spans an
    /// `.await` (closures passed to [`Shared::with_db`] are synchronous), so a std `Mutex` is
    /// cheaper than an async one and cannot be held across a suspension point.
    db: Mutex<RegistrationDb>,
    next_peer_id: AtomicU64,
    /// Bound TCP port (the config may say 0).
    pub tcp_port: u16,
    /// Bound HTTP port.
    pub http_port: u16,
    /// Address reported to brokers in the IDENTIFY reply.
    pub broadcast_address: String,
    /// This machine's host name.
    pub hostname: String,
    /// Cancelled when the daemon shuts down; every task watches it.
    pub(crate) cancel: CancellationToken,
    /// Every broker connection task, so that shutdown waits for them.
    pub(crate) tracker: TaskTracker,
    /// Broker connections accepted since start (for `/metrics`).
    pub connections_total: AtomicU64,
    /// Broker connections open now (for `/metrics`).
    pub open_connections: AtomicU64,
}

impl Shared {
    /// State for a daemon whose listeners are bound to `tcp_port` and `http_port`.
    pub fn new(config: &Config, tcp_port: u16, http_port: u16) -> Shared {
        Shared {
            db: Mutex::new(RegistrationDb::new(
                config.inactive_producer_timeout,
                config.tombstone_lifetime,
            )),
            next_peer_id: AtomicU64::new(1),
            tcp_port,
            http_port,
            broadcast_address: config.broadcast_address(),
            hostname: crate::config::hostname(),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            connections_total: AtomicU64::new(0),
            open_connections: AtomicU64::new(0),
        }
    }

    /// Runs `f` with the database locked. Keep `f` short: every broker and HTTP request waits on
    /// this lock.
    pub fn with_db<R>(&self, f: impl FnOnce(&mut RegistrationDb) -> R) -> R {
        // A panic in another section leaves plain maps behind, still consistent enough to serve.
        let mut db = self.db.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut db)
    }

    /// A fresh id for a broker connection.
    pub fn new_peer_id(&self) -> PeerId {
        self.next_peer_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The JSON a broker gets back from IDENTIFY (keys sorted, as Go marshals a map).
    pub fn identify_reply(&self) -> Vec<u8> {
        let reply = json!({
            "tcp_port": self.tcp_port,
            "http_port": self.http_port,
            "version": VERSION,
            "broadcast_address": self.broadcast_address,
            "hostname": self.hostname,
        });
        reply.to_string().into_bytes()
    }
}
