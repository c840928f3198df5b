//! `ferry redrive --topic T.dead --channel C --to-topic T`: publishes again to `T` every
//! message the channel `C` of the dead-letter topic `T.dead` can deliver now, finishing it there
//! (`POST /channel/redrive`), on every broker holding `T.dead`; says how many moved.

use clap::Args;
use reqwest::Method;

use crate::admin::parse_topic;
use crate::api::{self, Answer, ChannelArgs};

/// Flags of `ferry redrive`.
#[derive(Debug, Clone, Args)]
pub struct RedriveArgs {
    /// The dead-letter topic's channel and where the brokers are.
    #[command(flatten)]
    pub target: ChannelArgs,

    /// The topic the messages go back to.
    #[arg(long, value_parser = parse_topic)]
    pub to_topic: String,
}

/// Redrives on every broker holding the dead-letter topic.
pub async fn run(args: &RedriveArgs) -> anyhow::Result<Vec<Answer>> {
    let mut params = args.target.params();
    params.push(("to_topic", args.to_topic.clone()));
    let t = &args.target;
    api::on_topic_brokers(
        &t.nodes,
        &t.topic,
        Method::POST,
        "/channel/redrive",
        &params,
    )
    .await
}

/// One line per broker, and the total when there are several.
pub fn render(args: &RedriveArgs, answers: &[Answer]) -> String {
    let from = args.target.describe();
    let to = &args.to_topic;
    let mut s = api::render_lines(answers, &format!("redrive {from}"), |v| {
        format!("moved {} messages from {from} to topic {to:?}", v["moved"])
    });
    if answers.len() > 1 {
        let total: u64 = answers
            .iter()
            .filter_map(|a| a.result.as_ref().ok()?["moved"].as_u64())
            .sum();
        s.push_str(&format!("moved {total} messages in all\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_broker_and_in_all() {
        let args = RedriveArgs {
            target: api::tests::channel_args("t.dead", "c"),
            to_topic: "t".into(),
        };
        let moved = |b: &str, n: u64| Answer {
            broker: b.into(),
            result: Ok(serde_json::json!({ "moved": n })),
        };
        assert_eq!(
            render(&args, &[moved("a:1", 3), moved("b:2", 4)]),
            "a:1: moved 3 messages from channel \"c\" of topic \"t.dead\" to topic \"t\"\n\
             b:2: moved 4 messages from channel \"c\" of topic \"t.dead\" to topic \"t\"\n\
             moved 7 messages in all\n"
        );
    }
}
