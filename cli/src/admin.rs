//! `ferry pause|unpause|empty|delete --topic T [--channel C]`: one action applied to every broker
//! that holds the topic, with a line per broker saying what happened.

use clap::Args;

use crate::nodes::{self, NodeArgs, base_url, q};

/// The four admin actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop delivery (messages keep queueing).
    Pause,
    /// Resume delivery.
    Unpause,
    /// Drop queued messages.
    Empty,
    /// Remove the topic or channel with its messages.
    Delete,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Unpause => "unpause",
            Action::Empty => "empty",
            Action::Delete => "delete",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Action::Pause => "paused",
            Action::Unpause => "unpaused",
            Action::Empty => "emptied",
            Action::Delete => "deleted",
        }
    }
}

/// Flags of the admin commands.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Topic to act on.
    #[arg(long, value_parser = parse_topic)]
    pub topic: String,

    /// Channel to act on (default: the whole topic).
    #[arg(long, value_parser = parse_channel)]
    pub channel: Option<String>,

    /// Where the brokers are (default: the local broker at 127.0.0.1:4151).
    #[command(flatten)]
    pub nodes: NodeArgs,
}

/// Validates a topic name.
pub fn parse_topic(s: &str) -> Result<String, String> {
    if ferry_proto::names::is_valid_topic_name(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "invalid topic name {s:?}: 1-64 characters of [.a-zA-Z0-9_-], optionally ending in #ephemeral"
        ))
    }
}

/// Validates a channel name.
pub fn parse_channel(s: &str) -> Result<String, String> {
    if ferry_proto::names::is_valid_channel_name(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "invalid channel name {s:?}: 1-64 characters of [.a-zA-Z0-9_-], optionally ending in #ephemeral"
        ))
    }
}

/// What happened on one broker.
#[derive(Debug)]
pub struct Outcome {
    /// Broker HTTP address.
    pub broker: String,
    /// `Err` with the broker's answer.
    pub result: Result<(), String>,
}

/// Applies `action` on every broker holding the topic. Also tells the lookupds about deletions,
/// so the topic or channel disappears from discovery.
pub async fn run(action: Action, args: &AdminArgs) -> anyhow::Result<Vec<Outcome>> {
    let client = nodes::http_client()?;
    let node_args = args.nodes.or_local();
    let brokers = nodes::brokers_for_topic(&client, &node_args, &args.topic).await?;
    let path = match &args.channel {
        None => format!("/topic/{}?topic={}", action.verb(), q(&args.topic)),
        Some(c) => format!(
            "/channel/{}?topic={}&channel={}",
            action.verb(),
            q(&args.topic),
            q(c)
        ),
    };
    let mut out = Vec::with_capacity(brokers.len());
    for broker in brokers {
        let result = post(&client, &broker, &path).await;
        out.push(Outcome { broker, result });
    }
    if action == Action::Delete {
        for lookupd in &node_args.lookupd_http_addresses {
            // lookupd forgets it too (brokers also unregister themselves on delete).
            let _ = post(&client, lookupd, &path).await;
        }
    }
    Ok(out)
}

async fn post(client: &reqwest::Client, addr: &str, path: &str) -> Result<(), String> {
    let url = format!("{}{path}", base_url(addr));
    match client.post(&url).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            let code = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or(body);
            Err(format!("{code} (HTTP {})", status.as_u16()))
        }
        Err(e) => Err(format!("unreachable: {}", nodes::describe(&e))),
    }
}

/// One line per broker, e.g. `127.0.0.1:4151: paused topic "t"`.
pub fn render(action: Action, args: &AdminArgs, outcomes: &[Outcome]) -> String {
    let what = match &args.channel {
        None => format!("topic {:?}", args.topic),
        Some(c) => format!("channel {:?} of topic {:?}", c, args.topic),
    };
    let mut s = String::new();
    for o in outcomes {
        match &o.result {
            Ok(()) => s.push_str(&format!("{}: {} {what}\n", o.broker, action.done())),
            Err(e) => s.push_str(&format!(
                "{}: could not {} {what}: {e}\n",
                o.broker,
                action.verb()
            )),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(parse_topic("good.name-1").is_ok());
        assert!(parse_topic("bad name").is_err());
        assert!(parse_channel("c#ephemeral").is_ok());
        assert!(parse_channel("").is_err());
    }

    #[test]
    fn render_lists_each_broker() {
        let args = AdminArgs {
            topic: "t".into(),
            channel: None,
            nodes: NodeArgs {
                broker_http_addresses: vec![],
                lookupd_http_addresses: vec![],
            },
        };
        let text = render(
            Action::Pause,
            &args,
            &[
                Outcome {
                    broker: "a:1".into(),
                    result: Ok(()),
                },
                Outcome {
                    broker: "b:2".into(),
                    result: Err("TOPIC_NOT_FOUND (HTTP 404)".into()),
                },
            ],
        );
        assert_eq!(
            text,
            "a:1: paused topic \"t\"\nb:2: could not pause topic \"t\": TOPIC_NOT_FOUND (HTTP 404)\n"
        );
    }
}
