//! One client connection speaking protocol V2: a single task that reads commands, pulls messages
//! from its channel while it has credit, sends heartbeats and writes everything through one
//! output buffer.
//!
//! Flushing: responses and errors go out at once; message frames are batched and flushed when
//! the client runs out of credit, the channel has nothing more to give right now, or the buffer
//! reaches the client's `output_buffer_size`. So a busy consumer gets large writes and an idle
//! one gets each message without delay.
//!
//! Publishing in batches: [`Conn::process_input`] decodes every complete command in the read
//! buffer before it flushes once. Consecutive PUBs and MPUBs to the same topic are collected
//! (after their TLS and auth checks, in order) into one [`PubBatch`] and go to the topic's log as
//! one append ([`Broker::append`]); the batch is committed before any other command runs (and
//! when the topic changes or the buffer holds no more complete command), and then answered with
//! one `OK` per command, in order. So responses keep exactly the commands' order: a command
//! never answers before a publish that came earlier. The batch is appended all or none: if the
//! append fails, the batch's first command gets `E_PUB_FAILED` (`E_MPUB_FAILED`) and, as the
//! error is fatal, the connection closes after it (nothing of the batch is acknowledged).
//! An invalid command (a message too large, a bad topic name) is a fatal decode error: the
//! batch before it is committed and answered, then the error is sent and the connection closes.
//! DPUB is appended on its own (its records carry their own due time).
//!
//! Durable acknowledgements (`--sync-every=1`): an append does not wait for the sync that makes
//! it durable. Its `OK`s go into the output buffer and the connection remembers, per topic, the
//! highest sequence end that must be durable; while any is pending, the output buffer is
//! *held*: nothing is written (message frames, heartbeats and other responses included, so
//! nothing overtakes an earlier publish's `OK`), while the connection keeps reading, appending
//! and queueing answers, so the next sync covers all of it (group commit). Holds come in two
//! stages: [`Conn::waiting`] is what a `select!` branch is waiting for, frozen with the output
//! length it covers ([`Conn::waiting_upto`]); publishes made meanwhile go to [`Conn::next`].
//! When the wait resolves, exactly the covered prefix is written and `next` becomes the new
//! wait, so a steady stream of publishes never moves the goal of a wait already under way (each
//! answer waits for at most two syncs). Reading (and taking messages for a consumer) pauses while a held
//! buffer exceeds [`HOLD_MAX`]. Before a TLS/compression upgrade or a close the connection
//! waits for durability first. A failed sync is fatal for the connection: everything put in the
//! buffer since the hold began is dropped, `E_PUB_FAILED` is sent instead and the connection
//! closes; the client cannot tell which of those publishes are durable and must treat them all
//! as failed (a retry may duplicate some, which at-least-once delivery allows).
//!
//! Memory: the read buffer starts at [`READ_MIN`] and doubles up to [`READ_MAX`] (a producer's
//! up to [`READ_MAX_PRODUCER`]) while reads fill it; at each heartbeat an empty read buffer and
//! the output buffer are freed, so an idle connection keeps a few hundred bytes of buffers.
//! Rare, large futures (TLS upgrade, AUTH queries) are boxed so that they do not enlarge every
//! connection's task.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ferry_proto::identify::{IdentifyRequest, IdentifyResponse};
use ferry_proto::v2::{self, Command, DecodeLimits, PublishKind, limits};
use ferry_proto::{ErrorCode, MessageId, ProtocolError};
use ferry_stream::{Codec, Compressed};
use tokio::io::AsyncReadExt;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::auth::{self, AuthState, Credentials};
use crate::broker::{Broker, VERSION, publish_failed};
use crate::channel::Channel;
use crate::client::{ClientIdentity, ClientInfo, ClientState};
use crate::clock::now_ns;
use crate::creation::CreateError;
use crate::tcp::outbuf::OutBuf;
use crate::topic::Topic;

/// Default heartbeat interval.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);
/// Default output buffer size.
const DEFAULT_OUTPUT_BUFFER_SIZE: usize = 16 * 1024;
/// Default output buffer timeout (reported in IDENTIFY; see the module doc for flushing).
const DEFAULT_OUTPUT_BUFFER_TIMEOUT: Duration = Duration::from_millis(250);
/// Most messages taken from a channel per lock acquisition.
const TAKE_BATCH: usize = 512;
/// Read size of a new or idle connection: IDENTIFY, SUB and RDY fit.
const READ_MIN: usize = 512;
/// Largest read size: reads double up to it while each one fills the buffer (a large MPUB).
const READ_MAX: usize = 16 * 1024;
/// Largest read size once the connection has published: larger reads make larger batches
/// (fewer appends, syscalls and wake-ups) for a pipelining producer.
const READ_MAX_PRODUCER: usize = 256 * 1024;
/// While acknowledgements are held for durability, reading and delivering pause once the
/// output buffer holds this much.
const HOLD_MAX: usize = 1024 * 1024;

