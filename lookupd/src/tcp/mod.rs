//! The TCP listener for lookup protocol V1: accepts broker connections (bounded by
//! `--max-connections`), checks the protocol magic and hands each connection to its own task.

mod peer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use ferry_proto::lookup;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{Instrument, info, info_span, warn};

use crate::shared::Shared;

/// How long a new connection may take to send its 4-byte magic.
const MAGIC_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until the daemon shuts down.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, max_connections: usize) {
    let limit = Arc::new(Semaphore::new(max_connections.max(1)));
    let cancel = shared.cancel.clone();
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
        let task_shared = shared.clone();
        shared.connections_total.fetch_add(1, Ordering::Relaxed);
        shared.open_connections.fetch_add(1, Ordering::Relaxed);
        let span = info_span!("peer", remote = %remote, broker = tracing::field::Empty);
        shared.tracker.spawn(
            async move {
                handle(stream, remote, task_shared.clone()).await;
                task_shared.open_connections.fetch_sub(1, Ordering::Relaxed);
                drop(permit);
            }
            .instrument(span),
        );
    }
}

async fn handle(mut stream: TcpStream, remote: SocketAddr, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut magic = [0u8; 4];
    let read = tokio::select! {
        _ = shared.cancel.cancelled() => return,
        r = tokio::time::timeout(MAGIC_TIMEOUT, stream.read_exact(&mut magic)) => r,
    };
    match read {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            info!(error = %e, "failed to read protocol magic");
            return;
        }
        Err(_) => {
            info!("no protocol magic in time");
            return;
        }
    }
    if magic != lookup::MAGIC {
        info!(magic = ?String::from_utf8_lossy(&magic), "bad protocol magic");
        // nsqlookupd answers with the bare code as a plain response and closes.
        let mut buf = BytesMut::new();
        lookup::encode_response(&mut buf, b"E_BAD_PROTOCOL");
        let _ = stream.write_all(&buf).await;
        let _ = stream.shutdown().await;
        return;
    }
    peer::Peer::new(shared, remote).run(stream).await;
}
