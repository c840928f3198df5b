//! nsqd's HTTP API (axum): publishing, stats and topic/channel administration, with NSQ's status
//! codes, `{"message": CODE}` error bodies and the `X-NSQ-Content-Type` header that go-nsq and
//! nsqadmin look for.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ferry_proto::names::{is_valid_channel_name, is_valid_topic_name};
use ferry_replica::Admin;
use ferry_store::StoreError;
use serde_json::json;

use crate::broker::{Broker, VERSION};
use crate::creation::CreateError;
use crate::stats::{self, StatsFilter};
use crate::topic::{PublishError, Topic};

mod queue_ops;

type Params = Query<HashMap<String, String>>;

/// The router, given the broker.
pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/ping", get(ping))
        .route("/info", get(info))
        .route("/stats", get(stats_handler))
        .route("/metrics", get(metrics_handler))
        .route("/pub", post(publish))
        .route("/mpub", post(multi_publish))
        .route("/topic/create", post(topic_create))
        .route("/topic/delete", post(topic_delete))
        .route("/topic/empty", post(topic_empty))
        .route("/topic/pause", post(topic_pause))
        .route("/topic/unpause", post(topic_unpause))
        .route("/channel/create", post(queue_ops::channel_create))
        .route("/channel/delete", post(channel_delete))
        .route("/channel/empty", post(channel_empty))
        .route("/channel/pause", post(channel_pause))
        .route("/channel/unpause", post(channel_unpause))
        .route(
            "/topic/config",
            get(queue_ops::topic_config_get).post(queue_ops::topic_config_set),
        )
        .route(
            "/channel/config",
            get(queue_ops::channel_config_get).post(queue_ops::channel_config_set),
        )
        .route("/channel/rewind", post(queue_ops::channel_rewind))
        .route("/channel/peek", get(queue_ops::channel_peek))
        .route("/channel/redrive", post(queue_ops::channel_redrive))
        .route("/raft/join", post(raft_join))
        .route("/raft/node", get(raft_node))
        .route("/raft/records", get(raft_records))
        .route("/config/{opt}", get(config_get))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "NOT_FOUND") })
        .method_not_allowed_fallback(|| async {
            ApiError(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
        })
        .layer(axum::middleware::map_response(nsq_header))
        .with_state(broker.clone())
        .merge(ferry_replica::router(broker.replication().clone()))
}

async fn nsq_header(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        "X-NSQ-Content-Type",
        HeaderValue::from_static("nsq; version=1.0"),
    );
    resp
}

/// An NSQ-style error: status and `{"message": CODE}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "message": self.1 }))).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn ok_text() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "OK").into_response()
}

fn empty_ok() -> Response {
    StatusCode::OK.into_response()
}

async fn ping(State(b): State<Arc<Broker>>) -> Response {
    match b.health() {
        None => ok_text(),
        Some(p) => (StatusCode::INTERNAL_SERVER_ERROR, format!("NOK - {p}")).into_response(),
    }
}

/// Filled in by `run` once the listeners are bound (ports may be 0 in the config).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// Bound TCP port.
    pub tcp: u16,
    /// Bound HTTP port.
    pub http: u16,
}

async fn info(State(b): State<Arc<Broker>>) -> Response {
    let ports = b.ports();
    axum::Json(json!({
        "version": VERSION,
        "broadcast_address": b.config.broadcast_address(),
        "hostname": gethostname::gethostname().to_string_lossy(),
        "http_port": ports.http,
        "tcp_port": ports.tcp,
        "start_time": b.start_time,
        "max_heartbeat_interval": b.config.max_heartbeat_interval.as_millis() as u64,
    }))
    .into_response()
}

fn truthy(v: Option<&String>, default: bool) -> bool {
    match v.map(String::as_str) {
        None => default,
        Some("" | "1" | "true" | "TRUE" | "True") => true,
        Some(_) => false,
    }
}

async fn stats_handler(State(b): State<Arc<Broker>>, Query(q): Params) -> Response {
    let filter = StatsFilter {
        topic: q.get("topic").filter(|s| !s.is_empty()).cloned(),
        channel: q.get("channel").filter(|s| !s.is_empty()).cloned(),
        include_clients: truthy(q.get("include_clients"), true),
    };
    let doc = stats::collect(&b, &filter);
    if q.get("format").map(String::as_str) == Some("json") {
        axum::Json(doc).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            stats::render_text(&doc),
        )
            .into_response()
    }
}

