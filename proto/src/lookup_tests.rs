//! Unit tests of the lookup protocol: commands, every error code and text, partial input,
//! pipelining, responses and the peer JSON.

use bytes::{Bytes, BytesMut};

use super::*;

const MAX_BODY: u32 = 1000;

fn sized(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn decode_one(bytes: &[u8]) -> LookupCommand {
    let mut src = BytesMut::from(bytes);
    let cmd = decode_command(&mut src, MAX_BODY)
        .unwrap_or_else(|err| panic!("{err} for {bytes:?}"))
        .unwrap_or_else(|| panic!("incomplete: {bytes:?}"));
    assert!(src.is_empty(), "left {:?}", &src[..]);
    cmd
}

fn assert_err(bytes: &[u8], code: ErrorCode, message: &str) {
    let mut src = BytesMut::from(bytes);
    let err = decode_command(&mut src, MAX_BODY).expect_err("should be refused");
    assert_eq!(
        (err.code, err.message.as_str()),
        (code, message),
        "{bytes:?}"
    );
    assert_eq!(&src[..], bytes, "an error must not consume");
}

fn register(topic: &str, channel: Option<&str>) -> LookupCommand {
    LookupCommand::Register {
        topic: topic.into(),
        channel: channel.map(Into::into),
    }
}

#[test]
fn decodes_every_command() {
    let identify = [b"IDENTIFY\n".as_slice(), &sized(b"{}")].concat();
    let cases: Vec<(Vec<u8>, LookupCommand)> = vec![
        (b"PING\n".to_vec(), LookupCommand::Ping),
        (identify, LookupCommand::Identify(Bytes::from_static(b"{}"))),
        (b"REGISTER orders\n".to_vec(), register("orders", None)),
        (
            b"REGISTER orders archive\n".to_vec(),
            register("orders", Some("archive")),
        ),
        (
            b"UNREGISTER orders\n".to_vec(),
            LookupCommand::Unregister {
                topic: "orders".into(),
                channel: None,
            },
        ),
        (
            b"UNREGISTER orders c#ephemeral\n".to_vec(),
            LookupCommand::Unregister {
                topic: "orders".into(),
                channel: Some("c#ephemeral".into()),
            },
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(decode_one(&bytes), want);
        let mut encoded = BytesMut::new();
        want.encode(&mut encoded);
        assert_eq!(&encoded[..], &bytes[..]);
    }
}

#[test]
fn lines_are_trimmed_like_nsqlookupd() {
    assert_eq!(decode_one(b"  PING \r\n"), LookupCommand::Ping);
    assert_eq!(
        decode_one(b"\tREGISTER t c\x0b\n"),
        register("t", Some("c"))
    );
    assert_eq!(decode_one(b"REGISTER t \n"), register("t", None));
    // An empty channel parameter means no channel; later parameters are ignored.
    assert_eq!(decode_one(b"REGISTER t  c\n"), register("t", None));
    assert_eq!(
        decode_one(b"REGISTER t c extra\n"),
        register("t", Some("c"))
    );
    assert_eq!(decode_one(b"PING extra\n"), LookupCommand::Ping);
}

#[test]
fn empty_channel_encodes_as_none() {
    let mut dst = BytesMut::new();
    register("t", Some("")).encode(&mut dst);
    assert_eq!(&dst[..], b"REGISTER t\n");
}

#[test]
fn every_error() {
    use ErrorCode::{BadBody, BadChannel, BadTopic, Invalid};
    assert_err(b"SUB t c\n", Invalid, "invalid command SUB");
    assert_err(b"\n", Invalid, "invalid command ");
    assert_err(b"ping\n", Invalid, "invalid command ping");
    assert_err(
        b"REGISTER\n",
        Invalid,
        "REGISTER insufficient number of params",
    );
    assert_err(
        b"UNREGISTER  \n",
        Invalid,
        "UNREGISTER insufficient number of params",
    );
    assert_err(
        b"REGISTER a*\n",
        BadTopic,
        "REGISTER topic name 'a*' is not valid",
    );
    assert_err(
        b"UNREGISTER  t\n",
        BadTopic,
        "UNREGISTER topic name '' is not valid",
    );
    assert_err(
        b"REGISTER t c:d\n",
        BadChannel,
        "REGISTER channel name 'c:d' is not valid",
    );
    assert_err(
        b"UNREGISTER t #ephemeral\n",
        BadChannel,
        "UNREGISTER channel name '#ephemeral' is not valid",
    );
    let with_size = |size: i32| [b"IDENTIFY\n".as_slice(), &size.to_be_bytes()].concat();
    assert_err(&with_size(0), BadBody, "IDENTIFY invalid body size 0");
    assert_err(&with_size(-1), BadBody, "IDENTIFY invalid body size -1");
    assert_err(
        &with_size(1001),
        BadBody,
        "IDENTIFY body too big 1001 > 1000",
    );
    let mut long = vec![b'P'; MAX_LINE_LEN];
    assert_err(
        &long,
        Invalid,
        "command line too long (no newline within 1024 bytes)",
    );
    long.pop();
    let mut src = BytesMut::from(&long[..]);
    assert_eq!(decode_command(&mut src, MAX_BODY).unwrap(), None);
}

#[test]
fn partial_input_at_every_split_point() {
    let commands = [
        b"PING\n".to_vec(),
        [b"IDENTIFY\n".as_slice(), &sized(br#"{"tcp_port":4150}"#)].concat(),
        b"REGISTER t c\n".to_vec(),
        b"UNREGISTER t\n".to_vec(),
    ];
    for bytes in commands {
        let whole = decode_one(&bytes);
        let mut src = BytesMut::new();
        for (i, &byte) in bytes.iter().enumerate() {
            src.extend_from_slice(&[byte]);
            let got = decode_command(&mut src, MAX_BODY).unwrap();
            if i + 1 < bytes.len() {
                assert_eq!(got, None, "{bytes:?} at {i}");
                assert_eq!(src.len(), i + 1);
            } else {
                assert_eq!(got, Some(whole.clone()));
                assert!(src.is_empty());
            }
        }
    }
}

#[test]
fn pipelined_commands_decode_in_order() {
    let bytes = [
        b"IDENTIFY\n".as_slice(),
        &sized(b"{}"),
        b"REGISTER t\nREGISTER t c\nPING\nUNREG",
    ]
    .concat();
    let mut src = BytesMut::from(&bytes[..]);
    let mut got = Vec::new();
    while let Some(cmd) = decode_command(&mut src, MAX_BODY).unwrap() {
        got.push(cmd);
    }
    assert_eq!(
        got,
        [
            LookupCommand::Identify(Bytes::from_static(b"{}")),
            register("t", None),
            register("t", Some("c")),
            LookupCommand::Ping,
        ]
    );
    assert_eq!(&src[..], b"UNREG");
}

#[test]
fn responses_have_no_frame_type() {
    let mut dst = BytesMut::new();
    encode_response(&mut dst, b"OK");
    encode_error(
        &mut dst,
        &ProtocolError::new(ErrorCode::Invalid, "client must IDENTIFY"),
    );
    assert_eq!(&dst[..6], b"\x00\x00\x00\x02OK");
    assert_eq!(
        decode_response(&mut dst, 100).unwrap(),
        Some(Bytes::from_static(b"OK"))
    );
    let err = decode_response(&mut dst, 100).unwrap().unwrap();
    assert_eq!(&err[..], b"E_INVALID client must IDENTIFY");
    assert_eq!(decode_response(&mut dst, 100).unwrap(), None);
}

#[test]
fn response_decoding_waits_and_bounds() {
    let mut whole = BytesMut::new();
    encode_response(&mut whole, b"{\"tcp_port\":4160}");
    for cut in 0..whole.len() {
        let mut part = BytesMut::from(&whole[..cut]);
        assert_eq!(decode_response(&mut part, 100).unwrap(), None);
        assert_eq!(part.len(), cut);
    }
    let mut negative = BytesMut::from(&b"\xff\xff\xff\xfe"[..]);
    assert_eq!(
        decode_response(&mut negative, 100),
        Err(FrameError::BadSize(-2))
    );
    let mut big = BytesMut::from(&b"\x00\x00\x01\x00"[..]);
    assert_eq!(
        decode_response(&mut big, 100),
        Err(FrameError::TooLarge {
            size: 256,
            max: 100
        })
    );
    assert_eq!(big.len(), 4);
    let mut empty = BytesMut::from(&b"\x00\x00\x00\x00"[..]);
    assert_eq!(
        decode_response(&mut empty, 100).unwrap(),
        Some(Bytes::new())
    );
}

#[test]
fn peer_info_json() {
    let peer = PeerInfo {
        tcp_port: 4150,
        http_port: 4151,
        version: "1.3.0".into(),
        hostname: "h".into(),
        broadcast_address: "10.0.0.1".into(),
    };
    assert_eq!(PeerInfo::from_json(&peer.to_json()).unwrap(), peer);
    assert_eq!(peer.check_required(), Ok(()));
    let lenient =
        PeerInfo::from_json(br#"{"tcp_port":4150,"hostname":null,"remote_address":"x"}"#).unwrap();
    assert_eq!(lenient.tcp_port, 4150);
    assert_eq!(lenient.hostname, "");
    assert_eq!(
        lenient.check_required().unwrap_err().to_string(),
        "E_BAD_BODY IDENTIFY missing fields"
    );
    assert!(PeerInfo::from_json(br#"{"tcp_port":70000}"#).is_err());
    assert!(PeerInfo::from_json(b"nope").is_err());
}
