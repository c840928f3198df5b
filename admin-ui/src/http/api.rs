//! The JSON API (the pages' data as JSON, for scripts and tests) and the actions.
//!
//! Errors are NSQ-style `{"message":"CODE"}` with the status. An action answers its
//! [`Report`]: 200 when every node did it, 404 when no node holds the target, 502 when some
//! node failed. Asked by htmx, it answers the same as an HTML fragment (always with the
//! status), which the page shows in its result area.

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{AppState, is_htmx};
use crate::actions::{self, Action, Report, Target};
use crate::history::SeriesKey;
use crate::{lookup, views};

type AppStateRef = State<Arc<AppState>>;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/topics", get(topics).post(create))
        .route(
            "/api/topics/{topic}",
            get(topic).post(topic_action).delete(topic_delete),
        )
        .route(
            "/api/topics/{topic}/{channel}",
            get(channel).post(channel_action).delete(channel_delete),
        )
        .route("/api/nodes", get(nodes))
        .route("/api/lookup", get(lookup_view))
        .route("/api/history/{topic}", get(topic_history))
        .route("/api/history/{topic}/{channel}", get(channel_history))
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "message": message }))).into_response()
}

async fn topics(State(s): AppStateRef) -> Response {
    let snap = s.cluster.snapshot(s.max_age()).await;
    axum::Json(views::topics(&snap, &s.history)).into_response()
}

async fn topic(State(s): AppStateRef, Path(topic): Path<String>) -> Response {
    let snap = s.cluster.snapshot(s.max_age()).await;
    let v = views::topic(&snap, &s.history, &topic);
    if !v.exists && v.errors.is_empty() {
        return error(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND");
    }
    axum::Json(v).into_response()
}

async fn channel(
    State(s): AppStateRef,
    Path((topic, channel)): Path<(String, String)>,
) -> Response {
    let snap = s.cluster.snapshot(s.max_age()).await;
    let v = views::channel(&snap, &s.history, &topic, &channel);
    if !v.exists && v.errors.is_empty() {
        return error(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND");
    }
    axum::Json(v).into_response()
}

async fn nodes(State(s): AppStateRef) -> Response {
    let snap = s.cluster.snapshot(s.max_age()).await;
    axum::Json(views::nodes(&snap)).into_response()
}

async fn lookup_view(State(s): AppStateRef) -> Response {
    let snap = s.cluster.snapshot(s.max_age()).await;
    axum::Json(lookup::view(&s.cluster, &snap).await).into_response()
}

async fn topic_history(State(s): AppStateRef, Path(topic): Path<String>) -> Response {
    axum::Json(s.history.chart(&SeriesKey::topic(&topic))).into_response()
}

async fn channel_history(
    State(s): AppStateRef,
    Path((topic, channel)): Path<(String, String)>,
) -> Response {
    axum::Json(s.history.chart(&SeriesKey::channel(&topic, &channel))).into_response()
}

/// An action request body.
#[derive(Debug, Deserialize)]
struct ActionBody {
    action: String,
}

/// A create request body.
#[derive(Debug, Deserialize)]
struct CreateBody {
    topic: String,
    #[serde(default)]
    channel: String,
}

/// Decodes a JSON body, or a form body (what htmx sends).
fn parse_body<T: DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> Result<T, String> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        serde_json::from_slice(body).map_err(|e| e.to_string())
    } else {
        serde_urlencoded::from_bytes(body).map_err(|e| e.to_string())
    }
}

async fn topic_action(
    State(s): AppStateRef,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    body_action(
        &s,
        &headers,
        &body,
        Target {
            topic,
            channel: None,
        },
    )
    .await
}

async fn channel_action(
    State(s): AppStateRef,
    Path((topic, channel)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    body_action(
        &s,
        &headers,
        &body,
        Target {
            topic,
            channel: Some(channel),
        },
    )
    .await
}

async fn body_action(s: &AppState, headers: &HeaderMap, body: &Bytes, target: Target) -> Response {
    let parsed = parse_body::<ActionBody>(headers, body)
        .ok()
        .and_then(|b| Action::parse(&b.action))
        .filter(|a| matches!(a, Action::Pause | Action::Unpause | Action::Empty));
    match parsed {
        Some(action) => act(s, headers, action, target).await,
        None => reply_error(headers, StatusCode::BAD_REQUEST, "INVALID_ACTION"),
    }
}

async fn topic_delete(
    State(s): AppStateRef,
    Path(topic): Path<String>,
    headers: HeaderMap,
) -> Response {
    let target = Target {
        topic,
        channel: None,
    };
    act(&s, &headers, Action::Delete, target).await
}

async fn channel_delete(
    State(s): AppStateRef,
    Path((topic, channel)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let target = Target {
        topic,
        channel: Some(channel),
    };
    act(&s, &headers, Action::Delete, target).await
}

async fn create(State(s): AppStateRef, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(b) = parse_body::<CreateBody>(&headers, &body) else {
        return reply_error(&headers, StatusCode::BAD_REQUEST, "MISSING_ARG_TOPIC");
    };
    let channel = Some(b.channel.trim().to_owned()).filter(|c| !c.is_empty());
    let target = Target {
        topic: b.topic.trim().to_owned(),
        channel,
    };
    act(&s, &headers, Action::Create, target).await
}

/// Checks the ACL and the names, applies the action, answers its report.
async fn act(s: &AppState, headers: &HeaderMap, action: Action, target: Target) -> Response {
    if !s.is_admin(headers) {
        tracing::warn!(%action, %target, "action refused: not an admin user");
        return reply_error(headers, StatusCode::FORBIDDEN, "FORBIDDEN");
    }
    if let Err(why) = target.validate() {
        let code = if why.contains("channel") {
            "INVALID_CHANNEL"
        } else {
            "INVALID_TOPIC"
        };
        return reply_error(headers, StatusCode::BAD_REQUEST, code);
    }
    let report = actions::apply(&s.cluster, action, &target).await;
    tracing::info!(%action, %target, ok = report.ok, "{}", report.summary());
    let status = if report.outcomes.is_empty() {
        StatusCode::NOT_FOUND
    } else if report.ok {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    if is_htmx(headers) {
        let html = ActionResult { report: &report };
        return (status, render_fragment(&html)).into_response();
    }
    (status, axum::Json(&report)).into_response()
}

/// The HTML fragment shown after an action.
#[derive(Template)]
#[template(path = "action_result.html")]
struct ActionResult<'a> {
    report: &'a Report,
}

#[derive(Template)]
#[template(path = "action_refused.html")]
struct ActionRefused<'a> {
    code: &'a str,
    text: &'a str,
}

fn render_fragment(t: &impl Template) -> Html<String> {
    Html(
        t.render()
            .unwrap_or_else(|e| format!("<p>rendering failed: {e}</p>")),
    )
}

/// An error as JSON, or for htmx as a fragment explaining it.
fn reply_error(headers: &HeaderMap, status: StatusCode, code: &str) -> Response {
    if !is_htmx(headers) {
        return error(status, code);
    }
    let text = match code {
        "FORBIDDEN" => "You are not allowed to do this: actions are restricted to admin users.",
        "INVALID_ACTION" => "Unknown action.",
        "INVALID_TOPIC" => "That is not a valid topic name (letters, digits, . _ - ; at most 64).",
        "INVALID_CHANNEL" => {
            "That is not a valid channel name (letters, digits, . _ - ; at most 64)."
        }
        _ => "The request was incomplete.",
    };
    (status, render_fragment(&ActionRefused { code, text })).into_response()
}
