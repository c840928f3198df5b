//! The lookup protocol "  V1", spoken by brokers to a lookup daemon.
//!
//! ```text
//! broker                                               lookupd
//!   │── "  V1" (4-byte magic) ───────────────────────────▶│
//!   │── IDENTIFY\n[i32 size]{"tcp_port":4150,..} ────────▶│
//!   │◀──────────── [i32 size]{"tcp_port":4160,..} ────────│
//!   │── REGISTER <topic> [channel]\n ────────────────────▶│
//!   │◀──────────────────────────────── [i32 size]"OK" ────│
//!   │── UNREGISTER <topic> [channel]\n ──────────────────▶│
//!   │── PING\n ──────────────────────────────────────────▶│
//!   │◀─────────────────── [i32 size]"E_CODE description" ─│  errors are plain responses
//! ```
//!
//! Unlike V2, a response has no frame-type field: `[i32 size][data]` with `size = len(data)`, and
//! an error is a response whose data is `"E_CODE description"`. Every error is fatal. As in
//! nsqlookupd, a line is trimmed of surrounding whitespace before it is split on single spaces,
//! and an empty channel parameter means "no channel". Invariants of the decoders are those of
//! [`crate::v2::decode_command`]: `Ok(None)` and `Err` consume nothing.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, ProtocolError};
use crate::json::null_as_default;
use crate::line::{find_line_end, lossy, read_i32};
use crate::names::is_valid_name;
use crate::v2::FrameError;

pub use crate::line::MAX_LINE_LEN;

/// The 4 bytes a broker sends first to speak the lookup protocol.
pub const MAGIC: [u8; 4] = *b"  V1";

/// One command from a broker to a lookup daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupCommand {
    /// `IDENTIFY`: the raw JSON body (see [`PeerInfo`]).
    Identify(Bytes),
    /// `REGISTER <topic> [channel]`: the broker has this topic (and channel).
    Register {
        /// Topic (a valid name).
        topic: String,
        /// Channel (a valid name), if any.
        channel: Option<String>,
    },
    /// `UNREGISTER <topic> [channel]`: the broker no longer has this topic (or channel).
    Unregister {
        /// Topic (a valid name).
        topic: String,
        /// Channel (a valid name), if any.
        channel: Option<String>,
    },
    /// `PING`: the broker is alive.
    Ping,
}

impl LookupCommand {
    /// Appends the command's wire form to `dst`.
    ///
    /// A channel of `Some("")` is sent as no channel, which is how it decodes.
    ///
    /// # Panics
    ///
    /// If an IDENTIFY body is longer than `i32::MAX` bytes.
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            LookupCommand::Identify(body) => {
                dst.put_slice(b"IDENTIFY\n");
                put_sized(dst, body);
            }
            LookupCommand::Register { topic, channel } => {
                put_registration(dst, "REGISTER", topic, channel.as_deref());
            }
            LookupCommand::Unregister { topic, channel } => {
                put_registration(dst, "UNREGISTER", topic, channel.as_deref());
            }
            LookupCommand::Ping => dst.put_slice(b"PING\n"),
        }
    }
}

