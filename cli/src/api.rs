//! Calling brokers' HTTP API: one request sent to every broker holding a topic (all at once),
//! each answer kept apart as JSON or a [`BrokerError`] that reads as a sentence: NSQ's code, the
//! broker's `reason` when it gave one, the HTTP status.
//!
//! Used by every command that acts on brokers (`pause`…`delete`, `rewind`, `peek`, `config`,
//! `redrive`); which brokers hold a topic is [`nodes::brokers_for_topic`]'s business.

use clap::Args;
use reqwest::Method;

use crate::admin::{parse_channel, parse_topic};
use crate::nodes::{self, NodeArgs, base_url};

/// The flags of a command on one channel of a topic, on every broker holding the topic.
#[derive(Debug, Clone, Args)]
pub struct ChannelArgs {
    /// Topic.
    #[arg(long, value_parser = parse_topic)]
    pub topic: String,

    /// Channel of the topic.
    #[arg(long, value_parser = parse_channel)]
    pub channel: String,

    /// Where the brokers are (default: the local broker at 127.0.0.1:4151).
    #[command(flatten)]
    pub nodes: NodeArgs,
}

impl ChannelArgs {
    /// `topic` and `channel` as query parameters.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        vec![
            ("topic", self.topic.clone()),
            ("channel", self.channel.clone()),
        ]
    }

    /// `channel "c" of topic "t"`, for messages.
    pub fn describe(&self) -> String {
        format!("channel {:?} of topic {:?}", self.channel, self.topic)
    }
}

/// Why a request to a broker did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The broker answered with an error status; `code` is NSQ's `message` (or the body when it
    /// was not NSQ's JSON), `reason` the broker's explanation of a bad value.
    #[error("{code} (HTTP {status}){}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    Refused {
        /// HTTP status.
        status: u16,
        /// `"TOPIC_NOT_FOUND"`, `"INVALID_TO"`, …
        code: String,
        /// Human explanation, when given.
        reason: Option<String>,
    },
    /// No answer: connection refused, timeout, …
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// A success status with a body that is not JSON.
    #[error("answered HTTP {status} with a body that is not JSON: {detail}")]
    NotJson {
        /// HTTP status.
        status: u16,
        /// The parser's complaint.
        detail: String,
    },
}

/// One broker's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Broker HTTP address.
    pub broker: String,
    /// Its JSON (`Null` for an empty body), or what went wrong.
    pub result: Result<serde_json::Value, BrokerError>,
}

/// An error naming how many brokers failed (at least one of their answers did), if any did:
/// a command exits non-zero then, after printing every broker's line.
pub fn all_succeeded<'a>(answers: impl IntoIterator<Item = &'a Answer>) -> anyhow::Result<()> {
    let mut brokers = std::collections::BTreeMap::new();
    for a in answers {
        *brokers.entry(a.broker.as_str()).or_insert(false) |= a.result.is_err();
    }
    let failed = brokers.values().filter(|&&failed| failed).count();
    if failed > 0 {
        anyhow::bail!("failed on {failed} of {} brokers", brokers.len());
    }
    Ok(())
}

/// `base_url(addr) + path`, with `params` percent-encoded as its query.
pub fn url(addr: &str, path: &str, params: &[(&str, String)]) -> Result<reqwest::Url, BrokerError> {
    let text = format!("{}{path}", base_url(addr));
    let mut url = reqwest::Url::parse(&text)
        .map_err(|e| BrokerError::Unreachable(format!("bad address {text:?}: {e}")))?;
    if !params.is_empty() {
        url.query_pairs_mut().extend_pairs(params);
    }
    Ok(url)
}

/// One request to one broker (or lookupd): its JSON answer or why not.
pub async fn call(
    client: &reqwest::Client,
    method: Method,
    addr: &str,
    path: &str,
    params: &[(&str, String)],
) -> Result<serde_json::Value, BrokerError> {
    let url = url(addr, path, params)?;
    let resp = client
        .request(method, url)
        .send()
        .await
        .map_err(|e| BrokerError::Unreachable(nodes::describe(&e)))?;
    let status = resp.status();
    let body = resp
        .text()
        .await
        .map_err(|e| BrokerError::Unreachable(nodes::describe(&e)))?;
    if !status.is_success() {
        return Err(refusal(status.as_u16(), &body));
    }
    if body.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(&body).map_err(|e| BrokerError::NotJson {
        status: status.as_u16(),
        detail: e.to_string(),
    })
}

/// An error answer: NSQ's `{"message": CODE, "reason": ...}`, or its body as the code.
fn refusal(status: u16, body: &str) -> BrokerError {
    let json = serde_json::from_str::<serde_json::Value>(body).ok();
    let field = |k: &str| json.as_ref().and_then(|v| v[k].as_str()).map(str::to_owned);
    BrokerError::Refused {
        status,
        code: field("message").unwrap_or_else(|| body.trim().chars().take(200).collect()),
        reason: field("reason"),
    }
}

