//! Operator actions, applied the way nsqadmin applies them: pause, unpause, empty and delete
//! go to every broker holding the topic (or channel); delete also goes to every lookupd (so the
//! registration does not linger); create goes to the lookupds (or, with none configured, to
//! the configured brokers). Each node's outcome is reported, so a partial failure is visible.
//!
//! Ferry's brokers (#17) have three more, sent to every broker holding the topic (config) or
//! the channel (config, rewind) with their parameters passed through as given (brokerd
//! checks them and says why it refuses one): `config` sets a topic's retention or a
//! channel's max age, max attempts and dead-letter topic; `rewind` makes a channel deliver
//! again everything from a time on. Their outcome describes the broker's answer (the settings
//! now in force; where the rewind starts and how many messages the channel owes).
//!
//! The brokers "holding" a topic are those whose fresh `/stats` list it, plus those a lookupd
//! lists for it in `/lookup` (a broker that is down still shows up as a failed outcome).
//!
//! A replicated topic (#20, create with `replicas` = N > 1) is created by ONE broker, which
//! forms the group among N brokers registered with lookupd: admin-ui sends
//! `/topic/create?topic=T&replicas=N` to the first Ferry broker that answered, and reports
//! its refusal with the broker's code and status (`INVALID_REPLICAS`, `TOO_FEW_BROKERS`,
//! `TOPIC_EXISTS_UNREPLICATED`, `EPHEMERAL_NOT_REPLICATED`). A channel asked for with it is
//! then created on every broker holding the topic (channels are not replicated yet).

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use ferry_proto::names::{is_valid_channel_name, is_valid_topic_name};
use futures_util::future::join_all;
use serde::Serialize;
use serde_json::Value;

use crate::cluster::Cluster;
use crate::nsq;
use crate::settings::{self, ChannelSettings, Retention};
use crate::upstream::{UpstreamError, query};
use crate::views::Num;

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Stop delivery.
    Pause,
    /// Resume delivery.
    Unpause,
    /// Drop every waiting message.
    Empty,
    /// Remove the topic or channel.
    Delete,
    /// Register the topic (and channel) with the lookupds.
    Create,
    /// Change a topic's retention or a channel's delivery settings.
    Config,
    /// Make a channel deliver again everything from a time on.
    Rewind,
}

impl Action {
    /// Parses "pause", "unpause", "empty", "delete", "create", "config", "rewind".
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "pause" => Action::Pause,
            "unpause" => Action::Unpause,
            "empty" => Action::Empty,
            "delete" => Action::Delete,
            "create" => Action::Create,
            "config" => Action::Config,
            "rewind" => Action::Rewind,
            _ => return None,
        })
    }

    /// The lowercase name, which is also the last part of NSQ's endpoint path.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Unpause => "unpause",
            Action::Empty => "empty",
            Action::Delete => "delete",
            Action::Create => "create",
            Action::Config => "config",
            Action::Rewind => "rewind",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A topic, or a channel of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Topic name.
    pub topic: String,
    /// Channel name.
    pub channel: Option<String>,
}

impl Target {
    /// Checks both names against NSQ's rules; the message says which one is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !is_valid_topic_name(&self.topic) {
            return Err(format!("invalid topic name {:?}", self.topic));
        }
        if let Some(c) = &self.channel
            && !is_valid_channel_name(c)
        {
            return Err(format!("invalid channel name {c:?}"));
        }
        Ok(())
    }

    /// The topic alone.
    fn topic_only(&self) -> Target {
        Target {
            topic: self.topic.clone(),
            channel: None,
        }
    }

    fn kind(&self) -> &'static str {
        if self.channel.is_some() {
            "channel"
        } else {
            "topic"
        }
    }

    /// brokerd's `/{topic|channel}/{name}?topic=..&channel=..&params..`.
    pub(crate) fn endpoint(&self, name: &str, params: &[(&str, &str)]) -> String {
        let mut pairs = vec![("topic", self.topic.as_str())];
        if let Some(c) = &self.channel {
            pairs.push(("channel", c));
        }
        pairs.extend_from_slice(params);
        format!("/{}/{name}{}", self.kind(), query(&pairs))
    }

    fn path(&self, action: Action, params: &[Param]) -> String {
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.endpoint(action.as_str(), &params)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.channel {
            Some(c) => write!(f, "channel {}/{c}", self.topic),
            None => write!(f, "topic {}", self.topic),
        }
    }
}

