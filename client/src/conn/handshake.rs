//! The handshake: connect (TCP, TLS), magic, IDENTIFY with feature negotiation, AUTH; then
//! the connection's reader and writer tasks are started.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use ferry_proto::identify::IdentifyResponse;
use ferry_proto::v2::{self, Command, Frame, HEARTBEAT, MAGIC, OK};
use ferry_stream::{Codec, Compressed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, from_error_frame};

use super::reader::Reader;
use super::writer::write_loop;
use super::{
    ConnOptions, ConnSender, Deliver, MAX_FRAME_SIZE, OUTGOING_CAPACITY, Pending, READ_CHUNK,
    Shared, Stream, WRITE_BATCH,
};

/// A connection that has completed IDENTIFY (and AUTH, and SUB if asked), not yet started.
pub(crate) struct Handshake {
    addr: String,
    stream: Box<dyn Stream>,
    rbuf: BytesMut,
    /// The broker's answer to IDENTIFY.
    pub(crate) negotiated: IdentifyResponse,
}

/// Connects to `addr` and completes the handshake: magic, IDENTIFY (feature negotiation),
/// AUTH if the broker requires it, and SUB if `subscribe` is given.
///
/// The TCP connection is bounded by `dial_timeout`, each answer by `read_timeout`.
pub(crate) async fn connect(
    addr: &str,
    opts: &ConnOptions,
    subscribe: Option<(&str, &str)>,
) -> Result<Handshake, Error> {
    let stream = match tokio::time::timeout(opts.dial_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => {
            return Err(Error::Connect {
                addr: addr.to_owned(),
                source,
            });
        }
        Err(_elapsed) => {
            return Err(Error::Timeout {
                addr: addr.to_owned(),
                during: "connecting",
                timeout: opts.dial_timeout,
            });
        }
    };
    // Commands are written in whole batches; Nagle would only delay the last piece.
    stream.set_nodelay(true).map_err(|source| Error::Io {
        addr: addr.to_owned(),
        source,
    })?;
    let mut hs = Handshake {
        addr: addr.to_owned(),
        stream: Box::new(stream),
        rbuf: BytesMut::with_capacity(READ_CHUNK),
        negotiated: IdentifyResponse::default(),
    };
    let mut out = BytesMut::from(&MAGIC[..]);
    Command::Identify(opts.identify.clone()).encode(&mut out);
    let reply = hs.exchange(&out, opts).await?;
    if reply != OK {
        hs.negotiated = serde_json::from_slice(&reply).map_err(|source| Error::Identify {
            addr: addr.to_owned(),
            source,
        })?;
    }
    // Upgrades in nsqd's order, each confirmed by an OK sent in the new mode.
    if hs.negotiated.tls_v1 {
        let Some(tls) = &opts.tls else {
            return Err(Error::Unsupported {
                addr: addr.to_owned(),
                feature: "TLS without Config::tls",
            });
        };
        hs.upgrade_tls(tls.clone(), opts).await?;
        hs.expect_ok(opts).await?;
    }
    let codec = match (hs.negotiated.snappy, hs.negotiated.deflate) {
        (true, _) => Some(Codec::Snappy),
        (_, true) => Some(Codec::Deflate {
            level: u32::try_from(hs.negotiated.deflate_level.max(1)).unwrap_or(6),
        }),
        _ => None,
    };
    if let Some(codec) = codec {
        // The broker may have sent its compressed OK right behind the IDENTIFY answer.
        let read_ahead = hs.rbuf.split();
        let plain = std::mem::replace(&mut hs.stream, Box::new(tokio::io::empty()));
        hs.stream = Box::new(Compressed::with_read_ahead(plain, codec, &read_ahead));
        hs.expect_ok(opts).await?;
    }
    if hs.negotiated.auth_required {
        let Some(secret) = &opts.auth_secret else {
            return Err(Error::AuthRequired {
                addr: addr.to_owned(),
            });
        };
        let mut out = BytesMut::new();
        Command::Auth(secret.clone()).encode(&mut out);
        hs.exchange(&out, opts).await?;
    }
    if let Some((topic, channel)) = subscribe {
        let mut out = BytesMut::new();
        Command::Sub {
            topic: topic.to_owned(),
            channel: channel.to_owned(),
        }
        .encode(&mut out);
        let reply = hs.exchange(&out, opts).await?;
        if reply != OK {
            return Err(hs.unexpected(&reply));
        }
    }
    Ok(hs)
}

impl Handshake {
    /// Writes `out` and returns the data of the response frame that answers it, answering
    /// heartbeats on the way.
    async fn exchange(&mut self, out: &[u8], opts: &ConnOptions) -> Result<Bytes, Error> {
        self.write(out, opts).await?;
        self.read_response(opts).await
    }

    /// Reads until an `OK` response.
    async fn expect_ok(&mut self, opts: &ConnOptions) -> Result<(), Error> {
        let reply = self.read_response(opts).await?;
        if reply != OK {
            return Err(self.unexpected(&reply));
        }
        Ok(())
    }

