//! Connection limits of the TCP, HTTP(S) and gRPC listeners (`--max-connections` each).
//!
//! A listener never stops accepting. A connection over the limit is accepted and refused with a
//! reason, in a small task of its own, so that a healthy client learns at once why it is not
//! served instead of hanging in the kernel's backlog:
//!
//! ```text
//! accept ──▶ admit(listener) ── permit ──▶ connection task (holds the permit until it ends)
//!               │ limit reached
//!               ▼
//!        refused[listener] += 1, at most one warning per REPORT_EVERY
//!        refusal_slot() ── slot ──▶ refusal task: read the greeting (V2 magic or HTTP request
//!               │ all busy             head, ≤ GREETING_TIMEOUT), write the reason
//!               ▼                      (E_TOO_MANY_CONNECTIONS / 503), FIN, drain the
//!        close at once                 client's leftovers (≤ DRAIN_TIMEOUT), close
//! ```
//!
//! Invariants:
//! - Every open connection a listener serves holds one permit of its listener's semaphore
//!   ([`Permitted`] wraps a stream with its permit), so at most `--max-connections` are served
//!   per listener; refusals hold none.
//! - At most [`REFUSING`] refusal tasks exist at once, each ending within
//!   `GREETING_TIMEOUT + 2 * DRAIN_TIMEOUT`; beyond that a refused connection is closed
//!   without a word. So a flood of connections costs bounded memory and descriptors.
//! - Draining before the close matters: closing a socket with unread input makes the kernel
//!   send a RST, which can destroy the error frame before the client has read it (go-nsq sends
//!   IDENTIFY right behind the magic).

use std::io::ErrorKind;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ferry_proto::v2;
use ferry_proto::{ErrorCode, ProtocolError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

/// Most refusals in progress at once (each holds a descriptor for a few seconds at most).
pub(crate) const REFUSING: usize = 256;
/// How long a refused client has to send its greeting (V2 magic, HTTP request head).
const GREETING_TIMEOUT: Duration = Duration::from_secs(1);
/// How long writing the reason, and then draining the client's input, may each take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// Most bytes of a refused client read (greeting and leftovers) before closing anyway.
const DRAIN_MAX: usize = 64 * 1024;
/// At most one refusal warning per this period.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The listeners that have a connection limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Protocol V2 (`--tcp-address`).
    Tcp,
    /// HTTP and HTTPS together (`--http-address`, `--https-address`).
    Http,
    /// gRPC `Subscribe` streams (`--grpc-address`).
    Grpc,
}

impl Listener {
    /// Every listener, in the order of [`ConnLimits::refused`]'s counters.
    pub const ALL: [Listener; 3] = [Listener::Tcp, Listener::Http, Listener::Grpc];

    /// Label value in `/metrics` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Tcp => "tcp",
            Listener::Http => "http",
            Listener::Grpc => "grpc",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The broker's connection limits and refusal counters (one per broker, in `Broker::limits`).
#[derive(Debug)]
pub struct ConnLimits {
    max: usize,
    /// One semaphore per listener, indexed like [`Listener::ALL`].
    open: [Arc<Semaphore>; 3],
    refusing: Arc<Semaphore>,
    refused: [AtomicU64; 3],
    report: Mutex<Report>,
}

/// Refusals not yet reported in a warning.
#[derive(Debug)]
struct Report {
    last: Option<Instant>,
    pending: u64,
}

impl ConnLimits {
    /// Limits of `max` connections per listener (0 is taken as 1).
    pub fn new(max: usize) -> ConnLimits {
        let max = max.max(1);
        ConnLimits {
            max,
            open: Listener::ALL.map(|_| Arc::new(Semaphore::new(max))),
            refusing: Arc::new(Semaphore::new(REFUSING)),
            refused: Default::default(),
            report: Mutex::new(Report {
                last: None,
                pending: 0,
            }),
        }
    }

    /// The limit per listener.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A permit to serve one more connection (for gRPC: `Subscribe` stream) on `listener`, or
    /// `None` at the limit.
    pub(crate) fn admit(&self, listener: Listener) -> Option<OwnedSemaphorePermit> {
        self.open[listener.index()].clone().try_acquire_owned().ok()
    }

    /// Counts a refusal on `listener` and warns, at most once per [`REPORT_EVERY`], how many
    /// connections were refused since the last warning.
    pub(crate) fn note_refused(&self, listener: Listener) {
        self.refused[listener.index()].fetch_add(1, Relaxed);
        let now = Instant::now();
        // Short section, no await: a counter and a timestamp.
        let (n, since) = {
            let mut r = self.report.lock().unwrap_or_else(PoisonError::into_inner);
            r.pending += 1;
            match r.last {
                Some(t) if now.duration_since(t) < REPORT_EVERY => return,
                last => {
                    r.last = Some(now);
                    (std::mem::take(&mut r.pending), last.map(|t| now - t))
                }
            }
        };
        let [tcp, http, grpc] = Listener::ALL.map(|l| self.refused_total(l));
        let since = since.map_or_else(
            || "since start".to_owned(),
            |d| format!("in the last {}s", d.as_secs()),
        );
        warn!(
            refused = n,
            max_connections = self.max,
            "--max-connections={} reached: refused {n} new connection(s) {since} \
             (since start: TCP {tcp}, HTTP {http}, gRPC {grpc})",
            self.max
        );
    }

    /// Connections refused on `listener` since start.
    pub fn refused_total(&self, listener: Listener) -> u64 {
        self.refused[listener.index()].load(Relaxed)
    }

