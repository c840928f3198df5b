//! The TCP listener for protocol V2: accepts connections (bounded by `--max-connections`), checks
//! the protocol magic and hands each connection to its own task.

mod conn;
pub(crate) mod https;
mod outbuf;

use std::sync::Arc;

use bytes::BytesMut;
use ferry_proto::v2;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::broker::Broker;

/// How long a new connection may take to send its 4-byte magic.
const MAGIC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Accepts connections until `cancel`.
pub(crate) async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    cancel: CancellationToken,
    tls: Option<TlsAcceptor>,
) {
    let limit = Arc::new(Semaphore::new(broker.config.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, remote) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let broker = broker.clone();
        let cancel = cancel.clone();
        let tls = tls.clone();
        // `client` (the broker's id for the connection) is recorded once it is registered,
        // `client_id` (the client's own name) after IDENTIFY.
        let span = info_span!(
            "conn",
            remote = %remote,
            client = tracing::field::Empty,
            client_id = tracing::field::Empty
        );
        broker.tracker.clone().spawn(
            async move {
                handle(stream, remote, broker, cancel, tls).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

async fn handle(
    mut stream: TcpStream,
    remote: std::net::SocketAddr,
    broker: Arc<Broker>,
    cancel: CancellationToken,
    tls: Option<TlsAcceptor>,
) {
    let _ = stream.set_nodelay(true);
    let mut magic = [0u8; 4];
    match tokio::time::timeout(MAGIC_TIMEOUT, stream.read_exact(&mut magic)).await {
        Ok(Ok(_)) => {}
        _ => return,
    }
    if magic != v2::MAGIC {
        info!(magic = ?String::from_utf8_lossy(&magic), "bad protocol magic");
        let mut buf = BytesMut::new();
        // nsqd answers a bad magic with the bare code and closes.
        encode_bare_error(&mut buf, "E_BAD_PROTOCOL");
        let _ = stream.write_all(&buf).await;
        return;
    }
    let info = broker.add_client(remote);
    tracing::Span::current().record("client", info.id);
    conn::Conn::new(broker, info, Box::new(stream), tls)
        .run(cancel)
        .await;
}

fn encode_bare_error(dst: &mut BytesMut, code: &str) {
    use bytes::BufMut as _;
    dst.put_i32(4 + code.len() as i32);
    dst.put_i32(v2::FrameType::Error as i32);
    dst.put_slice(code.as_bytes());
}