/// Consecutive PUBs/MPUBs to one topic, decoded and checked but not yet appended (see the
/// module doc). Invariant: `cmds` and `bodies` are empty together; `topic` is the topic of
/// every command in it.
#[derive(Default)]
struct PubBatch {
    topic: String,
    /// Each command's kind, in order: one `OK` each once the batch is appended.
    cmds: Vec<PublishKind>,
    /// Every command's messages, in order (slices of the read buffer, no copy).
    bodies: Vec<Bytes>,
}

struct Subscription {
    topic: Arc<Topic>,
    channel: Arc<Channel>,
}

enum Flow {
    Continue,
    Close,
    /// IDENTIFY negotiated TLS and/or compression: switch before reading anything more.
    Upgrade,
}

pub(crate) use ferry_stream::Stream;

/// What IDENTIFY negotiated, applied once its reply is out.
#[derive(Debug, Clone, Copy)]
struct Upgrade {
    tls: bool,
    codec: Option<Codec>,
}

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// State of one V2 connection.
pub(crate) struct Conn {
    broker: Arc<Broker>,
    info: Arc<ClientInfo>,
    io: Box<dyn Stream>,
    tls: Option<TlsAcceptor>,
    upgrade: Option<Upgrade>,
    /// The stream is TLS.
    is_tls: bool,
    /// Common name of the client's TLS certificate (for the auth server).
    common_name: String,
    /// What the auth server granted (with `--auth-http-address`).
    auth: Option<AuthState>,
    /// The secret AUTH sent, to ask again when the grant expires.
    auth_secret: String,
    rbuf: BytesMut,
    /// Free space wanted in `rbuf` before the next read (READ_MIN..=READ_MAX).
    read_size: usize,
    out: OutBuf,
    limits: DecodeLimits,
    heartbeat: Option<Duration>,
    heartbeat_changed: bool,
    output_buffer_size: usize,
    msg_timeout: Duration,
    sample_rate: i32,
    sub: Option<Subscription>,
    rdy: u64,
    last_recv: Instant,
    /// Publishes decoded but not yet appended (empty between calls of `process_input`).
    batch: PubBatch,
    /// Per topic, the sequence end the current durability wait is for (power-safe mode).
    /// Non-empty means the output buffer's first [`Conn::waiting_upto`] bytes are held.
    waiting: Vec<(Arc<Topic>, u64)>,
    /// Output bytes the current wait covers (every `OK` in them is for a record in `waiting`).
    waiting_upto: usize,
    /// Per topic, the sequence ends of publishes answered since the current wait began: the
    /// next wait. Non-empty means everything after `waiting_upto` is held too.
    next: Vec<(Arc<Topic>, u64)>,
    /// Length of the output buffer when the current hold began: what came before it was due
    /// regardless of durability, what came after is dropped if a sync fails.
    hold_from: usize,
}

impl Conn {
    pub(crate) fn new(
        broker: Arc<Broker>,
        info: Arc<ClientInfo>,
        io: Box<dyn Stream>,
        tls: Option<TlsAcceptor>,
    ) -> Self {
        let limits = DecodeLimits {
            max_msg_size: broker.config.max_msg_size,
            max_body_size: broker.config.max_body_size,
        };
        let msg_timeout = broker.config.msg_timeout;
        info.set_identity(ClientIdentity {
            msg_timeout_ms: msg_timeout.as_millis() as i64,
            ..info.identity()
        });
        Conn {
            broker,
            info,
            io,
            tls,
            upgrade: None,
            common_name: String::new(),
            auth: None,
            auth_secret: String::new(),
            is_tls: false,
            rbuf: BytesMut::new(),
            read_size: READ_MIN,
            out: OutBuf::default(),
            limits,
            heartbeat: Some(DEFAULT_HEARTBEAT),
            heartbeat_changed: false,
            output_buffer_size: DEFAULT_OUTPUT_BUFFER_SIZE,
            msg_timeout,
            sample_rate: 0,
            sub: None,
            rdy: 0,
            last_recv: Instant::now(),
            batch: PubBatch::default(),
            waiting: Vec::new(),
            waiting_upto: 0,
            next: Vec::new(),
            hold_from: 0,
        }
    }

    fn credit(&self) -> u64 {
        if self.info.state() != ClientState::Subscribed {
            return 0;
        }
        self.rdy
            .saturating_sub(self.info.in_flight.load(Ordering::Acquire))
    }

