//! The TCP listener for protocol V2: accepts connections (at most `--max-connections` served,
//! more refused with `E_TOO_MANY_CONNECTIONS`), checks the protocol magic and hands each
//! connection to its own task.

mod conn;
pub(crate) mod http;
pub(crate) mod https;
mod outbuf;

use std::sync::Arc;

use bytes::BytesMut;
use ferry_proto::v2;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span};

use crate::broker::Broker;
use crate::limits::{self, Greeting, Listener};

/// How long a new connection may take to send its 4-byte magic.
const MAGIC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Accepts connections until `cancel`. Over `--max-connections` a connection is still accepted,
/// and refused with `E_TOO_MANY_CONNECTIONS` in a task of its own (see [`crate::limits`]).
pub(crate) async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    cancel: CancellationToken,
    tls: Option<TlsAcceptor>,
) {
    let mut last_accept_error = None;
    loop {
        let (stream, remote) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    limits::accept_failed("TCP", &e, &mut last_accept_error).await;
                    continue;
                }
            },
        };
        let Some(permit) = broker.limits.admit(Listener::Tcp) else {
            refuse(&broker, stream, &cancel);
            continue;
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
                crate::memory::connection_closed();
            }
            .instrument(span),
        );
    }
}

/// Refuses a connection over the limit: `E_TOO_MANY_CONNECTIONS` after its magic, in a
/// refusal task when one is free, else an immediate close.
fn refuse(broker: &Broker, stream: TcpStream, cancel: &CancellationToken) {
    broker.limits.note_refused(Listener::Tcp);
    let Some(slot) = broker.limits.refusal_slot() else {
        return;
    };
    let reply = broker.limits.v2_refusal();
    let cancel = cancel.clone();
    broker.tracker.spawn(async move {
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = limits::refuse(stream, Greeting::Magic, &reply) => {}
        }
        drop(slot);
    });
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
