//! What Ferry's integration tests share (a dev-dependency of every daemon and library crate):
//!
//! - [`broker`] (feature `brokerd`): a `ferry-brokerd` server in this process on 127.0.0.1
//!   port 0, in a temp dir or a given dir, restartable on the same dir;
//! - [`lookupd`] (feature `lookupd`): the same for `ferry-lookupd`;
//! - [`process`]: the `brokerd` / `lookupd` binaries as child processes, their listening
//!   addresses read from their logs;
//! - [`wait`]: [`eventually`], the one condition-with-deadline loop, and its sync variants;
//! - [`http`]: one HTTP request (reqwest) answered as status + headers + body, with JSON, and
//!   brokerd's `/stats` typed as [`ferry_proto::stats::Stats`] ([`http::get_stats`],
//!   [`Reply::stats`]);
//! - [`conn`]: [`TestConn`], a raw protocol V2 connection built on `ferry-proto`.
//!
//! Every wait is bounded by [`DEADLINE`]; nothing listens on a fixed port. The features
//! `brokerd` and `lookupd` choose which daemons a crate's tests start in process (lookupd's
//! own tests need no broker built).
#![forbid(unsafe_code)]

#[cfg(feature = "brokerd")]
pub mod broker;
pub mod conn;
pub mod http;
#[cfg(feature = "lookupd")]
pub mod lookupd;
pub mod process;
pub mod wait;

use std::time::Duration;

#[cfg(feature = "brokerd")]
pub use broker::TestBroker;
pub use conn::TestConn;
pub use http::{Reply, get_json};
#[cfg(feature = "lookupd")]
pub use lookupd::TestLookupd;
pub use process::{DaemonProcess, spawn_brokerd, spawn_lookupd};
pub use wait::{eventually, eventually_blocking, wait_until};

/// Longest any single expected event (a condition, a frame, a reply, a stop) may take before a
/// test fails. Generous: only a failing test waits this long.
pub const DEADLINE: Duration = Duration::from_secs(20);
