//! The HTTP API of what Ferry adds to nsqd's queues: topic retention and channel settings
//! (`/topic/config`, `/channel/config`), replay (`/channel/rewind`), peek (`/channel/peek`) and
//! dead-letter redrive (`/channel/redrive`).
//!
//! Errors are nsqd-style `{"message": CODE}`; a value that does not parse adds a `reason`
//! saying why. Every change is durable before it is answered (a compaction of the topic's
//! metadata, off the runtime threads).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ferry_store::{PeekItem, PeekState};
use serde_json::{Value, json};

use super::{
    ApiError, Params, channel_param, create_topic, existing_topic, off_runtime, persisted, put,
};
use crate::broker::Broker;
use crate::channel::Channel;
use crate::clock::now_ns;
use crate::settings::{self, Retention};
use crate::topic::Topic;

/// An error about a value: `{"message": CODE, "reason": "..."}`.
#[derive(Debug)]
pub struct BadValue(pub &'static str, pub String);

impl IntoResponse for BadValue {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({ "message": self.0, "reason": self.1 })),
        )
            .into_response()
    }
}

/// A handler's error: plain or with a reason.
#[derive(Debug)]
pub enum OpError {
    /// nsqd-style.
    Api(ApiError),
    /// A value that does not parse.
    Bad(BadValue),
}

impl From<ApiError> for OpError {
    fn from(e: ApiError) -> Self {
        OpError::Api(e)
    }
}

impl IntoResponse for OpError {
    fn into_response(self) -> Response {
        match self {
            OpError::Api(e) => e.into_response(),
            OpError::Bad(e) => e.into_response(),
        }
    }
}

type OpResult = Result<Response, OpError>;

/// Parses the optional parameter `key` with `parse`; a failure is `code` with its reason.
fn opt_param<T>(
    q: &HashMap<String, String>,
    key: &str,
    code: &'static str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, OpError> {
    q.get(key)
        .map(|v| parse(v).map_err(|reason| OpError::Bad(BadValue(code, reason))))
        .transpose()
}

