//! `ferry-stream`: compression negotiated by IDENTIFY: snappy (the framed stream format) or raw DEFLATE (no zlib
//! header), as a layer over any stream (plain TCP or TLS).
//!
//! The codecs themselves are the `snap` and `flate2` crates; this module only adapts them to
//! non-blocking I/O: bytes written are compressed into a pending buffer that `poll_flush` writes
//! out (closing a snappy frame or doing a DEFLATE sync flush first, so the peer can decode
//! everything written so far); bytes read are decoded as soon as they are complete (for snappy,
//! whole chunks: a chunk header says its length).

#![forbid(unsafe_code)]

use std::io::{Read as _, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection's byte stream, whatever it is made of (plain TCP, TLS, compression, in any
/// combination): what broker and client connections read and write through a `Box<dyn Stream>`.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Which compression a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Snappy, framed stream format.
    Snappy,
    /// Raw DEFLATE at this level (1..=9).
    Deflate { level: u32 },
}

/// Pending compressed output above which writes wait for the socket.
const HIGH_WATER: usize = 256 * 1024;
/// Read granularity from the inner stream.
const READ_CHUNK: usize = 16 * 1024;
/// Largest snappy chunk the framing format allows (4-byte header + 16 MiB - 1).
const SNAPPY_MAX_CHUNK: usize = 4 + (1 << 24) - 1;

/// `S` with compression on both directions.
#[allow(missing_debug_implementations)] // codec state is opaque
pub struct Compressed<S> {
    inner: S,
    enc: Encoder,
    dec: Decoder,
    /// Compressed bytes waiting to be written to `inner`.
    out: BytesMut,
    /// Written since the last flush (a frame/sync point is owed).
    dirty: bool,
    /// Compressed bytes read from `inner`, not yet decoded.
    raw_in: BytesMut,
    /// Decoded bytes not yet returned.
    plain_in: BytesMut,
    eof: bool,
}

enum Encoder {
    Snappy(Box<snap::write::FrameEncoder<Vec<u8>>>),
    Deflate(Compress),
}

enum Decoder {
    Snappy(Box<snap::read::FrameDecoder<Chunks>>),
    Deflate(Decompress),
}

/// Whole snappy chunks waiting for the frame decoder; reads end (`Ok(0)`) at a chunk boundary.
#[derive(Default)]
struct Chunks(BytesMut);

impl std::io::Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0.advance(n);
        Ok(n)
    }
}

impl<S> Compressed<S> {
    /// Like [`Compressed::new`], for a peer that may already have sent compressed bytes which
    /// were read (and buffered) before the switch: `already_read` is decoded first.
    pub fn with_read_ahead(inner: S, codec: Codec, already_read: &[u8]) -> Self {
        let mut c = Compressed::new(inner, codec);
        c.raw_in.extend_from_slice(already_read);
        c
    }

    /// Wraps `inner`; everything written from now on is compressed, everything read decoded.
    pub fn new(inner: S, codec: Codec) -> Self {
        let (enc, dec) = match codec {
            Codec::Snappy => (
                Encoder::Snappy(Box::new(snap::write::FrameEncoder::new(Vec::new()))),
                Decoder::Snappy(Box::new(snap::read::FrameDecoder::new(Chunks::default()))),
            ),
            Codec::Deflate { level } => (
                Encoder::Deflate(Compress::new(Compression::new(level.clamp(1, 9)), false)),
                Decoder::Deflate(Decompress::new(false)),
            ),
        };
        Compressed {
            inner,
            enc,
            dec,
            out: BytesMut::new(),
            dirty: false,
            raw_in: BytesMut::new(),
            plain_in: BytesMut::new(),
            eof: false,
        }
    }

    /// Compresses `data` into `out`.
    fn compress(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.dirty = true;
        match &mut self.enc {
            Encoder::Snappy(e) => {
                e.write_all(data)?;
                take_vec(e.get_mut(), &mut self.out);
            }
            Encoder::Deflate(c) => deflate(c, data, FlushCompress::None, &mut self.out)?,
        }
        Ok(())
    }

    /// Ends the current frame / emits a sync point so the peer can decode all written data.
    fn sync(&mut self) -> std::io::Result<()> {
        if !std::mem::take(&mut self.dirty) {
            return Ok(());
        }
        match &mut self.enc {
            Encoder::Snappy(e) => {
                e.flush()?;
                take_vec(e.get_mut(), &mut self.out);
            }
            Encoder::Deflate(c) => deflate(c, &[], FlushCompress::Sync, &mut self.out)?,
        }
        Ok(())
    }

