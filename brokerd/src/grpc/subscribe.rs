//! One gRPC Subscribe stream: a channel client exactly like a V2 connection (`tcp/conn.rs`),
//! driven by one task.
//!
//! ```text
//! inbound Streaming<SubscribeRequest> ──▶ task ──▶ bounded mpsc ──▶ tonic response stream
//!   open (first), credit, fin, req, touch     │
//!                                              └─▶ Channel::take / finish / requeue / touch
//! ```
//!
//! Invariants:
//! - The task takes messages only with a reserved slot in the outbound queue and only up to its
//!   credit (`credit - in_flight`, the same window as V2's RDY), so a subscriber never has more
//!   in flight than its credit and a slow reader never makes the task block while it holds
//!   messages it has not handed over.
//! - Inbound requests are read whatever the outbound queue's state: FIN/REQ/TOUCH never wait
//!   behind deliveries. Refusals of those (not fatal, as in NSQ) queue as `operation_failed`
//!   events, bounded by [`MAX_PENDING_EVENTS`].
//! - Whatever ends the stream (client half-close or cancel, a fatal request, shutdown), the
//!   subscriber leaves its channel, which requeues its in-flight messages at once.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use ferry_proto::v2::limits::{check_channel_name, check_rdy_count, check_topic_name};
use ferry_proto::{ErrorCode, MessageId, ProtocolError};
use ferry_store::Delivery;
use tokio::sync::mpsc;
use tokio_stream::Stream as _;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};
use tracing::{debug, warn};

use super::{pb, status};
use crate::broker::Broker;
use crate::channel::{Channel, MessageOpError};
use crate::client::{ClientIdentity, ClientInfo, ClientState};
use crate::topic::Topic;

/// Responses queued towards tonic (each may be a batch of messages).
pub(super) const OUT_QUEUE: usize = 16;
/// Most messages taken from the channel per lock acquisition.
const TAKE_BATCH: u64 = 512;
/// Bodies per `messages` event (a larger single message goes alone).
const BATCH_BYTES: usize = 1 << 20;
/// Refused FIN/REQ/TOUCH events a client may leave unread before the stream is ended.
const MAX_PENDING_EVENTS: usize = 1024;

/// How long a new stream may take to send its `open` (as a TCP client its magic).
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests executed in one go when they have already arrived.
const DRAIN_MAX: usize = 1024;

enum Flow {
    Continue,
    End,
}

type Out = mpsc::Sender<Result<pb::SubscribeResponse, Status>>;

struct Subscription {
    topic: Arc<Topic>,
    channel: Arc<Channel>,
    info: Arc<ClientInfo>,
    msg_timeout: Duration,
    /// The in-flight window (RDY).
    credit: u64,
}

/// A Subscribe stream before and after its `open`.
pub(super) struct Subscriber {
    broker: Arc<Broker>,
    remote: SocketAddr,
    user_agent: String,
    inbound: Streaming<pb::SubscribeRequest>,
    sub: Option<Subscription>,
    pending: VecDeque<pb::SubscribeResponse>,
}

impl Subscriber {
    pub(super) fn new(
        broker: Arc<Broker>,
        remote: SocketAddr,
        user_agent: String,
        inbound: Streaming<pb::SubscribeRequest>,
    ) -> Self {
        Subscriber {
            broker,
            remote,
            user_agent,
            inbound,
            sub: None,
            pending: VecDeque::new(),
        }
    }

    /// Serves the stream until it ends; a fatal error is sent as the stream's final status.
    pub(super) async fn run(mut self, tx: Out, cancel: CancellationToken) {
        let result = self.serve(&tx, &cancel).await;
        self.cleanup();
        if let Err(status) = result {
            debug!(code = ?status.code(), message = status.message(), "subscribe stream refused");
            // The client may have stopped reading: do not wait for it forever.
            let _ = tokio::time::timeout(Duration::from_secs(5), tx.send(Err(status))).await;
        }
    }