fn not_found_channel() -> OpError {
    ApiError(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND").into()
}

fn existing_channel(
    b: &Broker,
    q: &HashMap<String, String>,
) -> Result<(Arc<Topic>, Arc<Channel>), OpError> {
    let topic = existing_topic(b, q)?;
    let name = channel_param(q)?;
    let channel = topic.channel(name).ok_or_else(not_found_channel)?;
    Ok((topic, channel))
}

fn ms(ns: i64) -> i64 {
    ns.div_euclid(1_000_000)
}

fn id_hex(seq: u64) -> String {
    format!("{seq:016x}")
}

// ----- topic retention -----

fn topic_config_json(topic: &Topic) -> Value {
    let Retention { time, bytes } = topic.retention();
    json!({
        "topic": topic.name(),
        "retention": settings::format_duration(time),
        "retention_ms": time.as_millis() as u64,
        "retention_bytes": bytes,
    })
}

/// `GET /topic/config`.
pub async fn topic_config_get(State(b): State<Arc<Broker>>, Query(q): Params) -> OpResult {
    let topic = existing_topic(&b, &q)?;
    Ok(Json(topic_config_json(&topic)).into_response())
}

/// `POST /topic/config?retention=24h&retention_bytes=10GB`.
pub async fn topic_config_set(State(b): State<Arc<Broker>>, Query(q): Params) -> OpResult {
    let topic = existing_topic(&b, &q)?;
    let time = opt_param(
        &q,
        "retention",
        "INVALID_RETENTION",
        settings::parse_duration_setting,
    )?;
    let bytes = opt_param(
        &q,
        "retention_bytes",
        "INVALID_RETENTION_BYTES",
        ferry_daemon::parse_byte_size,
    )?;
    if time.is_some() || bytes.is_some() {
        let t = topic.clone();
        persisted(off_runtime(move || t.set_retention(time, bytes)).await?)?;
    }
    Ok(Json(topic_config_json(&topic)).into_response())
}

// ----- channel settings -----

fn channel_config_json(channel: &Channel) -> Value {
    let limits = channel.limits();
    json!({
        "topic": channel.topic_name(),
        "channel": channel.name(),
        "max_age": settings::format_duration(limits.max_age),
        "max_age_ms": limits.max_age.as_millis() as u64,
        "max_attempts": limits.max_attempts,
        "dead_letter_topic": limits.dead_letter_topic,
    })
}

/// `GET /channel/config`.
pub async fn channel_config_get(State(b): State<Arc<Broker>>, Query(q): Params) -> OpResult {
    let (_, channel) = existing_channel(&b, &q)?;
    Ok(Json(channel_config_json(&channel)).into_response())
}

/// `POST /channel/config?max_age=10m&max_attempts=5&dead_letter_topic=T.dead`.
pub async fn channel_config_set(State(b): State<Arc<Broker>>, Query(q): Params) -> OpResult {
    let (topic, channel) = existing_channel(&b, &q)?;
    let max_age = opt_param(
        &q,
        "max_age",
        "INVALID_MAX_AGE",
        settings::parse_duration_setting,
    )?;
    let max_attempts = opt_param(&q, "max_attempts", "INVALID_MAX_ATTEMPTS", |v| {
        v.trim()
            .parse::<u16>()
            .map_err(|e| format!("invalid max_attempts {v:?}: {e} (0 to 65535; 0 = unlimited)"))
    })?;
    let dead_letter_topic = opt_param(&q, "dead_letter_topic", "INVALID_DEAD_LETTER_TOPIC", |v| {
        let v = v.trim();
        if v.is_empty() {
            return Ok(None);
        }
        if !ferry_proto::names::is_valid_topic_name(v) {
            return Err(format!(
                "invalid topic name {v:?}: 1-64 characters of [.a-zA-Z0-9_-], optionally ending in #ephemeral"
            ));
        }
        if v == topic.name() {
            return Err("the dead-letter topic must differ from the channel's own topic".into());
        }
        Ok(Some(v.to_owned()))
    })?;
    if max_age.is_some() || max_attempts.is_some() || dead_letter_topic.is_some() {
        let (t, name) = (topic.clone(), channel.name().to_owned());
        let found = off_runtime(move || {
            t.set_channel_settings(&name, |s| {
                if let Some(age) = max_age {
                    s.max_age_ns = Some(u64::try_from(age.as_nanos()).unwrap_or(u64::MAX));
                }
                if let Some(n) = max_attempts {
                    s.max_attempts = Some(u32::from(n));
                }
                if let Some(dlt) = dead_letter_topic {
                    s.dead_letter_topic = dlt;
                }
            })
        })
        .await?;
        if !persisted(found)? {
            return Err(not_found_channel());
        }
    }
    Ok(Json(channel_config_json(&channel)).into_response())
}

// ----- replay -----

/// `POST /channel/rewind?to=earliest|<RFC 3339>|<Unix ms>|-1h`.
pub async fn channel_rewind(State(b): State<Arc<Broker>>, Query(q): Params) -> OpResult {
    let (topic, channel) = existing_channel(&b, &q)?;
    let to = q
        .get("to")
        .ok_or(ApiError(StatusCode::BAD_REQUEST, "MISSING_ARG_TO"))?;
    let point = settings::parse_point(to, now_ns())
        .map_err(|reason| OpError::Bad(BadValue("INVALID_TO", reason)))?;
    let name = channel.name().to_owned();
    let t = topic.clone();
    let rewound = persisted(off_runtime(move || t.rewind_channel(&name, point)).await?)?
        .ok_or_else(not_found_channel)?;
    Ok(Json(json!({
        "topic": topic.name(),
        "channel": channel.name(),
        "first_sequence": rewound.first_seq,
        "first_id": id_hex(rewound.first_seq),
        "first_timestamp_ms": rewound.first_timestamp_ns.map(ms),
        "owed": rewound.owed,
        "clamped": rewound.clamped,
    }))
    .into_response())
}

/// The seq a `start=` names on `topic` (`None`: nsqd's default).
pub fn start_param(q: &HashMap<String, String>, topic: &Topic) -> Result<Option<u64>, OpError> {
    let Some(start) = q.get("start") else {
        return Ok(None);
    };
    let point = settings::parse_point(start, now_ns())
        .map_err(|reason| OpError::Bad(BadValue("INVALID_START", reason)))?;
    let (seq, _) = persisted(topic.resolve_point(point))?;
    Ok(Some(seq))
}

/// `POST /channel/create?start=earliest|latest|<time>` (nsqd's `/channel/create` plus `start`).
pub async fn channel_create(State(b): State<Arc<Broker>>, Query(q): Params) -> OpResult {
    let topic_name = super::topic_param(&q)?;
    let channel = channel_param(&q)?;
    if let Some(start) = q.get("start") {
        // Checked before anything is created.
        settings::parse_point(start, now_ns())
            .map_err(|reason| OpError::Bad(BadValue("INVALID_START", reason)))?;
    }
    let topic = create_topic(&b, topic_name).await?;
    let start = start_param(&q, &topic)?;
    topic
        .get_or_create_channel_at(channel, start)
        .await
        .map_err(|e| {
            tracing::warn!(topic = topic_name, channel, error = %e, "cannot create channel");
            super::create_failed(&e)
        })?;
    Ok(StatusCode::OK.into_response())
}

// ----- peek -----

fn peek_json(item: &PeekItem, topic: &Topic, max_bytes: usize) -> Value {
    let r = &item.record;
    let cut = r.body.len().min(max_bytes);
    let (body, encoding) = match std::str::from_utf8(&r.body[..cut]) {
        Ok(text) => (text.to_owned(), "utf8"),
        // Cut inside a character: keep the valid prefix as text.
        Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => (
            String::from_utf8_lossy(&r.body[..e.valid_up_to()]).into_owned(),
            "utf8",
        ),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(&r.body[..cut]),
            "base64",
        ),
    };
    let mut v = json!({
        "id": id_hex(r.seq),
        "sequence": r.seq,
        "timestamp_ms": ms(r.timestamp_ns),
        "attempts": item.attempts,
        "body": body,
        "body_encoding": encoding,
        "body_bytes": r.body.len(),
        "truncated": cut < r.body.len(),
    });
    match item.state {
        PeekState::Ready => v["state"] = json!("ready"),
        PeekState::InFlight { deadline_ns } => {
            v["state"] = json!("in_flight");
            v["deadline_ms"] = json!(ms(deadline_ns));
        }
        PeekState::Deferred { due_ns } => {
            v["state"] = json!("deferred");
            v["due_ms"] = json!(ms(due_ns));
        }
    }
    if let Some(o) = topic.origins().get(r.seq) {
        v["origin"] = json!({
            "topic": o.topic,
            "channel": o.channel,
            "attempts": o.attempts,
            "id": id_hex(o.id),
            "timestamp_ms": ms(o.timestamp_ns),
        });
    }
    v
}