async fn metrics_handler(State(b): State<Arc<Broker>>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::prom::CONTENT_TYPE)],
        crate::prom::render(&b),
    )
        .into_response()
}

fn topic_param(q: &HashMap<String, String>) -> ApiResult<&str> {
    let name = q
        .get("topic")
        .ok_or(ApiError(StatusCode::BAD_REQUEST, "MISSING_ARG_TOPIC"))?;
    if !is_valid_topic_name(name) {
        return Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_TOPIC"));
    }
    Ok(name)
}

fn channel_param(q: &HashMap<String, String>) -> ApiResult<&str> {
    let name = q
        .get("channel")
        .ok_or(ApiError(StatusCode::BAD_REQUEST, "MISSING_ARG_CHANNEL"))?;
    if !is_valid_channel_name(name) {
        return Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_CHANNEL"));
    }
    Ok(name)
}

fn existing_topic(b: &Broker, q: &HashMap<String, String>) -> ApiResult<Arc<Topic>> {
    let name = topic_param(q)?;
    b.topic(name)
        .ok_or(ApiError(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND"))
}

async fn create_topic(b: &Arc<Broker>, name: &str) -> ApiResult<Arc<Topic>> {
    b.get_or_create_topic(name).await.map_err(|e| {
        tracing::warn!(topic = name, error = %e, "cannot create topic");
        create_failed(&e)
    })
}

/// nsqd's answer to a failed creation: `EXITING` while stopping, else `INTERNAL_ERROR` (the
/// reason goes to the log).
fn create_failed(e: &CreateError) -> ApiError {
    match e {
        CreateError::Exiting => ApiError(StatusCode::SERVICE_UNAVAILABLE, "EXITING"),
        _ => ApiError(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
    }
}

/// Reads at most `limit` bytes; `Err(())` if the body is longer.
async fn read_limited(body: Body, limit: usize) -> Result<Bytes, ()> {
    axum::body::to_bytes(body, limit).await.map_err(drop)
}

async fn publish(
    State(b): State<Arc<Broker>>,
    Query(q): Params,
    body: Body,
) -> ApiResult<Response> {
    let max = b.config.max_msg_size as usize;
    let body = read_limited(body, max)
        .await
        .map_err(|()| ApiError(StatusCode::PAYLOAD_TOO_LARGE, "MSG_TOO_BIG"))?;
    if body.is_empty() {
        return Err(ApiError(StatusCode::BAD_REQUEST, "MSG_EMPTY"));
    }
    let name = topic_param(&q)?;
    let defer = match q.get("defer") {
        None => Duration::ZERO,
        Some(d) => {
            let ms: i64 = d.parse().map_err(|e: std::num::ParseIntError| {
                tracing::debug!(defer = %d, error = %e, "bad defer");
                ApiError(StatusCode::BAD_REQUEST, "INVALID_DEFER")
            })?;
            let max = b.config.max_req_timeout.as_millis() as i64;
            if !(0..=max).contains(&ms) {
                return Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_DEFER"));
            }
            Duration::from_millis(ms as u64)
        }
    };
    let topic = create_topic(&b, name).await?;
    put(&b, &topic, &[&body], defer).await?;
    Ok(ok_text())
}

/// Appends, then (power-safe mode) waits for the sync that covers the records.
async fn put(b: &Broker, topic: &Topic, bodies: &[&[u8]], defer: Duration) -> ApiResult<()> {
    let result = match b.append_to(topic, bodies, defer).await {
        Ok(range) => topic.wait_durable(range.end).await,
        Err(e) => Err(e),
    };
    b.note_write(&result);
    result.map(drop).map_err(|e| {
        tracing::warn!(topic = topic.name(), error = %e, "HTTP publish failed");
        match e {
            PublishError::Exiting => ApiError(StatusCode::SERVICE_UNAVAILABLE, "EXITING"),
            PublishError::Store(_)
            | PublishError::NotDurable(_)
            | PublishError::NotReplicated(_) => {
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
            }
        }
    })
}

async fn multi_publish(
    State(b): State<Arc<Broker>>,
    Query(q): Params,
    body: Body,
) -> ApiResult<Response> {
    let max_body = b.config.max_body_size as usize;
    let max_msg = b.config.max_msg_size as usize;
    let body = read_limited(body, max_body)
        .await
        .map_err(|()| ApiError(StatusCode::PAYLOAD_TOO_LARGE, "BODY_TOO_BIG"))?;
    let name = topic_param(&q)?;
    let binary = q.contains_key("binary") && truthy(q.get("binary"), true);
    let msgs: Vec<&[u8]> = if binary {
        split_binary(&body, max_msg)?
    } else {
        let mut v = Vec::new();
        for line in body.split(|&c| c == b'\n') {
            if line.is_empty() {
                continue;
            }
            if line.len() > max_msg {
                return Err(ApiError(StatusCode::PAYLOAD_TOO_LARGE, "MSG_TOO_BIG"));
            }
            v.push(line);
        }
        v
    };
    if msgs.is_empty() {
        return Err(ApiError(StatusCode::BAD_REQUEST, "MSG_EMPTY"));
    }
    let topic = create_topic(&b, name).await?;
    put(&b, &topic, &msgs, Duration::ZERO).await?;
    Ok(ok_text())
}

/// `[u32 count]([u32 size][data])×count`, NSQ's binary MPUB body.
fn split_binary(body: &[u8], max_msg: usize) -> ApiResult<Vec<&[u8]>> {
    let bad_body = ApiError(StatusCode::BAD_REQUEST, "BAD_BODY");
    let read_u32 = |b: &[u8], at: usize| -> Option<usize> {
        b.get(at..at + 4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
    };
    let count = read_u32(body, 0).ok_or(ApiError(StatusCode::BAD_REQUEST, "BAD_BODY"))?;
    if count == 0 || count > body.len() / 4 {
        return Err(bad_body);
    }
    let mut at = 4;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let size = read_u32(body, at).ok_or(ApiError(StatusCode::BAD_REQUEST, "BAD_BODY"))?;
        at += 4;
        if size == 0 {
            return Err(ApiError(StatusCode::BAD_REQUEST, "BAD_MESSAGE"));
        }
        if size > max_msg {
            return Err(ApiError(StatusCode::PAYLOAD_TOO_LARGE, "MSG_TOO_BIG"));
        }
        let msg = body
            .get(at..at + size)
            .ok_or(ApiError(StatusCode::BAD_REQUEST, "BAD_BODY"))?;
        out.push(msg);
        at += size;
    }
    if at != body.len() {
        return Err(ApiError(StatusCode::BAD_REQUEST, "BAD_BODY"));
    }
    Ok(out)
}

async fn topic_create(State(b): State<Arc<Broker>>, Query(q): Params) -> ApiResult<Response> {
    let name = topic_param(&q)?;
    let replicas = match q.get("replicas") {
        Some(text) => crate::config::parse_replicas(text).map_err(|why| {
            tracing::debug!(%why, "topic create: bad replicas");
            ApiError(StatusCode::BAD_REQUEST, "INVALID_REPLICAS")
        })?,
        None => b.config.default_replicas,
    };
    if replicas == 1 {
        create_topic(&b, name).await?;
    } else {
        if ferry_proto::names::is_ephemeral(name) {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "EPHEMERAL_NOT_REPLICATED",
            ));
        }
        b.create_replicated_topic(name, replicas)
            .await
            .map_err(replica_error)?;
    }
    Ok(empty_ok())
}

/// `POST /raft/join?topic=T&first_seq=S`: become an empty replica of a new group (asked by
/// the broker creating it); answers `{"node_id": N}`.
async fn raft_join(State(b): State<Arc<Broker>>, Query(q): Params) -> ApiResult<Response> {
    let name = topic_param(&q)?;
    let first_seq = q
        .get("first_seq")
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or(ApiError(StatusCode::BAD_REQUEST, "INVALID_FIRST_SEQ"))?;
    let node_id = b
        .join_replicated_topic(name, first_seq)
        .await
        .map_err(replica_error)?;
    Ok(axum::Json(crate::replication::Joined { node_id }).into_response())
}

/// `GET /raft/node`: this broker's node id in every group, `{"node_id": N}` (a broker whose
/// disk was wiped has a new one).
async fn raft_node(State(b): State<Arc<Broker>>) -> Response {
    axum::Json(crate::replication::Joined {
        node_id: b.replication().node_id(),
    })
    .into_response()
}

/// `GET /raft/records?topic=T&from=S&to=E`: a chunk of a replicated topic's messages for a
/// member installing a snapshot (`replication/snapshot.rs` gives the format).
async fn raft_records(State(b): State<Arc<Broker>>, Query(q): Params) -> ApiResult<Response> {
    let name = topic_param(&q)?;
    let seq = |key: &str, code: &'static str| {
        q.get(key)
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(ApiError(StatusCode::BAD_REQUEST, code))
    };
    let (from, to) = (seq("from", "INVALID_FROM")?, seq("to", "INVALID_TO")?);
    let topic = b
        .topic(name)
        .filter(|t| t.replica().is_some())
        .ok_or(ApiError(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND"))?;
    let chunk = off_runtime(move || {
        crate::replication::snapshot::encode_records(topic.log(), from, to).map_err(|e| {
            tracing::warn!(error = %e, "cannot read a replicated topic's records");
            ApiError(StatusCode::INTERNAL_SERVER_ERROR, "READ_FAILED")
        })
    })
    .await??;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], chunk).into_response())
}