    /// Decodes what `raw_in` holds into `plain_in`.
    fn decode(&mut self) -> std::io::Result<()> {
        match &mut self.dec {
            Decoder::Snappy(d) => {
                // Hand over whole chunks only, so the decoder never sees half a chunk.
                loop {
                    if self.raw_in.len() < 4 {
                        break;
                    }
                    let len = usize::from(self.raw_in[1])
                        | usize::from(self.raw_in[2]) << 8
                        | usize::from(self.raw_in[3]) << 16;
                    if self.raw_in.len() < 4 + len {
                        break;
                    }
                    let chunk = self.raw_in.split_to(4 + len);
                    d.get_mut().0.extend_from_slice(&chunk);
                }
                let mut buf = [0u8; 16 * 1024];
                loop {
                    let n = d.read(&mut buf).map_err(invalid_data)?;
                    if n == 0 {
                        break;
                    }
                    self.plain_in.extend_from_slice(&buf[..n]);
                }
            }
            Decoder::Deflate(d) => {
                let mut tmp = Vec::with_capacity(READ_CHUNK * 4);
                loop {
                    tmp.clear();
                    let (before_in, before_out) = (d.total_in(), d.total_out());
                    let status = d
                        .decompress_vec(&self.raw_in, &mut tmp, FlushDecompress::None)
                        .map_err(invalid_data)?;
                    let consumed = (d.total_in() - before_in) as usize;
                    let produced = d.total_out() - before_out;
                    self.raw_in.advance(consumed);
                    self.plain_in.extend_from_slice(&tmp);
                    // Done when the input is used up and the output had room to spare (else
                    // the decompressor may still hold output).
                    let drained = self.raw_in.is_empty() && tmp.len() < tmp.capacity();
                    if status == Status::StreamEnd || drained || (consumed == 0 && produced == 0) {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

fn take_vec(v: &mut Vec<u8>, out: &mut BytesMut) {
    out.extend_from_slice(v);
    v.clear();
}

/// Compresses all of `input` (and performs `flush`) into `out`.
fn deflate(
    c: &mut Compress,
    mut input: &[u8],
    flush: FlushCompress,
    out: &mut BytesMut,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(input.len() / 2 + 1024);
    loop {
        let before = c.total_in();
        c.compress_vec(input, &mut buf, flush)
            .map_err(invalid_data)?;
        input = &input[(c.total_in() - before) as usize..];
        // Output space left over means the compressor had nothing more to give.
        if input.is_empty() && buf.len() < buf.capacity() {
            break;
        }
        out.extend_from_slice(&buf);
        buf.clear();
        buf.reserve(64 * 1024);
    }
    out.extend_from_slice(&buf);
    Ok(())
}

fn invalid_data(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("decompression: {e}"),
    )
}

impl<S: AsyncWrite + Unpin> Compressed<S> {
    /// Writes pending compressed bytes until none are left or the socket is full.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Compressed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.out.len() >= HIGH_WATER {
            ready!(this.poll_drain(cx))?;
        }
        this.compress(buf)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.out.len() >= HIGH_WATER {
            ready!(this.poll_drain(cx))?;
        }
        let mut n = 0;
        for b in bufs {
            this.compress(b)?;
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        this.sync()?;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Compressed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.plain_in.is_empty() {
                let n = buf.remaining().min(this.plain_in.len());
                buf.put_slice(&this.plain_in[..n]);
                this.plain_in.advance(n);
                return Poll::Ready(Ok(()));
            }
            if !this.raw_in.is_empty() {
                let before = this.raw_in.len();
                this.decode()?;
                if !this.plain_in.is_empty() || this.raw_in.len() != before {
                    continue;
                }
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.raw_in.len() > SNAPPY_MAX_CHUNK + READ_CHUNK {
                return Poll::Ready(Err(invalid_data("chunk too large")));
            }
            let mut chunk = [0u8; READ_CHUNK];
            let n = {
                let mut rb = ReadBuf::new(&mut chunk);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
                rb.filled().len()
            };
            if n == 0 {
                this.eof = true;
                continue;
            }
            this.raw_in.extend_from_slice(&chunk[..n]);
            this.decode()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn round_trip(codec: Codec) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (mut a, mut b) = (Compressed::new(a, codec), Compressed::new(b, codec));
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            for chunk in sent.chunks(7_777) {
                a.write_all(chunk).await.unwrap();
                a.flush().await.unwrap();
            }
            a.shutdown().await.unwrap();
        });
        let mut got = vec![0u8; data.len()];
        b.read_exact(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, data);
    }

    #[tokio::test]
    async fn snappy_round_trips_in_flushed_pieces() {
        round_trip(Codec::Snappy).await;
    }

    #[tokio::test]
    async fn deflate_round_trips_in_flushed_pieces() {
        round_trip(Codec::Deflate { level: 6 }).await;
    }
}
