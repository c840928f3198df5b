//! Property tests: any input, however hostile, gets one of the decoders' three answers.
//!
//! For arbitrary bytes, token soups and mutated valid encodings, fed to both command decoders
//! (and to the frame decoders) as a connection would:
//! - nothing panics;
//! - `Ok(None)` and `Err` consume nothing, `Ok(Some)` consumes at least one byte;
//! - every decode error is fatal;
//! - a decoded command re-encodes to something that decodes to the same command;
//! - the result does not depend on how the bytes were split into reads.

use crate::common::{chunk_sizes, command, config, edits, lookup_command, mutate, token_soup};
use bytes::BytesMut;
use ferry_proto::ProtocolError;
use ferry_proto::lookup::{self, LookupCommand};
use ferry_proto::v2::{self, Command, DecodeLimits};
use proptest::prelude::*;

/// Small limits so that limit checks are reached by small inputs.
const LIMITS: DecodeLimits = DecodeLimits {
    max_msg_size: 64,
    max_body_size: 256,
};

/// What a connection would see: the commands decoded, then the error that closed it, if any.
#[derive(Debug, PartialEq)]
struct Outcome<C> {
    commands: Vec<C>,
    error: Option<ProtocolError>,
}

/// Decodes everything in `src` like a connection's read loop, checking the invariants.
fn drain<C: Clone + PartialEq + std::fmt::Debug>(
    src: &mut BytesMut,
    outcome: &mut Outcome<C>,
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<C>, ProtocolError>,
    mut reencode: impl FnMut(&C) -> Result<Option<C>, ProtocolError>,
) -> Result<(), TestCaseError> {
    while outcome.error.is_none() {
        let before = src.clone();
        match decode(src) {
            Ok(None) => {
                prop_assert_eq!(&src[..], &before[..], "Ok(None) consumed");
                return Ok(());
            }
            Ok(Some(cmd)) => {
                prop_assert!(src.len() < before.len(), "Ok(Some) consumed nothing");
                prop_assert_eq!(&src[..], &before[before.len() - src.len()..]);
                prop_assert_eq!(reencode(&cmd), Ok(Some(cmd.clone())), "re-encoding differs");
                outcome.commands.push(cmd);
            }
            Err(err) => {
                prop_assert_eq!(&src[..], &before[..], "Err consumed");
                prop_assert!(err.is_fatal(), "decode error {} is not fatal", err);
                outcome.error = Some(err);
            }
        }
    }
    Ok(())
}

fn v2_decode(src: &mut BytesMut) -> Result<Option<Command>, ProtocolError> {
    v2::decode_command(src, &LIMITS)
}

fn v2_reencode(cmd: &Command) -> Result<Option<Command>, ProtocolError> {
    let mut buf = BytesMut::new();
    cmd.encode(&mut buf);
    v2::decode_command(&mut buf, &LIMITS)
}

fn lookup_decode(src: &mut BytesMut) -> Result<Option<LookupCommand>, ProtocolError> {
    lookup::decode_command(src, LIMITS.max_body_size)
}

fn lookup_reencode(cmd: &LookupCommand) -> Result<Option<LookupCommand>, ProtocolError> {
    let mut buf = BytesMut::new();
    cmd.encode(&mut buf);
    lookup::decode_command(&mut buf, LIMITS.max_body_size)
}

/// Runs `bytes` through a decoder whole and in chunks; both must agree.
fn check<C: Clone + PartialEq + std::fmt::Debug>(
    bytes: &[u8],
    chunks: &[usize],
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<C>, ProtocolError>,
    mut reencode: impl FnMut(&C) -> Result<Option<C>, ProtocolError>,
) -> Result<(), TestCaseError> {
    let mut whole = Outcome {
        commands: Vec::new(),
        error: None,
    };
    drain(
        &mut BytesMut::from(bytes),
        &mut whole,
        &mut decode,
        &mut reencode,
    )?;

    let mut piecewise = Outcome {
        commands: Vec::new(),
        error: None,
    };
    let mut src = BytesMut::new();
    let mut rest = bytes;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() && piecewise.error.is_none() {
        let take = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
        src.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        drain(&mut src, &mut piecewise, &mut decode, &mut reencode)?;
    }
    prop_assert_eq!(
        piecewise,
        whole,
        "result depends on how the bytes were split"
    );
    Ok(())
}

fn check_both(bytes: &[u8], chunks: &[usize]) -> Result<(), TestCaseError> {
    check(bytes, chunks, v2_decode, v2_reencode)?;
    check(bytes, chunks, lookup_decode, lookup_reencode)?;
    // The frame decoders are as exposed to a hostile peer.
    let mut src = BytesMut::from(bytes);
    while let Ok(Some(_)) = v2::decode_frame(&mut src, 256) {}
    let mut src = BytesMut::from(bytes);
    while let Ok(Some(_)) = lookup::decode_response(&mut src, 256) {}
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600), chunks in chunk_sizes()) {
        check_both(&bytes, &chunks)?;
    }

    #[test]
    fn token_soups(bytes in token_soup(), chunks in chunk_sizes()) {
        check_both(&bytes, &chunks)?;
    }

    #[test]
    fn mutated_commands(
        cmds in prop::collection::vec(command(), 1..5),
        edits in edits(),
        chunks in chunk_sizes(),
    ) {
        let mut buf = BytesMut::new();
        for cmd in &cmds {
            cmd.encode(&mut buf);
        }
        check_both(&mutate(buf.to_vec(), &edits), &chunks)?;
    }

    #[test]
    fn mutated_lookup_commands(
        cmds in prop::collection::vec(lookup_command(), 1..5),
        edits in edits(),
        chunks in chunk_sizes(),
    ) {
        let mut buf = BytesMut::new();
        for cmd in &cmds {
            cmd.encode(&mut buf);
        }
        check_both(&mutate(buf.to_vec(), &edits), &chunks)?;
    }

    #[test]
    fn valid_streams_split_anywhere(cmds in prop::collection::vec(command(), 1..8), chunks in chunk_sizes()) {
        let mut buf = BytesMut::new();
        for cmd in &cmds {
            cmd.encode(&mut buf);
        }
        let limits = DecodeLimits::default();
        let mut src = BytesMut::new();
        let mut decoded = Vec::new();
        let mut rest = &buf[..];
        let mut sizes = chunks.iter().cycle();
        while !rest.is_empty() {
            let take = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
            src.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            while let Some(cmd) = v2::decode_command(&mut src, &limits).unwrap() {
                decoded.push(cmd);
            }
        }
        prop_assert_eq!(decoded, cmds);
        prop_assert!(src.is_empty());
    }
}
