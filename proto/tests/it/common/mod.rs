//! Strategies and settings shared by the property tests.
//!
//! `FERRY_PROPTEST_CASES` sets how many cases each property runs (default 256, which keeps
//! `cargo test` fast); set it to e.g. 100000 for a long soak.

use bytes::Bytes;
use ferry_proto::MessageId;
use ferry_proto::lookup::LookupCommand;
use ferry_proto::v2::Command;
use proptest::prelude::*;

/// Proptest settings, with the case count from `FERRY_PROPTEST_CASES`.
pub fn config() -> ProptestConfig {
    let cases = std::env::var("FERRY_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any valid topic or channel name, ephemeral or not.
pub fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[.a-zA-Z0-9_-]{1,64}",
        "[.a-zA-Z0-9_-]{1,54}".prop_map(|stem| format!("{stem}#ephemeral")),
    ]
}

/// A message ID that can travel in a command line: 16 bytes other than space, `\r`, `\n`.
pub fn message_id() -> impl Strategy<Value = MessageId> {
    prop_oneof![
        any::<u64>().prop_map(MessageId::from_seq),
        prop::array::uniform16(
            any::<u8>().prop_filter("line byte", |b| { !matches!(b, b' ' | b'\r' | b'\n') })
        )
        .prop_map(|bytes| MessageId::from_bytes(&bytes).expect("16 bytes")),
    ]
}

/// A non-empty body of up to `max` bytes.
pub fn body(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 1..=max).prop_map(Bytes::from)
}

/// Any command a client can send, within the default limits.
pub fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        body(300).prop_map(Command::Identify),
        body(64).prop_map(Command::Auth),
        (name(), name()).prop_map(|(topic, channel)| Command::Sub { topic, channel }),
        (name(), body(300)).prop_map(|(topic, body)| Command::Pub { topic, body }),
        (name(), prop::collection::vec(body(50), 1..20))
            .prop_map(|(topic, bodies)| Command::Mpub { topic, bodies }),
        (name(), any::<u64>(), body(300)).prop_map(|(topic, defer_ms, body)| Command::Dpub {
            topic,
            defer_ms,
            body
        }),
        any::<u64>().prop_map(Command::Rdy),
        message_id().prop_map(Command::Fin),
        (message_id(), any::<u64>()).prop_map(|(id, timeout_ms)| Command::Req { id, timeout_ms }),
        message_id().prop_map(Command::Touch),
        Just(Command::Cls),
        Just(Command::Nop),
    ]
}

/// Any command a broker can send to a lookup daemon.
pub fn lookup_command() -> impl Strategy<Value = LookupCommand> {
    prop_oneof![
        body(300).prop_map(LookupCommand::Identify),
        (name(), prop::option::of(name()))
            .prop_map(|(topic, channel)| LookupCommand::Register { topic, channel }),
        (name(), prop::option::of(name()))
            .prop_map(|(topic, channel)| LookupCommand::Unregister { topic, channel }),
        Just(LookupCommand::Ping),
    ]
}

/// Bytes built from protocol tokens and noise: far likelier than uniform bytes to reach deep
/// decoder states (a known command, a size, a partial body).
pub fn token_soup() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        prop::sample::select(vec![
            &b"PUB"[..],
            b"MPUB",
            b"DPUB",
            b"SUB",
            b"IDENTIFY",
            b"AUTH",
            b"RDY",
            b"FIN",
            b"REQ",
            b"TOUCH",
            b"CLS",
            b"NOP",
            b"PING",
            b"REGISTER",
            b"UNREGISTER",
            b" ",
            b" ",
            b"\n",
            b"\n",
            b"\r\n",
            b"t",
            b"c#ephemeral",
            b"bad*name",
            b"0000000000000001",
            b"123",
            b"-1",
            b"",
        ])
        .prop_map(<[u8]>::to_vec),
        (-2i32..40).prop_map(|size| size.to_be_bytes().to_vec()),
        any::<i32>().prop_map(|size| size.to_be_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat())
}

/// An edit to apply to a valid encoding.
#[derive(Debug, Clone)]
pub enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
}

/// Up to 4 random edits.
pub fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Flip(at, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Insert(at, b)),
        any::<usize>().prop_map(Edit::Delete),
        any::<usize>().prop_map(Edit::Truncate),
    ];
    prop::collection::vec(edit, 1..=4)
}

/// Applies `edits` to `bytes`, positions taken modulo the current length.
pub fn mutate(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len();
        match *edit {
            Edit::Flip(at, b) if len > 0 => bytes[at % len] ^= b.max(1),
            Edit::Insert(at, b) => bytes.insert(at % (len + 1), b),
            Edit::Delete(at) if len > 0 => {
                bytes.remove(at % len);
            }
            Edit::Truncate(at) => bytes.truncate(at % (len + 1)),
            _ => {}
        }
    }
    bytes
}

/// Chunk sizes (each at least 1) for feeding a buffer piecewise.
pub fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..64, 1..32)
}
