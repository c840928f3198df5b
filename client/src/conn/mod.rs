//! One connection to a broker: handshake, then a reader task and a writer task.
//!
//! ```text
//!  ConnSender ─ request() ──mpsc Outgoing──────────────┐
//!  (cloneable)  send(): FIN/REQ/TOUCH/RDY/NOP encoded  ├─▶ writer task ──one write per──▶ broker
//!               into the `commands` buffer, swapped ───┘                 round
//!               out whole by the writer
//!  pending FIFO ◀── pop on each response / fatal error ── reader task ◀── frames ── broker
//!   (reply senders, queued by the writer)                  ├─ _heartbeat_ → NOP
//!                                                          └─ messages of one read → the
//!                                                             consumer's queue, as one batch
//! ```
//!
//! Invariants:
//! - The broker answers the commands that have answers (IDENTIFY, SUB, PUB, MPUB, DPUB, CLS) in
//!   the order it reads them, so replies are matched FIFO. A reply sender is queued by the writer
//!   task (the only one that orders the bytes) before the command's bytes reach the socket, so a
//!   response can never find the queue without its sender.
//! - Once the connection is dead (EOF, I/O error, timeout, fatal error), `pending` is closed:
//!   every queued reply gets [`Error::ConnectionLost`] and later requests are answered
//!   [`ReplyError::NotSent`] without touching the socket, so a caller can tell "maybe applied"
//!   from "certainly not sent".
//! - Commands without an answer cost no channel operation: senders encode them into a shared
//!   buffer (bounded by [`COMMANDS_LIMIT`]; senders wait above it) that the writer takes by
//!   swapping it with its own empty one. Their order among themselves is kept; relative to
//!   requests it does not matter (the broker answers neither FIN nor RDY).
//! - When every [`ConnSender`] is gone (or [`ConnSender::close`] is called) the writer writes
//!   what is queued and shuts the write side down; the broker then answers what it read, sees
//!   EOF and closes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferry_proto::identify::IdentifyRequest;
use ferry_proto::v2::Command;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::consumer::ConsumerConn;
use crate::error::Error;
use crate::message::Message;

mod handshake;
mod reader;
mod writer;

pub(crate) use ferry_stream::Stream;
pub(crate) use handshake::connect;

/// Largest frame accepted from a broker: far above any message size limit, it only bounds what a
/// corrupt size field can make the client allocate.
pub(crate) const MAX_FRAME_SIZE: usize = 64 << 20;
/// Free read-buffer space guaranteed before each read.
const READ_CHUNK: usize = 256 * 1024;
/// The writer writes once this much is queued (or nothing more is waiting).
const WRITE_BATCH: usize = 64 * 1024;
/// Requests queued for the writer before senders wait.
const OUTGOING_CAPACITY: usize = 1024;
/// Bytes of answerless commands buffered for the writer before senders wait.
const COMMANDS_LIMIT: usize = 1 << 20;

/// What every connection sends in its handshake, derived once from a [`Config`].
#[derive(Debug, Clone)]
pub(crate) struct ConnOptions {
    identify: Bytes,
    auth_secret: Option<Bytes>,
    tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) dial_timeout: Duration,
    pub(crate) read_timeout: Duration,
    pub(crate) write_timeout: Duration,
}

impl ConnOptions {
    pub(crate) fn new(config: &Config) -> ConnOptions {
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let identify = IdentifyRequest {
            client_id: config.client_id.clone(),
            hostname: config.hostname.clone(),
            user_agent: config.user_agent.clone(),
            heartbeat_interval: millis(config.heartbeat_interval),
            output_buffer_size: i64::try_from(config.output_buffer_size).unwrap_or(i64::MAX),
            output_buffer_timeout: millis(config.output_buffer_timeout),
            feature_negotiation: true,
            sample_rate: i32::from(config.sample_rate),
            msg_timeout: config.msg_timeout.map_or(0, millis),
            tls_v1: config.tls.is_some(),
            snappy: config.snappy,
            deflate: config.deflate.is_some(),
            deflate_level: config.deflate.map_or(0, |l| l as i32),
        };
        ConnOptions {
            identify: identify.to_json().into(),
            auth_secret: config
                .auth_secret
                .as_ref()
                .map(|s| Bytes::from(s.clone().into_bytes())),
            tls: config.tls.clone(),
            dial_timeout: config.dial_timeout,
            read_timeout: config.read_timeout,
            write_timeout: config.write_timeout,
        }
    }
}

/// Where a consumer connection's messages go.
#[derive(Debug)]
pub(crate) struct Deliver {
    /// The consumer's message queue: the messages of one read travel together.
    pub(crate) queue: mpsc::Sender<Vec<Message>>,
    /// The consumer's view of this connection (FIN/REQ go back through it).
    pub(crate) conn: Arc<ConsumerConn>,
}

/// Why a request got no response.
#[derive(Debug)]
pub(crate) enum ReplyError {
    /// The connection was already dead: nothing was written, the request can be retried.
    NotSent,
    /// The broker refused it, or the connection died with the request in flight.
    Failed(Error),
}

type Reply = oneshot::Sender<Result<Bytes, ReplyError>>;

