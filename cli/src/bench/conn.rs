//! One client connection to a broker, with its read and write buffers.
//!
//! ```text
//! Conn ── wbuf (commands queued by push) ──write──▶ broker
//!      ◀─ rbuf (big, reused) ◀──read── frames ──── broker
//! ```
//!
//! Invariants: frames are decoded straight out of `rbuf` with `ferry_proto::v2::decode_frame`;
//! callers drop each frame before the next read, so the buffer's memory is reclaimed rather
//! than reallocated and the hot loops allocate nothing per message. `_heartbeat_` responses
//! met while waiting for an answer ([`Conn::request`]) are answered with `NOP` here; the hot
//! loops answer them themselves.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferry_proto::v2::{Command, Frame, HEARTBEAT, MAGIC, decode_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::BenchError;

/// How long to wait for the broker to accept a connection.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest frame accepted from the broker (far above any broker's message size limit; it only
/// bounds what a corrupt size field can make the tool allocate).
const MAX_FRAME_SIZE: usize = 64 << 20;

/// How long to look for an error frame after a write failed (the broker usually explains why
/// it closed the connection).
const EXPLAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// A V2 connection, magic already queued.
#[derive(Debug)]
pub(crate) struct Conn {
    addr: String,
    stream: TcpStream,
    /// Bytes read and not yet decoded.
    rbuf: BytesMut,
    /// Commands queued by [`Conn::push`], written by [`Conn::flush`].
    wbuf: BytesMut,
    /// Free space guaranteed in `rbuf` before each read.
    read_chunk: usize,
}

impl Conn {
    /// Connects to `addr` and queues the `"  V2"` magic (sent with the first command).
    ///
    /// `read_chunk` is how much free space each read gets; the buffer holds twice that.
    pub(crate) async fn connect(addr: &str, read_chunk: usize) -> Result<Conn, BenchError> {
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => {
                return Err(BenchError::Connect {
                    addr: addr.to_owned(),
                    source,
                });
            }
            Err(_elapsed) => {
                return Err(BenchError::ConnectTimeout {
                    addr: addr.to_owned(),
                    timeout: CONNECT_TIMEOUT,
                });
            }
        };
        // Commands are written in whole batches; do not let Nagle delay the last piece.
        stream.set_nodelay(true).map_err(|source| BenchError::Io {
            addr: addr.to_owned(),
            during: "connecting",
            source,
        })?;
        let mut wbuf = BytesMut::with_capacity(64 * 1024);
        wbuf.extend_from_slice(&MAGIC);
        Ok(Conn {
            addr: addr.to_owned(),
            stream,
            rbuf: BytesMut::with_capacity(2 * read_chunk),
            wbuf,
            read_chunk,
        })
    }

    /// The broker's address, as given.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Queues `cmd` for the next [`Conn::flush`].
    pub(crate) fn push(&mut self, cmd: &Command) {
        cmd.encode(&mut self.wbuf);
    }

    /// Writes everything queued by [`Conn::push`].
    pub(crate) async fn flush(&mut self, during: &'static str) -> Result<(), BenchError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        if let Err(source) = self.stream.write_all(&self.wbuf).await {
            return Err(self.write_failed(during, source).await);
        }
        self.wbuf.clear();
        Ok(())
    }

    /// Writes `bytes` as they are (a pre-encoded command), after anything queued.
    pub(crate) async fn write_encoded(
        &mut self,
        bytes: &[u8],
        during: &'static str,
    ) -> Result<(), BenchError> {
        self.flush(during).await?;
        if let Err(source) = self.stream.write_all(bytes).await {
            return Err(self.write_failed(during, source).await);
        }
        Ok(())
    }

    /// Reads more bytes into the read buffer. Cancel-safe: a cancelled call read nothing.
    ///
    /// End of stream is an error: a broker only closes a connection on a fatal error, and then
    /// it sends an error frame first, which the caller decodes before reading again.
    pub(crate) async fn read_more(&mut self, during: &'static str) -> Result<(), BenchError> {
        if self.rbuf.capacity() - self.rbuf.len() < self.read_chunk {
            // Frames already decoded have been dropped, so this reclaims the same memory.
            self.rbuf.reserve(self.read_chunk);
        }
        match self.stream.read_buf(&mut self.rbuf).await {
            Ok(0) => Err(BenchError::Closed {
                addr: self.addr.clone(),
                during,
            }),
            Ok(_) => Ok(()),
            Err(source) => Err(BenchError::Io {
                addr: self.addr.clone(),
                during,
                source,
            }),
        }
    }

    /// The next complete frame in the read buffer, if there is one.
    pub(crate) fn next_frame(&mut self, during: &'static str) -> Result<Option<Frame>, BenchError> {
        decode_frame(&mut self.rbuf, MAX_FRAME_SIZE).map_err(|source| BenchError::Frame {
            addr: self.addr.clone(),
            during,
            source,
        })
    }

    /// Sends `cmd` (and anything queued) and returns the data of the response frame that
    /// answers it, answering heartbeats on the way. An error frame becomes
    /// [`BenchError::Broker`].
    pub(crate) async fn request(
        &mut self,
        cmd: &Command,
        during: &'static str,
    ) -> Result<Bytes, BenchError> {
        self.push(cmd);
        self.flush(during).await?;
        loop {
            while let Some(frame) = self.next_frame(during)? {
                match frame {
                    Frame::Response(data) if data == HEARTBEAT => {
                        self.push(&Command::Nop);
                        self.flush(during).await?;
                    }
                    Frame::Response(data) => return Ok(data),
                    Frame::Error(data) => return Err(self.broker_error(during, &data)),
                    Frame::Message(_) => return Err(self.unexpected(during, "message frame")),
                }
            }
            self.read_more(during).await?;
        }
    }

    /// An error frame's data as a [`BenchError::Broker`].
    pub(crate) fn broker_error(&self, during: &'static str, data: &[u8]) -> BenchError {
        BenchError::Broker {
            addr: self.addr.clone(),
            during,
            error: String::from_utf8_lossy(data).into_owned(),
        }
    }

    /// A [`BenchError::Unexpected`] about `what`.
    pub(crate) fn unexpected(&self, during: &'static str, what: impl Into<String>) -> BenchError {
        BenchError::Unexpected {
            addr: self.addr.clone(),
            during,
            what: what.into(),
        }
    }

    /// The error to report after a failed write: the broker's error frame if it sent one
    /// before closing (the usual case: a refused command), else the I/O error.
    async fn write_failed(&mut self, during: &'static str, source: std::io::Error) -> BenchError {
        let look = async {
            loop {
                while let Ok(Some(frame)) = self.next_frame(during) {
                    if let Frame::Error(data) = frame {
                        return Some(self.broker_error(during, &data));
                    }
                }
                if self.read_more(during).await.is_err() {
                    return None;
                }
            }
        };
        match tokio::time::timeout(EXPLAIN_TIMEOUT, look).await {
            Ok(Some(err)) => err,
            Ok(None) | Err(_) => BenchError::Io {
                addr: self.addr.clone(),
                during,
                source,
            },
        }
    }
}

/// A short, printable description of a response frame's data, for error messages.
pub(crate) fn describe_response(data: &[u8]) -> String {
    const MAX: usize = 64;
    let text = String::from_utf8_lossy(&data[..data.len().min(MAX)]);
    let more = if data.len() > MAX { "..." } else { "" };
    format!("response {text:?}{more}")
}