/// A parameter passed to the brokers with an action (`("retention", "24h")`).
pub type Param = (&'static str, String);

/// One node's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// "broker" or "lookupd".
    pub role: &'static str,
    /// Its HTTP address.
    pub node: String,
    /// Whether it did it.
    pub ok: bool,
    /// "OK", what its answer says (config, rewind), or what went wrong.
    pub detail: String,
    /// The broker's JSON answer (config, rewind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<Value>,
    /// The HTTP status it refused with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The NSQ error code it refused with (`TOO_FEW_BROKERS`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl Outcome {
    /// `node`'s outcome, with no answer, status or code.
    fn new(role: &'static str, node: &str, ok: bool, detail: String) -> Outcome {
        Outcome {
            role,
            node: node.to_owned(),
            ok,
            detail,
            answer: None,
            status: None,
            code: None,
        }
    }

    /// The outcome of a request to `node` that failed with `e`.
    fn error(role: &'static str, node: String, e: &UpstreamError) -> Outcome {
        let code = e.code();
        let detail = match code.as_deref().and_then(explain) {
            Some(why) => format!("{why} ({e})"),
            None => e.to_string(),
        };
        Outcome {
            status: e.status(),
            code,
            ..Outcome::new(role, &node, false, detail)
        }
    }
}

/// What a broker's refusal of a replicated create means, for people.
fn explain(code: &str) -> Option<&'static str> {
    Some(match code {
        "INVALID_REPLICAS" => "replicas must be 1 or an odd number up to 9",
        "TOO_FEW_BROKERS" => "fewer brokers are registered with lookupd than replicas asked for",
        "TOPIC_EXISTS_UNREPLICATED" => "the topic already exists without replicas",
        "EPHEMERAL_NOT_REPLICATED" => "an ephemeral topic cannot be replicated",
        "REPLICATION_FAILED" => "the broker could not form the group (see its log)",
        _ => return None,
    })
}

/// Everything an action did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The action.
    pub action: Action,
    /// Its target.
    pub target: Target,
    /// Its parameters, as passed to the brokers (a JSON object).
    #[serde(serialize_with = "params_object")]
    pub params: Vec<Param>,
    /// True when every node did it (and there was at least one).
    pub ok: bool,
    /// One per node asked.
    pub outcomes: Vec<Outcome>,
}

fn params_object<S: serde::Serializer>(params: &[Param], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(params.iter().map(|(k, v)| (k, v)))
}

impl Report {
    /// "pause channel t/c: 2 of 2 nodes OK", "rewind channel t/c (to=-1h): 2 of 2 nodes OK".
    pub fn summary(&self) -> String {
        let done = self.outcomes.iter().filter(|o| o.ok).count();
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let what = if params.is_empty() {
            format!("{} {}", self.action, self.target)
        } else {
            format!("{} {} ({})", self.action, self.target, params.join(", "))
        };
        if self.outcomes.is_empty() {
            return format!("{what}: no node holds it");
        }
        format!("{what}: {done} of {} nodes OK", self.outcomes.len())
    }
}

/// Applies `action` with `params` to `target` across the cluster (a create with `replicas`:
/// through one broker).
pub async fn apply(
    cluster: &Cluster,
    action: Action,
    target: &Target,
    params: Vec<Param>,
) -> Report {
    if action == Action::Create && params.iter().any(|(k, _)| *k == "replicas") {
        return create_replicated(cluster, target, params).await;
    }
    apply_everywhere(cluster, action, target, params).await
}

/// Creates a replicated topic through one broker, then the channel (if any) on every broker
/// holding the topic.
async fn create_replicated(cluster: &Cluster, target: &Target, params: Vec<Param>) -> Report {
    let group = match creator(cluster).await {
        None => Outcome::new(
            "broker",
            "–",
            false,
            "no Ferry broker answered: a replicated topic is created by one".to_owned(),
        ),
        Some(node) => {
            let path = target.topic_only().path(Action::Create, &params);
            match cluster.upstream().post(&node, &path).await {
                Ok(_) => Outcome::new("broker", &node, true, "OK (group formed)".to_owned()),
                Err(e) => Outcome::error("broker", node, &e),
            }
        }
    };
    let formed = group.ok;
    let mut outcomes = vec![group];
    if formed && target.channel.is_some() {
        cluster.invalidate().await;
        let channel = apply_everywhere(cluster, Action::Create, target, Vec::new());
        outcomes.extend(channel.await.outcomes);
    }
    cluster.invalidate().await;
    Report {
        action: Action::Create,
        target: target.clone(),
        ok: outcomes.iter().all(|o| o.ok),
        params,
        outcomes,
    }
}