/// What the writer task is asked to do, besides writing the `commands` buffer.
#[derive(Debug)]
enum Outgoing {
    /// An encoded command the broker answers; the reply is matched FIFO.
    Request { encoded: Bytes, reply: Reply },
    /// Write everything queued so far, then shut the write side down.
    Close,
}

/// State shared by the senders, the reader and the writer of one connection.
#[derive(Debug)]
struct Shared {
    addr: String,
    /// Reply senders in the order their commands were written. A `std` mutex: held only to push,
    /// pop or drain, never across an `.await`.
    pending: Mutex<Pending>,
    /// Cancelled once the connection is dead.
    closed: CancellationToken,
    /// Encoded commands without an answer, taken whole by the writer. A `std` mutex: held to
    /// encode one command or to swap buffers, never across an `.await`.
    commands: Mutex<BytesMut>,
    /// Wakes the writer when `commands` stops being empty.
    commands_ready: Notify,
    /// Wakes senders waiting for `commands` to drop below [`COMMANDS_LIMIT`].
    commands_drained: Notify,
}

#[derive(Debug, Default)]
struct Pending {
    replies: VecDeque<Reply>,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A panic while holding the lock cannot leave the queue inconsistent.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `reply`, or answers it `NotSent` if the connection is dead.
    fn push_reply(&self, reply: Reply) -> bool {
        let mut pending = self.lock();
        if pending.closed {
            drop(pending);
            let _ = reply.send(Err(ReplyError::NotSent));
            return false;
        }
        pending.replies.push_back(reply);
        true
    }

    fn pop_reply(&self) -> Option<Reply> {
        self.lock().replies.pop_front()
    }

    fn lock_commands(&self) -> std::sync::MutexGuard<'_, BytesMut> {
        self.commands.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Encodes `cmd` into the commands buffer unless it is over [`COMMANDS_LIMIT`].
    fn push_command(&self, cmd: &Command) -> bool {
        let mut commands = self.lock_commands();
        if commands.len() >= COMMANDS_LIMIT {
            return false;
        }
        let was_empty = commands.is_empty();
        cmd.encode(&mut commands);
        drop(commands);
        if was_empty {
            // One wake-up per batch; a stored permit covers a writer that is busy writing.
            self.commands_ready.notify_one();
        }
        true
    }

    /// Marks the connection dead and fails every request still waiting.
    fn fail(&self) {
        let replies = {
            let mut pending = self.lock();
            pending.closed = true;
            std::mem::take(&mut pending.replies)
        };
        for reply in replies {
            let _ = reply.send(Err(ReplyError::Failed(Error::ConnectionLost {
                addr: self.addr.clone(),
            })));
        }
        self.closed.cancel();
        self.commands_drained.notify_waiters();
    }
}

/// A handle to send commands over one connection; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct ConnSender {
    tx: mpsc::Sender<Outgoing>,
    shared: Arc<Shared>,
}

impl ConnSender {
    /// The broker's address, as given.
    pub(crate) fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// Whether the connection is dead.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }

    /// Completes when the connection is dead.
    pub(crate) async fn closed(&self) {
        self.shared.closed.cancelled().await;
    }

    /// Sends an encoded command the broker answers, and waits for the answer's data.
    pub(crate) async fn request(&self, encoded: Bytes) -> Result<Bytes, ReplyError> {
        let (reply, answer) = oneshot::channel();
        if self
            .tx
            .send(Outgoing::Request { encoded, reply })
            .await
            .is_err()
        {
            return Err(ReplyError::NotSent);
        }
        // A dropped reply sender means the writer never queued it: nothing was written.
        answer.await.unwrap_or(Err(ReplyError::NotSent))
    }

    /// Queues a command without an answer (FIN, REQ, TOUCH, RDY, NOP); waits only if
    /// [`COMMANDS_LIMIT`] bytes are already waiting.
    pub(crate) async fn send(&self, cmd: Command) -> Result<(), Error> {
        loop {
            if self.is_closed() {
                return Err(self.lost());
            }
            if self.shared.push_command(&cmd) {
                return Ok(());
            }
            let drained = self.shared.commands_drained.notified();
            let mut drained = std::pin::pin!(drained);
            drained.as_mut().enable();
            if self.shared.lock_commands().len() < COMMANDS_LIMIT || self.is_closed() {
                continue;
            }
            drained.await;
        }
    }

    /// Queues a command without waiting; gives it back if the buffer is full or the connection
    /// dead.
    pub(crate) fn try_send(&self, cmd: Command) -> Result<(), Command> {
        if !self.is_closed() && self.shared.push_command(&cmd) {
            Ok(())
        } else {
            Err(cmd)
        }
    }

    /// Asks the writer to write everything queued so far and shut the write side down.
    pub(crate) async fn close(&self) {
        let _ = self.tx.send(Outgoing::Close).await;
    }

    /// Closes the connection at once, dropping whatever is queued.
    pub(crate) fn abort(&self) {
        self.shared.fail();
    }

    fn lost(&self) -> Error {
        Error::ConnectionLost {
            addr: self.shared.addr.clone(),
        }
    }
}
