//! What the rest of the broker knows about a connected client: identity from IDENTIFY, state and
//! counters. A connection task owns its socket; everyone else (its channel's timer, `/stats`)
//! sees only this shared, lock-light record.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;

/// Client states as NSQ reports them in `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    /// Connected, not subscribed.
    Init = 0,
    /// Gone (reported briefly while it is being removed).
    Disconnected = 1,
    /// Connected (NSQ's numbering; kept for completeness).
    Connected = 2,
    /// Subscribed to a channel.
    Subscribed = 3,
    /// Sent CLS: no new messages, FIN/REQ/TOUCH still allowed.
    Closing = 4,
}

/// Identity fields from IDENTIFY.
#[derive(Debug, Clone, Default)]
pub struct ClientIdentity {
    /// `client_id` (defaults to the remote IP, as nsqd does).
    pub client_id: String,
    /// `hostname` (defaults to the remote IP).
    pub hostname: String,
    /// `user_agent`.
    pub user_agent: String,
    /// `sample_rate` (0 = every message).
    pub sample_rate: i32,
    /// Effective msg_timeout in milliseconds.
    pub msg_timeout_ms: i64,
}

/// Shared record of one client connection.
#[derive(Debug)]
pub struct ClientInfo {
    /// Broker-unique id; owner of its in-flight messages.
    pub id: u64,
    /// Peer address.
    pub remote: SocketAddr,
    /// Unix seconds at connect.
    pub connect_ts: i64,
    identity: Mutex<ClientIdentity>,
    state: AtomicU8,
    /// RDY count last set by the client.
    pub ready_count: AtomicU64,
    /// Messages delivered and not yet FINed/REQed/timed out. Only changed under the channel lock.
    pub in_flight: AtomicU64,
    /// Messages sent to this client.
    pub message_count: AtomicU64,
    /// FINs.
    pub finish_count: AtomicU64,
    /// REQs.
    pub requeue_count: AtomicU64,
    /// Messages published by this client (PUB counts one, MPUB its batch size).
    pub pub_count: AtomicU64,
    /// True once the client published anything (it is then listed as a producer).
    pub is_producer: AtomicBool,
    /// Unix nanoseconds of the last command received.
    pub last_recv_ns: AtomicI64,
    /// Wakes the connection task when something outside it changed its credit (a timeout).
    pub wake: Notify,
    /// The connection upgraded to TLS.
    pub tls: AtomicBool,
    /// The connection uses snappy compression.
    pub snappy: AtomicBool,
    /// The connection uses DEFLATE compression.
    pub deflate: AtomicBool,
    /// Identity and identity URL the auth server gave (empty: not authenticated).
    auth_identity: Mutex<(String, String)>,
}

impl ClientInfo {
    /// A new client in state init.
    pub fn new(id: u64, remote: SocketAddr, connect_ts: i64) -> Self {
        let ip = remote.ip().to_string();
        ClientInfo {
            id,
            remote,
            connect_ts,
            identity: Mutex::new(ClientIdentity {
                client_id: ip.clone(),
                hostname: ip,
                ..ClientIdentity::default()
            }),
            state: AtomicU8::new(ClientState::Init as u8),
            ready_count: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            message_count: AtomicU64::new(0),
            finish_count: AtomicU64::new(0),
            requeue_count: AtomicU64::new(0),
            pub_count: AtomicU64::new(0),
            is_producer: AtomicBool::new(false),
            last_recv_ns: AtomicI64::new(0),
            wake: Notify::new(),
            tls: AtomicBool::new(false),
            snappy: AtomicBool::new(false),
            deflate: AtomicBool::new(false),
            auth_identity: Mutex::new((String::new(), String::new())),
        }
    }

    /// Records who AUTH says this client is.
    pub fn set_auth_identity(&self, identity: &str, url: &str) {
        *self
            .auth_identity
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = (identity.to_owned(), url.to_owned());
    }

    /// Current state.
    pub fn state(&self) -> ClientState {
        match self.state.load(Ordering::Acquire) {
            0 => ClientState::Init,
            1 => ClientState::Disconnected,
            2 => ClientState::Connected,
            3 => ClientState::Subscribed,
            _ => ClientState::Closing,
        }
    }

    /// Sets the state.
    pub fn set_state(&self, s: ClientState) {
        self.state.store(s as u8, Ordering::Release);
    }

    /// A copy of the identity.
    pub fn identity(&self) -> ClientIdentity {
        // Poison only means another thread panicked mid-update of plain strings: still usable.
        self.identity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the identity (IDENTIFY).
    pub fn set_identity(&self, id: ClientIdentity) {
        *self
            .identity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = id;
    }

    /// `/stats` view of this client, with NSQ's field names.
    pub fn stats(&self) -> ClientStats {
        let ident = self.identity();
        let auth = self
            .auth_identity
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        ClientStats {
            client_id: ident.client_id,
            hostname: ident.hostname,
            version: "V2".to_owned(),
            remote_address: self.remote.to_string(),
            state: self.state() as i64,
            ready_count: self.ready_count.load(Ordering::Relaxed),
            in_flight_count: self.in_flight.load(Ordering::Relaxed),
            message_count: self.message_count.load(Ordering::Relaxed),
            finish_count: self.finish_count.load(Ordering::Relaxed),
            requeue_count: self.requeue_count.load(Ordering::Relaxed),
            connect_ts: self.connect_ts,
            sample_rate: i64::from(ident.sample_rate),
            deflate: self.deflate.load(Ordering::Relaxed),
            snappy: self.snappy.load(Ordering::Relaxed),
            user_agent: ident.user_agent,
            tls: self.tls.load(Ordering::Relaxed),
            tls_version: String::new(),
            authed: !auth.0.is_empty(),
            auth_identity: auth.0,
            auth_identity_url: auth.1,
            msg_timeout: ident.msg_timeout_ms,
            pub_count: self.pub_count.load(Ordering::Relaxed),
        }
    }
}

/// One client in `/stats`.
pub use ferry_proto::stats::ClientStats;
