//! `ferry peek --topic T --channel C [-n 10] [--json]`: the next messages a channel would
//! deliver, the ones in flight and the deferred ones (`GET /channel/peek`, which changes
//! nothing), on every broker holding the topic: one block per broker, one line per message.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use reqwest::Method;
use serde_json::Value;

use crate::api::{self, Answer, ChannelArgs};

/// Flags of `ferry peek`.
#[derive(Debug, Clone, Args)]
pub struct PeekArgs {
    /// The channel, its topic and where the brokers are.
    #[command(flatten)]
    pub target: ChannelArgs,

    /// Messages shown of each kind (ready, in flight, deferred) per broker.
    #[arg(short = 'n', long = "count", default_value_t = 10,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub count: u16,

    /// Print the brokers' answers as JSON: `[{"broker": ..., "answer": {...}}, ...]`, or
    /// `"error"` instead of `"answer"` for a broker that failed.
    #[arg(long)]
    pub json: bool,
}

/// Peeks on every broker holding the topic.
pub async fn run(args: &PeekArgs) -> anyhow::Result<Vec<Answer>> {
    let mut params = args.target.params();
    params.push(("n", args.count.to_string()));
    let t = &args.target;
    api::on_topic_brokers(&t.nodes, &t.topic, Method::GET, "/channel/peek", &params).await
}

/// A block per broker: a line of counts, then a line per message (`now` for "in 30s").
pub fn render(args: &PeekArgs, answers: &[Answer], now: SystemTime) -> String {
    let what = args.target.describe();
    let mut s = String::new();
    for a in answers {
        let v = match &a.result {
            Ok(v) => v,
            Err(e) => {
                s.push_str(&format!("{}: could not peek {what}: {e}\n", a.broker));
                continue;
            }
        };
        s.push_str(&format!(
            "{}: {what}: {} ready, {} in flight, {} deferred\n",
            a.broker, v["depth"], v["in_flight_count"], v["deferred_count"]
        ));
        let mut shown = 0;
        for (list, count, kind) in [
            ("messages", "depth", "ready"),
            ("in_flight", "in_flight_count", "in flight"),
            ("deferred", "deferred_count", "deferred"),
        ] {
            let messages = v[list].as_array().map_or(&[][..], Vec::as_slice);
            for m in messages {
                s.push_str(&message_line(m, now));
            }
            shown += messages.len();
            let more = v[count]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(messages.len() as u64);
            if more > 0 {
                s.push_str(&format!("  … and {more} more {kind}\n"));
            }
        }
        if shown == 0 {
            s.push_str("  (no message)\n");
        }
    }
    s
}

/// `  <id>  <time>  attempts N  <state>[, due ...]  <body>` and, for a dead letter, a second
/// line saying where it came from.
fn message_line(m: &Value, now: SystemTime) -> String {
    let state = match m["state"].as_str().unwrap_or("?") {
        "in_flight" => format!("in flight, deadline {}", when(&m["deadline_ms"], now)),
        "deferred" => format!("deferred, due {}", when(&m["due_ms"], now)),
        other => other.to_owned(),
    };
    let mut line = format!(
        "  {}  {}  attempts {}  {state}  {}\n",
        m["id"].as_str().unwrap_or("?"),
        api::time_ms(&m["timestamp_ms"]),
        m["attempts"],
        body(m),
    );
    let origin = &m["origin"];
    if origin.is_object() {
        line.push_str(&format!(
            "      dead letter from channel {} of topic {} after {} attempts (was {}, {})\n",
            origin["channel"],
            origin["topic"],
            origin["attempts"],
            origin["id"].as_str().unwrap_or("?"),
            api::time_ms(&origin["timestamp_ms"]),
        ));
    }
    line
}