/// `GET /channel/peek?n=10`: changes nothing.
pub async fn channel_peek(State(b): State<Arc<Broker>>, Query(q): Params) -> OpResult {
    let (topic, channel) = existing_channel(&b, &q)?;
    let n = opt_param(&q, "n", "INVALID_N", |v| match v.trim().parse::<usize>() {
        Ok(n) if (1..=1000).contains(&n) => Ok(n),
        _ => Err(format!("invalid n {v:?}: 1 to 1000")),
    })?
    .unwrap_or(10);
    let peek = persisted(channel.peek(n))?;
    let counts = channel.counts();
    let max = b.config.max_peek_bytes;
    let list = |items: &[PeekItem]| -> Vec<Value> {
        items.iter().map(|i| peek_json(i, &topic, max)).collect()
    };
    Ok(Json(json!({
        "topic": topic.name(),
        "channel": channel.name(),
        "depth": counts.depth,
        "in_flight_count": counts.in_flight,
        "deferred_count": counts.deferred,
        "messages": list(&peek.ready),
        "in_flight": list(&peek.in_flight),
        "deferred": list(&peek.deferred),
    }))
    .into_response())
}

// ----- redrive -----

/// How many messages a redrive moves per append.
const REDRIVE_BATCH: usize = 256;

/// `POST /channel/redrive?topic=T.dead&channel=C&to_topic=T`: every message the channel can
/// deliver now is published to `to_topic` and finished on the channel, in batches (each
/// published durably before it is finished: a crash in between publishes it again).
pub async fn channel_redrive(State(b): State<Arc<Broker>>, Query(q): Params) -> OpResult {
    let (topic, channel) = existing_channel(&b, &q)?;
    let to = q
        .get("to_topic")
        .ok_or(ApiError(StatusCode::BAD_REQUEST, "MISSING_ARG_TO_TOPIC"))?;
    if !ferry_proto::names::is_valid_topic_name(to) || to == topic.name() {
        return Err(OpError::Bad(BadValue(
            "INVALID_TO_TOPIC",
            format!("invalid to_topic {to:?}: a valid topic name other than the channel's own"),
        )));
    }
    let target = create_topic(&b, to).await?;
    // A client of its own, so the messages taken are in flight to nobody else.
    let client = b.internal_client();
    // Messages requeued meanwhile are not taken again: at most what is owed now moves.
    let limit = channel.counts().depth;
    let mut moved = 0u64;
    while moved < limit {
        let want = REDRIVE_BATCH.min((limit - moved) as usize);
        let batch = persisted(channel.take(&client, want, Duration::from_secs(60), 0))?;
        if batch.is_empty() {
            break;
        }
        let bodies: Vec<&[u8]> = batch.iter().map(|d| &d.record.body[..]).collect();
        if let Err(e) = put(&b, &target, &bodies, Duration::ZERO).await {
            channel.remove_client(&client);
            return Err(e.into());
        }
        for d in &batch {
            let _ = channel.finish(&client, d.record.seq);
        }
        moved += batch.len() as u64;
    }
    channel.remove_client(&client);
    tracing::info!(
        topic = topic.name(),
        channel = channel.name(),
        to,
        moved,
        "dead letters redriven"
    );
    Ok(Json(json!({ "moved": moved })).into_response())
}