    /// A slot for one refusal task, or `None` when [`REFUSING`] are already running (then the
    /// connection is just closed).
    pub(crate) fn refusal_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.refusing.clone().try_acquire_owned().ok()
    }

    /// The V2 error frame a refused TCP client gets.
    pub(crate) fn v2_refusal(&self) -> BytesMut {
        let mut buf = BytesMut::new();
        let e = ProtocolError::new(
            ErrorCode::TooManyConnections,
            format!(
                "broker has reached its limit of {} connections (--max-connections)",
                self.max
            ),
        );
        v2::encode_error(&mut buf, &e);
        buf
    }
}

/// The HTTP response a refused HTTP(S) client gets.
pub(crate) const HTTP_REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: application/json\r\n\
X-NSQ-Content-Type: nsq; version=1.0\r\n\
Retry-After: 1\r\n\
Connection: close\r\n\
Content-Length: 35\r\n\
\r\n\
{\"message\":\"TOO_MANY_CONNECTIONS\"}\n";

/// What a refused client is expected to send before it gets its answer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Greeting {
    /// The 4-byte protocol magic; a client that does not send it in time is closed silently.
    Magic,
    /// An HTTP request head (up to the blank line); answered even if it is incomplete.
    HttpHead,
}

/// Refuses one connection: waits for its greeting, writes `reply`, sends FIN and drains what
/// the client still sends, each step bounded in time, then drops (closes) it.
pub(crate) async fn refuse<S>(mut io: S, greeting: Greeting, reply: &[u8])
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = [0u8; 512];
    let mut seen = Vec::new();
    let greeted = tokio::time::timeout(GREETING_TIMEOUT, async {
        loop {
            let n = io.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::Error::from(ErrorKind::UnexpectedEof));
            }
            seen.extend_from_slice(&buf[..n]);
            let done = match greeting {
                Greeting::Magic => seen.len() >= v2::MAGIC.len(),
                Greeting::HttpHead => {
                    seen.windows(4).any(|w| w == b"\r\n\r\n") || seen.len() >= DRAIN_MAX
                }
            };
            if done {
                return Ok(());
            }
        }
    })
    .await;
    match (greeting, greeted) {
        (_, Ok(Ok(()))) | (Greeting::HttpHead, Err(_)) => {}
        _ => return,
    }
    drop(seen);
    let answered = tokio::time::timeout(DRAIN_TIMEOUT, async {
        io.write_all(reply).await?;
        io.shutdown().await
    })
    .await;
    if !matches!(answered, Ok(Ok(()))) {
        return;
    }
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let mut total = 0;
        while total < DRAIN_MAX {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

/// Handles a failed `accept`: an error of that one connection is ignored; anything else (out of
/// descriptors: EMFILE, ENFILE, ENOBUFS) is logged at most once per [`REPORT_EVERY`] and
/// followed by a pause, so that the accept loop does not spin while nothing can be accepted.
pub(crate) async fn accept_failed(
    listener: &str,
    e: &std::io::Error,
    last_log: &mut Option<Instant>,
) {
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    if last_log.is_none_or(|t| t.elapsed() >= REPORT_EVERY) {
        *last_log = Some(Instant::now());
        warn!(error = %e, "{listener}: accept failed (out of file descriptors? see the open-file limit logged at start); pausing accepts for 100ms");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// A connection's stream together with the permit it holds: the permit goes back when the
/// connection is dropped.
#[derive(Debug)]
pub(crate) struct Permitted<S> {
    io: S,
    _permit: OwnedSemaphorePermit,
}

impl<S> Permitted<S> {
    pub(crate) fn new(io: S, permit: OwnedSemaphorePermit) -> Self {
        Permitted {
            io,
            _permit: permit,
        }
    }
}

impl<S> Drop for Permitted<S> {
    fn drop(&mut self) {
        crate::memory::connection_closed();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Permitted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Permitted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_refusal_has_a_correct_content_length() {
        let text = std::str::from_utf8(HTTP_REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(head.starts_with("HTTP/1.1 503 "));
    }

    #[test]
    fn admits_up_to_the_limit_per_listener() {
        let limits = ConnLimits::new(2);
        let a = limits.admit(Listener::Tcp).unwrap();
        let _b = limits.admit(Listener::Tcp).unwrap();
        assert!(limits.admit(Listener::Tcp).is_none());
        assert!(limits.admit(Listener::Http).is_some());
        drop(a);
        assert!(limits.admit(Listener::Tcp).is_some());
    }

    #[tokio::test]
    async fn refusal_answers_after_the_magic_and_drains() {
        let (mut client, server) = tokio::io::duplex(1024);
        let limits = ConnLimits::new(5);
        let reply = limits.v2_refusal();
        let task = tokio::spawn(async move { refuse(server, Greeting::Magic, &reply).await });
        client.write_all(b"  V2IDENTIFY\n").await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        drop(client);
        task.await.unwrap();
        let mut buf = BytesMut::from(&got[..]);
        match v2::decode_frame(&mut buf, 1 << 20).unwrap().unwrap() {
            v2::Frame::Error(e) => assert_eq!(
                &e[..],
                b"E_TOO_MANY_CONNECTIONS broker has reached its limit of 5 connections (--max-connections)"
            ),
            f => panic!("{f:?}"),
        }
    }

    #[tokio::test]
    async fn silent_client_is_closed_without_a_reply() {
        let (mut client, server) = tokio::io::duplex(1024);
        let task = tokio::spawn(async move { refuse(server, Greeting::Magic, b"x").await });
        task.await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty());
    }
}
