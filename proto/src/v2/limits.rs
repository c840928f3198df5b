//! The publish rules of protocol V2, with nsqd's codes and texts, as functions that both the V2
//! decoder and the broker's other publish paths (gRPC) call, so every way in refuses the same
//! input with the same error.
//!
//! ```text
//! PUB  topic body        name ─▶ message size
//! DPUB topic ms body     name ─▶ message size ─▶ defer (broker: needs --max-req-timeout)
//! MPUB topic [n][msgs]   name ─▶ body size ─▶ count ─▶ each message's size
//! ```
//!
//! [`check_publish`] applies the whole chain to a batch that arrived already split (a gRPC
//! `Publish`), naming it after the V2 command it amounts to.

use super::DecodeLimits;
use crate::error::{ErrorCode, ProtocolError};
use crate::line::go_quote;
use crate::names::is_valid_name;

/// The V2 publish command a batch amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishKind {
    /// One message, delivered at once.
    Pub,
    /// Several messages (atomic).
    Mpub,
    /// One message with a delay.
    Dpub,
}

impl PublishKind {
    /// The kind for `count` messages deferred by `defer_ms`: several messages are an MPUB
    /// (deferred or not), one is a DPUB when deferred, else a PUB.
    pub fn for_batch(count: usize, defer_ms: u64) -> Self {
        match (count, defer_ms) {
            (1, 0) => PublishKind::Pub,
            (1, _) => PublishKind::Dpub,
            _ => PublishKind::Mpub,
        }
    }

    /// The command name, as error texts start with it.
    pub const fn name(self) -> &'static str {
        match self {
            PublishKind::Pub => "PUB",
            PublishKind::Mpub => "MPUB",
            PublishKind::Dpub => "DPUB",
        }
    }

    /// The code of a publish the broker could not carry out (`E_PUB_FAILED`...).
    pub const fn failed_code(self) -> ErrorCode {
        match self {
            PublishKind::Pub => ErrorCode::PubFailed,
            PublishKind::Mpub => ErrorCode::MpubFailed,
            PublishKind::Dpub => ErrorCode::DpubFailed,
        }
    }
}

/// `name` as a `&str` if it is a valid topic name, else `E_BAD_TOPIC` in `cmd`'s words.
pub fn check_topic_name<'a>(cmd: &str, name: &'a [u8]) -> Result<&'a str, ProtocolError> {
    valid_name(name).ok_or_else(|| {
        // (nsqd 1.3 repeats the code inside MPUB's text, a typo we do not copy.)
        ProtocolError::new(
            ErrorCode::BadTopic,
            format!("{cmd} topic name {} is not valid", go_quote(name)),
        )
    })
}

/// `name` as a `&str` if it is a valid channel name, else `E_BAD_CHANNEL` in `cmd`'s words.
pub fn check_channel_name<'a>(cmd: &str, name: &'a [u8]) -> Result<&'a str, ProtocolError> {
    valid_name(name).ok_or_else(|| {
        ProtocolError::new(
            ErrorCode::BadChannel,
            format!("{cmd} channel name {} is not valid", go_quote(name)),
        )
    })
}

/// `name` as a `&str` if it is a valid topic or channel name (valid names are ASCII).
pub(crate) fn valid_name(name: &[u8]) -> Option<&str> {
    if is_valid_name(name) {
        std::str::from_utf8(name).ok()
    } else {
        None
    }
}

/// The size of a PUB or DPUB body: 1 to `max_msg_size`, else `E_BAD_MESSAGE`.
pub fn check_message_size(
    cmd: &str,
    size: i64,
    limits: &DecodeLimits,
) -> Result<(), ProtocolError> {
    let max = limits.max_msg_size;
    let refusal = if size <= 0 {
        format!("{cmd} invalid message body size {size}")
    } else if size > i64::from(max) {
        format!("{cmd} message too big {size} > {max}")
    } else {
        return Ok(());
    };
    Err(ProtocolError::new(ErrorCode::BadMessage, refusal))
}

/// The declared size of a whole MPUB body: 4 (the count) to `max_body_size`, else
/// `E_BAD_BODY`.
pub fn check_mpub_body_size(size: i64, limits: &DecodeLimits) -> Result<(), ProtocolError> {
    let max = limits.max_body_size;
    let refusal = if size <= 0 {
        format!("MPUB invalid body size {size}")
    } else if size > i64::from(max) {
        format!("MPUB body too big {size} > {max}")
    } else if size < 4 {
        "MPUB failed to read message count".to_owned()
    } else {
        return Ok(());
    };
    Err(ProtocolError::new(ErrorCode::BadBody, refusal))
}

/// An MPUB's message count: 1 to (max_body_size - 4) / 5 (the smallest message takes 5 bytes
/// after the 4-byte count), else `E_BAD_BODY`.
pub fn check_message_count(count: i64, limits: &DecodeLimits) -> Result<usize, ProtocolError> {
    let max = (i64::from(limits.max_body_size) - 4) / 5;
    match usize::try_from(count) {
        Ok(n) if n > 0 && count <= max => Ok(n),
        _ => Err(ProtocolError::new(
            ErrorCode::BadBody,
            format!("MPUB invalid message count {count}"),
        )),
    }
}

/// The size of message `index` of an MPUB: 1 to `max_msg_size`, else `E_BAD_MESSAGE`.
pub fn check_mpub_message(
    index: usize,
    size: i64,
    limits: &DecodeLimits,
) -> Result<(), ProtocolError> {
    let refusal = if size <= 0 {
        format!("MPUB invalid message({index}) body size {size}")
    } else if size > i64::from(limits.max_msg_size) {
        format!("MPUB message too big {size} > {}", limits.max_msg_size)
    } else {
        return Ok(());
    };
    Err(ProtocolError::new(ErrorCode::BadMessage, refusal))
}

