//! The HTTPS listener: TCP connections are accepted and their TLS handshakes run in their own
//! tasks (a slow client never holds up the others); finished streams are handed to
//! `axum::serve` through the [`axum::serve::Listener`] trait. HTTPS shares the HTTP limit of
//! `--max-connections`: a connection takes its permit before the handshake, and one over the
//! limit is answered 503 after its handshake in a refusal task (see [`crate::limits`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::broker::Broker;
use crate::limits::{self, Listener, Permitted};

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the handshake of a connection that is to be refused may take.
const REFUSAL_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Handshaken TLS connections, ready for HTTP.
#[derive(Debug)]
pub(crate) struct TlsListener {
    local: SocketAddr,
    rx: mpsc::Receiver<(Permitted<TlsStream<TcpStream>>, SocketAddr)>,
}

impl TlsListener {
    /// Starts accepting on `listener` until `cancel`.
    pub(crate) fn start(
        listener: TcpListener,
        acceptor: TlsAcceptor,
        broker: Arc<Broker>,
        cancel: CancellationToken,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut last_accept_error = None;
            loop {
                let (stream, remote) = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = listener.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            limits::accept_failed("HTTPS", &e, &mut last_accept_error).await;
                            continue;
                        }
                    },
                };
                let acceptor = acceptor.clone();
                let Some(permit) = broker.limits.admit(Listener::Http) else {
                    super::http::refuse_http(&broker, async move {
                        let tls = tokio::time::timeout(
                            REFUSAL_HANDSHAKE_TIMEOUT,
                            acceptor.accept(stream),
                        );
                        tls.await.ok()?.ok()
                    });
                    continue;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((Permitted::new(tls, permit), remote)).await;
                        }
                        Ok(Err(e)) => debug!(%remote, error = %e, "HTTPS handshake failed"),
                        Err(_) => debug!(%remote, "HTTPS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { local, rx })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = Permitted<TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The acceptor stopped (shutdown): wait for graceful shutdown to end the server.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
