//! `ferry pause|unpause|empty|delete --topic T [--channel C]`: one action applied to every broker
//! that holds the topic, with a line per broker saying what happened.

use clap::Args;

use reqwest::Method;

use crate::api::{self, Answer};
use crate::nodes::{self, NodeArgs};

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

/// Applies `action` on every broker holding the topic. Also tells the lookupds about deletions,
/// so the topic or channel disappears from discovery.
pub async fn run(action: Action, args: &AdminArgs) -> anyhow::Result<Vec<Answer>> {
    let mut params = vec![("topic", args.topic.clone())];
    let path = match &args.channel {
        None => format!("/topic/{}", action.verb()),
        Some(c) => {
            params.push(("channel", c.clone()));
            format!("/channel/{}", action.verb())
        }
    };
    let mut answers =
        api::on_topic_brokers(&args.nodes, &args.topic, Method::POST, &path, &params).await?;
    if action == Action::Delete {
        already_deleted(&mut answers);
        let client = nodes::http_client()?;
        for lookupd in &args.nodes.lookupd_http_addresses {
            // lookupd forgets it too (brokers also unregister themselves on delete).
            let _ = api::call(&client, Method::POST, lookupd, &path, &params).await;
        }
    }
    Ok(answers)
}

/// A replicated topic's delete goes through its group, so another replica of it may be gone by
/// the time it is asked: a delete answered "not found" is done.
fn already_deleted(answers: &mut [Answer]) {
    for a in answers {
        if let Err(api::BrokerError::Refused { status: 404, .. }) = a.result {
            a.result = Ok(serde_json::json!({"already_deleted": true}));
        }
    }
}

/// One line per broker, e.g. `127.0.0.1:4151: paused topic "t"`.
pub fn render(action: Action, args: &AdminArgs, answers: &[Answer]) -> String {
    let what = match &args.channel {
        None => format!("topic {:?}", args.topic),
        Some(c) => format!("channel {:?} of topic {:?}", c, args.topic),
    };
    api::render_lines(answers, &format!("{} {what}", action.verb()), |_| {
        format!("{} {what}", action.done())
    })
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
            nodes: NodeArgs::default(),
        };
        let text = render(
            Action::Pause,
            &args,
            &[
                Answer {
                    broker: "a:1".into(),
                    result: Ok(serde_json::Value::Null),
                },
                Answer {
                    broker: "b:2".into(),
                    result: Err(api::BrokerError::Refused {
                        status: 404,
                        code: "TOPIC_NOT_FOUND".into(),
                        reason: None,
                    }),
                },
            ],
        );
        assert_eq!(
            text,
            "a:1: paused topic \"t\"\nb:2: could not pause topic \"t\": TOPIC_NOT_FOUND (HTTP 404)\n"
        );
    }

    #[test]
    fn a_delete_of_what_is_gone_is_done_other_failures_are_not() {
        let refused = |status| Answer {
            broker: format!("b:{status}"),
            result: Err(api::BrokerError::Refused {
                status,
                code: "X".into(),
                reason: None,
            }),
        };
        let mut answers = [refused(404), refused(500)];
        already_deleted(&mut answers);
        assert!(answers[0].result.is_ok());
        assert!(answers[1].result.is_err());
    }
}