/// The body quoted (escapes visible), `base64:...` when it is not UTF-8, and how much was cut.
fn body(m: &Value) -> String {
    let text = m["body"].as_str().unwrap_or_default();
    let mut s = match m["body_encoding"].as_str() {
        Some("base64") => format!("base64:{text}"),
        _ => format!("{text:?}"),
    };
    if m["truncated"] == true {
        s.push_str(&format!(" … ({} bytes in all)", m["body_bytes"]));
    }
    s
}

/// `in 30s` / `12s ago` (whole seconds), from Unix ms.
fn when(ms: &Value, now: SystemTime) -> String {
    let Some(ms) = ms.as_u64() else {
        return "-".to_owned();
    };
    let at = UNIX_EPOCH + Duration::from_millis(ms);
    let secs = |d: Duration| humantime::format_duration(Duration::from_secs(d.as_secs()));
    match at.duration_since(now) {
        Ok(ahead) => format!("in {}", secs(ahead)),
        Err(past) => format!("{} ago", secs(past.duration())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> PeekArgs {
        PeekArgs {
            target: api::tests::channel_args("t.dead", "c"),
            count: 10,
            json: false,
        }
    }

    #[test]
    fn every_kind_of_message_reads() {
        let now = UNIX_EPOCH + Duration::from_millis(1_764_900_000_000);
        let answer = serde_json::json!({
            "topic": "t.dead", "channel": "c", "depth": 3, "in_flight_count": 1, "deferred_count": 1,
            "messages": [{"id": "000000000000007b", "sequence": 123, "timestamp_ms": 1764900000000u64,
                "attempts": 1, "state": "ready", "body": "hi\n", "body_encoding": "utf8",
                "body_bytes": 3, "truncated": false,
                "origin": {"topic": "t", "channel": "c", "attempts": 5, "id": "0000000000000001",
                    "timestamp_ms": 1764899999000u64}}],
            "in_flight": [{"id": "000000000000007c", "sequence": 124, "timestamp_ms": 1764900000000u64,
                "attempts": 2, "state": "in_flight", "body": "AAE=", "body_encoding": "base64",
                "body_bytes": 5000, "truncated": true, "deadline_ms": 1764900045000u64}],
            "deferred": [{"id": "000000000000007d", "sequence": 125, "timestamp_ms": 1764900000000u64,
                "attempts": 1, "state": "deferred", "body": "later", "body_encoding": "utf8",
                "body_bytes": 5, "truncated": false, "due_ms": 1764899990000u64}]
        });
        let answers = [
            Answer {
                broker: "a:1".into(),
                result: Ok(answer),
            },
            Answer {
                broker: "b:2".into(),
                result: Err(api::BrokerError::Refused {
                    status: 404,
                    code: "CHANNEL_NOT_FOUND".into(),
                    reason: None,
                }),
            },
        ];
        let text = render(&args(), &answers, now);
        let want = "\
a:1: channel \"c\" of topic \"t.dead\": 3 ready, 1 in flight, 1 deferred
  000000000000007b  2025-12-05T02:00:00.000Z  attempts 1  ready  \"hi\\n\"
      dead letter from channel \"c\" of topic \"t\" after 5 attempts (was 0000000000000001, 2025-12-05T01:59:59.000Z)
  … and 2 more ready
  000000000000007c  2025-12-05T02:00:00.000Z  attempts 2  in flight, deadline in 45s  base64:AAE= … (5000 bytes in all)
  000000000000007d  2025-12-05T02:00:00.000Z  attempts 1  deferred, due 10s ago  \"later\"
b:2: could not peek channel \"c\" of topic \"t.dead\": CHANNEL_NOT_FOUND (HTTP 404)
";
        assert_eq!(text, want);
    }

    #[test]
    fn an_empty_channel_says_so() {
        let answers = [Answer {
            broker: "a:1".into(),
            result: Ok(
                serde_json::json!({"depth": 0, "in_flight_count": 0, "deferred_count": 0,
                "messages": [], "in_flight": [], "deferred": []}),
            ),
        }];
        let text = render(&args(), &answers, SystemTime::now());
        assert!(text.ends_with("0 deferred\n  (no message)\n"), "{text}");
    }
}
