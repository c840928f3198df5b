//! What Ferry's integration tests share (a dev-dependency of every daemon and library crate):
//!
//! - [`broker`]: a `ferry-brokerd` [`Server`](ferry_brokerd::Server) in this process on
//!   127.0.0.1 port 0, in a temp dir or a given dir, restartable on the same dir;
//! - [`lookupd`]: the same for `ferry-lookupd`;
//! - [`process`]: the `brokerd` / `lookupd` binaries as child processes, their listening
//!   addresses read from their logs;
//! - [`wait`]: [`eventually`], the one condition-with-deadline loop, and its sync variants;
//! - [`http`]: one HTTP request (reqwest) answered as status + headers + body, with JSON;
//! - [`conn`]: [`TestConn`], a raw protocol V2 connection built on `ferry-proto`.
//!
//! Every wait is bounded by [`DEADLINE`]; nothing listens on a fixed port.
#![forbid(unsafe_code)]

pub mod broker;
pub mod conn;
pub mod http;
pub mod lookupd;
pub mod process;
pub mod wait;

use std::time::Duration;

pub use broker::{TestBroker, find_channel, find_topic};
pub use conn::TestConn;
pub use http::{Reply, get_json};
pub use lookupd::TestLookupd;
pub use process::{DaemonProcess, spawn_brokerd, spawn_lookupd};
pub use wait::{eventually, eventually_blocking, wait_until};

/// Longest any single expected event (a condition, a frame, a reply, a stop) may take before a
/// test fails. Generous: only a failing test waits this long.
pub const DEADLINE: Duration = Duration::from_secs(20);
