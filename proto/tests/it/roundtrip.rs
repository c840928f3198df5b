//! Property tests: what is encoded decodes back to the same value.

use crate::common::{body, command, config, lookup_command, message_id};
use bytes::{Bytes, BytesMut};
use ferry_proto::lookup;
use ferry_proto::v2::{self, DecodeLimits, Frame, Message};
use ferry_proto::{ErrorCode, MessageId, ProtocolError};
use proptest::prelude::*;

proptest! {
    #![proptest_config(config())]

    #[test]
    fn command_round_trips(cmd in command()) {
        let mut buf = BytesMut::new();
        cmd.encode(&mut buf);
        let decoded = v2::decode_command(&mut buf, &DecodeLimits::default());
        prop_assert_eq!(decoded, Ok(Some(cmd)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn pipelined_commands_round_trip(cmds in prop::collection::vec(command(), 1..12)) {
        let mut buf = BytesMut::new();
        for cmd in &cmds {
            cmd.encode(&mut buf);
        }
        let mut decoded = Vec::new();
        while let Some(cmd) = v2::decode_command(&mut buf, &DecodeLimits::default()).unwrap() {
            decoded.push(cmd);
        }
        prop_assert_eq!(decoded, cmds);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn lookup_command_round_trips(cmds in prop::collection::vec(lookup_command(), 1..12)) {
        let mut buf = BytesMut::new();
        for cmd in &cmds {
            cmd.encode(&mut buf);
        }
        let mut decoded = Vec::new();
        while let Some(cmd) = lookup::decode_command(&mut buf, 5_242_880).unwrap() {
            decoded.push(cmd);
        }
        prop_assert_eq!(decoded, cmds);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn lookup_responses_round_trip(datas in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..100), 1..8)) {
        let mut buf = BytesMut::new();
        for data in &datas {
            lookup::encode_response(&mut buf, data);
        }
        for data in &datas {
            prop_assert_eq!(lookup::decode_response(&mut buf, 100), Ok(Some(Bytes::from(data.clone()))));
        }
        prop_assert_eq!(lookup::decode_response(&mut buf, 100), Ok(None));
    }

    #[test]
    fn response_frames_round_trip(data in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut buf = BytesMut::new();
        v2::encode_response(&mut buf, &data);
        prop_assert_eq!(v2::decode_frame(&mut buf, 1 << 20), Ok(Some(Frame::Response(Bytes::from(data)))));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn error_frames_round_trip(code in prop::sample::select(ErrorCode::ALL.to_vec()), message in ".{0,80}") {
        let err = ProtocolError::new(code, message);
        let mut buf = BytesMut::new();
        v2::encode_error(&mut buf, &err);
        let frame = v2::decode_frame(&mut buf, 1 << 20).unwrap();
        let Some(Frame::Error(data)) = frame else {
            return Err(TestCaseError::fail(format!("not an error frame: {frame:?}")));
        };
        let text = err.to_string();
        prop_assert_eq!(&data[..], text.as_bytes());
        prop_assert_eq!(ProtocolError::from_wire(&data), Some(err));
    }

    #[test]
    fn message_frames_round_trip(
        timestamp_ns in any::<i64>(),
        attempts in any::<u16>(),
        id in prop::array::uniform16(any::<u8>()),
        body in body(300),
    ) {
        let id = MessageId::from_bytes(&id).unwrap();
        let mut buf = BytesMut::new();
        v2::encode_message(&mut buf, timestamp_ns, attempts, &id, &body);
        prop_assert_eq!(
            &buf[..v2::MESSAGE_FRAME_PREFIX_LEN],
            &v2::message_frame_prefix(timestamp_ns, attempts, &id, body.len())[..]
        );
        let want = Frame::Message(Message { timestamp_ns, attempts, id, body });
        prop_assert_eq!(v2::decode_frame(&mut buf, 1 << 20), Ok(Some(want)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn message_id_seq_round_trips(seq in any::<u64>()) {
        let id = MessageId::from_seq(seq);
        prop_assert_eq!(id.to_seq(), Some(seq));
        prop_assert_eq!(MessageId::from_bytes(id.as_bytes()), Some(id));
        prop_assert_eq!(id.to_string(), format!("{seq:016x}"));
    }

    #[test]
    fn message_id_to_seq_is_exact(bytes in prop::array::uniform16(any::<u8>())) {
        let id = MessageId::from_bytes(&bytes).unwrap();
        prop_assert_eq!(id.as_bytes(), &bytes);
        if let Some(seq) = id.to_seq() {
            prop_assert_eq!(MessageId::from_seq(seq), id);
        }
    }

    #[test]
    fn id_in_a_command_round_trips(id in message_id()) {
        let mut buf = BytesMut::new();
        v2::Command::Fin(id).encode(&mut buf);
        prop_assert_eq!(
            v2::decode_command(&mut buf, &DecodeLimits::default()),
            Ok(Some(v2::Command::Fin(id)))
        );
    }
}
