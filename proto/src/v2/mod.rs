//! NSQ's broker protocol "  V2": client commands and broker frames.
//!
//! ```text
//! client                                        broker
//!   │── "  V2" (4-byte magic) ───────────────────▶│
//!   │── IDENTIFY\n[size][json] ──────────────────▶│
//!   │◀───────────── [size][0]["OK" or json] ──────│  response frame
//!   │── SUB topic channel\n ─────────────────────▶│
//!   │── RDY 10\n ────────────────────────────────▶│
//!   │◀───── [size][2][ts][attempts][id][body] ────│  message frame
//!   │── FIN <id>\n ──────────────────────────────▶│
//!   │◀───────────── [size][1]["E_CODE text"] ─────│  error frame
//! ```
//!
//! - [`command`](Command): the commands and their encoding ([`Command::encode`]);
//! - [`decode_command`]: the broker's incremental, zero-copy command decoder;
//! - [`limits`]: the publish rules (names, sizes, defer) that the decoder and the broker's
//!   other publish paths share, and [`check_publish`] for a batch that arrived already split;
//! - frames: [`encode_response`], [`encode_error`], [`encode_message`] and
//!   [`message_frame_prefix`] for the broker, [`decode_frame`] for clients.

mod command;
mod decode;
mod frame;
pub mod limits;

pub use command::Command;
pub use decode::decode_command;
pub use frame::{
    CLOSE_WAIT, Frame, FrameError, FrameType, HEARTBEAT, MESSAGE_FRAME_PREFIX_LEN,
    MESSAGE_HEADER_LEN, Message, OK, decode_frame, encode_error, encode_frame, encode_message,
    encode_response, message_frame_prefix,
};
pub use limits::{PublishKind, check_publish};

pub use crate::line::MAX_LINE_LEN;

/// The 4 bytes a client sends first to speak protocol V2.
pub const MAGIC: [u8; 4] = *b"  V2";

/// Size limits the decoder enforces (nsqd's `--max-msg-size` and `--max-body-size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest message body (PUB, DPUB, each message of an MPUB), in bytes.
    pub max_msg_size: u32,
    /// Largest MPUB, IDENTIFY or AUTH body, in bytes.
    pub max_body_size: u32,
}

impl DecodeLimits {
    /// nsqd's default `--max-msg-size`: 1 MiB.
    pub const DEFAULT_MAX_MSG_SIZE: u32 = 1_048_576;
    /// nsqd's default `--max-body-size`: 5 MiB.
    pub const DEFAULT_MAX_BODY_SIZE: u32 = 5_242_880;
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_msg_size: Self::DEFAULT_MAX_MSG_SIZE,
            max_body_size: Self::DEFAULT_MAX_BODY_SIZE,
        }
    }
}