fn replica_error(e: crate::replication::ReplicaError) -> ApiError {
    use crate::replication::ReplicaError;
    tracing::warn!(error = %e, "replicated topic not created");
    match e {
        ReplicaError::TooFewBrokers(_) => {
            ApiError(StatusCode::SERVICE_UNAVAILABLE, "TOO_FEW_BROKERS")
        }
        ReplicaError::ExistsUnreplicated(_) => {
            ApiError(StatusCode::CONFLICT, "TOPIC_EXISTS_UNREPLICATED")
        }
        ReplicaError::OtherGroup(_) => ApiError(StatusCode::CONFLICT, "TOPIC_IN_ANOTHER_GROUP"),
        ReplicaError::Create(_) | ReplicaError::Other(_) => {
            ApiError(StatusCode::INTERNAL_SERVER_ERROR, "REPLICATION_FAILED")
        }
    }
}

/// For a replicated topic, `action` goes through its group, so every replica carries it out
/// (`Some(found)`); `None` for a topic of this broker alone.
async fn through_group(b: &Broker, topic: &Topic, action: Admin) -> ApiResult<Option<bool>> {
    let Some(raft) = topic.replica().cloned() else {
        return Ok(None);
    };
    b.propose_admin(topic, &raft, action)
        .await
        .map(Some)
        .map_err(|e| {
            tracing::warn!(topic = topic.name(), error = %e, "action not replicated");
            ApiError(StatusCode::SERVICE_UNAVAILABLE, "NOT_REPLICATED")
        })
}

