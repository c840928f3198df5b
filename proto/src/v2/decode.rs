//! Decoding client commands from a connection's read buffer.
//!
//! A command is a line, then for five commands a sized body:
//!
//! ```text
//! ┌──────────────── line ────────────────┐┌ i32 size ┐┌──── body ────┐
//! PUB orders\n                              00 00 00 05  h e l l o
//! ```
//!
//! Checks run as soon as the bytes they need are there, in nsqd's order, so a bad command is
//! refused before its body is waited for or buffered:
//!
//! 1. the line: command name, parameter count, names, numbers and IDs;
//! 2. the 4 size bytes: the declared size against [`DecodeLimits`];
//! 3. MPUB only, the first 4 body bytes: the message count;
//! 4. the whole body (MPUB only): every message's size, and that they exactly fill the body.
//!
//! Invariants: `Ok(None)` and `Err` leave the buffer untouched; `Ok(Some)` consumes exactly one
//! command; no size from the wire is trusted for an allocation; nothing panics on any input.
//! Range checks that need the broker's configuration or the client's state (RDY above
//! max-rdy-count, DPUB beyond max-req-timeout, SUB twice) are the broker's.

use std::ops::Range;

use bytes::{Buf, BytesMut};

use super::limits::{
    check_channel_name, check_message_count, check_message_size, check_mpub_body_size,
    check_mpub_message, check_topic_name,
};
use super::{Command, DecodeLimits};
use crate::error::{ErrorCode, ProtocolError};
use crate::id::MessageId;
use crate::line::{find_line_end, lossy, parse_base10, read_i32};

/// Decodes the command at the start of `src`.
///
/// `Ok(None)`: more bytes are needed and `src` is untouched. `Ok(Some(cmd))`: exactly that
/// command was consumed from `src`; bodies are zero-copy slices of the buffer, and an MPUB's
/// bodies are slices of one frozen buffer. `Err`: the input is invalid, with nsqd's code and text;
/// every decode error is fatal (send it, then close), and `src` is left as it was.
pub fn decode_command(
    src: &mut BytesMut,
    limits: &DecodeLimits,
) -> Result<Option<Command>, ProtocolError> {
    let Some(newline) = find_line_end(src)? else {
        return Ok(None);
    };
    let line = &src[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match parse_line(line)? {
        Head::Bare(command) => {
            src.advance(newline + 1);
            Ok(Some(command))
        }
        Head::Body(pending) => {
            let Some(layout) = body_layout(src, newline + 1, pending.kind, limits)? else {
                return Ok(None);
            };
            let (kind, topic, defer_ms) =
                (pending.kind, pending.topic.to_owned(), pending.defer_ms);
            src.advance(layout.start);
            let body = src.split_to(layout.len).freeze();
            let command = match kind {
                BodyKind::Identify => Command::Identify(body),
                BodyKind::Auth => Command::Auth(body),
                BodyKind::Pub => Command::Pub { topic, body },
                BodyKind::Dpub => Command::Dpub {
                    topic,
                    defer_ms,
                    body,
                },
                BodyKind::Mpub => Command::Mpub {
                    topic,
                    bodies: layout.spans.into_iter().map(|s| body.slice(s)).collect(),
                },
            };
            Ok(Some(command))
        }
    }
}

/// What a complete line says.
enum Head<'a> {
    /// A command without a body, complete.
    Bare(Command),
    /// A command whose body is still to be read.
    Body(Pending<'a>),
}

/// The commands that carry a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Identify,
    Auth,
    Pub,
    Mpub,
    Dpub,
}

impl BodyKind {
    fn name(self) -> &'static str {
        match self {
            BodyKind::Identify => "IDENTIFY",
            BodyKind::Auth => "AUTH",
            BodyKind::Pub => "PUB",
            BodyKind::Mpub => "MPUB",
            BodyKind::Dpub => "DPUB",
        }
    }
}

