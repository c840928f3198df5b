//! nsqlookupd's HTTP API (axum): discovery (`/lookup`, `/topics`, `/channels`, `/nodes`) and
//! administration (`/topic/*`, `/channel/*`), with nsqlookupd's status codes, `{"message": CODE}`
//! error bodies and the `X-NSQ-Content-Type: nsq; version=1.0` header that go-nsq looks for.
//!
//! Query parameters follow nsqlookupd's `ReqParams`: a parameter that is present but empty is
//! present (so `?topic=` is an unknown or invalid topic, not a missing one), and the first of
//! repeated parameters wins. Lists are sorted so that answers are stable.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ferry_proto::names::{is_valid_channel_name, is_valid_topic_name};
use serde::Serialize;
use serde_json::json;
use tracing::info;

use crate::VERSION;
use crate::db::Node;
use crate::shared::Shared;

/// The router, given the shared state.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/ping", get(ping))
        .route("/info", get(info_handler))
        .route("/lookup", get(lookup))
        .route("/topics", get(topics))
        .route("/channels", get(channels))
        .route("/nodes", get(nodes))
        .route("/metrics", get(metrics_handler))
        .route("/topic/create", post(topic_create))
        .route("/topic/delete", post(topic_delete))
        .route("/topic/tombstone", post(topic_tombstone))
        .route("/channel/create", post(channel_create))
        .route("/channel/delete", post(channel_delete))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "NOT_FOUND") })
        .method_not_allowed_fallback(|| async {
            ApiError(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
        })
        .layer(axum::middleware::map_response(nsq_header))
        .with_state(shared)
}

async fn metrics_handler(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::prom::CONTENT_TYPE)],
        crate::prom::render(&shared),
    )
        .into_response()
}

async fn nsq_header(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        "X-NSQ-Content-Type",
        HeaderValue::from_static("nsq; version=1.0"),
    );
    resp
}

/// An nsqlookupd-style error: status and `{"message": CODE}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "message": self.1 }))).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;
type SharedState = State<Arc<Shared>>;
type RawParams = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// The query string of one request.
struct Params(Vec<(String, String)>);

impl Params {
    fn from_raw(raw: RawParams) -> ApiResult<Params> {
        match raw {
            Ok(Query(pairs)) => Ok(Params(pairs)),
            Err(e) => {
                tracing::debug!(error = %e, "bad query string");
                Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_REQUEST"))
            }
        }
    }

    /// The first value of `key`, if present (even empty).
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn topic(&self) -> ApiResult<&str> {
        self.get("topic")
            .ok_or(ApiError(StatusCode::BAD_REQUEST, "MISSING_ARG_TOPIC"))
    }

    fn valid_topic(&self) -> ApiResult<&str> {
        let topic = self.topic()?;
        if !is_valid_topic_name(topic) {
            return Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_ARG_TOPIC"));
        }
        Ok(topic)
    }

    /// nsqlookupd's `GetTopicChannelArgs`: topic checked fully before the channel.
    fn valid_topic_channel(&self) -> ApiResult<(&str, &str)> {
        let topic = self.valid_topic()?;
        let channel = self
            .get("channel")
            .ok_or(ApiError(StatusCode::BAD_REQUEST, "MISSING_ARG_CHANNEL"))?;
        if !is_valid_channel_name(channel) {
            return Err(ApiError(StatusCode::BAD_REQUEST, "INVALID_ARG_CHANNEL"));
        }
        Ok((topic, channel))
    }
}

fn empty_ok() -> Response {
    StatusCode::OK.into_response()
}

async fn ping() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "OK").into_response()
}

async fn info_handler() -> Response {
    axum::Json(json!({ "version": VERSION })).into_response()
}

async fn lookup(State(shared): SharedState, raw: RawParams) -> ApiResult<Response> {
    let params = Params::from_raw(raw)?;
    let topic = params.topic()?;
    let found = shared.with_db(|db| db.lookup(topic, Instant::now()));
    let found = found.ok_or(ApiError(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND"))?;
    Ok(axum::Json(found).into_response())
}

async fn topics(State(shared): SharedState) -> Response {
    let topics = shared.with_db(|db| db.topics());
    axum::Json(json!({ "topics": topics })).into_response()
}

async fn channels(State(shared): SharedState, raw: RawParams) -> ApiResult<Response> {
    let params = Params::from_raw(raw)?;
    let topic = params.topic()?;
    let channels = shared.with_db(|db| db.channels(topic));
    Ok(axum::Json(json!({ "channels": channels })).into_response())
}

/// `/nodes`'s body: a struct rather than `json!`, which would sort the node's keys.
#[derive(Serialize)]
struct Nodes {
    producers: Vec<Node>,
}

async fn nodes(State(shared): SharedState) -> Response {
    let producers = shared.with_db(|db| db.nodes(Instant::now()));
    axum::Json(Nodes { producers }).into_response()
}

async fn topic_create(State(shared): SharedState, raw: RawParams) -> ApiResult<Response> {
    let params = Params::from_raw(raw)?;
    let topic = params.valid_topic()?;
    info!("DB: adding topic({topic})");
    shared.with_db(|db| db.create_topic(topic));
    Ok(empty_ok())
}

async fn topic_delete(State(shared): SharedState, raw: RawParams) -> ApiResult<Response> {
    let params = Params::from_raw(raw)?;
    // nsqlookupd deletes whatever is named, valid or not, known or not.
    let topic = params.topic()?;
    if shared.with_db(|db| db.delete_topic(topic)) {
        info!("DB: removed topic({topic}) and its channels");
    }
    Ok(empty_ok())
}

async fn topic_tombstone(State(shared): SharedState, raw: RawParams) -> ApiResult<Response> {
    let params = Params::from_raw(raw)?;
    let topic = params.topic()?;
    let node = params
        .get("node")
        .ok_or(ApiError(StatusCode::BAD_REQUEST, "MISSING_ARG_NODE"))?;
    // As nsqlookupd: an unknown topic or node tombstones nothing and still answers 200.
    let marked = shared.with_db(|db| db.tombstone(topic, node, Instant::now()));
    info!("DB: setting tombstone for producer@{node} of topic({topic}): {marked} marked");
    Ok(empty_ok())
}

async fn channel_create(State(shared): SharedState, raw: RawParams) -> ApiResult<Response> {
    let params = Params::from_raw(raw)?;
    let (topic, channel) = params.valid_topic_channel()?;
    info!("DB: adding channel({channel}) in topic({topic})");
    shared.with_db(|db| db.create_channel(topic, channel));
    Ok(empty_ok())
}

async fn channel_delete(State(shared): SharedState, raw: RawParams) -> ApiResult<Response> {
    let params = Params::from_raw(raw)?;
    let (topic, channel) = params.valid_topic_channel()?;
    if !shared.with_db(|db| db.delete_channel(topic, channel)) {
        return Err(ApiError(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND"));
    }
    info!("DB: removed channel({channel}) from topic({topic})");
    Ok(empty_ok())
}
