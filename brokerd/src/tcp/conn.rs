//! One client connection speaking protocol V2: a single task that reads commands, pulls messages
//! from its channel while it has credit, sends heartbeats and writes everything through one
//! output buffer.
//!
//! Flushing: responses and errors go out at once; message frames are batched and flushed when
//! the client runs out of credit, the channel has nothing more to give right now, or the buffer
//! reaches the client's `output_buffer_size`. So a busy consumer gets large writes and an idle
//! one gets each message without delay.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ferry_proto::identify::{IdentifyRequest, IdentifyResponse};
use ferry_proto::v2::{self, Command, DecodeLimits, PublishKind, limits};
use ferry_proto::{ErrorCode, MessageId, ProtocolError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::broker::{Broker, VERSION};
use crate::channel::Channel;
use crate::client::{ClientIdentity, ClientInfo, ClientState};
use crate::clock::now_ns;
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
/// Read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;

struct Subscription {
    topic: Arc<Topic>,
    channel: Arc<Channel>,
}

enum Flow {
    Continue,
    Close,
}

/// State of one V2 connection.
pub(crate) struct Conn<R, W> {
    broker: Arc<Broker>,
    info: Arc<ClientInfo>,
    reader: R,
    writer: W,
    rbuf: BytesMut,
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
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Conn<R, W> {
    pub(crate) fn new(broker: Arc<Broker>, info: Arc<ClientInfo>, reader: R, writer: W) -> Self {
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
            reader,
            writer,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
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
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                r = self.reader.read_buf(&mut self.rbuf) => {
                    if r? == 0 {
                        return Ok(());
                    }
                    self.last_recv = Instant::now();
                    self.info.last_recv_ns.store(now_ns(), Ordering::Relaxed);
                    let flow = self.process_input();
                    self.flush().await?;
                    if let Flow::Close = flow {
                        return Ok(());
                    }
                    if self.rbuf.capacity() - self.rbuf.len() < 1024 {
                        self.rbuf.reserve(READ_CHUNK);
                    }
                }
                _ = self.info.wake.notified() => {}
                _ = async { channel.as_deref().map(Channel::ready).expect("guarded").await },
                    if credit > 0 && channel.is_some() => {
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
                }
            }
            if delivered {
                self.deliver(credit).await?;
            }
        }
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

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        // A client that stops reading must not pin this task forever.
        let limit = self
            .heartbeat
            .unwrap_or(DEFAULT_HEARTBEAT)
            .max(Duration::from_secs(1));
        match tokio::time::timeout(limit, self.out.flush(&mut self.writer)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "client did not read its data in time",
            )),
        }
    }

    /// Decodes and executes every complete command in the read buffer.
    fn process_input(&mut self) -> Flow {
        loop {
            let cmd = match v2::decode_command(&mut self.rbuf, &self.limits) {
                Ok(Some(cmd)) => cmd,
                Ok(None) => return Flow::Continue,
                Err(e) => {
                    self.send_error(&e);
                    return Flow::Close;
                }
            };
            if let Err(e) = self.exec(cmd) {
                self.send_error(&e);
                if e.is_fatal() {
                    return Flow::Close;
                }
            }
        }
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

    fn exec(&mut self, cmd: Command) -> Result<(), ProtocolError> {
        match cmd {
            Command::Identify(body) => self.identify(&body),
            Command::Auth(_) => {
                if self.info.state() != ClientState::Init {
                    return Err(invalid("cannot AUTH in current state"));
                }
                Err(ProtocolError::new(ErrorCode::AuthDisabled, "AUTH Disabled"))
            }
            Command::Sub { topic, channel } => self.subscribe(&topic, &channel),
            Command::Pub { topic, body } => {
                self.publish(PublishKind::Pub, &topic, &[&body], Duration::ZERO)
            }
            Command::Mpub { topic, bodies } => {
                let refs: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
                self.publish(PublishKind::Mpub, &topic, &refs, Duration::ZERO)
            }
            Command::Dpub {
                topic,
                defer_ms,
                body,
            } => {
                let max = self.broker.config.max_req_timeout.as_millis() as u64;
                limits::check_defer("DPUB", defer_ms, max)?;
                let defer = Duration::from_millis(defer_ms);
                self.publish(PublishKind::Dpub, &topic, &[&body], defer)
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
        debug!(client_id = %req.client_id, user_agent = %req.user_agent, "IDENTIFY");
        if !req.feature_negotiation {
            self.respond(v2::OK);
            return Ok(());
        }
        let resp = IdentifyResponse {
            max_rdy_count: cfg.max_rdy_count as i64,
            version: VERSION.to_owned(),
            max_msg_timeout: max_mt,
            msg_timeout: msg_timeout.as_millis() as i64,
            tls_v1: false,
            deflate: false,
            deflate_level: 0,
            max_deflate_level: 6,
            snappy: false,
            sample_rate: req.sample_rate,
            auth_required: false,
            output_buffer_size: obs as i64,
            output_buffer_timeout: obt.as_millis() as i64,
        };
        let json = serde_json::to_vec(&resp).map_err(|e| {
            ProtocolError::new(ErrorCode::IdentifyFailed, format!("IDENTIFY failed {e}"))
        })?;
        self.respond(&json);
        Ok(())
    }

    fn subscribe(&mut self, topic_name: &str, channel_name: &str) -> Result<(), ProtocolError> {
        if self.info.state() != ClientState::Init {
            return Err(invalid("cannot SUB in current state"));
        }
        if self.heartbeat.is_none() {
            return Err(invalid("cannot SUB with heartbeats disabled"));
        }
        let topic = self
            .broker
            .get_or_create_topic(topic_name)
            .map_err(|e| ProtocolError::new(ErrorCode::SubFailed, format!("SUB failed {e}")))?;
        let channel = topic.get_or_create_channel(channel_name).ok_or_else(|| {
            ProtocolError::new(ErrorCode::SubFailed, "SUB failed topic is exiting")
        })?;
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

    fn publish(
        &mut self,
        kind: PublishKind,
        topic_name: &str,
        bodies: &[&[u8]],
        defer: Duration,
    ) -> Result<(), ProtocolError> {
        self.broker.publish(kind, topic_name, bodies, defer)?;
        self.info
            .pub_count
            .fetch_add(bodies.len() as u64, Ordering::Relaxed);
        self.info.is_producer.store(true, Ordering::Relaxed);
        self.respond(v2::OK);
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