    async fn serve(&mut self, tx: &Out, cancel: &CancellationToken) -> Result<(), Status> {
        let first = tokio::select! {
            _ = cancel.cancelled() => return Err(shutting_down()),
            _ = tx.closed() => return Ok(()),
            _ = tokio::time::sleep(OPEN_TIMEOUT) => {
                let secs = OPEN_TIMEOUT.as_secs();
                return Err(Status::deadline_exceeded(format!(
                    "E_INVALID no open request within {secs}s"
                )));
            }
            m = self.inbound.message() => match m {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(()),
                Err(e) => {
                    debug!(error = %e, "subscribe stream failed before open");
                    return Ok(());
                }
            },
        };
        let Some(pb::subscribe_request::Command::Open(open)) = first.command else {
            return Err(status(&invalid("first request must be open")));
        };
        let subscribed = self.open(open).await.map_err(|e| status(&e))?;
        if tx.send(Ok(subscribed)).await.is_err() {
            return Ok(());
        }
        let (channel, info) = match &self.sub {
            Some(s) => (s.channel.clone(), s.info.clone()),
            None => return Ok(()),
        };
        loop {
            let credit = self.credit();
            let has_pending = !self.pending.is_empty();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(shutting_down()),
                // Requests first: FINs the client sent before it left still count.
                m = self.inbound.message() => {
                    if let Flow::End = self.handle(m)? {
                        return Ok(());
                    }
                    if let Flow::End = self.drain().await? {
                        return Ok(());
                    }
                }
                _ = tx.closed() => return Ok(()),
                _ = info.wake.notified() => {}
                permit = tx.reserve(), if has_pending => {
                    let Ok(permit) = permit else { return Ok(()) };
                    if let Some(ev) = self.pending.pop_front() {
                        permit.send(Ok(ev));
                    }
                }
                permit = async {
                    let permit = tx.reserve().await;
                    channel.ready().await;
                    permit
                }, if credit > 0 => {
                    let Ok(permit) = permit else { return Ok(()) };
                    self.deliver(permit, tx, credit, cancel).await;
                }
            }
        }
    }

    /// Executes the requests that have already arrived, without a trip through `select!` for
    /// each (a consumer sends one FIN per message); stops at the first that is not there yet.
    async fn drain(&mut self) -> Result<Flow, Status> {
        for _ in 0..DRAIN_MAX {
            // Polls once: `Streaming` keeps its state between polls, so nothing is lost.
            let next =
                std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut self.inbound).poll_next(cx)))
                    .await;
            let Poll::Ready(m) = next else { break };
            if let Flow::End = self.handle(m.transpose())? {
                return Ok(Flow::End);
            }
        }
        Ok(Flow::Continue)
    }

    /// One inbound item: a request to execute, or the end of the client's side.
    fn handle(&mut self, m: Result<Option<pb::SubscribeRequest>, Status>) -> Result<Flow, Status> {
        match m {
            Ok(Some(req)) => {
                self.exec(req).map_err(|e| status(&e))?;
                Ok(Flow::Continue)
            }
            // Half-close: the client will send no more FINs, so it gets no more messages.
            Ok(None) => Ok(Flow::End),
            Err(e) => {
                debug!(error = %e, "subscribe stream ended by the client");
                Ok(Flow::End)
            }
        }
    }

    fn credit(&self) -> u64 {
        match &self.sub {
            Some(s) => s
                .credit
                .saturating_sub(s.info.in_flight.load(Ordering::Acquire)),
            None => 0,
        }
    }

    /// Registers with the channel (SUB) and answers with the `subscribed` event.
    async fn open(&mut self, open: pb::Open) -> Result<pb::SubscribeResponse, ProtocolError> {
        let cfg = &self.broker.config;
        check_topic_name("SUB", open.topic.as_bytes())?;
        check_channel_name("SUB", open.channel.as_bytes())?;
        check_rdy_count(u64::from(open.max_in_flight), cfg.max_rdy_count)?;
        let max_mt = cfg.max_msg_timeout.as_millis() as u64;
        let msg_timeout = match u64::from(open.msg_timeout_ms) {
            0 => cfg.msg_timeout,
            v if (1000..=max_mt).contains(&v) => Duration::from_millis(v),
            v => {
                return Err(ProtocolError::new(
                    ErrorCode::BadBody,
                    format!("SUB msg timeout ({v}) is invalid: 0 or 1000-{max_mt}"),
                ));
            }
        };
        let sub_failed = |e: &dyn std::fmt::Display| {
            ProtocolError::new(ErrorCode::SubFailed, format!("SUB failed {e}"))
        };
        let topic = self
            .broker
            .get_or_create_topic(&open.topic)
            .await
            .map_err(|e| sub_failed(&e))?;
        let channel = topic
            .get_or_create_channel(&open.channel)
            .await
            .map_err(|e| sub_failed(&e))?;
        let info = self.broker.add_client(self.remote);
        tracing::Span::current().record("client", info.id);
        let ip = self.remote.ip().to_string();
        let or_ip = |s: String| if s.is_empty() { ip.clone() } else { s };
        let user_agent = if open.user_agent.is_empty() {
            self.user_agent.clone()
        } else {
            open.user_agent
        };
        info.set_identity(ClientIdentity {
            client_id: or_ip(open.client_id),
            hostname: or_ip(open.hostname),
            user_agent,
            sample_rate: 0,
            msg_timeout_ms: msg_timeout.as_millis() as i64,
        });
        let credit = u64::from(open.max_in_flight);
        info.ready_count.store(credit, Ordering::Relaxed);
        let max = cfg.max_channel_consumers;
        if !channel.add_client(info.clone(), max) {
            self.broker.remove_client(info.id);
            let (t, c) = (&open.topic, &open.channel);
            return Err(ProtocolError::new(
                ErrorCode::TooManyChannelConsumers,
                format!("channel consumers for {t}:{c} exceeds limit of {max}"),
            ));
        }
        info.set_state(ClientState::Subscribed);
        debug!(topic = %open.topic, channel = %open.channel, "gRPC subscriber");
        let ev = pb::Subscribed {
            client_id: info.id,
            msg_timeout_ms: u32::try_from(msg_timeout.as_millis()).unwrap_or(u32::MAX),
        };
        self.sub = Some(Subscription {
            topic,
            channel,
            info,
            msg_timeout,
            credit,
        });
        Ok(event(pb::subscribe_response::Event::Subscribed(ev)))
    }

    /// Executes one request after `open`. `Err` is fatal.
    fn exec(&mut self, req: pb::SubscribeRequest) -> Result<(), ProtocolError> {
        use pb::subscribe_request::Command;
        let Some(sub) = &mut self.sub else {
            return Err(invalid("cannot SUB in current state"));
        };
        let cfg = &self.broker.config;
        let refused = match req.command {
            None => return Err(invalid("empty request")),
            Some(Command::Open(_)) => return Err(invalid("cannot SUB in current state")),
            Some(Command::Credit(c)) => {
                let n = u64::from(c.max_in_flight);
                check_rdy_count(n, cfg.max_rdy_count)?;
                sub.credit = n;
                sub.info.ready_count.store(n, Ordering::Relaxed);
                return Ok(());
            }
            Some(Command::Fin(f)) => message_seq(&f.id)?
                .and_then(|seq| sub.channel.finish(&sub.info, seq))
                .map_err(|e| op_failed(ErrorCode::FinFailed, "FIN", f.id, e)),
            Some(Command::Req(r)) => {
                // nsqd clamps the delay rather than rejecting it.
                let delay = Duration::from_millis(r.delay_ms).min(cfg.max_req_timeout);
                message_seq(&r.id)?
                    .and_then(|seq| sub.channel.requeue(&sub.info, seq, delay))
                    .map_err(|e| op_failed(ErrorCode::ReqFailed, "REQ", r.id, e))
            }
            Some(Command::Touch(t)) => {
                let (timeout, max) = (sub.msg_timeout, cfg.max_msg_timeout);
                message_seq(&t.id)?
                    .and_then(|seq| sub.channel.touch(&sub.info, seq, timeout, max))
                    .map_err(|e| op_failed(ErrorCode::TouchFailed, "TOUCH", t.id, e))
            }
        };
        // Only the non-fatal FIN/REQ/TOUCH refusals reach here.
        let Err((id, e)) = refused else { return Ok(()) };
        debug!(error = %e, "operation refused");
        if self.pending.len() >= MAX_PENDING_EVENTS {
            return Err(invalid("too many unread operation_failed events"));
        }
        self.pending
            .push_back(event(pb::subscribe_response::Event::OperationFailed(
                pb::OperationFailed {
                    id,
                    error: e.to_string(),
                },
            )));
        Ok(())
    }

    /// Takes up to the credit from the channel and sends it, the first batch in `permit`.
    async fn deliver(
        &mut self,
        permit: mpsc::Permit<'_, Result<pb::SubscribeResponse, Status>>,
        tx: &Out,
        credit: u64,
        cancel: &CancellationToken,
    ) {
        let Some(sub) = &self.sub else { return };
        let want = credit.min(TAKE_BATCH) as usize;
        let batch = match sub.channel.take(&sub.info, want, sub.msg_timeout, 0) {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "cannot read from the topic log");
                self.broker
                    .set_health(Some(format!("log read failed: {e}")));
                return;
            }
        };
        let mut chunks = Chunks::new(batch);
        let Some(first) = chunks.next() else { return };
        permit.send(Ok(first));
        for more in chunks {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = tx.send(Ok(more)) => if r.is_err() { return },
            }
        }
    }

    fn cleanup(&mut self) {
        let Some(sub) = self.sub.take() else { return };
        sub.info.set_state(ClientState::Disconnected);
        let remaining = sub.channel.remove_client(&sub.info);
        if remaining == 0 && sub.channel.is_ephemeral() {
            self.broker.reap_ephemeral(&sub.topic, sub.channel.name());
        }
        self.broker.remove_client(sub.info.id);
    }
}

