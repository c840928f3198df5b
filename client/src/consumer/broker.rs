//! One subscribed connection as the consumer sees it ([`ConsumerConn`]), and the supervisor
//! task that keeps one connection per broker.
//!
//! ```text
//! supervise(addr):  connect → IDENTIFY → SUB → Connected ──▶ manager (RDY)
//!        ▲                                        │ connection dies
//!        └── wait reconnect_delay (×2 each failure, up to max_reconnect_delay, jittered)
//!          cancelled (stop, or lookupd dropped the broker):
//!            Disconnected, CLS, wait until its messages are answered (≤ shutdown_timeout), close
//! ```
//!
//! In flight = `received − answered`, counted per connection so that a graceful close knows
//! when its handlers are done; answers only look at that difference once a close is waiting.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use ferry_proto::MessageId;
use ferry_proto::v2::Command;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::manager::Event;
use super::rdy::{ConnId, Signal};
use super::{DEFAULT_MAX_RDY, Shared};
use crate::conn::{self, ConnSender, Deliver};
use crate::error::Error;

/// The consumer's side of one subscribed connection; messages point to it to answer.
#[derive(Debug)]
pub(crate) struct ConsumerConn {
    pub(super) id: ConnId,
    pub(crate) sender: ConnSender,
    shared: Arc<Shared>,
    /// Messages received; written by the connection's reader only.
    pub(super) received: AtomicU64,
    /// Messages answered (or dropped). In flight = received − answered.
    answered: AtomicU64,
    /// Set once something waits for the connection to be idle: only then do answers check.
    closing: AtomicBool,
    /// Notified, while closing, when the last message in flight is answered.
    idle: Notify,
}

impl ConsumerConn {
    pub(super) fn new(id: ConnId, sender: ConnSender, shared: Arc<Shared>) -> ConsumerConn {
        ConsumerConn {
            id,
            sender,
            shared,
            received: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            idle: Notify::new(),
        }
    }

    /// A message arrived on this connection.
    pub(crate) fn received(&self) {
        self.received.fetch_add(1, Ordering::AcqRel);
    }

