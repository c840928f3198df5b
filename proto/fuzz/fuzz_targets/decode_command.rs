//! Feeds arbitrary bytes to the command decoders the way a connection does: in reads of varying
//! size, decoding after each read until the decoder wants more or refuses.
//!
//! Input layout: `[max_msg byte][max_body byte][chunk seed byte][stream...]`; the first bytes pick
//! small limits so that every limit check is reachable. Checked on every call: no panic,
//! `Ok(None)` and `Err` consume nothing, `Ok(Some)` consumes at least one byte, decode errors are
//! fatal. The same stream also goes through the client-side frame decoders.

#![no_main]

use bytes::BytesMut;
use ferry_proto::ProtocolError;
use ferry_proto::lookup;
use ferry_proto::v2::{self, DecodeLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [msg, body, seed, stream @ ..] = data else {
        return;
    };
    let limits = DecodeLimits {
        max_msg_size: u32::from(*msg) * 4,
        max_body_size: u32::from(*body) * 16,
    };
    let chunk = usize::from(*seed % 32) + 1;
    feed(stream, chunk, |src| v2::decode_command(src, &limits));
    feed(stream, chunk, |src| {
        lookup::decode_command(src, limits.max_body_size)
    });

    let mut src = BytesMut::from(stream);
    while let Ok(Some(_)) = v2::decode_frame(&mut src, limits.max_body_size as usize) {}
    let mut src = BytesMut::from(stream);
    while let Ok(Some(_)) = lookup::decode_response(&mut src, limits.max_body_size as usize) {}
});

fn feed<C>(
    stream: &[u8],
    chunk: usize,
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<C>, ProtocolError>,
) {
    let mut src = BytesMut::new();
    for read in stream.chunks(chunk) {
        src.extend_from_slice(read);
        loop {
            let before = src.len();
            match decode(&mut src) {
                Ok(None) => {
                    assert_eq!(src.len(), before, "Ok(None) consumed");
                    break;
                }
                Ok(Some(_)) => assert!(src.len() < before, "Ok(Some) consumed nothing"),
                Err(err) => {
                    assert_eq!(src.len(), before, "Err consumed");
                    assert!(err.is_fatal(), "decode error {err} is not fatal");
                    return;
                }
            }
        }
    }
}