/// Splits a batch of deliveries into `messages` events of at most [`BATCH_BYTES`] of bodies.
struct Chunks {
    rest: std::vec::IntoIter<Delivery>,
    peeked: Option<Delivery>,
}

impl Chunks {
    fn new(batch: Vec<Delivery>) -> Self {
        Chunks {
            rest: batch.into_iter(),
            peeked: None,
        }
    }
}

impl Iterator for Chunks {
    type Item = pb::SubscribeResponse;

    fn next(&mut self) -> Option<pb::SubscribeResponse> {
        let mut messages = Vec::new();
        let mut bytes = 0usize;
        while let Some(d) = self.peeked.take().or_else(|| self.rest.next()) {
            let len = d.record.body.len();
            if !messages.is_empty() && bytes + len > BATCH_BYTES {
                self.peeked = Some(d);
                break;
            }
            bytes += len;
            messages.push(pb::Message {
                id: MessageId::from_seq(d.record.seq).to_string(),
                timestamp_ns: d.record.timestamp_ns,
                attempts: u32::from(d.attempts),
                body: d.record.body,
            });
        }
        if messages.is_empty() {
            return None;
        }
        Some(event(pb::subscribe_response::Event::Messages(
            pb::Messages { messages },
        )))
    }
}

fn event(ev: pb::subscribe_response::Event) -> pb::SubscribeResponse {
    pb::SubscribeResponse { event: Some(ev) }
}

fn invalid(msg: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::Invalid, msg)
}

fn shutting_down() -> Status {
    Status::unavailable("broker is shutting down")
}

/// The sequence of the message a FIN/REQ/TOUCH names. An ID that is not 16 bytes is fatal
/// (`E_INVALID`, as in V2); 16 bytes that are not one of our IDs cannot be in flight.
fn message_seq(id: &str) -> Result<Result<u64, MessageOpError>, ProtocolError> {
    let mid = MessageId::from_bytes(id.as_bytes()).ok_or_else(|| invalid("Invalid Message ID"))?;
    Ok(mid.to_seq().ok_or(MessageOpError::NotInFlight))
}

/// A refused FIN/REQ/TOUCH (not fatal): the ID and NSQ's error.
fn op_failed(code: ErrorCode, cmd: &str, id: String, e: MessageOpError) -> (String, ProtocolError) {
    let err = ProtocolError::new(code, format!("{cmd} {id} failed {e}"));
    (id, err)
}
