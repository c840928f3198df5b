//! Frames the broker sends: encoding (broker side) and decoding (client side).
//!
//! ```text
//! frame:        [i32 size][i32 frame type][data]          size = 4 + len(data)
//! response (0): data = "OK", "CLOSE_WAIT", "_heartbeat_" or JSON
//! error    (1): data = "E_CODE description"
//! message  (2): data = [i64 timestamp ns][u16 attempts][16-byte id][body]
//!                      └────────── 26-byte message header ─────────┘
//! ```
//!
//! All integers are big-endian. [`message_frame_prefix`] gives the 34 bytes before a message's
//! body, so a broker can write the body's `Bytes` after it without copying.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::command::wire_size;
use crate::error::ProtocolError;
use crate::id::MessageId;
use crate::line::read_i32;

/// The kind of a frame (its second `i32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum FrameType {
    /// A response: `OK`, a heartbeat, `CLOSE_WAIT`, or JSON.
    Response = 0,
    /// An error: `"E_CODE description"`.
    Error = 1,
    /// A message for a subscribed client.
    Message = 2,
}

impl FrameType {
    /// The frame type with wire value `value`, if there is one.
    pub fn from_i32(value: i32) -> Option<FrameType> {
        match value {
            0 => Some(FrameType::Response),
            1 => Some(FrameType::Error),
            2 => Some(FrameType::Message),
            _ => None,
        }
    }
}

/// Data of the response frame the broker sends as a heartbeat; the client answers `NOP`.
pub const HEARTBEAT: &[u8] = b"_heartbeat_";
/// Data of the usual success response.
pub const OK: &[u8] = b"OK";
/// Data of the response to `CLS`.
pub const CLOSE_WAIT: &[u8] = b"CLOSE_WAIT";
/// Length of a message's header: timestamp (8), attempts (2), ID (16).
pub const MESSAGE_HEADER_LEN: usize = 26;
/// Length of everything in a message frame before the body: size (4), frame type (4), header.
pub const MESSAGE_FRAME_PREFIX_LEN: usize = 34;

/// Appends a frame of type `frame_type` carrying `data`.
///
/// # Panics
///
/// If `data` is longer than `i32::MAX - 4` bytes.
pub fn encode_frame(dst: &mut BytesMut, frame_type: FrameType, data: &[u8]) {
    dst.reserve(8 + data.len());
    dst.put_i32(wire_size(data.len().saturating_add(4)));
    dst.put_i32(frame_type as i32);
    dst.put_slice(data);
}

/// Appends a response frame carrying `data`.
pub fn encode_response(dst: &mut BytesMut, data: &[u8]) {
    encode_frame(dst, FrameType::Response, data);
}

/// Appends an error frame whose data is `"E_CODE message"`.
pub fn encode_error(dst: &mut BytesMut, err: &ProtocolError) {
    encode_frame(dst, FrameType::Error, err.to_string().as_bytes());
}

/// Appends a message frame.
pub fn encode_message(
    dst: &mut BytesMut,
    timestamp_ns: i64,
    attempts: u16,
    id: &MessageId,
    body: &[u8],
) {
    dst.reserve(MESSAGE_FRAME_PREFIX_LEN + body.len());
    dst.put_slice(&message_frame_prefix(
        timestamp_ns,
        attempts,
        id,
        body.len(),
    ));
    dst.put_slice(body);
}

/// Everything of a message frame before its body, so a server can write the body `Bytes` without
/// copying.
///
/// # Panics
///
/// If `body_len` is more than `i32::MAX - 30`.
pub fn message_frame_prefix(
    timestamp_ns: i64,
    attempts: u16,
    id: &MessageId,
    body_len: usize,
) -> [u8; MESSAGE_FRAME_PREFIX_LEN] {
    let size = wire_size(body_len.saturating_add(4 + MESSAGE_HEADER_LEN));
    let mut prefix = [0u8; MESSAGE_FRAME_PREFIX_LEN];
    prefix[0..4].copy_from_slice(&size.to_be_bytes());
    prefix[4..8].copy_from_slice(&(FrameType::Message as i32).to_be_bytes());
    prefix[8..16].copy_from_slice(&timestamp_ns.to_be_bytes());
    prefix[16..18].copy_from_slice(&attempts.to_be_bytes());
    prefix[18..34].copy_from_slice(id.as_bytes());
    prefix
}