    /// The TLS handshake after IDENTIFY said `tls_v1`; the server name is the address's host.
    async fn upgrade_tls(
        &mut self,
        tls: Arc<rustls::ClientConfig>,
        opts: &ConnOptions,
    ) -> Result<(), Error> {
        let host = host_of(&self.addr);
        let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| {
            Error::InvalidConfig {
                reason: format!("{host:?} is not a valid TLS server name: {e}"),
            }
        })?;
        let plain = std::mem::replace(&mut self.stream, Box::new(tokio::io::empty()));
        let connect = tokio_rustls::TlsConnector::from(tls).connect(name, plain);
        let stream = match tokio::time::timeout(opts.read_timeout, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => {
                return Err(Error::Tls {
                    addr: self.addr.clone(),
                    source,
                });
            }
            Err(_elapsed) => {
                return Err(Error::Timeout {
                    addr: self.addr.clone(),
                    during: "the TLS handshake",
                    timeout: opts.read_timeout,
                });
            }
        };
        self.stream = Box::new(stream);
        Ok(())
    }

    /// Returns the data of the next response frame, answering heartbeats on the way.
    async fn read_response(&mut self, opts: &ConnOptions) -> Result<Bytes, Error> {
        loop {
            while let Some(frame) =
                v2::decode_frame(&mut self.rbuf, MAX_FRAME_SIZE).map_err(|source| Error::Frame {
                    addr: self.addr.clone(),
                    source,
                })?
            {
                match frame {
                    Frame::Response(data) if data == HEARTBEAT => {
                        let mut nop = BytesMut::new();
                        Command::Nop.encode(&mut nop);
                        self.write(&nop, opts).await?;
                    }
                    Frame::Response(data) => return Ok(data),
                    Frame::Error(data) => return Err(from_error_frame(&self.addr, &data)),
                    Frame::Message(_) => {
                        return Err(Error::UnexpectedFrame {
                            addr: self.addr.clone(),
                            what: "message before SUB".into(),
                        });
                    }
                }
            }
            let read =
                tokio::time::timeout(opts.read_timeout, self.stream.read_buf(&mut self.rbuf)).await;
            match read {
                Ok(Ok(0)) => {
                    return Err(Error::ConnectionLost {
                        addr: self.addr.clone(),
                    });
                }
                Ok(Ok(_)) => {}
                Ok(Err(source)) => {
                    return Err(Error::Io {
                        addr: self.addr.clone(),
                        source,
                    });
                }
                Err(_elapsed) => {
                    return Err(Error::Timeout {
                        addr: self.addr.clone(),
                        during: "waiting for the handshake's answer",
                        timeout: opts.read_timeout,
                    });
                }
            }
        }
    }

    async fn write(&mut self, out: &[u8], opts: &ConnOptions) -> Result<(), Error> {
        let write = async {
            self.stream.write_all(out).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(opts.write_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(Error::Io {
                addr: self.addr.clone(),
                source,
            }),
            Err(_elapsed) => Err(Error::Timeout {
                addr: self.addr.clone(),
                during: "writing",
                timeout: opts.write_timeout,
            }),
        }
    }

    fn unexpected(&self, data: &[u8]) -> Error {
        let text = String::from_utf8_lossy(&data[..data.len().min(64)]);
        Error::UnexpectedFrame {
            addr: self.addr.clone(),
            what: format!("response {text:?}"),
        }
    }

    /// Starts the reader and writer tasks. `deliver` is built from the connection's sender
    /// (a consumer's messages must be able to answer over it); `None` for a producer, whose
    /// connection must never receive a message.
    pub(crate) fn start(
        self,
        opts: &ConnOptions,
        deliver: impl FnOnce(&ConnSender) -> Option<Deliver>,
    ) -> ConnSender {
        let (tx, rx) = mpsc::channel(OUTGOING_CAPACITY);
        let shared = Arc::new(Shared {
            addr: self.addr,
            pending: Mutex::new(Pending::default()),
            closed: CancellationToken::new(),
            commands: Mutex::new(BytesMut::with_capacity(WRITE_BATCH)),
            commands_ready: Notify::new(),
            commands_drained: Notify::new(),
        });
        let sender = ConnSender {
            tx,
            shared: shared.clone(),
        };
        let deliver = deliver(&sender);
        let (rd, wr) = tokio::io::split(self.stream);
        let reader = Reader {
            rd,
            rbuf: self.rbuf,
            shared: shared.clone(),
            deliver,
            batch: Vec::new(),
            read_timeout: opts.read_timeout,
        };
        tokio::spawn(reader.run());
        tokio::spawn(write_loop(wr, rx, shared, opts.write_timeout));
        sender
    }
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("addr", &self.addr)
            .field("negotiated", &self.negotiated)
            .finish_non_exhaustive()
    }
}

/// The host part of `host:port` (`[v6]:port` too).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}
