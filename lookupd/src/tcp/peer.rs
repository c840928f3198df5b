//! One broker connection speaking lookup protocol V1, in one task.
//!
//! ```text
//! read bytes ─▶ state check ─▶ decode_command ─▶ exec (db lock, short) ─▶ response bytes
//!                  │                 │                 │
//!                  └── error ────────┴─────────────────┴─▶ error response, then close
//! ```
//!
//! Every error is fatal, as in nsqlookupd. Commands that arrive together are answered in order
//! with one write. When the connection ends, for whatever reason, the peer leaves every
//! registration it had (a drop guard does it, so even a panic cannot leave a ghost broker).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use ferry_proto::identify::IdentifyRequest;
use ferry_proto::lookup::{self, LookupCommand, PeerInfo};
use ferry_proto::{ErrorCode, ProtocolError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::db::PeerId;
use crate::shared::Shared;

/// Largest IDENTIFY body accepted. nsqlookupd has no limit; a broker's IDENTIFY is a few
/// hundred bytes.
const MAX_IDENTIFY_BODY: u32 = 1 << 20;
/// Read buffer growth step.
const READ_CHUNK: usize = 4096;

/// What a command answers when it succeeds.
enum Reply {
    Ok,
    Data(Vec<u8>),
}

impl Reply {
    fn bytes(&self) -> &[u8] {
        match self {
            Reply::Ok => b"OK",
            Reply::Data(data) => data,
        }
    }
}

enum Flow {
    Continue,
    Close,
}

/// A broker connection.
pub(crate) struct Peer {
    shared: Arc<Shared>,
    id: PeerId,
    remote: SocketAddr,
    identified: bool,
}

impl Peer {
    pub(crate) fn new(shared: Arc<Shared>, remote: SocketAddr) -> Peer {
        let id = shared.new_peer_id();
        Peer {
            shared,
            id,
            remote,
            identified: false,
        }
    }

    /// Serves the connection until the broker leaves, a fatal error, or shutdown.
    pub(crate) async fn run(mut self, mut stream: TcpStream) {
        let _leave = LeaveOnDrop {
            shared: self.shared.clone(),
            id: self.id,
        };
        if let Err(e) = self.serve(&mut stream).await {
            debug!(error = %e, "connection ended with an I/O error");
        }
        info!("closing");
    }

    async fn serve(&mut self, stream: &mut TcpStream) -> std::io::Result<()> {
        let cancel = self.shared.cancel.clone();
        let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
        let mut out = BytesMut::new();
        loop {
            let flow = self.process(&mut rbuf, &mut out);
            if !out.is_empty() {
                stream.write_all(&out).await?;
                out.clear();
            }
            if let Flow::Close = flow {
                return stream.shutdown().await;
            }
            rbuf.reserve(READ_CHUNK);
            let n = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                r = stream.read_buf(&mut rbuf) => r?,
            };
            if n == 0 {
                return Ok(());
            }
        }
    }

    /// Executes every complete command in `rbuf`, appending the responses to `out`.
    fn process(&mut self, rbuf: &mut BytesMut, out: &mut BytesMut) -> Flow {
        loop {
            let decoded = match self.state_error(rbuf) {
                Some(err) => Err(err),
                None => lookup::decode_command(rbuf, MAX_IDENTIFY_BODY),
            };
            let result = match decoded {
                Ok(None) => return Flow::Continue,
                Ok(Some(cmd)) => self.exec(cmd),
                Err(err) => Err(err),
            };
            match result {
                Ok(reply) => lookup::encode_response(out, reply.bytes()),
                Err(err) => {
                    warn!(error = %err, "closing after error");
                    lookup::encode_error(out, &err);
                    return Flow::Close;
                }
            }
        }
    }

    /// nsqlookupd checks the connection's state before it parses a command's parameters or
    /// reads its body; so does this, on the first complete line in `rbuf`.
    fn state_error(&self, rbuf: &[u8]) -> Option<ProtocolError> {
        let window = &rbuf[..rbuf.len().min(lookup::MAX_LINE_LEN)];
        let end = window.iter().position(|&b| b == b'\n')?;
        let line = trim_space(&window[..end]);
        let name = line.split(|&b| b == b' ').next().unwrap_or_default();
        match name {
            b"IDENTIFY" if self.identified => Some(ProtocolError::new(
                ErrorCode::Invalid,
                "cannot IDENTIFY again",
            )),
            b"REGISTER" | b"UNREGISTER" if !self.identified => Some(must_identify()),
            _ => None,
        }
    }

    fn exec(&mut self, cmd: LookupCommand) -> Result<Reply, ProtocolError> {
        match cmd {
            LookupCommand::Ping => {
                if self.identified {
                    let since = self.shared.with_db(|db| db.touch(self.id, Instant::now()));
                    debug!(since_last = ?since, "pinged");
                }
                Ok(Reply::Ok)
            }
            LookupCommand::Identify(body) => self.identify(&body),
            LookupCommand::Register { topic, channel } => {
                self.require_identified()?;
                let added = self
                    .shared
                    .with_db(|db| db.register(self.id, &topic, channel.as_deref()));
                for reg in added {
                    info!("DB: REGISTER {reg}");
                }
                Ok(Reply::Ok)
            }
            LookupCommand::Unregister { topic, channel } => {
                self.require_identified()?;
                let removed = self
                    .shared
                    .with_db(|db| db.unregister(self.id, &topic, channel.as_deref()));
                for reg in removed {
                    info!("DB: UNREGISTER {reg}");
                }
                Ok(Reply::Ok)
            }
        }
    }

    fn identify(&mut self, body: &[u8]) -> Result<Reply, ProtocolError> {
        if self.identified {
            return Err(ProtocolError::new(
                ErrorCode::Invalid,
                "cannot IDENTIFY again",
            ));
        }
        let info = PeerInfo::from_json(body).map_err(|e| {
            debug!(error = %e, "IDENTIFY body is not valid JSON");
            IdentifyRequest::bad_json_error()
        })?;
        info.check_required()?;
        info!(
            address = %info.broadcast_address,
            tcp_port = info.tcp_port,
            http_port = info.http_port,
            version = %info.version,
            "IDENTIFY"
        );
        tracing::Span::current().record(
            "broker",
            tracing::field::display(format_args!("{}:{}", info.broadcast_address, info.tcp_port)),
        );
        let remote = self.remote.to_string();
        self.shared
            .with_db(|db| db.add_peer(self.id, info, remote, Instant::now()));
        self.identified = true;
        Ok(Reply::Data(self.shared.identify_reply()))
    }

    fn require_identified(&self) -> Result<(), ProtocolError> {
        if self.identified {
            Ok(())
        } else {
            Err(must_identify())
        }
    }
}

fn must_identify() -> ProtocolError {
    ProtocolError::new(ErrorCode::Invalid, "client must IDENTIFY")
}

/// Go's `strings.TrimSpace` for ASCII, as the decoder trims a line.
fn trim_space(line: &[u8]) -> &[u8] {
    let is_space = |b: &u8| matches!(b, b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r' | b' ');
    let start = line.iter().position(|b| !is_space(b)).unwrap_or(line.len());
    let end = line
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    &line[start..end]
}

/// Removes the peer from every registration when its task ends.
struct LeaveOnDrop {
    shared: Arc<Shared>,
    id: PeerId,
}

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        let removed = self.shared.with_db(|db| db.remove_peer(self.id));
        for reg in removed {
            info!("DB: UNREGISTER {reg}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::trim_space;

    #[test]
    fn trim_space_is_gos() {
        assert_eq!(trim_space(b"  PING \r"), b"PING");
        assert_eq!(trim_space(b"\x0b\x0cREGISTER a\t"), b"REGISTER a");
        assert_eq!(trim_space(b" \r "), b"");
        assert_eq!(trim_space(b""), b"");
    }
}