/// A parsed line waiting for its body.
struct Pending<'a> {
    kind: BodyKind,
    /// The topic, empty for IDENTIFY and AUTH.
    topic: &'a str,
    /// DPUB only.
    defer_ms: u64,
}

impl<'a> Pending<'a> {
    fn new(kind: BodyKind, topic: &'a str, defer_ms: u64) -> Self {
        Pending {
            kind,
            topic,
            defer_ms,
        }
    }
}

/// Where a complete body lies in the buffer.
struct Layout {
    /// Offset of the body's first byte.
    start: usize,
    /// Body length.
    len: usize,
    /// MPUB only: each message's bytes, relative to the body.
    spans: Vec<Range<usize>>,
}

fn invalid(message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::Invalid, message)
}

fn parse_line(line: &[u8]) -> Result<Head<'_>, ProtocolError> {
    let mut params = line.split(|&b| b == b' ');
    let name = params.next().unwrap_or_default();
    let first = params.next();
    let second = params.next();
    // Like nsqd, parameters beyond those a command uses are ignored.
    let head = match name {
        b"IDENTIFY" => Head::Body(Pending::new(BodyKind::Identify, "", 0)),
        b"AUTH" => {
            if first.is_some() {
                return Err(invalid("AUTH invalid number of parameters"));
            }
            Head::Body(Pending::new(BodyKind::Auth, "", 0))
        }
        b"SUB" => {
            let (Some(topic), Some(channel)) = (first, second) else {
                return Err(invalid("SUB insufficient number of parameters"));
            };
            let topic = topic_name(topic, "SUB")?;
            let channel = check_channel_name("SUB", channel)?;
            Head::Bare(Command::Sub {
                topic: topic.to_owned(),
                channel: channel.to_owned(),
            })
        }
        b"PUB" | b"MPUB" => {
            let (kind, cmd) = if name == b"PUB" {
                (BodyKind::Pub, "PUB")
            } else {
                (BodyKind::Mpub, "MPUB")
            };
            let Some(topic) = first else {
                return Err(invalid(format!("{cmd} insufficient number of parameters")));
            };
            Head::Body(Pending::new(kind, topic_name(topic, cmd)?, 0))
        }
        b"DPUB" => {
            let (Some(topic), Some(defer)) = (first, second) else {
                return Err(invalid("DPUB insufficient number of parameters"));
            };
            let topic = topic_name(topic, "DPUB")?;
            let defer_ms = parse_base10(defer)
                .ok_or_else(|| invalid(format!("DPUB could not parse timeout {}", lossy(defer))))?;
            Head::Body(Pending::new(BodyKind::Dpub, topic, defer_ms))
        }
        b"RDY" => {
            let count = match first {
                None => 1,
                Some(count) => parse_base10(count).ok_or_else(|| {
                    invalid(format!("RDY could not parse count {}", lossy(count)))
                })?,
            };
            Head::Bare(Command::Rdy(count))
        }
        b"FIN" | b"TOUCH" => {
            let Some(id) = first else {
                let cmd = if name == b"FIN" { "FIN" } else { "TOUCH" };
                return Err(invalid(format!("{cmd} insufficient number of params")));
            };
            let id = message_id(id)?;
            Head::Bare(if name == b"FIN" {
                Command::Fin(id)
            } else {
                Command::Touch(id)
            })
        }
        b"REQ" => {
            let (Some(id), Some(timeout)) = (first, second) else {
                return Err(invalid("REQ insufficient number of params"));
            };
            let id = message_id(id)?;
            let timeout_ms = parse_base10(timeout).ok_or_else(|| {
                invalid(format!("REQ could not parse timeout {}", lossy(timeout)))
            })?;
            Head::Bare(Command::Req { id, timeout_ms })
        }
        b"CLS" => Head::Bare(Command::Cls),
        b"NOP" => Head::Bare(Command::Nop),
        _ => return Err(invalid(format!("invalid command {}", lossy(name)))),
    };
    Ok(head)
}