/// A message as a client receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// When the message was published, in nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// How many times it has been delivered, this delivery included.
    pub attempts: u16,
    /// Its ID, to echo in FIN, REQ and TOUCH.
    pub id: MessageId,
    /// Its body.
    pub body: Bytes,
}

impl Message {
    /// Reads a message from the data of a message frame (zero-copy for the body).
    pub fn decode(data: Bytes) -> Result<Message, FrameError> {
        if data.len() < MESSAGE_HEADER_LEN {
            return Err(FrameError::ShortMessage(data.len()));
        }
        let mut data = data;
        let timestamp_ns = data.get_i64();
        let attempts = data.get_u16();
        let id = MessageId::from_bytes(&data[..MessageId::LEN])
            .ok_or(FrameError::ShortMessage(data.len()))?;
        data.advance(MessageId::LEN);
        Ok(Message {
            timestamp_ns,
            attempts,
            id,
            body: data,
        })
    }
}

/// A frame as a client receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A response frame's data.
    Response(Bytes),
    /// An error frame's data (see [`ProtocolError::from_wire`]).
    Error(Bytes),
    /// A message.
    Message(Message),
}

/// Why a frame from the broker cannot be read; the connection is unusable after it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The size field is larger than the reader allows.
    #[error("frame size {size} exceeds the limit of {max} bytes")]
    TooLarge {
        /// The declared size.
        size: usize,
        /// The reader's limit.
        max: usize,
    },
    /// The size field is negative, or too small for a frame type.
    #[error("invalid frame size {0}")]
    BadSize(i32),
    /// The frame type is not 0, 1 or 2.
    #[error("unknown frame type {0}")]
    UnknownType(i32),
    /// A message frame's data is shorter than the 26-byte header.
    #[error("message frame of {0} bytes is shorter than its {MESSAGE_HEADER_LEN}-byte header")]
    ShortMessage(usize),
}

