//! Replicated topics: one Raft group per topic, run by the `openraft` crate.
//!
//! - [`command`]: what a group's log holds besides Raft's own entries (publishes, channel ops)
//!   and what applying one answers;
//! - [`log_store`]: [`RaftLog`], the group's durable Raft log (CRC'd frames in files of their
//!   own, beside the topic's segments) and its vote;
//! - [`state_machine`]: [`StateMachine`], openraft's state machine over anything that
//!   implements [`Apply`] (brokerd's topic: the topic log and its channels);
//! - [`network`]: the HTTP transport, client ([`HttpNetwork`]) and server ([`router`]), over
//!   the broker's HTTP port, with postcard bodies;
//! - [`node_id`]: the data directory's random node id.
//!
//! ARCHITECTURE.md ("Replicated topics") explains the design: why the Raft log is not the topic
//! log, how message sequence numbers agree on every replica, and what is acknowledged when.
#![forbid(unsafe_code)]

pub mod command;
pub mod log_store;
pub mod network;
pub mod node_id;
pub mod state_machine;

use std::io::Cursor;
use std::time::Duration;

pub use command::{Admin, Applied, Batch, ChannelOp, Command};
pub use log_store::{RaftLog, SyncMode};
pub use network::{
    Groups, HttpNetwork, HttpNetworkFactory, ProposeError, propose_local, propose_remote, router,
};
pub use state_machine::{Apply, BoxFuture, Install, StateMachine, group_first_seq};

openraft::declare_raft_types!(
    /// The openraft type configuration of every Ferry group: node ids are `u64`, nodes are
    /// `BasicNode`s whose address is the broker's HTTP address.
    pub TypeConfig:
        D = Command,
        R = Applied,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A group's Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
/// Node id (random per data directory, see [`node_id`]).
pub type NodeId = u64;
/// A member's address book entry.
pub type Node = openraft::BasicNode;
/// One entry of a group's log.
pub type Entry = openraft::Entry<TypeConfig>;
/// Errors of storage calls.
pub type StorageError = openraft::StorageError<NodeId>;

/// Most entries one append RPC carries (each can be a whole MPUB).
pub const MAX_PAYLOAD_ENTRIES: u64 = 64;

/// Heartbeat interval of every group.
pub const HEARTBEAT: Duration = Duration::from_millis(150);
/// An election starts after this long without a heartbeat (randomised up to twice as much).
pub const ELECTION_TIMEOUT: Duration = Duration::from_millis(750);

/// The Raft settings of a Ferry group: heartbeats and election timeouts for a LAN, so a new
/// leader is in place within about 3 s of the old one's death (a follower refuses to vote
/// while its leader's lease, the longest election timeout, runs; measured 2.7-2.8 s on
/// loopback in `tests/group.rs`), and a snapshot every `snapshot_every` entries so the Raft
/// log can be purged (`None`: never) up to a quarter of that before the snapshot (a follower
/// a little behind catches up from the log, not by installing a snapshot).
pub fn raft_config(snapshot_every: Option<u64>) -> anyhow::Result<openraft::Config> {
    let election = ELECTION_TIMEOUT.as_millis() as u64;
    let config = openraft::Config {
        cluster_name: "ferry".to_string(),
        heartbeat_interval: HEARTBEAT.as_millis() as u64,
        election_timeout_min: election,
        election_timeout_max: election * 2,
        snapshot_policy: match snapshot_every {
            Some(n) => openraft::SnapshotPolicy::LogsSinceLast(n),
            None => openraft::SnapshotPolicy::Never,
        },
        max_in_snapshot_log_to_keep: snapshot_every.map_or(0, |n| n / 4),
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        ..Default::default()
    };
    Ok(config.validate()?)
}