fn topic_name<'a>(topic: &'a [u8], cmd: &str) -> Result<&'a str, ProtocolError> {
    check_topic_name(cmd, topic)
}

fn message_id(id: &[u8]) -> Result<MessageId, ProtocolError> {
    MessageId::from_bytes(id).ok_or_else(|| invalid("Invalid Message ID"))
}

/// Checks what can be checked of a body from the bytes present; `Some` once it is complete.
fn body_layout(
    src: &[u8],
    size_at: usize,
    kind: BodyKind,
    limits: &DecodeLimits,
) -> Result<Option<Layout>, ProtocolError> {
    let Some(size) = read_i32(src, size_at) else {
        return Ok(None);
    };
    let len = checked_body_len(kind, size, limits)?;
    let start = size_at + 4;
    if kind == BodyKind::Mpub
        && let Some(count) = read_i32(src, start)
    {
        check_count(count, limits)?;
    }
    let Some(body) = src.get(start..start.saturating_add(len)) else {
        return Ok(None);
    };
    let spans = if kind == BodyKind::Mpub {
        mpub_spans(body, limits)?
    } else {
        Vec::new()
    };
    Ok(Some(Layout { start, len, spans }))
}

/// The declared body size, if it is within the limits for `kind`.
fn checked_body_len(
    kind: BodyKind,
    size: i32,
    limits: &DecodeLimits,
) -> Result<usize, ProtocolError> {
    let cmd = kind.name();
    let size64 = i64::from(size);
    match kind {
        BodyKind::Pub | BodyKind::Dpub => check_message_size(cmd, size64, limits)?,
        BodyKind::Mpub => check_mpub_body_size(size64, limits)?,
        BodyKind::Identify | BodyKind::Auth => {
            let max = limits.max_body_size;
            let refusal = if size64 > i64::from(max) {
                format!("{cmd} body too big {size} > {max}")
            } else if size <= 0 {
                format!("{cmd} invalid body size {size}")
            } else {
                // Positive here, and a u32 always fits a usize on the targets Rust's std supports.
                return Ok(size.unsigned_abs() as usize);
            };
            return Err(ProtocolError::new(ErrorCode::BadBody, refusal));
        }
    }
    // Checked positive above.
    Ok(size.unsigned_abs() as usize)
}

fn check_count(count: i32, limits: &DecodeLimits) -> Result<usize, ProtocolError> {
    check_message_count(i64::from(count), limits)
}

/// Validates a complete MPUB body and returns where each message lies in it.
fn mpub_spans(body: &[u8], limits: &DecodeLimits) -> Result<Vec<Range<usize>>, ProtocolError> {
    let count = check_count(read_i32(body, 0).unwrap_or_default(), limits)?;
    let overrun = |i: usize| {
        ProtocolError::new(
            ErrorCode::BadBody,
            format!("MPUB message({i}) overruns body size {}", body.len()),
        )
    };
    // Bounded by the bytes present, never by the count from the wire alone.
    let mut spans = Vec::with_capacity(count.min(body.len().saturating_sub(4) / 5));
    let mut at = 4usize;
    for i in 0..count {
        let size = read_i32(body, at).ok_or_else(|| overrun(i))?;
        check_mpub_message(i, i64::from(size), limits)?;
        let start = at + 4;
        let end = usize::try_from(size)
            .ok()
            .and_then(|size| start.checked_add(size))
            .filter(|&end| end <= body.len())
            .ok_or_else(|| overrun(i))?;
        spans.push(start..end);
        at = end;
    }
    if at != body.len() {
        return Err(ProtocolError::new(
            ErrorCode::BadBody,
            format!(
                "MPUB body has {} bytes after {count} messages",
                body.len() - at
            ),
        ));
    }
    Ok(spans)
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
