//! Why a benchmark run failed. Each variant names the broker address and what the tool was doing,
//! so the one-line message printed by `ferry` is enough to act on.

use std::io;
use std::time::Duration;

use ferry_proto::v2::FrameError;

/// A failed benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The TCP connection could not be opened.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The `--tcp-address`.
        addr: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The broker did not accept the TCP connection in time.
    #[error("cannot connect to {addr}: no answer within {timeout:?}")]
    ConnectTimeout {
        /// The `--tcp-address`.
        addr: String,
        /// How long the tool waited.
        timeout: Duration,
    },
    /// Reading or writing the connection failed.
    #[error("connection to {addr} failed while {during}")]
    Io {
        /// The `--tcp-address`.
        addr: String,
        /// What the tool was doing (`"publishing"`, `"consuming"`, ...).
        during: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The broker closed the connection without an error frame.
    #[error("{addr} closed the connection while {during}")]
    Closed {
        /// The `--tcp-address`.
        addr: String,
        /// What the tool was doing.
        during: &'static str,
    },
    /// The broker sent bytes that are not a V2 frame.
    #[error("{addr} sent an invalid frame while {during}")]
    Frame {
        /// The `--tcp-address`.
        addr: String,
        /// What the tool was doing.
        during: &'static str,
        /// The decoder's diagnosis.
        #[source]
        source: FrameError,
    },
    /// The broker answered with an error frame (`E_BAD_TOPIC ...`).
    #[error("{addr} sent an error while {during}: {error}")]
    Broker {
        /// The `--tcp-address`.
        addr: String,
        /// What the tool was doing.
        during: &'static str,
        /// The error frame's text, `"<CODE> <description>"`.
        error: String,
    },
    /// The broker sent a frame that makes no sense at this point.
    #[error("{addr} sent an unexpected {what} while {during}")]
    Unexpected {
        /// The `--tcp-address`.
        addr: String,
        /// What the tool was doing.
        during: &'static str,
        /// The frame, briefly.
        what: String,
    },
    /// The IDENTIFY response is neither `OK` nor the feature-negotiation JSON.
    #[error("{addr} sent an IDENTIFY response that is not valid JSON")]
    IdentifyResponse {
        /// The `--tcp-address`.
        addr: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The broker negotiated something this tool cannot do (AUTH, TLS, compression).
    #[error("{addr} requires {feature}, which `ferry bench` does not support")]
    Unsupported {
        /// The `--tcp-address`.
        addr: String,
        /// The feature.
        feature: &'static str,
    },
    /// `--rdy` is above the broker's `max_rdy_count`.
    #[error("--rdy {rdy} is above {addr}'s max_rdy_count of {max}")]
    RdyTooHigh {
        /// The `--tcp-address`.
        addr: String,
        /// The requested RDY count.
        rdy: u64,
        /// The broker's maximum.
        max: i64,
    },
    /// Published batches were not acknowledged after the run ended.
    #[error("{addr} did not acknowledge {outstanding} MPUB(s) within {grace:?} after the run")]
    AckTimeout {
        /// The `--tcp-address`.
        addr: String,
        /// MPUBs still waiting for their `OK`.
        outstanding: usize,
        /// How long the tool waited for them.
        grace: Duration,
    },
    /// `--size` × `--batch-size` does not fit an MPUB body.
    #[error(
        "an MPUB of {batch_size} messages of {size} bytes ({body} bytes) exceeds the protocol's \
         limit of {max} bytes"
    )]
    BatchTooLarge {
        /// `--size`.
        size: u32,
        /// `--batch-size`.
        batch_size: u32,
        /// The MPUB body size it needs.
        body: u64,
        /// The largest body the protocol can carry.
        max: u64,
    },
    /// A connection task panicked or was cancelled.
    #[error("a connection task failed")]
    Task(#[from] tokio::task::JoinError),
}
