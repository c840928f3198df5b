//! `ferry rewind --topic T --channel C --to X`: moves a channel back to a point of its topic's
//! retained log (`POST /channel/rewind`) on every broker holding the topic, so every message
//! from there on is owed again; one line per broker saying where the channel now starts and
//! how many messages it owes.

use clap::Args;
use reqwest::Method;

use crate::api::{self, Answer, ChannelArgs};
use crate::args::parse_log_time;

/// Flags of `ferry rewind`.
#[derive(Debug, Clone, Args)]
pub struct RewindArgs {
    /// The channel, its topic and where the brokers are.
    #[command(flatten)]
    pub target: ChannelArgs,

    /// Where the channel starts again: `earliest` (the oldest retained message), an RFC 3339
    /// time (2026-12-05T10:00:00Z, ...+02:00), Unix time in milliseconds, or a negative
    /// duration (-1h: one hour ago).
    #[arg(long, value_parser = parse_log_time, allow_hyphen_values = true)]
    pub to: String,
}

/// Rewinds the channel on every broker holding its topic.
pub async fn run(args: &RewindArgs) -> anyhow::Result<Vec<Answer>> {
    let mut params = args.target.params();
    params.push(("to", args.to.clone()));
    let t = &args.target;
    api::on_topic_brokers(&t.nodes, &t.topic, Method::POST, "/channel/rewind", &params).await
}

/// One line per broker, e.g. `a:4151: channel "c" of topic "t" owes 1000 messages from
/// 000000000000007b (sequence 123, 2026-12-05T10:00:00.000Z)`.
pub fn render(args: &RewindArgs, answers: &[Answer]) -> String {
    let what = args.target.describe();
    api::render_lines(answers, &format!("rewind {what}"), |v| {
        let owes = format!("{what} owes {} messages", v["owed"]);
        if v["first_timestamp_ms"].is_null() {
            return format!("{owes}: no retained message at or after {}", args.to);
        }
        let clamped = if v["clamped"] == true {
            format!("; the oldest retained message, {} is older", args.to)
        } else {
            String::new()
        };
        format!(
            "{owes} from {} (sequence {}, {}{clamped})",
            v["first_id"].as_str().unwrap_or("?"),
            v["first_sequence"],
            api::time_ms(&v["first_timestamp_ms"]),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_say_where_and_how_many() {
        let args = RewindArgs {
            target: api::tests::channel_args("t", "c"),
            to: "-1h".into(),
        };
        let answer = |v: serde_json::Value| Answer {
            broker: "a:1".into(),
            result: Ok(v),
        };
        let text = render(
            &args,
            &[
                answer(
                    serde_json::json!({"first_sequence": 123, "first_id": "000000000000007b",
                    "first_timestamp_ms": 1764900000000u64, "owed": 1000, "clamped": true}),
                ),
                answer(
                    serde_json::json!({"first_sequence": 9, "first_id": "0000000000000009",
                    "first_timestamp_ms": null, "owed": 0, "clamped": false}),
                ),
            ],
        );
        assert_eq!(
            text,
            "a:1: channel \"c\" of topic \"t\" owes 1000 messages from 000000000000007b \
             (sequence 123, 2025-12-05T02:00:00.000Z; the oldest retained message, -1h is older)\n\
             a:1: channel \"c\" of topic \"t\" owes 0 messages: no retained message at or after -1h\n"
        );
    }
}