/// Decodes the frame at the start of `src`.
///
/// `max_frame_size` bounds the size field (frame type plus data); a larger one is refused as soon
/// as its 4 bytes are there. `Ok(None)`: more bytes are needed and `src` is untouched.
/// `Ok(Some)`: exactly one frame was consumed; data is a zero-copy slice. `Err`: `src` is
/// untouched and the stream cannot be resynchronised.
pub fn decode_frame(
    src: &mut BytesMut,
    max_frame_size: usize,
) -> Result<Option<Frame>, FrameError> {
    let Some(size) = read_i32(src, 0) else {
        return Ok(None);
    };
    let len = usize::try_from(size)
        .ok()
        .filter(|&len| len >= 4)
        .ok_or(FrameError::BadSize(size))?;
    if len > max_frame_size {
        return Err(FrameError::TooLarge {
            size: len,
            max: max_frame_size,
        });
    }
    if src.len() - 4 < len {
        return Ok(None);
    }
    let raw_type = read_i32(src, 4).unwrap_or_default();
    let frame_type = FrameType::from_i32(raw_type).ok_or(FrameError::UnknownType(raw_type))?;
    let data_len = len - 4;
    if frame_type == FrameType::Message && data_len < MESSAGE_HEADER_LEN {
        return Err(FrameError::ShortMessage(data_len));
    }
    src.advance(8);
    let data = src.split_to(data_len).freeze();
    Ok(Some(match frame_type {
        FrameType::Response => Frame::Response(data),
        FrameType::Error => Frame::Error(data),
        FrameType::Message => Frame::Message(Message::decode(data)?),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    const MAX: usize = 1 << 20;

    #[test]
    fn response_frame_layout() {
        let mut dst = BytesMut::new();
        encode_response(&mut dst, OK);
        assert_eq!(&dst[..], b"\x00\x00\x00\x06\x00\x00\x00\x00OK");
        assert_eq!(
            decode_frame(&mut dst, MAX).unwrap(),
            Some(Frame::Response(Bytes::from_static(OK)))
        );
        assert!(dst.is_empty());
    }

    #[test]
    fn error_frame_carries_code_and_text() {
        let mut dst = BytesMut::new();
        let err = ProtocolError::new(ErrorCode::Invalid, "invalid command FOO");
        encode_error(&mut dst, &err);
        assert_eq!(&dst[4..8], &[0, 0, 0, 1]);
        let Some(Frame::Error(data)) = decode_frame(&mut dst, MAX).unwrap() else {
            panic!("not an error frame");
        };
        assert_eq!(&data[..], b"E_INVALID invalid command FOO");
        assert_eq!(ProtocolError::from_wire(&data), Some(err));
    }

    #[test]
    fn message_frame_layout() {
        let id = MessageId::from_seq(7);
        let mut dst = BytesMut::new();
        encode_message(&mut dst, 0x0102_0304_0506_0708, 3, &id, b"body");
        let mut want = Vec::new();
        want.extend_from_slice(&34u32.to_be_bytes()); // 4 + 26 + 4
        want.extend_from_slice(&2u32.to_be_bytes());
        want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 0, 3]);
        want.extend_from_slice(b"0000000000000007body");
        assert_eq!(&dst[..], &want[..]);
        assert_eq!(
            &message_frame_prefix(0x0102_0304_0506_0708, 3, &id, 4)[..],
            &want[..MESSAGE_FRAME_PREFIX_LEN]
        );
        let frame = decode_frame(&mut dst, MAX).unwrap().unwrap();
        assert_eq!(
            frame,
            Frame::Message(Message {
                timestamp_ns: 0x0102_0304_0506_0708,
                attempts: 3,
                id,
                body: Bytes::from_static(b"body"),
            })
        );
    }

    #[test]
    fn partial_frames_wait_without_consuming() {
        let mut whole = BytesMut::new();
        encode_message(&mut whole, 1, 1, &MessageId::from_seq(1), b"xyz");
        encode_response(&mut whole, HEARTBEAT);
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            let first = decode_frame(&mut part, MAX).unwrap();
            if cut < 37 {
                assert_eq!(first, None, "cut {cut}");
                assert_eq!(part.len(), cut);
            } else {
                assert!(matches!(first, Some(Frame::Message(_))));
                assert_eq!(decode_frame(&mut part, MAX).unwrap(), None);
                assert_eq!(part.len(), cut - 37);
            }
        }
    }

    #[test]
    fn refuses_bad_sizes_and_types_at_once() {
        let cases: [(&[u8], FrameError); 5] = [
            (b"\xff\xff\xff\xff", FrameError::BadSize(-1)),
            (b"\x00\x00\x00\x03", FrameError::BadSize(3)),
            (
                b"\x00\x10\x00\x01",
                FrameError::TooLarge {
                    size: 0x0010_0001,
                    max: MAX,
                },
            ),
            (
                b"\x00\x00\x00\x04\x00\x00\x00\x03",
                FrameError::UnknownType(3),
            ),
            (
                b"\x00\x00\x00\x06\x00\x00\x00\x02ab",
                FrameError::ShortMessage(2),
            ),
        ];
        for (wire, want) in cases {
            let mut src = BytesMut::from(wire);
            assert_eq!(decode_frame(&mut src, MAX), Err(want));
            assert_eq!(src.len(), wire.len());
        }
    }

    #[test]
    fn empty_response_is_allowed() {
        let mut src = BytesMut::from(&b"\x00\x00\x00\x04\x00\x00\x00\x00"[..]);
        assert_eq!(
            decode_frame(&mut src, 4).unwrap(),
            Some(Frame::Response(Bytes::new()))
        );
    }

    #[test]
    fn frame_type_values() {
        for t in [FrameType::Response, FrameType::Error, FrameType::Message] {
            assert_eq!(FrameType::from_i32(t as i32), Some(t));
        }
        assert_eq!(FrameType::from_i32(-1), None);
        assert!(Message::decode(Bytes::from_static(&[0; 25])).is_err());
    }
}