/// The broker that creates a replicated topic: the first Ferry broker that answered, else the
/// first configured one.
async fn creator(cluster: &Cluster) -> Option<String> {
    let snapshot = cluster.snapshot(Duration::ZERO).await;
    snapshot
        .brokers
        .iter()
        .find(|b| b.ok().is_some_and(|s| s.version.starts_with("ferry")))
        .map(|b| b.addr.clone())
        .or_else(|| cluster.broker_addrs().first().cloned())
}

/// Applies `action` to every node concerned: see the module docs.
async fn apply_everywhere(
    cluster: &Cluster,
    action: Action,
    target: &Target,
    params: Vec<Param>,
) -> Report {
    let mut calls: Vec<(&'static str, String)> = Vec::new();
    let lookupds = cluster.lookupd_addrs();
    let replicated_channel = action == Action::Create
        && target.channel.is_some()
        && is_replicated(cluster, target).await;
    match action {
        // A channel of a replicated topic: on the brokers holding it (each keeps its own).
        Action::Create if replicated_channel => {
            for b in holders(cluster, &target.topic_only()).await {
                calls.push(("broker", b));
            }
        }
        Action::Create => {
            if lookupds.is_empty() {
                calls.extend(cluster.broker_addrs().iter().map(|a| ("broker", a.clone())));
            } else {
                calls.extend(lookupds.iter().map(|a| ("lookupd", a.clone())));
            }
        }
        _ => {
            for b in holders(cluster, target).await {
                calls.push(("broker", b));
            }
            if action == Action::Delete {
                calls.extend(lookupds.iter().map(|a| ("lookupd", a.clone())));
            }
        }
    }
    let sent = params.as_slice();
    let outcomes = join_all(calls.into_iter().map(|(role, node)| async move {
        let result = if action == Action::Create && target.channel.is_some() && !replicated_channel
        {
            // A channel's topic must exist first.
            let topic = Target {
                topic: target.topic.clone(),
                channel: None,
            };
            match cluster
                .upstream()
                .post(&node, &topic.path(Action::Create, &[]))
                .await
            {
                Ok(_) => {
                    let path = target.path(action, sent);
                    cluster.upstream().post(&node, &path).await
                }
                Err(e) => Err(e),
            }
        } else {
            let path = target.path(action, sent);
            cluster.upstream().post(&node, &path).await
        };
        match result {
            Ok(body) => {
                let (detail, answer) = describe(action, target, &body);
                Outcome {
                    answer,
                    ..Outcome::new(role, &node, true, detail)
                }
            }
            // A lookupd that never had the channel has nothing to delete: that is done.
            Err(e) if role == "lookupd" && action == Action::Delete && e.status() == Some(404) => {
                Outcome::new(role, &node, true, "OK (was not registered)".to_owned())
            }
            Err(e) => Outcome::error(role, node, &e),
        }
    }))
    .await;
    cluster.invalidate().await;
    Report {
        action,
        target: target.clone(),
        ok: !outcomes.is_empty() && outcomes.iter().all(|o| o.ok),
        params,
        outcomes,
    }
}

/// What a broker's answer to `action` says, and the answer itself when it is JSON.
fn describe(action: Action, target: &Target, body: &[u8]) -> (String, Option<Value>) {
    let detail = match action {
        Action::Rewind => nsq::parse::<nsq::Rewind>(body).map(|r| rewound(&r)),
        Action::Config if target.channel.is_some() => {
            nsq::parse::<nsq::ChannelConfig>(body).map(|c| {
                let now = ChannelSettings {
                    max_age_ms: c.max_age_ms,
                    max_attempts: c.max_attempts,
                    dead_letter_topic: c.dead_letter_topic,
                };
                format!("now {now}")
            })
        }
        Action::Config => nsq::parse::<nsq::TopicConfig>(body).map(|c| {
            let now = Retention {
                ms: c.retention_ms,
                bytes: c.retention_bytes,
            };
            format!("now retention {now}")
        }),
        _ => return ("OK".to_owned(), None),
    };
    let detail = detail.unwrap_or_else(|e| format!("OK (unreadable answer: {e})"));
    (detail, serde_json::from_slice(body).ok())
}

/// "from 000000000000007b of 2026-12-05 10:00:00 UTC: 1,000 owed".
fn rewound(r: &nsq::Rewind) -> String {
    let owed = Num(r.owed);
    let Some(ts) = r.first_timestamp_ms else {
        return format!("no retained message at or after that time: {owed} owed");
    };
    let clamped = if r.clamped {
        " (the oldest retained: older ones are gone)"
    } else {
        ""
    };
    format!(
        "from {} of {}{clamped}: {owed} owed",
        r.first_id,
        settings::time_ms(ts)
    )
}

/// Whether any broker reports `target`'s topic as replicated (fresh stats).
async fn is_replicated(cluster: &Cluster, target: &Target) -> bool {
    let snapshot = cluster.snapshot(Duration::ZERO).await;
    crate::replication::copies(&snapshot)
        .any(|(_, t)| t.topic_name == target.topic && t.replication.is_some())
}

/// HTTP addresses of the brokers holding `target`: from fresh stats and from every lookupd.
pub(crate) async fn holders(cluster: &Cluster, target: &Target) -> BTreeSet<String> {
    let snapshot = cluster.snapshot(Duration::ZERO).await;
    let mut out = BTreeSet::new();
    for b in &snapshot.brokers {
        let Some(t) = b
            .ok()
            .and_then(|s| s.topics.iter().find(|t| t.topic_name == target.topic))
        else {
            continue;
        };
        let holds = match &target.channel {
            None => true,
            Some(c) => t.channels.iter().any(|ch| &ch.channel_name == c),
        };
        if holds {
            out.insert(b.addr.clone());
        }
    }
    let lookups = join_all(
        cluster
            .lookupd_addrs()
            .iter()
            .map(|l| cluster.lookupd_producers(l, &target.topic)),
    )
    .await;
    for producers in lookups.into_iter().flatten() {
        for p in producers {
            let addr = p.http_address();
            // For a channel, a broker known only from lookupd may hold it: its stats would
            // tell, but if it did not answer, asking it is the way to report that.
            let answered = snapshot
                .brokers
                .iter()
                .any(|b| b.addr == addr && b.ok().is_some());
            if target.channel.is_none() || !answered {
                out.insert(addr);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_encode_names() {
        let t = Target {
            topic: "t#ephemeral".into(),
            channel: Some("c".into()),
        };
        assert_eq!(
            t.path(Action::Pause, &[]),
            "/channel/pause?topic=t%23ephemeral&channel=c"
        );
        assert_eq!(
            t.path(
                Action::Rewind,
                &[("to", "2026-12-05T10:00:00+02:00".into())]
            ),
            "/channel/rewind?topic=t%23ephemeral&channel=c&to=2026-12-05T10%3A00%3A00%2B02%3A00"
        );
        let t = Target {
            topic: "t".into(),
            channel: None,
        };
        assert_eq!(t.path(Action::Delete, &[]), "/topic/delete?topic=t");
    }

    #[test]
    fn names_are_validated() {
        let bad = Target {
            topic: "no spaces".into(),
            channel: None,
        };
        assert!(bad.validate().is_err());
        let bad_channel = Target {
            topic: "ok".into(),
            channel: Some("a/b".into()),
        };
        assert!(bad_channel.validate().unwrap_err().contains("channel"));
        assert_eq!(Action::parse("pause"), Some(Action::Pause));
        assert_eq!(Action::parse("drop"), None);
        assert_eq!(Action::parse("rewind"), Some(Action::Rewind));
    }

    #[test]
    fn answers_are_described() {
        let ch = Target {
            topic: "t".into(),
            channel: Some("c".into()),
        };
        let body =
            br#"{"topic":"t","channel":"c","first_sequence":123,"first_id":"000000000000007b",
            "first_timestamp_ms":1764900000000,"owed":1000,"clamped":true}"#;
        let (detail, answer) = describe(Action::Rewind, &ch, body);
        assert_eq!(
            detail,
            "from 000000000000007b of 2025-12-05 02:00:00 UTC \
             (the oldest retained: older ones are gone): 1,000 owed"
        );
        assert_eq!(answer.unwrap()["owed"], 1000);
        let none = br#"{"first_sequence":0,"first_timestamp_ms":null,"owed":0,"clamped":false}"#;
        assert!(
            describe(Action::Rewind, &ch, none)
                .0
                .starts_with("no retained message")
        );
        let cfg = br#"{"max_age":"10m","max_age_ms":600000,"max_attempts":5,"dead_letter_topic":"t.dead"}"#;
        assert_eq!(
            describe(Action::Config, &ch, cfg).0,
            "now max age 10m, max attempts 5, dead letters to t.dead"
        );
        let topic = Target {
            topic: "t".into(),
            channel: None,
        };
        let cfg = br#"{"retention":"24h","retention_ms":86400000,"retention_bytes":0}"#;
        assert_eq!(
            describe(Action::Config, &topic, cfg).0,
            "now retention time 24h, size off"
        );
        assert_eq!(describe(Action::Pause, &topic, b"").0, "OK");
    }
}
