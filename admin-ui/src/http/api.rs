//! The JSON API (the pages' data as JSON, for scripts and tests), the actions and peeking.
//!
//! Errors are NSQ-style `{"message":"CODE"}` with the status. An action answers its
//! [`Report`]: 200 when every node did it, 404 when no node holds the target, 502 when some
//! node failed. Asked by htmx, it answers the same as an HTML fragment (always with the
//! status), which the page shows in its result area. A peek answers its [`PeekReport`] the
//! same way (JSON, or the peek panel's fragment); it is guarded like the actions. Before any
//! of these handlers runs, `csrf` has refused cross-site-capable requests (a form or
//! `text/plain` POST without `X-Ferry-Action`, a foreign `Origin`), answered by
//! [`reply_error`] like the handlers' own refusals.

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
use crate::actions::{self, Action, Param, Report, Target};
use crate::history::SeriesKey;
use crate::peek::{self, PeekReport};
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
        .route("/api/alerts", get(alerts))
        .route("/api/history/{topic}", get(topic_history))
        .route("/api/history/{topic}/{channel}", get(channel_history))
        .route("/api/peek/{topic}/{channel}", get(channel_peek))
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "message": message }))).into_response()
}

async fn topics(State(s): AppStateRef) -> Response {
    let snap = s.cluster.snapshot(s.max_age()).await;
    axum::Json(views::topics(&snap, &s.history).with_alerts(&s.alerts.counts())).into_response()
}

async fn alerts(State(s): AppStateRef) -> Response {
    axum::Json(s.alerts.view()).into_response()
}

async fn topic(State(s): AppStateRef, Path(topic): Path<String>) -> Response {
    let snap = s.cluster.snapshot(s.max_age()).await;
    let v = views::topic(&snap, &s.history, &topic).with_alerts(&s.alerts.counts());
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

/// An action request body: the action, and the parameters of `config` and `rewind`.
#[derive(Debug, Deserialize)]
struct ActionBody {
    action: String,
    #[serde(default)]
    retention: Option<Text>,
    #[serde(default)]
    retention_bytes: Option<Text>,
    #[serde(default)]
    max_age: Option<Text>,
    #[serde(default)]
    max_attempts: Option<Text>,
    #[serde(default)]
    dead_letter_topic: Option<Text>,
    #[serde(default)]
    to: Option<Text>,
}

/// A parameter as a form sends it (text) or as JSON may (`"max_attempts": 5`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Text {
    String(String),
    Number(u64),
}