/// The same request to each of `brokers` at once; answers in the brokers' order.
pub async fn call_each(
    client: &reqwest::Client,
    brokers: Vec<String>,
    method: Method,
    path: &str,
    params: &[(&str, String)],
) -> Vec<Answer> {
    let calls = brokers.into_iter().map(|broker| {
        let method = method.clone();
        async move {
            let result = call(client, method, &broker, path, params).await;
            Answer { broker, result }
        }
    });
    futures_util::future::join_all(calls).await
}

/// An HTTP client and the brokers holding `topic`, found as `nodes` says (the local broker when
/// it says nothing). An error only when no broker could be found.
pub async fn topic_brokers(
    nodes: &NodeArgs,
    topic: &str,
) -> anyhow::Result<(reqwest::Client, Vec<String>)> {
    let client = nodes::http_client()?;
    let brokers = nodes::brokers_for_topic(&client, &nodes.or_local(), topic).await?;
    Ok((client, brokers))
}

/// The request to every broker holding `topic` ([`topic_brokers`]).
pub async fn on_topic_brokers(
    nodes: &NodeArgs,
    topic: &str,
    method: Method,
    path: &str,
    params: &[(&str, String)],
) -> anyhow::Result<Vec<Answer>> {
    let (client, brokers) = topic_brokers(nodes, topic).await?;
    Ok(call_each(&client, brokers, method, path, params).await)
}

/// A JSON number of Unix milliseconds as an RFC 3339 time (`2026-12-05T10:00:00.000Z`), or `-`.
pub fn time_ms(v: &serde_json::Value) -> String {
    match v.as_u64() {
        Some(ms) => humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
        .to_string(),
        None => "-".to_owned(),
    }
}

/// One line per broker: `<broker>: <ok(json)>` or `<broker>: could not <what>: <error>`.
pub fn render_lines(
    answers: &[Answer],
    what: &str,
    mut ok: impl FnMut(&serde_json::Value) -> String,
) -> String {
    let mut s = String::new();
    for a in answers {
        match &a.result {
            Ok(v) => s.push_str(&format!("{}: {}\n", a.broker, ok(v))),
            Err(e) => s.push_str(&format!("{}: could not {what}: {e}\n", a.broker)),
        }
    }
    s
}

/// The answers as one JSON array: `{"broker": addr, "answer": ...}` or `{"broker", "error"}`.
pub fn to_json(answers: &[Answer]) -> serde_json::Value {
    answers
        .iter()
        .map(|a| match &a.result {
            Ok(v) => serde_json::json!({"broker": a.broker, "answer": v}),
            Err(e) => serde_json::json!({"broker": a.broker, "error": e.to_string()}),
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A channel on the local broker.
    pub(crate) fn channel_args(topic: &str, channel: &str) -> ChannelArgs {
        ChannelArgs {
            topic: topic.into(),
            channel: channel.into(),
            nodes: NodeArgs::default(),
        }
    }

    #[test]
    fn errors_read_as_sentences() {
        let e = refusal(
            400,
            r#"{"message":"INVALID_TO","reason":"invalid duration \"x\""}"#,
        );
        assert_eq!(
            e.to_string(),
            "INVALID_TO (HTTP 400): invalid duration \"x\""
        );
        let e = refusal(404, r#"{"message":"TOPIC_NOT_FOUND"}"#);
        assert_eq!(e.to_string(), "TOPIC_NOT_FOUND (HTTP 404)");
        let e = refusal(500, "NOK - disk\n");
        assert_eq!(e.to_string(), "NOK - disk (HTTP 500)");
    }

    #[test]
    fn params_are_percent_encoded() {
        let u = url(
            "127.0.0.1:4151",
            "/channel/rewind",
            &[
                ("topic", "t#ephemeral".into()),
                ("to", "2026-12-05T10:00:00+02:00".into()),
            ],
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:4151/channel/rewind?topic=t%23ephemeral&to=2026-12-05T10%3A00%3A00%2B02%3A00"
        );
        assert_eq!(
            url("http://h:1/", "/ping", &[]).unwrap().as_str(),
            "http://h:1/ping"
        );
    }

    #[test]
    fn lines_and_json_per_broker() {
        let answers = [
            Answer {
                broker: "a:1".into(),
                result: Ok(serde_json::json!({"moved": 2})),
            },
            Answer {
                broker: "b:2".into(),
                result: Err(BrokerError::Unreachable("Connection refused".into())),
            },
        ];
        let err = all_succeeded(answers.iter().chain(&answers[..1])).unwrap_err();
        assert_eq!(err.to_string(), "failed on 1 of 2 brokers");
        assert!(all_succeeded(&answers[..1]).is_ok());
        let text = render_lines(&answers, "redrive", |v| format!("moved {}", v["moved"]));
        assert_eq!(
            text,
            "a:1: moved 2\nb:2: could not redrive: unreachable: Connection refused\n"
        );
        let j = to_json(&answers);
        assert_eq!(j[0]["answer"]["moved"], 2);
        assert_eq!(j[1]["error"], "unreachable: Connection refused");
    }

    #[test]
    fn times_in_ms() {
        assert_eq!(
            time_ms(&serde_json::json!(1764900000123u64)),
            "2025-12-05T02:00:00.123Z"
        );
        assert_eq!(time_ms(&serde_json::Value::Null), "-");
    }
}