/// A publish delay: 0 to `max_ms` (nsqd's `--max-req-timeout`), else `E_INVALID`.
pub fn check_defer(cmd: &str, defer_ms: u64, max_ms: u64) -> Result<(), ProtocolError> {
    if defer_ms > max_ms {
        return Err(ProtocolError::new(
            ErrorCode::Invalid,
            format!("{cmd} timeout {defer_ms} out of range 0-{max_ms}"),
        ));
    }
    Ok(())
}

/// A credit (RDY count): 0 to `max` (nsqd's `--max-rdy-count`), else `E_INVALID`.
pub fn check_rdy_count(count: u64, max: u64) -> Result<(), ProtocolError> {
    if count > max {
        return Err(ProtocolError::new(
            ErrorCode::Invalid,
            format!("RDY count {count} out of range 0-{max}"),
        ));
    }
    Ok(())
}

/// Checks a batch that arrived already split into messages against every rule its V2
/// command would meet (see the module doc), in nsqd's order. The size of a batch is what MPUB
/// would send for it: 4 + the sum of (4 + size).
pub fn check_publish<B: AsRef<[u8]>>(
    topic: &str,
    bodies: &[B],
    defer_ms: u64,
    max_defer_ms: u64,
    limits: &DecodeLimits,
) -> Result<PublishKind, ProtocolError> {
    let kind = PublishKind::for_batch(bodies.len(), defer_ms);
    let cmd = kind.name();
    check_topic_name(cmd, topic.as_bytes())?;
    match kind {
        PublishKind::Pub | PublishKind::Dpub => {
            check_message_size(cmd, len_i64(bodies[0].as_ref()), limits)?;
        }
        PublishKind::Mpub => {
            let body_size = bodies.iter().fold(4i64, |acc, b| {
                acc.saturating_add(4).saturating_add(len_i64(b.as_ref()))
            });
            check_mpub_body_size(body_size, limits)?;
            check_message_count(len_i64(bodies), limits)?;
            for (i, b) in bodies.iter().enumerate() {
                check_mpub_message(i, len_i64(b.as_ref()), limits)?;
            }
        }
    }
    check_defer(cmd, defer_ms, max_defer_ms)?;
    Ok(kind)
}

fn len_i64<T>(s: &[T]) -> i64 {
    i64::try_from(s.len()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> DecodeLimits {
        DecodeLimits {
            max_msg_size: 10,
            max_body_size: 40,
        }
    }

    fn code(r: Result<PublishKind, ProtocolError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn single_messages_are_pub_or_dpub() {
        let l = limits();
        assert_eq!(
            check_publish("t", &[b"x"], 0, 100, &l),
            Ok(PublishKind::Pub)
        );
        assert_eq!(
            check_publish("t", &[b"x"], 100, 100, &l),
            Ok(PublishKind::Dpub)
        );
        assert_eq!(
            code(check_publish("t", &[b""], 0, 100, &l)),
            "E_BAD_MESSAGE PUB invalid message body size 0"
        );
        assert_eq!(
            code(check_publish("t", &[[0u8; 11]], 0, 100, &l)),
            "E_BAD_MESSAGE PUB message too big 11 > 10"
        );
        assert_eq!(
            code(check_publish("t", &[b"x"], 101, 100, &l)),
            "E_INVALID DPUB timeout 101 out of range 0-100"
        );
        assert_eq!(
            code(check_publish("a b", &[b"x"], 0, 100, &l)),
            "E_BAD_TOPIC PUB topic name \"a b\" is not valid"
        );
    }

    #[test]
    fn batches_are_checked_as_mpub() {
        let l = limits();
        let none: [&[u8]; 0] = [];
        assert_eq!(
            code(check_publish("t", &none, 0, 100, &l)),
            "E_BAD_BODY MPUB invalid message count 0"
        );
        assert_eq!(
            check_publish("t", &[b"a", b"b"], 0, 100, &l),
            Ok(PublishKind::Mpub)
        );
        // 4 + 4 * (4 + 5) = 40 fits; one more byte does not.
        let four = [[1u8; 5]; 4];
        assert_eq!(check_publish("t", &four, 0, 100, &l), Ok(PublishKind::Mpub));
        let mut big: Vec<Vec<u8>> = four.iter().map(|b| b.to_vec()).collect();
        big[3].push(1);
        assert_eq!(
            code(check_publish("t", &big, 0, 100, &l)),
            "E_BAD_BODY MPUB body too big 41 > 40"
        );
        assert_eq!(
            code(check_publish("t", &[&b"a"[..], b""], 0, 100, &l)),
            "E_BAD_MESSAGE MPUB invalid message(1) body size 0"
        );
        assert_eq!(
            code(check_publish("t", &[&b"a"[..], &[0u8; 11]], 0, 0, &l)),
            "E_BAD_MESSAGE MPUB message too big 11 > 10"
        );
        assert_eq!(
            code(check_publish("t", &[b"a", b"b"], 5, 1, &l)),
            "E_INVALID MPUB timeout 5 out of range 0-1"
        );
    }

    #[test]
    fn names_are_quoted_like_go() {
        assert_eq!(
            check_channel_name("SUB", b"a\nb").unwrap_err().to_string(),
            "E_BAD_CHANNEL SUB channel name \"a\\nb\" is not valid"
        );
        assert_eq!(check_topic_name("SUB", b"ok#ephemeral"), Ok("ok#ephemeral"));
    }
}