impl ActionBody {
    /// The parameters `action` takes on `target` that were given (blank ones are left out).
    fn params(&self, action: Action, target: &Target) -> Vec<Param> {
        let fields: [(&'static str, &Option<Text>); 6] = [
            ("retention", &self.retention),
            ("retention_bytes", &self.retention_bytes),
            ("max_age", &self.max_age),
            ("max_attempts", &self.max_attempts),
            ("dead_letter_topic", &self.dead_letter_topic),
            ("to", &self.to),
        ];
        let wanted: &[&str] = match (action, target.channel.is_some()) {
            (Action::Config, false) => &["retention", "retention_bytes"],
            (Action::Config, true) => &["max_age", "max_attempts", "dead_letter_topic"],
            (Action::Rewind, true) => &["to"],
            _ => &[],
        };
        fields
            .into_iter()
            .filter(|(name, _)| wanted.contains(name))
            .filter_map(|(name, value)| {
                let text = match value.as_ref()? {
                    Text::String(s) => s.trim().to_owned(),
                    Text::Number(n) => n.to_string(),
                };
                (!text.is_empty()).then_some((name, text))
            })
            .collect()
    }
}

/// A create request body; `replicas` > 1 makes a replicated topic (#20).
#[derive(Debug, Deserialize)]
struct CreateBody {
    topic: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    replicas: Option<Text>,
}

impl CreateBody {
    /// `replicas`, passed through as given for the broker to check, unless blank or 1 (a
    /// topic without replicas, created the usual way).
    fn params(&self) -> Vec<Param> {
        let text = match &self.replicas {
            Some(Text::String(s)) => s.trim().to_owned(),
            Some(Text::Number(n)) => n.to_string(),
            None => String::new(),
        };
        if text.is_empty() || text == "1" {
            return Vec::new();
        }
        vec![("replicas", text)]
    }
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
    let Some((b, action)) = parse_body::<ActionBody>(headers, body)
        .ok()
        .and_then(|b| Action::parse(&b.action).map(|a| (b, a)))
    else {
        return reply_error(headers, StatusCode::BAD_REQUEST, "INVALID_ACTION");
    };
    let params = b.params(action, &target);
    let missing = match action {
        Action::Pause | Action::Unpause | Action::Empty => None,
        Action::Config => params.is_empty().then_some("MISSING_ARG_SETTING"),
        Action::Rewind if target.channel.is_some() => params.is_empty().then_some("MISSING_ARG_TO"),
        Action::Rewind | Action::Delete | Action::Create => {
            return reply_error(headers, StatusCode::BAD_REQUEST, "INVALID_ACTION");
        }
    };
    if let Some(code) = missing {
        return reply_error(headers, StatusCode::BAD_REQUEST, code);
    }
    act(s, headers, action, target, params).await
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
    act(&s, &headers, Action::Delete, target, Vec::new()).await
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
    act(&s, &headers, Action::Delete, target, Vec::new()).await
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
    act(&s, &headers, Action::Create, target, b.params()).await
}

/// The ACL and name checks every action and peek passes first; the refusal if one fails.
fn check(s: &AppState, headers: &HeaderMap, what: &str, target: &Target) -> Option<Response> {
    if !s.is_admin(headers) {
        tracing::warn!(%target, "{what} refused: not an admin user");
        return Some(reply_error(headers, StatusCode::FORBIDDEN, "FORBIDDEN"));
    }
    if let Err(why) = target.validate() {
        let code = if why.contains("channel") {
            "INVALID_CHANNEL"
        } else {
            "INVALID_TOPIC"
        };
        return Some(reply_error(headers, StatusCode::BAD_REQUEST, code));
    }
    None
}

/// Checks the ACL and the names, applies the action, answers its report.
async fn act(
    s: &AppState,
    headers: &HeaderMap,
    action: Action,
    target: Target,
    params: Vec<Param>,
) -> Response {
    if let Some(refused) = check(s, headers, action.as_str(), &target) {
        return refused;
    }
    let report = actions::apply(&s.cluster, action, &target, params).await;
    tracing::info!(%action, %target, ok = report.ok, "{}", report.summary());
    let status = if report.outcomes.is_empty() {
        StatusCode::NOT_FOUND
    } else if let Some(status) = replicated_create_refusal(&report) {
        // One broker was asked: its answer is the answer (400, 409, 503...).
        status
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

/// The status the one broker refused a replicated create with.
fn replicated_create_refusal(report: &Report) -> Option<StatusCode> {
    let replicated = report.params.iter().any(|(k, _)| *k == "replicas");
    let first = report.outcomes.first()?;
    if report.action != Action::Create || !replicated || first.ok {
        return None;
    }
    StatusCode::from_u16(first.status?).ok()
}

/// `?n=` of a peek.
#[derive(Debug, Deserialize)]
struct PeekQuery {
    n: Option<String>,
}

/// The next messages of a channel on every broker holding it: admin users only.
async fn channel_peek(
    State(s): AppStateRef,
    Path((topic, channel)): Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<PeekQuery>,
    headers: HeaderMap,
) -> Response {
    let target = Target {
        topic,
        channel: Some(channel),
    };
    if let Some(refused) = check(&s, &headers, "peek", &target) {
        return refused;
    }
    let n = match q.n.as_deref().map(str::parse::<usize>) {
        None => 10,
        Some(Ok(n)) if (1..=peek::MAX_N).contains(&n) => n,
        Some(_) => return reply_error(&headers, StatusCode::BAD_REQUEST, "INVALID_N"),
    };
    let report = peek::peek(&s.cluster, &target, n).await;
    let status = if report.brokers.is_empty() {
        StatusCode::NOT_FOUND
    } else if report.brokers.iter().all(|b| b.error.is_none()) {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    if is_htmx(&headers) {
        return (status, render_fragment(&PeekResult { report: &report })).into_response();
    }
    (status, axum::Json(&report)).into_response()
}

/// The peek panel's content.
#[derive(Template)]
#[template(path = "peek_result.html")]
struct PeekResult<'a> {
    report: &'a PeekReport,
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
pub(super) fn reply_error(headers: &HeaderMap, status: StatusCode, code: &str) -> Response {
    if !is_htmx(headers) {
        return error(status, code);
    }
    let text = match code {
        "FORBIDDEN" => {
            "You are not allowed to do this: actions and peeking are restricted to admin users."
        }
        "INVALID_ACTION" => "Unknown action.",
        "MISSING_ARG_SETTING" => "Give at least one setting to change.",
        "MISSING_ARG_TO" => "Choose the time to rewind to.",
        "FOREIGN_ORIGIN" => "Refused: the request came from another site.",
        "JSON_OR_X_FERRY_ACTION_REQUIRED" => {
            "Refused: an action needs a JSON body or the X-Ferry-Action header (reload the page)."
        }
        "INVALID_N" => "Peek at 1 to 100 messages.",
        "INVALID_TOPIC" => "That is not a valid topic name (letters, digits, . _ - ; at most 64).",
        "INVALID_CHANNEL" => {
            "That is not a valid channel name (letters, digits, . _ - ; at most 64)."
        }
        _ => "The request was incomplete.",
    };
    (status, render_fragment(&ActionRefused { code, text })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nsq::{Peek, PeekMessage};
    use crate::peek::BrokerPeek;

    #[test]
    fn replicas_other_than_one_go_to_a_broker() {
        let body = |json: &str| serde_json::from_str::<CreateBody>(json).unwrap().params();
        assert_eq!(body(r#"{"topic":"t"}"#), []);
        assert_eq!(body(r#"{"topic":"t","replicas":""}"#), []);
        assert_eq!(body(r#"{"topic":"t","replicas":1}"#), []);
        assert_eq!(body(r#"{"topic":"t","replicas":" 1 "}"#), []);
        assert_eq!(
            body(r#"{"topic":"t","replicas":3}"#),
            [("replicas", "3".into())]
        );
        assert_eq!(
            body(r#"{"topic":"t","replicas":"two"}"#),
            [("replicas", "two".into())],
            "passed through for the broker to refuse"
        );
    }

    #[test]
    fn peeked_bodies_are_escaped() {
        let report = PeekReport {
            target: Target {
                topic: "t".into(),
                channel: Some("c".into()),
            },
            n: 10,
            brokers: vec![BrokerPeek {
                node: "127.0.0.1:4151".into(),
                peek: Some(Peek {
                    depth: 1234,
                    messages: vec![PeekMessage {
                        id: "000000000000007b".into(),
                        state: "ready".into(),
                        body: "<script>alert(1)</script>".into(),
                        ..PeekMessage::default()
                    }],
                    ..Peek::default()
                }),
                error: None,
            }],
        };
        let html = PeekResult { report: &report }.render().unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
            "{html}"
        );
        assert!(html.contains("depth 1,234"), "{html}");
        assert!(html.contains("data-id=\"000000000000007b\""), "{html}");
    }
}