    /// The reader hands `n` messages to the consumer.
    pub(crate) fn received_batch(&self, n: usize) {
        self.shared.received.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// One of its messages was answered (`finished`: FIN, else REQ) or dropped.
    pub(crate) fn answered(&self, finished: bool, signal: Signal) {
        let counter = if finished {
            &self.shared.finished
        } else {
            &self.shared.requeued
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let answered = self.answered.fetch_add(1, Ordering::AcqRel) + 1;
        if self.closing.load(Ordering::Acquire) && answered >= self.received.load(Ordering::Acquire)
        {
            self.idle.notify_waiters();
        }
        let report = match signal {
            Signal::Failure => true,
            Signal::Success | Signal::Neutral => self.shared.in_backoff.load(Ordering::Acquire),
        };
        if report {
            let _ = self.shared.events.send(Event::Signal(self.id, signal));
        }
    }

    fn in_flight(&self) -> u64 {
        let answered = self.answered.load(Ordering::Acquire);
        self.received
            .load(Ordering::Acquire)
            .saturating_sub(answered)
    }

    /// The automatic requeue delay of a message delivered `attempts` times.
    pub(crate) fn requeue_delay(&self, attempts: u16) -> Duration {
        self.shared.config.requeue_delay(attempts)
    }

    /// Requeues a message dropped unanswered, without waiting.
    pub(crate) fn requeue_dropped(&self, id: MessageId) {
        let cmd = Command::Req { id, timeout_ms: 0 };
        if let Err(cmd) = self.sender.try_send(cmd)
            && !self.sender.is_closed()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let sender = self.sender.clone();
            runtime.spawn(async move { sender.send(cmd).await });
        }
    }

    /// Completes when none of its messages is in flight.
    async fn wait_idle(&self) {
        self.closing.store(true, Ordering::Release);
        loop {
            let notified = self.idle.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Keeps one subscribed connection to `addr` until `cancel`.
pub(super) async fn supervise(
    shared: Arc<Shared>,
    addr: String,
    generation: u64,
    cancel: CancellationToken,
    mut first: Option<oneshot::Sender<Result<(), Error>>>,
) {
    let config = &shared.config;
    let mut delay = config.reconnect_delay;
    loop {
        let attempt = tokio::select! {
            _ = cancel.cancelled() => break,
            attempt = connect_once(&shared, &addr) => attempt,
        };
        match attempt {
            Ok(conn) => {
                if let Some(first) = first.take() {
                    let _ = first.send(Ok(()));
                }
                delay = config.reconnect_delay;
                let stopping = tokio::select! {
                    _ = conn.sender.closed() => false,
                    _ = cancel.cancelled() => true,
                };
                // Its RDY share goes to the other connections at once.
                shared.connections.fetch_sub(1, Ordering::Relaxed);
                let _ = shared.events.send(Event::Disconnected(conn.id));
                if stopping {
                    close_gracefully(&shared, &conn).await;
                    break;
                }
                if shared.queue_closed() {
                    warn!(broker = %addr, "the message stream was dropped: not reconnecting");
                    break;
                }
                info!(broker = %addr, "connection lost, reconnecting");
            }
            Err(err) => {
                if let Some(first) = first.take() {
                    // Forgotten first, so that the caller may try the same address again.
                    shared.forget_broker(&addr, generation);
                    let _ = first.send(Err(err));
                    return;
                }
                if matches!(err, Error::Closed) {
                    break;
                }
                warn!(broker = %addr, error = %err, retry_in = ?delay, "cannot connect to broker");
            }
        }
        let wait = delay.mul_f64(1.0 - 0.25 * rand::random::<f64>());
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
        delay = delay.saturating_mul(2).min(config.max_reconnect_delay);
    }
    if let Some(first) = first.take() {
        let _ = first.send(Err(Error::Closed));
    }
    shared.forget_broker(&addr, generation);
}

/// Connects, subscribes and registers one connection with the manager.
async fn connect_once(shared: &Arc<Shared>, addr: &str) -> Result<Arc<ConsumerConn>, Error> {
    let handshake = conn::connect(
        addr,
        &shared.opts,
        Some((shared.topic.as_str(), shared.channel.as_str())),
    )
    .await?;
    let max_rdy = u64::try_from(handshake.negotiated.max_rdy_count)
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_MAX_RDY);
    let queue = shared
        .queue
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .filter(|queue| !queue.is_closed())
        .ok_or(Error::Closed)?;
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let mut made = None;
    handshake.start(&shared.opts, |sender| {
        let conn = Arc::new(ConsumerConn::new(id, sender.clone(), shared.clone()));
        made = Some(conn.clone());
        Some(Deliver { queue, conn })
    });
    let conn = made.ok_or(Error::Closed)?;
    shared.connections.fetch_add(1, Ordering::Relaxed);
    debug!(broker = %addr, conn = id, max_rdy, "subscribed");
    let _ = shared.events.send(Event::Connected(conn.clone(), max_rdy));
    Ok(conn)
}

/// `CLS`, wait for the connection's messages to be answered, close.
async fn close_gracefully(shared: &Shared, conn: &ConsumerConn) {
    let deadline = tokio::time::Instant::now() + shared.config.shutdown_timeout;
    let mut cls = BytesMut::new();
    Command::Cls.encode(&mut cls);
    let _ = tokio::time::timeout_at(deadline, conn.sender.request(cls.freeze())).await;
    if tokio::time::timeout_at(deadline, conn.wait_idle())
        .await
        .is_err()
    {
        warn!(
            broker = %conn.sender.addr(),
            in_flight = conn.in_flight(),
            "closing with messages still in flight (the broker will redeliver them)"
        );
    }
    // Writes the last FIN/REQ, then EOF; the broker closes its side.
    conn.sender.close().await;
    let _ = tokio::time::timeout(shared.config.write_timeout, conn.sender.closed()).await;
    conn.sender.abort();
}
