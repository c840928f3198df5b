//! Ferry's wire formats: NSQ's broker protocol "  V2", the lookup protocol "  V1", message IDs,
//! topic and channel names, and the JSON bodies of IDENTIFY and AUTH.
//!
//! The crate is pure: no sockets, no async runtime, no I/O. Decoders look at the caller's
//! `BytesMut` and answer one of three things, and encoders append to a `BytesMut`:
//!
//! ```text
//!            ┌─▶ Ok(None)       need more bytes; nothing consumed
//! bytes ─────┼─▶ Ok(Some(cmd))  one command consumed (bodies are zero-copy slices)
//!            └─▶ Err(error)     invalid: NSQ's code and text, to send before closing
//! ```
//!
//! # Layout
//!
//! - [`error`]: [`ErrorCode`] (`E_INVALID`, ...) and [`ProtocolError`];
//! - [`id`]: [`MessageId`], 16 bytes on the wire, made from a log sequence number;
//! - [`names`]: the topic and channel name rule;
//! - [`identify`]: the JSON of IDENTIFY and AUTH;
//! - [`v2`]: client commands and broker frames of protocol V2;
//! - [`lookup`]: broker-to-lookupd commands and responses of protocol V1.
//!
//! Wire behaviour follows nsqd and nsqlookupd 1.3 (`nsqd/protocol_v2.go`,
//! `nsqlookupd/lookup_protocol_v1.go`), error texts included.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod error;
pub mod id;
pub mod identify;
pub mod lookup;
pub mod names;
pub mod stats;
pub mod v2;

mod json;
mod line;

pub use error::{ErrorCode, ProtocolError};
pub use id::MessageId;