async fn topic_delete(State(b): State<Arc<Broker>>, Query(q): Params) -> ApiResult<Response> {
    let name = topic_param(&q)?.to_owned();
    let replicated = b.topic(&name).filter(|t| t.replica().is_some());
    let deleted = match replicated {
        // A replicated topic goes from every replica. With no group to answer (no leader, or
        // the group deleted it meanwhile: a retried proposal then meets a stopped node), this
        // replica goes as asked, if its group has not removed it already.
        Some(topic) => {
            if let Ok(Some(_)) = through_group(&b, &topic, Admin::DeleteTopic).await {
                return Ok(empty_ok());
            }
            off_runtime(move || b.delete_topic(&name)).await?;
            true
        }
        None => off_runtime(move || b.delete_topic(&name)).await?,
    };
    if !deleted {
        return Err(ApiError(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND"));
    }
    Ok(empty_ok())
}

async fn topic_empty(State(b): State<Arc<Broker>>, Query(q): Params) -> ApiResult<Response> {
    let topic = existing_topic(&b, &q)?;
    persisted(off_runtime(move || topic.empty()).await?)?;
    Ok(empty_ok())
}

async fn topic_pause(State(b): State<Arc<Broker>>, Query(q): Params) -> ApiResult<Response> {
    set_topic_paused(&b, &q, true).await
}

async fn topic_unpause(State(b): State<Arc<Broker>>, Query(q): Params) -> ApiResult<Response> {
    set_topic_paused(&b, &q, false).await
}

async fn set_topic_paused(
    b: &Broker,
    q: &HashMap<String, String>,
    paused: bool,
) -> ApiResult<Response> {
    let topic = existing_topic(b, q)?;
    if through_group(b, &topic, Admin::PauseTopic(paused))
        .await?
        .is_none()
    {
        persisted(off_runtime(move || topic.set_paused(paused)).await?)?;
    }
    Ok(empty_ok())
}

/// Applies `f` to an existing channel, off the runtime threads (it writes the topic's metadata
/// or journal before it returns); `CHANNEL_NOT_FOUND` if there is no such channel or `f` says
/// so, 500 if the change could not be made durable.
/// A replicated topic's channel action goes through its group instead, as `replicated` makes
/// it from the channel's name (none: the channel's own ops replicate it, as for empty).
async fn with_channel(
    b: &Broker,
    q: &HashMap<String, String>,
    replicated: Option<fn(String) -> Admin>,
    f: impl FnOnce(&Topic, &str) -> Result<bool, StoreError> + Send + 'static,
) -> ApiResult<Response> {
    let topic = existing_topic(b, q)?;
    let channel = channel_param(q)?.to_owned();
    if topic.channel(&channel).is_none() {
        return Err(ApiError(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND"));
    }
    let found = match replicated {
        Some(action) => through_group(b, &topic, action(channel.clone())).await?,
        None => None,
    };
    let found = match found {
        Some(found) => found,
        None => persisted(off_runtime(move || f(&topic, &channel)).await?)?,
    };
    if !found {
        return Err(ApiError(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND"));
    }
    Ok(empty_ok())
}

/// An operator action's save: 500 when it failed (the action is answered only once durable).
fn persisted<T>(result: Result<T, StoreError>) -> ApiResult<T> {
    result.map_err(|e| {
        tracing::warn!(error = %e, "HTTP action could not be saved");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
    })
}

/// Runs an action that does disk I/O (metadata writes, file deletion) on the blocking pool, so
/// it never stalls a runtime thread that publishes run on.
async fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::warn!(error = %e, "HTTP action failed");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
    })
}

async fn channel_delete(State(b): State<Arc<Broker>>, Query(q): Params) -> ApiResult<Response> {
    let delete = |channel| Admin::DeleteChannel { channel };
    with_channel(&b, &q, Some(delete), |t, c| t.delete_channel(c)).await
}

async fn channel_empty(State(b): State<Arc<Broker>>, Query(q): Params) -> ApiResult<Response> {
    with_channel(&b, &q, None, |t, c| t.empty_channel(c)).await
}

async fn channel_pause(State(b): State<Arc<Broker>>, Query(q): Params) -> ApiResult<Response> {
    let pause = |channel| Admin::PauseChannel {
        channel,
        paused: true,
    };
    with_channel(&b, &q, Some(pause), |t, c| t.set_channel_paused(c, true)).await
}

async fn channel_unpause(State(b): State<Arc<Broker>>, Query(q): Params) -> ApiResult<Response> {
    let unpause = |channel| Admin::PauseChannel {
        channel,
        paused: false,
    };
    with_channel(&b, &q, Some(unpause), |t, c| t.set_channel_paused(c, false)).await
}

async fn config_get(State(b): State<Arc<Broker>>, Path(opt): Path<String>) -> ApiResult<Response> {
    let c = &b.config;
    let ms = |d: Duration| json!(d.as_nanos() as u64);
    let v = match opt.as_str() {
        "tcp_address" => json!(c.tcp_address.to_string()),
        "http_address" => json!(c.http_address.to_string()),
        "broadcast_address" => json!(c.broadcast_address()),
        "node_id" => json!(c.node_id),
        "data_path" => json!(c.data_path.display().to_string()),
        "max_bytes_per_file" => json!(c.max_bytes_per_file),
        "sync_every" => json!(c.sync_every),
        "sync_timeout" => ms(c.sync_timeout),
        "msg_timeout" => ms(c.msg_timeout),
        "max_msg_timeout" => ms(c.max_msg_timeout),
        "max_msg_size" => json!(c.max_msg_size),
        "max_body_size" => json!(c.max_body_size),
        "max_req_timeout" => ms(c.max_req_timeout),
        "max_heartbeat_interval" => ms(c.max_heartbeat_interval),
        "max_rdy_count" => json!(c.max_rdy_count),
        "max_output_buffer_size" => json!(c.max_output_buffer_size),
        "max_output_buffer_timeout" => ms(c.max_output_buffer_timeout),
        "min_output_buffer_timeout" => ms(c.min_output_buffer_timeout),
        "max_channel_consumers" => json!(c.max_channel_consumers),
        "mem_queue_size" => json!(c.mem_queue_size),
        "log_level" => json!(c.log_level),
        "e2e_processing_latency_percentiles" => json!(c.e2e_processing_latency_percentiles),
        "e2e_processing_latency_window_time" => ms(c.e2e_processing_latency_window_time),
        "nsqlookupd_tcp_addresses" => json!(c.lookupd_tcp_addresses),
        _ => return Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_OPTION")),
    };
    Ok(axum::Json(v).into_response())
}

/// Wraps the plain-HTTP router when `--tls-required=true`: every request gets nsqd's
/// 403 `TLS_REQUIRED` (HTTPS is served by the same router without this layer).
pub fn require_tls(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(
        |_req: axum::extract::Request, _next: axum::middleware::Next| async {
            ApiError(StatusCode::FORBIDDEN, "TLS_REQUIRED").into_response()
        },
    ))
}
