//! Unit tests of the V2 command decoder: every command, every error code and text it can
//! produce, partial input at every split point, pipelining.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::v2::MAX_LINE_LEN;

const LIMITS: DecodeLimits = DecodeLimits {
    max_msg_size: 100,
    max_body_size: 1000,
};

fn id(seq: u64) -> MessageId {
    MessageId::from_seq(seq)
}

fn sized(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn wire(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Decodes one command from `bytes`, asserting it consumes everything.
fn decode_one(bytes: &[u8]) -> Command {
    let mut src = BytesMut::from(bytes);
    let cmd = decode_command(&mut src, &LIMITS)
        .unwrap_or_else(|err| panic!("{err} for {bytes:?}"))
        .unwrap_or_else(|| panic!("incomplete: {bytes:?}"));
    assert!(src.is_empty(), "left {:?}", &src[..]);
    cmd
}

/// Decodes `bytes`, expecting an error, and checks nothing was consumed.
fn decode_err(bytes: &[u8]) -> (ErrorCode, String) {
    let mut src = BytesMut::from(bytes);
    let err = decode_command(&mut src, &LIMITS).expect_err("should be refused");
    assert_eq!(&src[..], bytes, "an error must not consume");
    (err.code, err.message)
}

fn assert_err(bytes: &[u8], code: ErrorCode, message: &str) {
    assert_eq!(decode_err(bytes), (code, message.to_owned()), "{bytes:?}");
}

fn mpub_body(count: i32, messages: &[&[u8]]) -> Vec<u8> {
    let mut body = count.to_be_bytes().to_vec();
    for message in messages {
        body.extend_from_slice(&sized(message));
    }
    body
}

#[test]
fn decodes_every_command() {
    let cases: Vec<(Vec<u8>, Command)> = vec![
        (
            wire(&[b"IDENTIFY\n", &sized(b"{}")]),
            Command::Identify(Bytes::from_static(b"{}")),
        ),
        (
            wire(&[b"AUTH\n", &sized(b"secret")]),
            Command::Auth(Bytes::from_static(b"secret")),
        ),
        (
            b"SUB orders archive#ephemeral\n".to_vec(),
            Command::Sub {
                topic: "orders".into(),
                channel: "archive#ephemeral".into(),
            },
        ),
        (
            wire(&[b"PUB orders\n", &sized(b"hello")]),
            Command::Pub {
                topic: "orders".into(),
                body: Bytes::from_static(b"hello"),
            },
        ),
        (
            wire(&[b"MPUB orders\n", &sized(&mpub_body(2, &[b"a", b"bc"]))]),
            Command::Mpub {
                topic: "orders".into(),
                bodies: vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")],
            },
        ),
        (
            wire(&[b"DPUB orders 1500\n", &sized(b"later")]),
            Command::Dpub {
                topic: "orders".into(),
                defer_ms: 1500,
                body: Bytes::from_static(b"later"),
            },
        ),
        (b"RDY 2500\n".to_vec(), Command::Rdy(2500)),
        (b"FIN 000000000000002a\n".to_vec(), Command::Fin(id(42))),
        (
            b"REQ 000000000000002a 90000\n".to_vec(),
            Command::Req {
                id: id(42),
                timeout_ms: 90000,
            },
        ),
        (b"TOUCH 000000000000002a\n".to_vec(), Command::Touch(id(42))),
        (b"CLS\n".to_vec(), Command::Cls),
        (b"NOP\n".to_vec(), Command::Nop),
    ];
    for (bytes, want) in cases {
        assert_eq!(decode_one(&bytes), want, "{bytes:?}");
        let mut encoded = BytesMut::new();
        want.encode(&mut encoded);
        assert_eq!(&encoded[..], &bytes[..], "encode of {}", want.name());
    }
}

#[test]
fn tolerates_crlf_and_extra_params_like_nsqd() {
    assert_eq!(decode_one(b"NOP\r\n"), Command::Nop);
    assert_eq!(decode_one(b"RDY\n"), Command::Rdy(1));
    assert_eq!(decode_one(b"RDY 3\r\n"), Command::Rdy(3));
    assert_eq!(
        decode_one(b"FIN 000000000000002a\r\n"),
        Command::Fin(id(42))
    );
    assert_eq!(decode_one(b"CLS extra\n"), Command::Cls);
    assert_eq!(decode_one(b"NOP x y\n"), Command::Nop);
    assert_eq!(
        decode_one(b"SUB t c legacy_short legacy_long\n"),
        Command::Sub {
            topic: "t".into(),
            channel: "c".into()
        }
    );
    assert_eq!(
        decode_one(&wire(&[b"PUB t extra\n", &sized(b"x")])),
        Command::Pub {
            topic: "t".into(),
            body: Bytes::from_static(b"x")
        }
    );
    assert_eq!(
        decode_one(&wire(&[b"IDENTIFY ignored\n", &sized(b"{}")])),
        Command::Identify(Bytes::from_static(b"{}"))
    );
}

#[test]
fn empty_numbers_are_zero_like_nsqd() {
    assert_eq!(decode_one(b"RDY \n"), Command::Rdy(0));
    assert_eq!(
        decode_one(b"REQ 000000000000002a \n"),
        Command::Req {
            id: id(42),
            timeout_ms: 0
        }
    );
}

#[test]
fn message_ids_are_any_sixteen_bytes() {
    assert_eq!(
        decode_one(b"FIN ABCDEFGHIJKLMNOP\n"),
        Command::Fin(MessageId::from_bytes(b"ABCDEFGHIJKLMNOP").unwrap())
    );
}

#[test]
fn unknown_commands() {
    use ErrorCode::Invalid;
    assert_err(b"FOO bar\n", Invalid, "invalid command FOO");
    assert_err(b"pub t\n", Invalid, "invalid command pub");
    assert_err(b"\n", Invalid, "invalid command ");
    assert_err(b"\r\n", Invalid, "invalid command ");
    assert_err(b" NOP\n", Invalid, "invalid command ");
    assert_err(b"NOP\r\r\n", Invalid, "invalid command NOP\r");
    assert_err(b"\xff\xfe\n", Invalid, "invalid command \u{fffd}\u{fffd}");
}

#[test]
fn line_without_newline_is_bounded() {
    let mut long = b"PUB ".to_vec();
    long.resize(MAX_LINE_LEN, b'a');
    assert_err(
        &long,
        ErrorCode::Invalid,
        "command line too long (no newline within 1024 bytes)",
    );
    long.truncate(MAX_LINE_LEN - 1);
    let mut src = BytesMut::from(&long[..]);
    assert_eq!(decode_command(&mut src, &LIMITS).unwrap(), None);
}

#[test]
fn parameter_counts() {
    use ErrorCode::Invalid;
    assert_err(b"AUTH x\n", Invalid, "AUTH invalid number of parameters");
    assert_err(b"SUB\n", Invalid, "SUB insufficient number of parameters");
    assert_err(b"SUB t\n", Invalid, "SUB insufficient number of parameters");
    assert_err(b"PUB\n", Invalid, "PUB insufficient number of parameters");
    assert_err(b"MPUB\n", Invalid, "MPUB insufficient number of parameters");
    assert_err(
        b"DPUB t\n",
        Invalid,
        "DPUB insufficient number of parameters",
    );
    assert_err(b"FIN\n", Invalid, "FIN insufficient number of params");
    assert_err(b"TOUCH\n", Invalid, "TOUCH insufficient number of params");
    assert_err(
        b"REQ 000000000000002a\n",
        Invalid,
        "REQ insufficient number of params",
    );
}

#[test]
fn bad_names_are_refused_before_the_body() {
    use ErrorCode::{BadChannel, BadTopic};
    assert_err(
        b"SUB a* c\n",
        BadTopic,
        r#"SUB topic name "a*" is not valid"#,
    );
    assert_err(
        b"SUB t c/d\n",
        BadChannel,
        r#"SUB channel name "c/d" is not valid"#,
    );
    assert_err(b"SUB  c\n", BadTopic, r#"SUB topic name "" is not valid"#);
    assert_err(
        b"PUB #ephemeral\n",
        BadTopic,
        r##"PUB topic name "#ephemeral" is not valid"##,
    );
    assert_err(b"PUB \n", BadTopic, r#"PUB topic name "" is not valid"#);
    assert_err(
        b"PUB a\tb\n",
        BadTopic,
        r#"PUB topic name "a\tb" is not valid"#,
    );
    assert_err(
        b"MPUB a:b\n",
        BadTopic,
        r#"MPUB topic name "a:b" is not valid"#,
    );
    assert_err(
        b"DPUB a:b 10\n",
        BadTopic,
        r#"DPUB topic name "a:b" is not valid"#,
    );
    let long = format!("PUB {}\n", "a".repeat(65));
    let (code, _) = decode_err(long.as_bytes());
    assert_eq!(code, BadTopic);
}

#[test]
fn numbers_and_ids() {
    use ErrorCode::Invalid;
    assert_err(b"DPUB t -1\n", Invalid, "DPUB could not parse timeout -1");
    assert_err(b"DPUB t 1s\n", Invalid, "DPUB could not parse timeout 1s");
    assert_err(b"RDY x\n", Invalid, "RDY could not parse count x");
    assert_err(b"RDY -1\n", Invalid, "RDY could not parse count -1");
    assert_err(
        b"RDY 99999999999999999999\n",
        Invalid,
        "RDY could not parse count 99999999999999999999",
    );
    assert_err(
        b"REQ 000000000000002a 1.5\n",
        Invalid,
        "REQ could not parse timeout 1.5",
    );
    assert_err(b"FIN 2a\n", Invalid, "Invalid Message ID");
    assert_err(b"FIN 000000000000002a0\n", Invalid, "Invalid Message ID");
    assert_err(b"TOUCH \n", Invalid, "Invalid Message ID");
    assert_err(b"REQ 2a 0\n", Invalid, "Invalid Message ID");
    // The ID is checked before the timeout, as in nsqd.
    assert_err(b"REQ 2a x\n", Invalid, "Invalid Message ID");
}

#[test]
fn single_message_sizes() {
    use ErrorCode::BadMessage;
    for cmd in ["PUB t", "DPUB t 0"] {
        let name = cmd.split(' ').next().unwrap();
        let line = format!("{cmd}\n");
        let with_size = |size: i32| wire(&[line.as_bytes(), &size.to_be_bytes()]);
        assert_err(
            &with_size(0),
            BadMessage,
            &format!("{name} invalid message body size 0"),
        );
        assert_err(
            &with_size(-5),
            BadMessage,
            &format!("{name} invalid message body size -5"),
        );
        assert_err(
            &with_size(101),
            BadMessage,
            &format!("{name} message too big 101 > 100"),
        );
        assert_err(
            &with_size(i32::MAX),
            BadMessage,
            &format!("{name} message too big 2147483647 > 100"),
        );
        // The largest allowed size is waited for.
        let mut src = BytesMut::from(&with_size(100)[..]);
        assert_eq!(decode_command(&mut src, &LIMITS).unwrap(), None);
    }
}

#[test]
fn identify_and_auth_sizes() {
    use ErrorCode::BadBody;
    for name in ["IDENTIFY", "AUTH"] {
        let line = format!("{name}\n");
        let with_size = |size: i32| wire(&[line.as_bytes(), &size.to_be_bytes()]);
        assert_err(
            &with_size(0),
            BadBody,
            &format!("{name} invalid body size 0"),
        );
        assert_err(
            &with_size(i32::MIN),
            BadBody,
            &format!("{name} invalid body size -2147483648"),
        );
        assert_err(
            &with_size(1001),
            BadBody,
            &format!("{name} body too big 1001 > 1000"),
        );
    }
}

#[test]
fn mpub_body_size_and_count() {
    use ErrorCode::BadBody;
    let with_size = |size: i32, rest: &[u8]| wire(&[b"MPUB t\n", &size.to_be_bytes(), rest]);
    assert_err(&with_size(0, b""), BadBody, "MPUB invalid body size 0");
    assert_err(&with_size(-1, b""), BadBody, "MPUB invalid body size -1");
    assert_err(
        &with_size(1001, b""),
        BadBody,
        "MPUB body too big 1001 > 1000",
    );
    assert_err(
        &with_size(3, b""),
        BadBody,
        "MPUB failed to read message count",
    );
    // The count is checked as soon as it arrives, before the rest of the body.
    assert_err(
        &with_size(500, &0i32.to_be_bytes()),
        BadBody,
        "MPUB invalid message count 0",
    );
    assert_err(
        &with_size(500, &(-2i32).to_be_bytes()),
        BadBody,
        "MPUB invalid message count -2",
    );
    // (1000 - 4) / 5 = 199 messages at most.
    assert_err(
        &with_size(500, &200i32.to_be_bytes()),
        BadBody,
        "MPUB invalid message count 200",
    );
    let mut src = BytesMut::from(&with_size(500, &199i32.to_be_bytes())[..]);
    assert_eq!(decode_command(&mut src, &LIMITS).unwrap(), None);
}

#[test]
fn mpub_messages() {
    use ErrorCode::{BadBody, BadMessage};
    let mpub = |body: &[u8]| wire(&[b"MPUB t\n", &sized(body)]);
    let mut zero = 2i32.to_be_bytes().to_vec();
    zero.extend_from_slice(&sized(b"a"));
    zero.extend_from_slice(&0i32.to_be_bytes());
    assert_err(
        &mpub(&zero),
        BadMessage,
        "MPUB invalid message(1) body size 0",
    );
    let mut negative = 1i32.to_be_bytes().to_vec();
    negative.extend_from_slice(&(-7i32).to_be_bytes());
    assert_err(
        &mpub(&negative),
        BadMessage,
        "MPUB invalid message(0) body size -7",
    );
    let big = vec![b'x'; 101];
    assert_err(
        &mpub(&mpub_body(1, &[&big])),
        BadMessage,
        "MPUB message too big 101 > 100",
    );
    // Sizes that run past the declared body.
    let mut short = mpub_body(1, &[b"abc"]);
    short.truncate(short.len() - 1);
    assert_err(
        &mpub(&short),
        BadBody,
        &format!("MPUB message(0) overruns body size {}", short.len()),
    );
    let missing_header = mpub_body(2, &[b"abc"]);
    assert_err(
        &mpub(&missing_header),
        BadBody,
        &format!(
            "MPUB message(1) overruns body size {}",
            missing_header.len()
        ),
    );
    let mut partial_header = mpub_body(2, &[b"abc"]);
    partial_header.extend_from_slice(&[0, 0]);
    assert_err(
        &mpub(&partial_header),
        BadBody,
        &format!(
            "MPUB message(1) overruns body size {}",
            partial_header.len()
        ),
    );
    let mut huge = 1i32.to_be_bytes().to_vec();
    huge.extend_from_slice(&100i32.to_be_bytes());
    huge.extend_from_slice(b"only a few bytes");
    assert_err(
        &mpub(&huge),
        BadBody,
        &format!("MPUB message(0) overruns body size {}", huge.len()),
    );
    let mut trailing = mpub_body(1, &[b"abc"]);
    trailing.extend_from_slice(b"zz");
    assert_err(
        &mpub(&trailing),
        BadBody,
        "MPUB body has 2 bytes after 1 messages",
    );
}

#[test]
fn mpub_bodies_share_one_buffer() {
    let bytes = wire(&[
        b"MPUB t\n",
        &sized(&mpub_body(3, &[b"one", b"two", b"three"])),
    ]);
    let Command::Mpub { bodies, .. } = decode_one(&bytes) else {
        panic!("not MPUB");
    };
    assert_eq!(bodies, [&b"one"[..], b"two", b"three"]);
    let base = bodies[0].as_ptr() as usize;
    assert_eq!(bodies[1].as_ptr() as usize, base + 3 + 4);
    assert_eq!(bodies[2].as_ptr() as usize, base + 3 + 4 + 3 + 4);
}

#[test]
fn bodies_are_slices_of_the_read_buffer() {
    let bytes = wire(&[b"PUB t\n", &sized(b"payload")]);
    let mut src = BytesMut::from(&bytes[..]);
    let start = src.as_ptr() as usize;
    let Some(Command::Pub { body, .. }) = decode_command(&mut src, &LIMITS).unwrap() else {
        panic!("not PUB");
    };
    assert_eq!(body.as_ptr() as usize, start + 6 + 4);
}

/// Every valid command, fed one byte at a time, waits without consuming until it is complete.
#[test]
fn partial_input_at_every_split_point() {
    let commands = [
        wire(&[b"IDENTIFY\n", &sized(br#"{"client_id":"x"}"#)]),
        wire(&[b"AUTH\r\n", &sized(b"s")]),
        b"SUB t c\n".to_vec(),
        wire(&[b"PUB t\n", &sized(b"hello")]),
        wire(&[b"MPUB t\n", &sized(&mpub_body(2, &[b"a", b"bc"]))]),
        wire(&[b"DPUB t 5\n", &sized(b"x")]),
        b"RDY 1\n".to_vec(),
        b"FIN 000000000000002a\n".to_vec(),
        b"REQ 000000000000002a 0\n".to_vec(),
        b"TOUCH 000000000000002a\n".to_vec(),
        b"CLS\n".to_vec(),
        b"NOP\n".to_vec(),
    ];
    for bytes in commands {
        let whole = decode_one(&bytes);
        let mut src = BytesMut::new();
        for (i, &byte) in bytes.iter().enumerate() {
            src.extend_from_slice(&[byte]);
            let got = decode_command(&mut src, &LIMITS).unwrap();
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
    let bytes = wire(&[
        b"PUB t\n",
        &sized(b"m1"),
        b"NOP\nRDY 5\n",
        b"MPUB t\n",
        &sized(&mpub_body(1, &[b"m2"])),
        b"FIN 000000000000002a\nCLS\nPUB t\n",
        &sized(b"partial")[..6],
    ]);
    let mut src = BytesMut::from(&bytes[..]);
    let mut got = Vec::new();
    while let Some(cmd) = decode_command(&mut src, &LIMITS).unwrap() {
        got.push(cmd.name());
    }
    assert_eq!(got, ["PUB", "NOP", "RDY", "MPUB", "FIN", "CLS"]);
    assert_eq!(&src[..], &wire(&[b"PUB t\n", &sized(b"partial")[..6]])[..]);
}

#[test]
fn a_bad_command_after_good_ones_is_reported_when_reached() {
    let mut src = BytesMut::from(&b"NOP\nBAD\nNOP\n"[..]);
    assert_eq!(
        decode_command(&mut src, &LIMITS).unwrap(),
        Some(Command::Nop)
    );
    let err = decode_command(&mut src, &LIMITS).unwrap_err();
    assert_eq!(err.to_string(), "E_INVALID invalid command BAD");
    assert!(err.is_fatal());
    assert_eq!(&src[..], b"BAD\nNOP\n");
}

#[test]
fn default_limits_are_nsqd_defaults() {
    let limits = DecodeLimits::default();
    assert_eq!(limits.max_msg_size, 1_048_576);
    assert_eq!(limits.max_body_size, 5_242_880);
    let mut src = BytesMut::from(&wire(&[b"PUB t\n", &1_048_577i32.to_be_bytes()])[..]);
    let err = decode_command(&mut src, &limits).unwrap_err();
    assert_eq!(err.message, "PUB message too big 1048577 > 1048576");
}

#[test]
fn tiny_limits_refuse_every_mpub_count() {
    let limits = DecodeLimits {
        max_msg_size: 10,
        max_body_size: 8,
    };
    let bytes = wire(&[b"MPUB t\n", &sized(&mpub_body(1, &[b"abc"]))]);
    let mut src = BytesMut::from(&bytes[..]);
    assert_eq!(
        decode_command(&mut src, &limits).unwrap_err().message,
        "MPUB body too big 11 > 8"
    );
    let limits = DecodeLimits {
        max_msg_size: 10,
        max_body_size: 3,
    };
    let bytes = wire(&[b"MPUB t\n", &sized(&[0, 0])]);
    let mut src = BytesMut::from(&bytes[..]);
    assert_eq!(
        decode_command(&mut src, &limits).unwrap_err().message,
        "MPUB failed to read message count"
    );
}