    /// Serves the connection until the client leaves, a fatal error, or `cancel`.
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        if let Err(e) = self.serve(&cancel).await {
            debug!(error = %e, "connection ended with an I/O error");
        }
        self.cleanup();
    }

    async fn serve(&mut self, cancel: &CancellationToken) -> std::io::Result<()> {
        let mut heartbeat = self.heartbeat.map(new_interval);
        loop {
            if self.heartbeat_changed {
                heartbeat = self.heartbeat.map(new_interval);
                self.heartbeat_changed = false;
            }
            let credit = self.credit();
            let channel = self.sub.as_ref().map(|s| s.channel.clone());
            let mut delivered = false;
            let free = self.rbuf.capacity() - self.rbuf.len();
            if free < self.read_size / 2 {
                self.rbuf.reserve(self.read_size);
            }
            let free = self.rbuf.capacity() - self.rbuf.len();
            // Held acknowledgements: stop taking more work once they take too much memory.
            let room = !self.is_held() || self.out.len() < HOLD_MAX;
            if self.waiting.is_empty() && !self.next.is_empty() {
                self.waiting = std::mem::take(&mut self.next);
                self.waiting_upto = self.out.len();
            }
            let pending = (!self.waiting.is_empty()).then(|| self.waiting.clone());
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                r = async { wait_durable(pending.as_deref().expect("guarded")).await },
                    if pending.is_some() => {
                    let covered = self.waiting_upto;
                    self.waiting.clear();
                    if !self.durable_done(r) {
                        self.flush().await?;
                        return Ok(());
                    }
                    self.write_prefix(covered).await?;
                    self.flush().await?;
                }
                r = self.io.read_buf(&mut self.rbuf), if room => {
                    let n = r?;
                    if n == 0 {
                        // Answer what was already published before leaving.
                        self.settle().await;
                        self.flush().await?;
                        return Ok(());
                    }
                    if n == free {
                        // More is probably waiting: read more at a time.
                        let max = if self.info.is_producer.load(Ordering::Relaxed) {
                            READ_MAX_PRODUCER
                        } else {
                            READ_MAX
                        };
                        self.read_size = (self.read_size * 2).min(max);
                    }
                    self.last_recv = Instant::now();
                    self.info.last_recv_ns.store(now_ns(), Ordering::Relaxed);
                    let mut flow = self.process_input().await;
                    if !matches!(flow, Flow::Continue) && !self.settle().await {
                        flow = Flow::Close;
                    }
                    self.flush().await?;
                    if let Flow::Upgrade = flow {
                        // Boxed, as the auth queries below: rare and large futures (a TLS
                        // handshake, an HTTP request) would otherwise make every idle
                        // connection's task as large as they are.
                        Box::pin(self.apply_upgrade()).await?;
                        // Anything pipelined behind IDENTIFY is processed in the new mode.
                        flow = self.process_input().await;
                        if !matches!(flow, Flow::Continue) && !self.settle().await {
                            flow = Flow::Close;
                        }
                        self.flush().await?;
                    }
                    if let Flow::Close = flow {
                        return Ok(());
                    }
                }
                _ = self.info.wake.notified() => {}
                _ = async { channel.as_deref().map(Channel::ready).expect("guarded").await },
                    if credit > 0 && channel.is_some() && room => {
                    delivered = true;
                }
                _ = async { heartbeat.as_mut().expect("guarded").tick().await }, if heartbeat.is_some() => {
                    let interval = self.heartbeat.unwrap_or(DEFAULT_HEARTBEAT);
                    if self.last_recv.elapsed() > interval * 2 {
                        info!("closing connection: no data within two heartbeat intervals");
                        return Ok(());
                    }
                    self.out.put_with(|b| v2::encode_response(b, v2::HEARTBEAT));
                    self.flush().await?;
                    self.shed_buffers();
                }
            }
            if delivered {
                self.deliver(credit).await?;
            }
        }
    }

    /// Gives the read and write buffers' memory back between heartbeats, so that an idle
    /// connection costs a few hundred bytes instead of what its busiest moment needed; a busy
    /// one grows them again within a few reads.
    fn shed_buffers(&mut self) {
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
            self.read_size = READ_MIN;
        }
        self.out.shed();
    }

    /// Takes up to `credit` messages from the channel into the output buffer.
    async fn deliver(&mut self, credit: u64) -> std::io::Result<()> {
        let Some(sub) = &self.sub else { return Ok(()) };
        let want = credit.min(TAKE_BATCH as u64) as usize;
        let batch = match sub
            .channel
            .take(&self.info, want, self.msg_timeout, self.sample_rate)
        {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "cannot read from the topic log");
                self.broker
                    .set_health(Some(format!("log read failed: {e}")));
                return Ok(());
            }
        };
        let got = batch.len();
        for d in batch {
            let id = MessageId::from_seq(d.record.seq);
            let prefix = v2::message_frame_prefix(
                d.record.timestamp_ns,
                d.attempts,
                &id,
                d.record.body.len(),
            );
            self.out.put_with(|b| b.extend_from_slice(&prefix));
            self.out.put_bytes(d.record.body);
        }
        let more_likely = got == want && (got as u64) < credit;
        if !more_likely || self.out.len() >= self.output_buffer_size {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes the output buffer out, unless it is held for durability (then it does nothing:
    /// the buffer is written when the pending syncs resolve).
    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() || self.is_held() {
            return Ok(());
        }
        self.write_prefix(self.out.len()).await
    }

    /// True while some answer in the output buffer waits for durability.
    fn is_held(&self) -> bool {
        !self.waiting.is_empty() || !self.next.is_empty()
    }

    /// Writes the first `n` bytes of the output buffer (those a resolved wait covered, or all).
    async fn write_prefix(&mut self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        // A client that stops reading must not pin this task forever.
        let limit = self
            .heartbeat
            .unwrap_or(DEFAULT_HEARTBEAT)
            .max(Duration::from_secs(1));
        match tokio::time::timeout(limit, self.out.flush_prefix(&mut self.io, n)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "client did not read its data in time",
            )),
        }
    }

    /// Switches to TLS and/or compression as IDENTIFY negotiated (its reply is already out):
    /// each step is confirmed with an `OK` frame sent in the new mode, as nsqd does.
    async fn apply_upgrade(&mut self) -> std::io::Result<()> {
        let Some(up) = self.upgrade.take() else {
            return Ok(());
        };
        if up.tls {
            let acceptor = self.tls.clone().ok_or_else(|| {
                std::io::Error::other("TLS negotiated without a TLS configuration")
            })?;
            let plain = std::mem::replace(&mut self.io, Box::new(tokio::io::empty()));
            let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(plain))
                .await
                .map_err(|elapsed| std::io::Error::new(std::io::ErrorKind::TimedOut, elapsed))??;
            let version = tls.get_ref().1.protocol_version();
            if let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                self.common_name = crate::tls::common_name(cert).unwrap_or_default();
            }
            debug!(?version, "TLS handshake done");
            self.io = Box::new(tls);
            self.is_tls = true;
            self.info.tls.store(true, Ordering::Relaxed);
            self.respond(v2::OK);
            self.flush().await?;
        }
        if let Some(codec) = up.codec {
            let inner = std::mem::replace(&mut self.io, Box::new(tokio::io::empty()));
            self.io = Box::new(Compressed::new(inner, codec));
            match codec {
                Codec::Snappy => self.info.snappy.store(true, Ordering::Relaxed),
                Codec::Deflate { .. } => self.info.deflate.store(true, Ordering::Relaxed),
            }
            self.respond(v2::OK);
            self.flush().await?;
        }
        Ok(())
    }

    /// Decodes and executes every complete command in the read buffer, collecting consecutive
    /// PUBs/MPUBs to one topic into one append (see the module doc). Every response is in the
    /// output buffer, in the commands' order, when it returns; the batch is empty.
    async fn process_input(&mut self) -> Flow {
        loop {
            let cmd = match v2::decode_command(&mut self.rbuf, &self.limits) {
                Ok(Some(cmd)) => cmd,
                Ok(None) => {
                    return match self.commit_batch().await {
                        Ok(()) => Flow::Continue,
                        Err(e) => {
                            self.send_error(&e);
                            Flow::Close
                        }
                    };
                }
                Err(e) => {
                    if let Err(failed) = self.commit_batch().await {
                        self.send_error(&failed);
                    } else {
                        self.send_error(&e);
                    }
                    return Flow::Close;
                }
            };
            let result = match cmd {
                Command::Pub { topic, body } => {
                    self.stage(PublishKind::Pub, topic, std::iter::once(body))
                        .await
                }
                Command::Mpub { topic, bodies } => {
                    self.stage(PublishKind::Mpub, topic, bodies).await
                }
                other => match self.commit_batch().await {
                    Ok(()) => self.exec(other).await,
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = result {
                // An error in `stage` committed the batch before it: its OKs come first.
                self.send_error(&e);
                if e.is_fatal() {
                    return Flow::Close;
                }
            }
            if self.upgrade.is_some() {
                return Flow::Upgrade;
            }
        }
    }

    /// Adds a PUB/MPUB to the batch after its TLS and auth checks. When the command cannot
    /// join (its checks fail, or it goes to another topic), the batch is committed first, so
    /// that whatever this command gets comes after the batch's OKs.
    async fn stage(
        &mut self,
        kind: PublishKind,
        topic: String,
        bodies: impl IntoIterator<Item = Bytes>,
    ) -> Result<(), ProtocolError> {
        if let Err(e) = self.check_tls(kind.name()) {
            self.commit_batch().await?;
            return Err(e);
        }
        // May ask the auth server (renewal) before the batch is appended: that only delays it.
        if let Err(e) = self.check_auth(kind.name(), &topic, "").await {
            self.commit_batch().await?;
            return Err(e);
        }
        if !self.batch.cmds.is_empty() && self.batch.topic != topic {
            self.commit_batch().await?;
        }
        if self.batch.cmds.is_empty() {
            self.batch.topic = topic;
        }
        self.batch.cmds.push(kind);
        self.batch.bodies.extend(bodies);
        Ok(())
    }

    /// Appends the batch (all or none) and queues one `OK` per command; in power-safe mode the
    /// output buffer is then held until the records are durable. On failure the batch is
    /// dropped and the error is its first command's.
    async fn commit_batch(&mut self) -> Result<(), ProtocolError> {
        if self.batch.cmds.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let refs: Vec<&[u8]> = batch.bodies.iter().map(|b| &b[..]).collect();
        let (topic, range) = self
            .broker
            .append(batch.cmds[0], &batch.topic, &refs, Duration::ZERO)
            .await?;
        self.published(&topic, range.end, refs.len(), batch.cmds.len());
        // Keep the (empty) vectors' capacity for the next batch.
        let PubBatch {
            mut cmds,
            mut bodies,
            ..
        } = batch;
        cmds.clear();
        bodies.clear();
        self.batch.cmds = cmds;
        self.batch.bodies = bodies;
        Ok(())
    }

    /// Accounts for `messages` appended to `topic` below `end` by `commands` commands, queues
    /// their `OK`s and, unless they are durable already, holds the output buffer for them.
    fn published(&mut self, topic: &Arc<Topic>, end: u64, messages: usize, commands: usize) {
        self.info
            .pub_count
            .fetch_add(messages as u64, Ordering::Relaxed);
        self.info.is_producer.store(true, Ordering::Relaxed);
        let mark = self.out.len();
        for _ in 0..commands {
            self.respond(v2::OK);
        }
        if is_durable(topic, end) {
            self.broker.note_write(&Ok::<(), &str>(()));
            return;
        }
        if !self.is_held() {
            self.hold_from = mark;
        }
        add_target(&mut self.next, topic, end);
    }

    /// Handles the outcome of waiting for the pending durability: releases the output buffer,
    /// or, if a sync failed, replaces everything since the hold began with `E_PUB_FAILED`.
    /// Returns false when the connection must close.
    fn durable_done(&mut self, result: Result<(), (String, crate::topic::PublishError)>) -> bool {
        match result {
            Ok(()) => {
                // What is left was all put after the hold began.
                self.hold_from = 0;
                self.broker.note_write(&Ok::<(), &str>(()));
                true
            }
            Err((topic, e)) => {
                self.broker.note_write(&Err::<(), _>(&e));
                self.waiting.clear();
                self.next.clear();
                self.out.truncate(self.hold_from);
                let err = publish_failed(PublishKind::Pub, &topic, &e);
                self.send_error(&err);
                false
            }
        }
    }

    /// Waits until every held acknowledgement may go out (see [`Conn::durable_done`]).
    async fn settle(&mut self) -> bool {
        if !self.is_held() {
            return true;
        }
        let mut pending = std::mem::take(&mut self.waiting);
        for (topic, end) in std::mem::take(&mut self.next) {
            add_target(&mut pending, &topic, end);
        }
        let r = wait_durable(&pending).await;
        self.durable_done(r)
    }

    /// With `--tls-required`, only IDENTIFY may come before the upgrade.
    fn check_tls(&self, cmd: &str) -> Result<(), ProtocolError> {
        if self.broker.config.tls_required_tcp() && !self.is_tls && cmd != "IDENTIFY" {
            return Err(ProtocolError::new(
                ErrorCode::Invalid,
                format!("cannot {cmd} in current state (TLS required)"),
            ));
        }
        Ok(())
    }

    fn send_error(&mut self, e: &ProtocolError) {
        if e.is_fatal() {
            info!(code = %e.code, error = %e.message, "fatal client error");
        } else {
            debug!(code = %e.code, error = %e.message, "client error");
        }
        self.out.put_with(|b| v2::encode_error(b, e));
    }

    fn respond(&mut self, data: &[u8]) {
        self.out.put_with(|b| v2::encode_response(b, data));
    }

    async fn exec(&mut self, cmd: Command) -> Result<(), ProtocolError> {
        self.check_tls(cmd.name())?;
        match cmd {
            Command::Identify(body) => self.identify(&body),
            Command::Auth(secret) => self.authenticate(&secret).await,
            Command::Sub { topic, channel } => {
                if self.info.state() != ClientState::Init {
                    return Err(invalid("cannot SUB in current state"));
                }
                self.check_auth("SUB", &topic, &channel).await?;
                self.subscribe(&topic, &channel).await
            }
            Command::Pub { topic, body } => {
                self.check_auth("PUB", &topic, "").await?;
                self.publish(PublishKind::Pub, &topic, &[&body], Duration::ZERO)
                    .await
            }
            Command::Mpub { topic, bodies } => {
                self.check_auth("MPUB", &topic, "").await?;
                let refs: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
                self.publish(PublishKind::Mpub, &topic, &refs, Duration::ZERO)
                    .await
            }
            Command::Dpub {
                topic,
                defer_ms,
                body,
            } => {
                let max = self.broker.config.max_req_timeout.as_millis() as u64;
                limits::check_defer("DPUB", defer_ms, max)?;
                self.check_auth("DPUB", &topic, "").await?;
                let defer = Duration::from_millis(defer_ms);
                self.publish(PublishKind::Dpub, &topic, &[&body], defer)
                    .await
            }
            Command::Rdy(count) => self.ready(count),
            Command::Fin(id) => {
                let (channel, seq) = self.message_target("FIN", &id)?;
                channel
                    .finish(&self.info, seq)
                    .map_err(|e| op_failed(ErrorCode::FinFailed, "FIN", &id, e))
            }
            Command::Req { id, timeout_ms } => {
                let (channel, seq) = self.message_target("REQ", &id)?;
                // nsqd clamps the delay rather than rejecting it.
                let delay =
                    Duration::from_millis(timeout_ms).min(self.broker.config.max_req_timeout);
                channel
                    .requeue(&self.info, seq, delay)
                    .map_err(|e| op_failed(ErrorCode::ReqFailed, "REQ", &id, e))
            }
            Command::Touch(id) => {
                let (channel, seq) = self.message_target("TOUCH", &id)?;
                let max = self.broker.config.max_msg_timeout;
                channel
                    .touch(&self.info, seq, self.msg_timeout, max)
                    .map_err(|e| op_failed(ErrorCode::TouchFailed, "TOUCH", &id, e))
            }
            Command::Cls => {
                if self.info.state() != ClientState::Subscribed {
                    return Err(invalid("cannot CLS in current state"));
                }
                self.info.set_state(ClientState::Closing);
                self.rdy = 0;
                self.info.ready_count.store(0, Ordering::Relaxed);
                self.respond(v2::CLOSE_WAIT);
                Ok(())
            }
            Command::Nop => Ok(()),
        }
    }

    fn identify(&mut self, body: &[u8]) -> Result<(), ProtocolError> {
        if self.info.state() != ClientState::Init {
            return Err(invalid("cannot IDENTIFY in current state"));
        }
        let req = IdentifyRequest::from_json(body).map_err(|e| {
            debug!(error = %e, "IDENTIFY body is not valid JSON");
            IdentifyRequest::bad_json_error()
        })?;
        let cfg = &self.broker.config;
        let bad = |what: &str, v: i64| {
            ProtocolError::new(
                ErrorCode::BadBody,
                format!("IDENTIFY {what} ({v}) is invalid"),
            )
        };
        let max_hb = cfg.max_heartbeat_interval.as_millis() as i64;
        let heartbeat = match req.heartbeat_interval {
            -1 => None,
            0 => Some(DEFAULT_HEARTBEAT),
            v if (1000..=max_hb).contains(&v) => Some(Duration::from_millis(v as u64)),
            v => return Err(bad("heartbeat interval", v)),
        };
        let max_obt = cfg.max_output_buffer_timeout.as_millis() as i64;
        let min_obt = cfg.min_output_buffer_timeout.as_millis() as i64;
        let obt = match req.output_buffer_timeout {
            -1 => Duration::ZERO,
            0 => DEFAULT_OUTPUT_BUFFER_TIMEOUT,
            v if (min_obt..=max_obt).contains(&v) => Duration::from_millis(v as u64),
            v => return Err(bad("output buffer timeout", v)),
        };
        let obs = match req.output_buffer_size {
            -1 => 1,
            0 => DEFAULT_OUTPUT_BUFFER_SIZE,
            v if (64..=cfg.max_output_buffer_size).contains(&v) => v as usize,
            v => return Err(bad("output buffer size", v)),
        };
        if !(0..=99).contains(&req.sample_rate) {
            return Err(bad("sample rate", req.sample_rate as i64));
        }
        let max_mt = cfg.max_msg_timeout.as_millis() as i64;
        let msg_timeout = match req.msg_timeout {
            0 => cfg.msg_timeout,
            v if (1000..=max_mt).contains(&v) => Duration::from_millis(v as u64),
            v => return Err(bad("msg timeout", v)),
        };
        let ip = self.info.remote.ip().to_string();
        self.info.set_identity(ClientIdentity {
            client_id: non_empty_or(req.client_id.clone(), &ip),
            hostname: non_empty_or(req.hostname.clone(), &ip),
            user_agent: req.user_agent.clone(),
            sample_rate: req.sample_rate,
            msg_timeout_ms: msg_timeout.as_millis() as i64,
        });
        self.heartbeat = heartbeat;
        self.heartbeat_changed = true;
        self.output_buffer_size = obs;
        self.sample_rate = req.sample_rate;
        self.msg_timeout = msg_timeout;
        tracing::Span::current().record("client_id", self.info.identity().client_id.as_str());
        debug!(user_agent = %req.user_agent, "IDENTIFY");
        if req.snappy && req.deflate {
            return Err(ProtocolError::new(
                ErrorCode::IdentifyFailed,
                "cannot enable both deflate and snappy compression",
            ));
        }
        let tls = req.tls_v1 && self.tls.is_some() && !self.is_tls;
        let snappy = req.snappy && cfg.snappy;
        let deflate = req.deflate && cfg.deflate;
        let deflate_level = match req.deflate_level {
            l if l > 0 => (l as u32).min(cfg.max_deflate_level),
            _ => 6u32.min(cfg.max_deflate_level),
        };
        if !req.feature_negotiation {
            self.respond(v2::OK);
            return Ok(());
        }
        let codec = match (snappy, deflate) {
            (true, _) => Some(Codec::Snappy),
            (_, true) => Some(Codec::Deflate {
                level: deflate_level,
            }),
            _ => None,
        };
        if tls || codec.is_some() {
            self.upgrade = Some(Upgrade { tls, codec });
        }
        let resp = IdentifyResponse {
            max_rdy_count: cfg.max_rdy_count as i64,
            version: VERSION.to_owned(),
            max_msg_timeout: max_mt,
            msg_timeout: msg_timeout.as_millis() as i64,
            tls_v1: tls,
            deflate,
            deflate_level: if deflate { deflate_level as i32 } else { 0 },
            max_deflate_level: cfg.max_deflate_level as i32,
            snappy,
            sample_rate: req.sample_rate,
            auth_required: !cfg.auth_http_addresses.is_empty(),
            output_buffer_size: obs as i64,
            output_buffer_timeout: obt.as_millis() as i64,
        };
        let json = serde_json::to_vec(&resp).map_err(|e| {
            ProtocolError::new(ErrorCode::IdentifyFailed, format!("IDENTIFY failed {e}"))
        })?;
        self.respond(&json);
        Ok(())
    }

    /// AUTH: asks the auth server what the secret may do; replies with the identity and the
    /// number of authorizations, as nsqd does.
    async fn authenticate(&mut self, secret: &[u8]) -> Result<(), ProtocolError> {
        if self.info.state() != ClientState::Init {
            return Err(invalid("cannot AUTH in current state"));
        }
        if self.auth.is_some() {
            return Err(invalid("AUTH already set"));
        }
        if self.broker.config.auth_http_addresses.is_empty() {
            return Err(ProtocolError::new(ErrorCode::AuthDisabled, "AUTH Disabled"));
        }
        if secret.is_empty() {
            return Err(ProtocolError::new(
                ErrorCode::BadBody,
                "AUTH invalid body size 0",
            ));
        }
        self.auth_secret = String::from_utf8_lossy(secret).into_owned();
        let state = Box::pin(self.query_auth()).await?;
        if state.permission_count() == 0 {
            return Err(ProtocolError::new(
                ErrorCode::Unauthorized,
                "AUTH no authorizations found",
            ));
        }
        let reply = serde_json::json!({
            "identity": state.identity,
            "identity_url": state.identity_url,
            "permission_count": state.permission_count(),
        });
        self.info
            .set_auth_identity(&state.identity, &state.identity_url);
        self.auth = Some(state);
        self.respond(reply.to_string().as_bytes());
        Ok(())
    }

    /// Asks the auth servers; their failures are logged, the client only hears `AUTH failed`.
    async fn query_auth(&mut self) -> Result<AuthState, ProtocolError> {
        let creds = Credentials {
            remote_ip: self.info.remote.ip().to_string(),
            tls: self.is_tls,
            secret: self.auth_secret.clone(),
            common_name: self.common_name.clone(),
        };
        let broker = &self.broker;
        auth::query(
            broker.http_client(),
            &broker.config.auth_http_addresses,
            &creds,
        )
        .await
        .map_err(|e| {
            warn!(error = %format!("{e:#}"), "AUTH failed");
            ProtocolError::new(ErrorCode::AuthFailed, "AUTH failed")
        })
    }

    /// With auth enabled: `cmd` on `topic`/`channel` (`""` to publish) must be authorized;
    /// an expired grant is renewed first.
    async fn check_auth(
        &mut self,
        cmd: &str,
        topic: &str,
        channel: &str,
    ) -> Result<(), ProtocolError> {
        if self.broker.config.auth_http_addresses.is_empty() {
            return Ok(());
        }
        let Some(state) = &self.auth else {
            return Err(ProtocolError::new(
                ErrorCode::AuthFirst,
                format!("AUTH required before {cmd}"),
            ));
        };
        if state.expired() {
            let fresh = Box::pin(self.query_auth()).await?;
            self.auth = Some(fresh);
        }
        if self.auth.as_ref().is_some_and(|s| s.allows(topic, channel)) {
            Ok(())
        } else {
            Err(ProtocolError::new(
                ErrorCode::Unauthorized,
                format!("AUTH failed for {cmd} on {topic:?} {channel:?}"),
            ))
        }
    }

    async fn subscribe(
        &mut self,
        topic_name: &str,
        channel_name: &str,
    ) -> Result<(), ProtocolError> {
        if self.info.state() != ClientState::Init {
            return Err(invalid("cannot SUB in current state"));
        }
        if self.heartbeat.is_none() {
            return Err(invalid("cannot SUB with heartbeats disabled"));
        }
        let sub_failed = |e: CreateError| {
            warn!(topic = topic_name, channel = channel_name, error = %e, "SUB failed");
            ProtocolError::new(ErrorCode::SubFailed, format!("SUB failed {e}"))
        };
        let topic = self
            .broker
            .get_or_create_topic(topic_name)
            .await
            .map_err(sub_failed)?;
        let channel = topic
            .get_or_create_channel(channel_name)
            .await
            .map_err(sub_failed)?;
        let max = self.broker.config.max_channel_consumers;
        if !channel.add_client(self.info.clone(), max) {
            return Err(ProtocolError::new(
                ErrorCode::TooManyChannelConsumers,
                format!("channel consumers for {topic_name}:{channel_name} exceeds limit of {max}"),
            ));
        }
        self.info.set_state(ClientState::Subscribed);
        self.sub = Some(Subscription { topic, channel });
        self.respond(v2::OK);
        Ok(())
    }

    /// Publishes one command on its own (DPUB; PUB and MPUB are batched by `process_input`
    /// and reach `exec` only if called directly): appended at once, acknowledged like a batch.
    async fn publish(
        &mut self,
        kind: PublishKind,
        topic_name: &str,
        bodies: &[&[u8]],
        defer: Duration,
    ) -> Result<(), ProtocolError> {
        let (topic, range) = self.broker.append(kind, topic_name, bodies, defer).await?;
        self.published(&topic, range.end, bodies.len(), 1);
        Ok(())
    }

    fn ready(&mut self, count: u64) -> Result<(), ProtocolError> {
        match self.info.state() {
            ClientState::Closing => return Ok(()),
            ClientState::Subscribed => {}
            _ => return Err(invalid("cannot RDY in current state")),
        }
        let max = self.broker.config.max_rdy_count;
        limits::check_rdy_count(count, max)?;
        self.rdy = count;
        self.info.ready_count.store(count, Ordering::Relaxed);
        Ok(())
    }

    /// The channel and sequence a FIN/REQ/TOUCH refers to.
    fn message_target(
        &self,
        cmd: &str,
        id: &MessageId,
    ) -> Result<(Arc<Channel>, u64), ProtocolError> {
        let state = self.info.state();
        let sub = match (&self.sub, state) {
            (Some(sub), ClientState::Subscribed | ClientState::Closing) => sub,
            _ => return Err(invalid(format!("cannot {cmd} in current state"))),
        };
        let code = match cmd {
            "FIN" => ErrorCode::FinFailed,
            "REQ" => ErrorCode::ReqFailed,
            _ => ErrorCode::TouchFailed,
        };
        let seq = id.to_seq().ok_or_else(|| {
            ProtocolError::new(code, format!("{cmd} {id} failed ID not in flight"))
        })?;
        Ok((sub.channel.clone(), seq))
    }

    fn cleanup(&mut self) {
        self.info.set_state(ClientState::Disconnected);
        if let Some(sub) = self.sub.take() {
            let remaining = sub.channel.remove_client(&self.info);
            if remaining == 0 && sub.channel.is_ephemeral() {
                self.broker.reap_ephemeral(&sub.topic, sub.channel.name());
            }
        }
        self.broker.remove_client(self.info.id);
    }
}

/// True when the records of `topic` below `end` are durable already (always, unless the broker
/// runs power-safe): `wait_durable` resolves at once then, so it is polled once without waiting.
fn is_durable(topic: &Topic, end: u64) -> bool {
    let mut fut = std::pin::pin!(topic.wait_durable(end));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    // A failed sync reads as "not durable": the held path reports it.
    matches!(fut.as_mut().poll(&mut cx), std::task::Poll::Ready(Ok(())))
}

/// Adds "the records of `topic` below `end` must be durable" to `targets` (one entry per topic).
fn add_target(targets: &mut Vec<(Arc<Topic>, u64)>, topic: &Arc<Topic>, end: u64) {
    match targets.iter_mut().find(|(t, _)| Arc::ptr_eq(t, topic)) {
        Some((_, e)) => *e = (*e).max(end),
        None => targets.push((topic.clone(), end)),
    }
}

/// Resolves when every `(topic, end)` is durable, or with the first topic whose sync failed.
async fn wait_durable(
    pending: &[(Arc<Topic>, u64)],
) -> Result<(), (String, crate::topic::PublishError)> {
    for (topic, end) in pending {
        topic
            .wait_durable(*end)
            .await
            .map_err(|e| (topic.name().to_owned(), e))?;
    }
    Ok(())
}

fn new_interval(period: Duration) -> Interval {
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

fn invalid(msg: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::Invalid, msg)
}

fn op_failed(
    code: ErrorCode,
    cmd: &str,
    id: &MessageId,
    e: crate::channel::MessageOpError,
) -> ProtocolError {
    ProtocolError::new(code, format!("{cmd} {id} failed {e}"))
}

fn non_empty_or(s: String, default: &str) -> String {
    if s.is_empty() { default.to_owned() } else { s }
}
