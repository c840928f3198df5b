//! `ferry create --topic T [--channel C] [--replicas N]`: creates a topic (and a channel of
//! it) before anything is published, as nsqd's `POST /topic/create` and `/channel/create`.
//!
//! - `--replicas N` with N > 1 goes to ONE broker (the first `--broker-http-address`, else
//!   the first broker lookupd lists): that broker picks the other N-1 among the brokers
//!   registered with lookupd and forms the topic's Raft group itself (ARCHITECTURE.md,
//!   "Replicated topics"). The group's members are then read from its `/stats`.
//! - Without `--replicas` (or with 1) the topic is created on every broker given, or every
//!   broker lookupd lists, as NSQ's tools do; each broker applies its own
//!   `--default-replicas`.
//! - `--channel C` is then created on every broker holding the topic (every member of a
//!   group: channel creation is not in a group's log yet, each replica keeps its own).
//!
//! Refusals read as sentences (a `TOO_FEW_BROKERS` says how many brokers N replicas need),
//! and any refusal makes the command exit non-zero.

use clap::Args;
use ferry_proto::stats::Stats;
use reqwest::Method;

use crate::admin::{parse_channel, parse_topic};
use crate::api::{self, BrokerError};
use crate::nodes::{self, NodeArgs};

/// Flags of `ferry create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Topic to create.
    #[arg(long, value_parser = parse_topic)]
    pub topic: String,

    /// A channel of the topic to create too.
    #[arg(long, value_parser = parse_channel)]
    pub channel: Option<String>,

    /// Brokers holding the topic, in one Raft group: 1 or an odd number up to 9, at most the
    /// number of brokers registered with lookupd. Default: each broker's `--default-replicas`.
    #[arg(long, value_parser = ferry_brokerd::config::parse_replicas, value_name = "N")]
    pub replicas: Option<usize>,

    /// Where the brokers are (default: the local broker at 127.0.0.1:4151).
    #[command(flatten)]
    pub nodes: NodeArgs,
}

impl CreateArgs {
    fn replicated(&self) -> bool {
        self.replicas.is_some_and(|n| n > 1)
    }
}

/// What `ferry create` did: a line per success, a sentence per failure.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// `broker: created ...` lines.
    pub done: Vec<String>,
    /// `broker: cannot create ...: why` sentences.
    pub failed: Vec<String>,
}

impl Report {
    /// The success lines, for stdout.
    pub fn render(&self) -> String {
        self.done.iter().map(|l| format!("{l}\n")).collect()
    }

    /// An error when anything failed: the failure itself when it is the only one, else how
    /// many (each is printed to stderr first by the caller).
    pub fn outcome(&self) -> anyhow::Result<()> {
        match &self.failed[..] {
            [] => Ok(()),
            [one] => anyhow::bail!("{one}"),
            many => anyhow::bail!("{} creations failed", many.len()),
        }
    }
}

/// Creates the topic (and channel) as the module docs say.
pub async fn run(args: &CreateArgs) -> anyhow::Result<Report> {
    if args.replicated() && ferry_proto::names::is_ephemeral(&args.topic) {
        anyhow::bail!(
            "topic {:?} is #ephemeral: it lives in one broker's memory and cannot be replicated; \
             drop --replicas",
            args.topic
        );
    }
    let client = nodes::http_client()?;
    let mut brokers = nodes::registered_brokers(&client, &args.nodes.or_local()).await?;
    if args.replicated() {
        brokers.truncate(1);
    }
    let mut params = vec![("topic", args.topic.clone())];
    if let Some(n) = args.replicas {
        params.push(("replicas", n.to_string()));
    }
    let what = format!("topic {:?}", args.topic);
    let mut report = Report::default();
    let mut holders: Vec<String> = Vec::new();
    for answer in api::call_each(&client, brokers, Method::POST, "/topic/create", &params).await {
        let broker = answer.broker;
        if let Err(e) = answer.result {
            report.failed.push(format!(
                "{broker}: cannot create {what}: {}",
                explain(&e, args.replicas)
            ));
            continue;
        }
        match group_members(&client, &broker, &args.topic).await {
            Some(members) => {
                report.done.push(format!(
                    "{broker}: created {what} with {} replicas on {}",
                    members.len(),
                    members.join(", ")
                ));
                holders.extend(members);
            }
            None if args.replicated() => report.failed.push(format!(
                "{broker}: created {what} without replication: the broker does not replicate \
                 topics (nsqd, or a Ferry broker older than replicated topics)"
            )),
            None => {
                report.done.push(format!("{broker}: created {what}"));
                holders.push(broker);
            }
        }
    }
    if let Some(channel) = &args.channel {
        holders.sort();
        holders.dedup();
        let params = vec![("topic", args.topic.clone()), ("channel", channel.clone())];
        let what = format!("channel {channel:?} of topic {:?}", args.topic);
        for answer in
            api::call_each(&client, holders, Method::POST, "/channel/create", &params).await
        {
            match answer.result {
                Ok(_) => report
                    .done
                    .push(format!("{}: created {what}", answer.broker)),
                Err(e) => report
                    .failed
                    .push(format!("{}: cannot create {what}: {e}", answer.broker)),
            }
        }
    }
    Ok(report)
}

