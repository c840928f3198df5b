//! The commands a client sends, and their exact wire format.
//!
//! ```text
//! IDENTIFY\n[i32 size][JSON]           SUB <topic> <channel>\n
//! AUTH\n[i32 size][secret]             RDY <count>\n
//! PUB <topic>\n[i32 size][body]        FIN <id>\n
//! DPUB <topic> <defer_ms>\n[i32 size][body]
//! MPUB <topic>\n[i32 size][i32 count]([i32 size][body])*count
//! REQ <id> <timeout_ms>\n              TOUCH <id>\n
//! CLS\n                                NOP\n
//! ```
//!
//! Sizes are big-endian. [`Command::encode`] writes what go-nsq writes, so that
//! `decode_command(encode(cmd)) == cmd` for every command a well-behaved client can send.

use bytes::{BufMut, Bytes, BytesMut};

use crate::id::MessageId;

/// One client command, with its body if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `IDENTIFY`: the raw JSON body (see [`crate::identify::IdentifyRequest`]).
    Identify(Bytes),
    /// `AUTH`: the raw secret.
    Auth(Bytes),
    /// `SUB <topic> <channel>`.
    Sub {
        /// Topic to subscribe to (a valid name).
        topic: String,
        /// Channel of that topic (a valid name).
        channel: String,
    },
    /// `PUB <topic>` and one message body.
    Pub {
        /// Topic to publish to (a valid name).
        topic: String,
        /// The message (1 to `max_msg_size` bytes).
        body: Bytes,
    },
    /// `MPUB <topic>` and a batch of message bodies, published atomically.
    Mpub {
        /// Topic to publish to (a valid name).
        topic: String,
        /// The messages, each 1 to `max_msg_size` bytes; never empty.
        bodies: Vec<Bytes>,
    },
    /// `DPUB <topic> <defer_ms>` and one message body, delivered after `defer_ms`.
    Dpub {
        /// Topic to publish to (a valid name).
        topic: String,
        /// Delay before delivery, in milliseconds (not yet checked against the broker's maximum).
        defer_ms: u64,
        /// The message (1 to `max_msg_size` bytes).
        body: Bytes,
    },
    /// `RDY <count>`: how many messages may be in flight to this client.
    Rdy(u64),
    /// `FIN <id>`: the message was processed.
    Fin(MessageId),
    /// `REQ <id> <timeout_ms>`: requeue the message, delivered again after `timeout_ms`.
    Req {
        /// The message.
        id: MessageId,
        /// Delay before redelivery, in milliseconds (the broker clamps it).
        timeout_ms: u64,
    },
    /// `TOUCH <id>`: reset the message's timeout.
    Touch(MessageId),
    /// `CLS`: stop delivering, the client is about to close.
    Cls,
    /// `NOP`: no operation (the answer to a heartbeat).
    Nop,
}

impl Command {
    /// The command's name on the wire, e.g. `"PUB"`.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Identify(_) => "IDENTIFY",
            Command::Auth(_) => "AUTH",
            Command::Sub { .. } => "SUB",
            Command::Pub { .. } => "PUB",
            Command::Mpub { .. } => "MPUB",
            Command::Dpub { .. } => "DPUB",
            Command::Rdy(_) => "RDY",
            Command::Fin(_) => "FIN",
            Command::Req { .. } => "REQ",
            Command::Touch(_) => "TOUCH",
            Command::Cls => "CLS",
            Command::Nop => "NOP",
        }
    }

    /// Appends the command's exact wire form to `dst`.
    ///
    /// The encoding is faithful for every value the decoder can produce; a message ID containing
    /// a space, `\r` or `\n` (never made by a broker) cannot be sent, in NSQ as here.
    ///
    /// # Panics
    ///
    /// If a body, or an MPUB batch, is longer than `i32::MAX` bytes, which no broker accepts.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_slice(self.name().as_bytes());
        match self {
            Command::Identify(body) | Command::Auth(body) => {
                dst.put_u8(b'\n');
                put_sized(dst, body);
            }
            Command::Sub { topic, channel } => {
                put_params(dst, &[topic.as_bytes(), channel.as_bytes()]);
            }
            Command::Pub { topic, body } => {
                put_params(dst, &[topic.as_bytes()]);
                put_sized(dst, body);
            }
            Command::Mpub { topic, bodies } => {
                put_params(dst, &[topic.as_bytes()]);
                let body_len = bodies
                    .iter()
                    .fold(4usize, |len, body| len.saturating_add(4 + body.len()));
                dst.reserve(body_len.saturating_add(4));
                dst.put_i32(wire_size(body_len));
                dst.put_i32(wire_size(bodies.len()));
                for body in bodies {
                    put_sized(dst, body);
                }
            }
            Command::Dpub {
                topic,
                defer_ms,
                body,
            } => {
                put_params(dst, &[topic.as_bytes(), defer_ms.to_string().as_bytes()]);
                put_sized(dst, body);
            }
            Command::Rdy(count) => put_params(dst, &[count.to_string().as_bytes()]),
            Command::Fin(id) | Command::Touch(id) => put_params(dst, &[id.as_bytes()]),
            Command::Req { id, timeout_ms } => {
                put_params(dst, &[id.as_bytes(), timeout_ms.to_string().as_bytes()]);
            }
            Command::Cls | Command::Nop => dst.put_u8(b'\n'),
        }
    }
}