fn put_registration(dst: &mut BytesMut, name: &str, topic: &str, channel: Option<&str>) {
    dst.put_slice(name.as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(topic.as_bytes());
    if let Some(channel) = channel.filter(|c| !c.is_empty()) {
        dst.put_u8(b' ');
        dst.put_slice(channel.as_bytes());
    }
    dst.put_u8(b'\n');
}

fn put_sized(dst: &mut BytesMut, data: &[u8]) {
    let size = i32::try_from(data.len())
        .unwrap_or_else(|err| panic!("{} bytes do not fit a size field: {err}", data.len()));
    dst.reserve(4 + data.len());
    dst.put_i32(size);
    dst.put_slice(data);
}

/// Decodes the command at the start of `src`; an IDENTIFY body may be up to `max_body_size`.
///
/// `Ok(None)`: more bytes are needed and `src` is untouched. `Ok(Some)`: exactly one command was
/// consumed (an IDENTIFY body is a zero-copy slice). `Err`: invalid, with nsqlookupd's code and
/// text; `src` is untouched and the caller sends the error and closes.
pub fn decode_command(
    src: &mut BytesMut,
    max_body_size: u32,
) -> Result<Option<LookupCommand>, ProtocolError> {
    let Some(newline) = find_line_end(src)? else {
        return Ok(None);
    };
    let line = trim_space(&src[..newline]);
    let mut params = line.split(|&b| b == b' ');
    let name = params.next().unwrap_or_default();
    let command = match name {
        b"PING" => LookupCommand::Ping,
        b"REGISTER" => {
            let (topic, channel) = topic_channel("REGISTER", params.next(), params.next())?;
            LookupCommand::Register { topic, channel }
        }
        b"UNREGISTER" => {
            let (topic, channel) = topic_channel("UNREGISTER", params.next(), params.next())?;
            LookupCommand::Unregister { topic, channel }
        }
        b"IDENTIFY" => {
            let size_at = newline + 1;
            let Some(size) = read_i32(src, size_at) else {
                return Ok(None);
            };
            let len = identify_body_len(size, max_body_size)?;
            let start = size_at + 4;
            if src.len() - start < len {
                return Ok(None);
            }
            src.advance(start);
            return Ok(Some(LookupCommand::Identify(src.split_to(len).freeze())));
        }
        _ => {
            return Err(ProtocolError::new(
                ErrorCode::Invalid,
                format!("invalid command {}", lossy(name)),
            ));
        }
    };
    src.advance(newline + 1);
    Ok(Some(command))
}

/// Go's `strings.TrimSpace` for ASCII: drops leading and trailing `\t \n \v \f \r` and spaces.
fn trim_space(line: &[u8]) -> &[u8] {
    let is_space = |b: &u8| matches!(b, b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r' | b' ');
    let start = line.iter().position(|b| !is_space(b)).unwrap_or(line.len());
    let end = line
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    &line[start..end]
}

fn topic_channel(
    cmd: &str,
    topic: Option<&[u8]>,
    channel: Option<&[u8]>,
) -> Result<(String, Option<String>), ProtocolError> {
    let Some(topic) = topic else {
        return Err(ProtocolError::new(
            ErrorCode::Invalid,
            format!("{cmd} insufficient number of params"),
        ));
    };
    let topic = valid_name(topic).ok_or_else(|| {
        ProtocolError::new(
            ErrorCode::BadTopic,
            format!("{cmd} topic name '{}' is not valid", lossy(topic)),
        )
    })?;
    let channel = match channel.filter(|c| !c.is_empty()) {
        None => None,
        Some(channel) => Some(valid_name(channel).ok_or_else(|| {
            ProtocolError::new(
                ErrorCode::BadChannel,
                format!("{cmd} channel name '{}' is not valid", lossy(channel)),
            )
        })?),
    };
    Ok((topic, channel))
}

fn valid_name(name: &[u8]) -> Option<String> {
    if is_valid_name(name) {
        String::from_utf8(name.to_vec()).ok()
    } else {
        None
    }
}

/// nsqlookupd allocates whatever IDENTIFY size it is sent; Ferry bounds it as nsqd bounds its own
/// IDENTIFY, with nsqd's texts.
fn identify_body_len(size: i32, max_body_size: u32) -> Result<usize, ProtocolError> {
    if i64::from(size) > i64::from(max_body_size) {
        return Err(ProtocolError::new(
            ErrorCode::BadBody,
            format!("IDENTIFY body too big {size} > {max_body_size}"),
        ));
    }
    if size <= 0 {
        return Err(ProtocolError::new(
            ErrorCode::BadBody,
            format!("IDENTIFY invalid body size {size}"),
        ));
    }
    // Positive here, and a u32 always fits a usize on the targets Rust's std supports.
    Ok(size.unsigned_abs() as usize)
}

/// Appends a response: `[i32 size][data]`, no frame type.
///
/// # Panics
///
/// If `data` is longer than `i32::MAX` bytes.
pub fn encode_response(dst: &mut BytesMut, data: &[u8]) {
    put_sized(dst, data);
}

/// Appends an error: a response whose data is `"E_CODE message"`.
pub fn encode_error(dst: &mut BytesMut, err: &ProtocolError) {
    encode_response(dst, err.to_string().as_bytes());
}

/// Decodes the response at the start of `src` (broker side); its data may be up to `max_size`.
///
/// `Ok(None)`: more bytes are needed and `src` is untouched. `Ok(Some(data))`: one response was
/// consumed; an error is data starting with `E_` (see [`ProtocolError::from_wire`]).
pub fn decode_response(src: &mut BytesMut, max_size: usize) -> Result<Option<Bytes>, FrameError> {
    let Some(size) = read_i32(src, 0) else {
        return Ok(None);
    };
    let Ok(len) = usize::try_from(size) else {
        return Err(FrameError::BadSize(size));
    };
    if len > max_size {
        return Err(FrameError::TooLarge {
            size: len,
            max: max_size,
        });
    }
    if src.len() - 4 < len {
        return Ok(None);
    }
    src.advance(4);
    Ok(Some(src.split_to(len).freeze()))
}

/// A broker as it describes itself in IDENTIFY; the lookup daemon answers with the same fields
/// about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerInfo {
    /// TCP port (clients, protocol V2).
    #[serde(deserialize_with = "null_as_default")]
    pub tcp_port: u16,
    /// HTTP port.
    #[serde(deserialize_with = "null_as_default")]
    pub http_port: u16,
    /// Software version.
    #[serde(deserialize_with = "null_as_default")]
    pub version: String,
    /// Host name.
    #[serde(deserialize_with = "null_as_default")]
    pub hostname: String,
    /// Address clients should connect to.
    #[serde(deserialize_with = "null_as_default")]
    pub broadcast_address: String,
}

impl PeerInfo {
    /// Reads an IDENTIFY body (lenient like Go: unknown keys ignored, missing or `null` as zero).
    /// On error, answer with [`crate::identify::IdentifyRequest::bad_json_error`]'s error, the
    /// text nsqlookupd uses too.
    pub fn from_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The JSON body to send.
    pub fn to_json(&self) -> Vec<u8> {
        crate::identify::to_json(self)
    }

    /// nsqlookupd's check of a broker's IDENTIFY: broadcast address, both ports and version are
    /// required, else `E_BAD_BODY IDENTIFY missing fields`.
    pub fn check_required(&self) -> Result<(), ProtocolError> {
        if self.broadcast_address.is_empty()
            || self.tcp_port == 0
            || self.http_port == 0
            || self.version.is_empty()
        {
            return Err(ProtocolError::new(
                ErrorCode::BadBody,
                "IDENTIFY missing fields",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "lookup_tests.rs"]
mod tests;