/// The HTTP addresses of the members of `topic`'s group as `broker` sees it; `None` when the
/// topic is not replicated there (or its `/stats` cannot be read).
async fn group_members(client: &reqwest::Client, broker: &str, topic: &str) -> Option<Vec<String>> {
    let params = [("format", "json".to_owned()), ("topic", topic.to_owned())];
    let json = api::call(client, Method::GET, broker, "/stats", &params)
        .await
        .ok()?;
    let stats: Stats = serde_json::from_value(json).ok()?;
    let replication = stats.topic(topic)?.replication.as_ref()?;
    let members: Vec<String> = replication
        .replicas
        .iter()
        .map(|r| r.address.clone())
        .collect();
    (!members.is_empty()).then_some(members)
}

/// A broker's refusal of `/topic/create` as a sentence that says what to do.
fn explain(e: &BrokerError, replicas: Option<usize>) -> String {
    let BrokerError::Refused { code, .. } = e else {
        return e.to_string();
    };
    let n = replicas.map_or("the broker's --default-replicas".to_owned(), |n| {
        n.to_string()
    });
    match code.as_str() {
        "TOO_FEW_BROKERS" => format!(
            "{n} replicas need {n} brokers registered with lookupd, and fewer are: start more \
             brokers with --lookupd-tcp-address, or ask for fewer replicas ({e})"
        ),
        "TOPIC_EXISTS_UNREPLICATED" => format!(
            "the topic already exists on this broker with one replica and cannot become \
             replicated: delete it first or choose another name ({e})"
        ),
        "EPHEMERAL_NOT_REPLICATED" => {
            format!("an #ephemeral topic cannot be replicated ({e})")
        }
        "INVALID_REPLICAS" => {
            format!("replicas must be 1 or an odd number up to 9 ({e})")
        }
        "REPLICATION_FAILED" => {
            format!("the broker could not form the topic's Raft group; its log says why ({e})")
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, code: &str) -> BrokerError {
        BrokerError::Refused {
            status,
            code: code.into(),
            reason: None,
        }
    }

    #[test]
    fn refusals_say_what_to_do() {
        assert_eq!(
            explain(&refused(503, "TOO_FEW_BROKERS"), Some(5)),
            "5 replicas need 5 brokers registered with lookupd, and fewer are: start more \
             brokers with --lookupd-tcp-address, or ask for fewer replicas \
             (TOO_FEW_BROKERS (HTTP 503))"
        );
        assert!(
            explain(&refused(409, "TOPIC_EXISTS_UNREPLICATED"), Some(3))
                .starts_with("the topic already exists")
        );
        assert_eq!(
            explain(&refused(404, "NOPE"), None),
            "NOPE (HTTP 404)".to_owned()
        );
    }

    #[test]
    fn one_failure_is_the_error() {
        let mut r = Report {
            done: vec!["a:1: created topic \"t\"".into()],
            failed: vec![],
        };
        assert!(r.outcome().is_ok());
        assert_eq!(r.render(), "a:1: created topic \"t\"\n");
        r.failed.push("b:2: cannot create topic \"t\": why".into());
        assert_eq!(
            r.outcome().unwrap_err().to_string(),
            "b:2: cannot create topic \"t\": why"
        );
        r.failed.push("c:3: cannot".into());
        assert_eq!(r.outcome().unwrap_err().to_string(), "2 creations failed");
    }
}
