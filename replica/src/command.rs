//! The application entries of a group's Raft log and what applying one answers.

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

/// One message of a publish, as the leader received it. The sequence number is not here: every
/// replica applies the same entries in the same order from the same first sequence, so each
/// gives the message the same one.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Publish time, ns since the Unix epoch (the leader's clock).
    pub timestamp_ns: i64,
    /// Earliest delivery time, ns since the Unix epoch; 0 means now (DPUB sets it).
    pub deliver_at_ns: i64,
    /// The body.
    #[serde(with = "serde_bytes_vec")]
    pub body: Vec<u8>,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("timestamp_ns", &self.timestamp_ns)
            .field("deliver_at_ns", &self.deliver_at_ns)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// A change of a channel's queue state made on the leader (its journal op), applied by every
/// replica so a new leader does not deliver again what was finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelOp {
    /// FIN of `seq`.
    Finish {
        /// The message.
        seq: u64,
    },
    /// REQ or timeout of `seq`: owed again with `attempts`, due at `deliver_at_ns`.
    Requeue {
        /// The message.
        seq: u64,
        /// Deliveries so far.
        attempts: u16,
        /// When it is due again (0 or a past time: now).
        deliver_at_ns: i64,
    },
    /// Channel empty: nothing owed, the cursor at `cursor`.
    Empty {
        /// The new cursor.
        cursor: u64,
    },
}

/// An application entry of a group's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// One PUB, MPUB, DPUB or HTTP publish: its messages get consecutive sequence numbers.
    Publish {
        /// The messages, in order.
        messages: Vec<Message>,
    },
    /// Channel ops of one channel since the previous such entry.
    Channels {
        /// The node that made them (the leader then): it does not apply them again.
        origin: u64,
        /// The channel's name.
        channel: String,
        /// The ops, in the order the leader made them.
        ops: Vec<ChannelOp>,
    },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Publish { messages } => write!(f, "publish({})", messages.len()),
            Command::Channels { channel, ops, .. } => {
                write!(f, "channels({channel}, {})", ops.len())
            }
        }
    }
}

/// What applying an entry answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// A Raft entry of its own (blank, membership), or channel ops.
    #[default]
    Nothing,
    /// A publish: the sequence numbers its messages got.
    Published {
        /// First sequence.
        first: u64,
        /// One past the last.
        end: u64,
    },
}

impl Applied {
    /// The sequence numbers of a publish, if this answers one.
    pub fn published(&self) -> Option<Range<u64>> {
        match self {
            Applied::Published { first, end } => Some(*first..*end),
            Applied::Nothing => None,
        }
    }
}

/// Bodies as one length-prefixed byte string, not a sequence of numbers.
mod serde_bytes_vec {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(body)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(Visit)
    }
}
