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
use ferry_proto::identify::{IdentifyRequest, IdentifyResponse};
use ferry_proto::v2::{self, Command, Frame, HEARTBEAT, MAGIC, OK};
use ferry_stream::{Codec, Compressed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::Config;
use crate::consumer::ConsumerConn;
use crate::error::{Error, from_error_frame};
use crate::message::Message;

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

/// The reader task's state.
struct Reader {
    rd: ReadHalf<Box<dyn Stream>>,
    rbuf: BytesMut,
    shared: Arc<Shared>,
    deliver: Option<Deliver>,
    /// Messages decoded from the current read, delivered together.
    batch: Vec<Message>,
    read_timeout: Duration,
}

impl Reader {
    async fn run(mut self) {
        match self.serve().await {
            Ok(()) => debug!(addr = %self.shared.addr, "connection closed"),
            Err(err) => debug!(addr = %self.shared.addr, error = %err, "connection lost"),
        }
        self.shared.fail();
    }

    /// Reads and dispatches frames until the connection ends (`Ok` on EOF or local close).
    async fn serve(&mut self) -> Result<(), Error> {
        loop {
            while let Some(frame) =
                v2::decode_frame(&mut self.rbuf, MAX_FRAME_SIZE).map_err(|source| Error::Frame {
                    addr: self.shared.addr.clone(),
                    source,
                })?
            {
                self.dispatch(frame)?;
            }
            if let Some(deliver) = &self.deliver
                && !self.batch.is_empty()
            {
                deliver.conn.received_batch(self.batch.len());
                let batch = std::mem::take(&mut self.batch);
                if deliver.queue.send(batch).await.is_err() {
                    // Nobody takes messages any more (the stream was dropped): they were
                    // dropped, hence requeued; stop receiving more.
                    return Ok(());
                }
            }
            if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
                // Decoded frames are zero-copy slices; once they are dropped this reclaims the
                // same memory instead of allocating.
                self.rbuf.reserve(READ_CHUNK);
            }
            let read = tokio::select! {
                _ = self.shared.closed.cancelled() => return Ok(()),
                read = tokio::time::timeout(self.read_timeout, self.rd.read_buf(&mut self.rbuf)) => read,
            };
            match read {
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(_)) => {}
                Ok(Err(source)) => {
                    return Err(Error::Io {
                        addr: self.shared.addr.clone(),
                        source,
                    });
                }
                Err(_elapsed) => {
                    return Err(Error::Timeout {
                        addr: self.shared.addr.clone(),
                        during: "reading",
                        timeout: self.read_timeout,
                    });
                }
            }
        }
    }

    fn dispatch(&mut self, frame: Frame) -> Result<(), Error> {
        match frame {
            Frame::Response(data) if data == HEARTBEAT => {
                // Only fails if the connection is dead or flooded; the reply is not urgent.
                self.shared.push_command(&Command::Nop);
            }
            Frame::Response(data) => match self.shared.pop_reply() {
                Some(reply) => {
                    let _ = reply.send(Ok(data));
                }
                None => debug!(addr = %self.shared.addr, ?data, "response without a request"),
            },
            Frame::Error(data) => {
                let err = from_error_frame(&self.shared.addr, &data);
                match err.code() {
                    Some(code) if !code.is_fatal() => {
                        // FIN/REQ/TOUCH of a message that timed out meanwhile: not fatal.
                        debug!(addr = %self.shared.addr, error = %err, "broker refused a command");
                    }
                    _ => {
                        // Fatal: the broker closes the connection after this frame.
                        match self.shared.pop_reply() {
                            Some(reply) => {
                                let _ = reply.send(Err(ReplyError::Failed(err)));
                            }
                            None => warn!(addr = %self.shared.addr, error = %err, "broker error"),
                        }
                    }
                }
            }
            Frame::Message(msg) => {
                let Some(deliver) = &self.deliver else {
                    return Err(Error::UnexpectedFrame {
                        addr: self.shared.addr.clone(),
                        what: "message on a producer connection".into(),
                    });
                };
                self.batch.push(Message::new(msg, &deliver.conn));
            }
        }
        Ok(())
    }
}

/// Writes queued commands in batches until closed, then shuts the write side down.
async fn write_loop(
    mut wr: WriteHalf<Box<dyn Stream>>,
    mut rx: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
    write_timeout: Duration,
) {
    let mut buf = BytesMut::with_capacity(WRITE_BATCH * 2);
    let mut spare = BytesMut::with_capacity(WRITE_BATCH);
    'run: loop {
        let (first, mut closing) = tokio::select! {
            biased;
            _ = shared.closed.cancelled() => break,
            _ = shared.commands_ready.notified() => (None, false),
            out = rx.recv() => match out {
                Some(out) => (Some(out), false),
                // Every sender is gone: write what they left, then close.
                None => (None, true),
            },
        };
        let mut next = first;
        while !closing {
            match next.take() {
                Some(Outgoing::Request { encoded, reply }) => {
                    if !shared.push_reply(reply) {
                        break 'run;
                    }
                    if encoded.len() >= WRITE_BATCH {
                        // Large batches go out as they are, after what is already queued.
                        if write(&mut wr, &buf, &shared, write_timeout).await.is_err()
                            || write(&mut wr, &encoded, &shared, write_timeout)
                                .await
                                .is_err()
                        {
                            break 'run;
                        }
                        buf.clear();
                    } else {
                        buf.extend_from_slice(&encoded);
                    }
                }
                Some(Outgoing::Close) => {
                    closing = true;
                    break;
                }
                None => {}
            }
            if buf.len() >= WRITE_BATCH {
                break;
            }
            match rx.try_recv() {
                Ok(out) => next = Some(out),
                Err(_empty_or_closed) => break,
            }
        }
        // The answerless commands queued so far, by buffer swap.
        let drained = {
            let mut commands = shared.lock_commands();
            std::mem::swap(&mut *commands, &mut spare);
            spare.len() >= COMMANDS_LIMIT
        };
        buf.extend_from_slice(&spare);
        spare.clear();
        if drained {
            shared.commands_drained.notify_waiters();
        }
        if write(&mut wr, &buf, &shared, write_timeout).await.is_err() {
            break;
        }
        buf.clear();
        if closing {
            break;
        }
    }
    // Requests still queued were never written: dropping `rx` answers them NotSent.
    drop(rx);
    let _ = tokio::time::timeout(write_timeout, wr.shutdown()).await;
}

/// One bounded write; on failure the connection is marked dead.
async fn write(
    wr: &mut WriteHalf<Box<dyn Stream>>,
    bytes: &[u8],
    shared: &Shared,
    write_timeout: Duration,
) -> Result<(), ()> {
    if bytes.is_empty() {
        return Ok(());
    }
    // Flushing matters for layered streams (a compressed frame is only emitted on flush).
    let write = async {
        wr.write_all(bytes).await?;
        wr.flush().await
    };
    match tokio::time::timeout(write_timeout, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => {
            debug!(addr = %shared.addr, error = %err, "write failed");
            shared.fail();
            Err(())
        }
        Err(_elapsed) => {
            warn!(addr = %shared.addr, timeout = ?write_timeout, "write timed out");
            shared.fail();
            Err(())
        }
    }
}

pub(crate) use ferry_stream::Stream;

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
