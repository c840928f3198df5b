//! The plain HTTP listener handed to `axum::serve`: at most `--max-connections` connections are
//! served at once (HTTPS shares the count); one more is answered `503 Service Unavailable` and
//! closed in a refusal task (see [`crate::limits`]), never left waiting in the backlog.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use crate::broker::Broker;
use crate::limits::{self, Greeting, Listener, Permitted};

/// A [`TcpListener`] that only yields connections within the HTTP limit.
#[derive(Debug)]
pub(crate) struct HttpListener {
    inner: TcpListener,
    broker: Arc<Broker>,
    last_accept_error: Option<std::time::Instant>,
}

impl HttpListener {
    pub(crate) fn new(inner: TcpListener, broker: Arc<Broker>) -> Self {
        HttpListener {
            inner,
            broker,
            last_accept_error: None,
        }
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = Permitted<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, remote) = match self.inner.accept().await {
                Ok(x) => x,
                Err(e) => {
                    limits::accept_failed("HTTP", &e, &mut self.last_accept_error).await;
                    continue;
                }
            };
            match self.broker.limits.admit(Listener::Http) {
                Some(permit) => return (Permitted::new(stream, permit), remote),
                None => refuse_http(&self.broker, async move { Some(stream) }),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Refuses an HTTP(S) connection over the limit with a 503, in a refusal task when one is free
/// (else it is closed at once). `open` yields the stream to answer on: the TCP stream itself,
/// or for HTTPS the stream after its TLS handshake (`None` if that failed).
pub(crate) fn refuse_http<S, F>(broker: &Broker, open: F)
where
    F: Future<Output = Option<S>> + Send + 'static,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    broker.limits.note_refused(Listener::Http);
    let Some(slot) = broker.limits.refusal_slot() else {
        return;
    };
    let cancel = broker.cancel.clone();
    broker.tracker.spawn(async move {
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = async {
                if let Some(io) = open.await {
                    limits::refuse(io, Greeting::HttpHead, limits::HTTP_REFUSAL).await;
                }
            } => {}
        }
        drop(slot);
    });
}
