//! The application entries of a group's Raft log and what applying one answers.

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

/// The messages of one publish (PUB, MPUB, DPUB, HTTP), as the leader received and stamped
/// them: one publish time and delivery time for all, the bodies packed into one buffer (so a
/// batch of 200 is two allocations, not 200). Sequence numbers are not here: every replica
/// applies the same entries in the same order from the same first sequence, so each gives the
/// messages the same ones.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Publish time, ns since the Unix epoch (the leader's clock).
    pub timestamp_ns: i64,
    /// Earliest delivery time, ns since the Unix epoch; 0 means now (DPUB sets it).
    pub deliver_at_ns: i64,
    /// Every body, one after the other.
    #[serde(with = "serde_bytes_vec")]
    data: Vec<u8>,
    /// Each body's length, in order.
    lens: Vec<u32>,
}

impl Batch {
    /// Packs `bodies` (each shorter than 4 GiB, as the protocol's size fields are).
    pub fn new(timestamp_ns: i64, deliver_at_ns: i64, bodies: &[&[u8]]) -> Batch {
        let mut data = Vec::with_capacity(bodies.iter().map(|b| b.len()).sum());
        let mut lens = Vec::with_capacity(bodies.len());
        for body in bodies {
            data.extend_from_slice(body);
            lens.push(u32::try_from(body.len()).expect("a body under 4 GiB"));
        }
        Batch {
            timestamp_ns,
            deliver_at_ns,
            data,
            lens,
        }
    }

    /// How many messages.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Whether it has no message.
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// The bodies, in order. A batch whose lengths overrun its data (a damaged entry) ends
    /// early: [`Batch::is_whole`] tells.
    pub fn bodies(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = &self.data[..];
        self.lens.iter().map_while(move |&len| {
            let (body, tail) = rest.split_at_checked(len as usize)?;
            rest = tail;
            Some(body)
        })
    }

    /// Whether the lengths add up to the data.
    pub fn is_whole(&self) -> bool {
        self.lens.iter().map(|&l| l as usize).sum::<usize>() == self.data.len()
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("timestamp_ns", &self.timestamp_ns)
            .field("deliver_at_ns", &self.deliver_at_ns)
            .field("messages", &self.lens.len())
            .field("bytes", &self.data.len())
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
        batch: Batch,
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
    /// An operator's action, applied by every replica.
    Admin(Admin),
}

/// An operator's action on a replicated topic (`/topic/pause`, `/channel/delete`, ...): in the
/// log, so every replica, and one that replays the log or installs a later snapshot, does it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Admin {
    /// Pause (true) or unpause the topic.
    PauseTopic(bool),
    /// Pause (true) or unpause a channel.
    PauseChannel {
        /// The channel's name.
        channel: String,
        /// Paused or not.
        paused: bool,
    },
    /// Delete a channel.
    DeleteChannel {
        /// The channel's name.
        channel: String,
    },
    /// Delete the topic on every replica, and so the group.
    DeleteTopic,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Publish { batch } => write!(f, "publish({})", batch.len()),
            Command::Channels { channel, ops, .. } => {
                write!(f, "channels({channel}, {})", ops.len())
            }
            Command::Admin(action) => write!(f, "admin({action:?})"),
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
    /// An operator's action: whether what it names existed.
    Admin {
        /// False: no such channel (or topic).
        found: bool,
    },
}

impl Applied {
    /// The sequence numbers of a publish, if this answers one.
    pub fn published(&self) -> Option<Range<u64>> {
        match self {
            Applied::Published { first, end } => Some(*first..*end),
            Applied::Nothing | Applied::Admin { .. } => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_packs_its_bodies_and_survives_encoding() {
        let bodies: [&[u8]; 4] = [b"one", b"", b"three", &[0, 255, 7]];
        let batch = Batch::new(5, 9, &bodies);
        assert_eq!(batch.len(), 4);
        assert!(batch.is_whole());
        let command = Command::Publish { batch };
        let bytes = postcard::to_stdvec(&command).unwrap();
        let back: Command = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, command);
        let Command::Publish { batch } = back else {
            unreachable!()
        };
        assert_eq!(batch.bodies().collect::<Vec<_>>(), bodies);
        assert_eq!((batch.timestamp_ns, batch.deliver_at_ns), (5, 9));
    }

    #[test]
    fn a_damaged_batch_is_not_whole() {
        let mut batch = Batch::new(0, 0, &[b"abc", b"de"]);
        batch.lens[1] = 10;
        assert!(!batch.is_whole());
        assert_eq!(batch.bodies().count(), 1);
    }
}