/// Writes ` p1 p2 ...\n` after a command name.
fn put_params(dst: &mut BytesMut, params: &[&[u8]]) {
    for param in params {
        dst.put_u8(b' ');
        dst.put_slice(param);
    }
    dst.put_u8(b'\n');
}

/// Writes `[i32 size][data]`.
fn put_sized(dst: &mut BytesMut, data: &[u8]) {
    dst.reserve(4 + data.len());
    dst.put_i32(wire_size(data.len()));
    dst.put_slice(data);
}

/// A length as the wire's `i32`.
pub(crate) fn wire_size(len: usize) -> i32 {
    i32::try_from(len)
        .unwrap_or_else(|err| panic!("{len} bytes do not fit an NSQ size field: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(cmd: &Command) -> Vec<u8> {
        let mut dst = BytesMut::new();
        cmd.encode(&mut dst);
        dst.to_vec()
    }

    #[test]
    fn line_commands_match_go_nsq() {
        let id = MessageId::from_seq(0x1a);
        let cases: [(Command, &[u8]); 7] = [
            (
                Command::Sub {
                    topic: "t".into(),
                    channel: "c#ephemeral".into(),
                },
                b"SUB t c#ephemeral\n",
            ),
            (Command::Rdy(200), b"RDY 200\n"),
            (Command::Fin(id), b"FIN 000000000000001a\n"),
            (
                Command::Req { id, timeout_ms: 0 },
                b"REQ 000000000000001a 0\n",
            ),
            (Command::Touch(id), b"TOUCH 000000000000001a\n"),
            (Command::Cls, b"CLS\n"),
            (Command::Nop, b"NOP\n"),
        ];
        for (cmd, wire) in cases {
            assert_eq!(encoded(&cmd), wire, "{}", cmd.name());
        }
    }

    #[test]
    fn body_commands_carry_a_big_endian_size() {
        let pub_ = Command::Pub {
            topic: "t".into(),
            body: Bytes::from_static(b"hello"),
        };
        assert_eq!(encoded(&pub_), b"PUB t\n\x00\x00\x00\x05hello");
        let dpub = Command::Dpub {
            topic: "t".into(),
            defer_ms: 1500,
            body: Bytes::from_static(b"x"),
        };
        assert_eq!(encoded(&dpub), b"DPUB t 1500\n\x00\x00\x00\x01x");
        let identify = Command::Identify(Bytes::from_static(b"{}"));
        assert_eq!(encoded(&identify), b"IDENTIFY\n\x00\x00\x00\x02{}");
        let auth = Command::Auth(Bytes::from_static(b"s3"));
        assert_eq!(encoded(&auth), b"AUTH\n\x00\x00\x00\x02s3");
    }

    #[test]
    fn mpub_frames_each_message() {
        let mpub = Command::Mpub {
            topic: "t".into(),
            bodies: vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")],
        };
        let mut wire = b"MPUB t\n".to_vec();
        wire.extend_from_slice(&[0, 0, 0, 15]); // 4 (count) + 4 + 2 + 4 + 1
        wire.extend_from_slice(&[0, 0, 0, 2]);
        wire.extend_from_slice(b"\x00\x00\x00\x02ab\x00\x00\x00\x01c");
        assert_eq!(encoded(&mpub), wire);
    }

    #[test]
    fn names() {
        assert_eq!(Command::Identify(Bytes::new()).name(), "IDENTIFY");
        assert_eq!(Command::Auth(Bytes::new()).name(), "AUTH");
        assert_eq!(
            Command::Mpub {
                topic: String::new(),
                bodies: vec![]
            }
            .name(),
            "MPUB"
        );
        assert_eq!(Command::Rdy(1).name(), "RDY");
    }
}
