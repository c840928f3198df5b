//! The gRPC API (`proto/ferry/v1/broker.proto`, served with tonic on `--grpc-address`): the
//! same publish and consume semantics as protocol V2, for services in any language.
//!
//! ```text
//! Publish ──▶ check_publish (ferry-proto, V2's rules and texts) ──▶ Broker::publish
//! Subscribe ─▶ one task per stream (subscribe.rs): a channel client like a TCP connection
//!              ◀── SubscribeRequest (open, credit, fin, req, touch)
//!              ──▶ SubscribeResponse (subscribed, messages, operation_failed) via a bounded queue
//! Stats ─────▶ stats::collect, converted to typed messages
//! ```
//!
//! Errors are [`ProtocolError`]s turned into a [`Status`] whose message is NSQ's wire text
//! (`E_BAD_TOPIC ...`); see [`status`] for the code mapping.

mod stats;
mod subscribe;

use std::sync::Arc;
use std::time::Duration;

use ferry_proto::v2::{DecodeLimits, check_publish};
use ferry_proto::{ErrorCode, MessageId, ProtocolError};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument as _, info_span};

use crate::broker::Broker;
use crate::limits::Listener;

/// The protobuf messages and the tonic client and server generated from
/// `proto/ferry/v1/broker.proto` (`pb::broker_client::BrokerClient` is the client).
#[allow(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    clippy::all,
    clippy::pedantic
)]
pub mod pb {
    tonic::include_proto!("ferry.v1");
}

/// Slack over `--max-body-size` for a request's protobuf framing (topic, tags, lengths): a
/// batch that fits MPUB's limit always fits this, so our own check answers with NSQ's code.
const REQUEST_OVERHEAD: usize = 64 * 1024;
/// HTTP/2 PING interval that detects a subscriber that vanished without closing its socket.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a PING may stay unanswered.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves the gRPC API on `listener` until `cancel`; open subscriptions end with UNAVAILABLE.
pub(crate) async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    cancel: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let max_request = (broker.config.max_body_size as usize).saturating_add(REQUEST_OVERHEAD);
    let broker_config = broker.config.clone();
    let service = Service {
        broker,
        cancel: cancel.clone(),
    };
    let server =
        pb::broker_server::BrokerServer::new(service).max_decoding_message_size(max_request);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls_config(&broker_config)? {
        builder = builder.tls_config(tls)?;
    }
    builder
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(server)
        .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
        .await
}

/// With `--tls-cert`, the gRPC port speaks TLS only (the same certificate as the TCP upgrade and
/// HTTPS; client certificates as `--tls-client-auth-policy` says).
fn tls_config(
    cfg: &crate::config::Config,
) -> Result<Option<tonic::transport::ServerTlsConfig>, tonic::transport::Error> {
    let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) else {
        return Ok(None);
    };
    // Server::bind already read these files (tls::server_config). Should one be unreadable now,
    // the empty identity makes serving fail: never a silent fallback to plain text.
    let read = |p: &std::path::Path| std::fs::read(p).unwrap_or_default();
    let mut tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(read(cert), read(key)));
    if let Some(ca) = &cfg.tls_root_ca_file {
        tls = tls
            .client_ca_root(tonic::transport::Certificate::from_pem(read(ca)))
            .client_auth_optional(cfg.tls_client_auth_policy.is_none());
    }
    Ok(Some(tls))
}

/// The `ferry.v1.Broker` service.
#[derive(Debug)]
struct Service {
    broker: Arc<Broker>,
    cancel: CancellationToken,
}

/// A refusal as a gRPC status: NSQ's text as the message, and the closest code.
pub(crate) fn status(e: &ProtocolError) -> Status {
    let text = e.to_string();
    match e.code {
        ErrorCode::Invalid
        | ErrorCode::BadBody
        | ErrorCode::BadMessage
        | ErrorCode::BadTopic
        | ErrorCode::BadChannel
        | ErrorCode::BadProtocol
        | ErrorCode::IdentifyFailed => Status::invalid_argument(text),
        ErrorCode::TooManyChannelConsumers | ErrorCode::TooManyConnections => {
            Status::resource_exhausted(text)
        }
        ErrorCode::PubFailed
        | ErrorCode::MpubFailed
        | ErrorCode::DpubFailed
        | ErrorCode::SubFailed => Status::unavailable(text),
        ErrorCode::FinFailed | ErrorCode::ReqFailed | ErrorCode::TouchFailed => {
            Status::failed_precondition(text)
        }
        ErrorCode::AuthFirst | ErrorCode::AuthFailed => Status::unauthenticated(text),
        ErrorCode::Unauthorized => Status::permission_denied(text),
        ErrorCode::AuthDisabled | ErrorCode::AuthError => Status::internal(text),
    }
}

#[tonic::async_trait]
impl pb::broker_server::Broker for Service {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let req = request.into_inner();
        let cfg = &self.broker.config;
        let limits = DecodeLimits {
            max_msg_size: cfg.max_msg_size,
            max_body_size: cfg.max_body_size,
        };
        let max_defer = cfg.max_req_timeout.as_millis() as u64;
        let kind = check_publish(&req.topic, &req.bodies, req.defer_ms, max_defer, &limits)
            .map_err(|e| status(&e))?;
        let bodies: Vec<&[u8]> = req.bodies.iter().map(|b| &b[..]).collect();
        let defer = Duration::from_millis(req.defer_ms);
        let range = self
            .broker
            .publish(kind, &req.topic, &bodies, defer)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::PublishResponse {
            count: bodies.len() as u32,
            first_id: MessageId::from_seq(range.start).to_string(),
        }))
    }

    type SubscribeStream = ReceiverStream<Result<pb::SubscribeResponse, Status>>;

    async fn subscribe(
        &self,
        request: Request<Streaming<pb::SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        // Open Subscribe streams are bounded by `--max-connections`, as TCP connections are.
        let Some(permit) = self.broker.limits.admit(Listener::Grpc) else {
            self.broker.limits.note_refused(Listener::Grpc);
            return Err(status(&ProtocolError::new(
                ErrorCode::TooManyConnections,
                format!(
                    "broker has reached its limit of {} subscribe streams (--max-connections)",
                    self.broker.limits.max()
                ),
            )));
        };
        let remote = request
            .remote_addr()
            .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let user_agent = request
            .metadata()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let (tx, rx) = mpsc::channel(subscribe::OUT_QUEUE);
        let sub = subscribe::Subscriber::new(
            self.broker.clone(),
            remote,
            user_agent,
            request.into_inner(),
        );
        let cancel = self.cancel.clone();
        let span = info_span!("grpc_sub", remote = %remote, client = tracing::field::Empty);
        self.broker.tracker.spawn(
            async move {
                sub.run(tx, cancel).await;
                drop(permit);
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let req = request.into_inner();
        let filter = crate::stats::StatsFilter {
            topic: Some(req.topic).filter(|s| !s.is_empty()),
            channel: Some(req.channel).filter(|s| !s.is_empty()),
            include_clients: req.include_clients.unwrap_or(true),
        };
        let doc = crate::stats::collect(&self.broker, &filter);
        Ok(Response::new(stats::to_pb(doc)))
    }
}
