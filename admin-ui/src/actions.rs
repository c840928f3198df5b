//! Operator actions, applied the way nsqadmin applies them: pause, unpause, empty and delete
//! go to every broker holding the topic (or channel); delete also goes to every lookupd (so the
//! registration does not linger); create goes to the lookupds (or, with none configured, to
//! the configured brokers). Each node's outcome is reported, so a partial failure is visible.
//!
//! The brokers "holding" a topic are those whose fresh `/stats` list it, plus those a lookupd
//! lists for it in `/lookup` (a broker that is down still shows up as a failed outcome).

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use ferry_proto::names::{is_valid_channel_name, is_valid_topic_name};
use futures_util::future::join_all;
use serde::Serialize;

use crate::cluster::Cluster;
use crate::upstream::query;

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
}

impl Action {
    /// Parses "pause", "unpause", "empty", "delete", "create".
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "pause" => Action::Pause,
            "unpause" => Action::Unpause,
            "empty" => Action::Empty,
            "delete" => Action::Delete,
            "create" => Action::Create,
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

    fn kind(&self) -> &'static str {
        if self.channel.is_some() {
            "channel"
        } else {
            "topic"
        }
    }

    fn path(&self, action: Action) -> String {
        let q = match &self.channel {
            Some(c) => query(&[("topic", &self.topic), ("channel", c)]),
            None => query(&[("topic", &self.topic)]),
        };
        format!("/{}/{}{q}", self.kind(), action.as_str())
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

/// One node's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// "broker" or "lookupd".
    pub role: &'static str,
    /// Its HTTP address.
    pub node: String,
    /// Whether it did it.
    pub ok: bool,
    /// "OK", or what went wrong.
    pub detail: String,
}

/// Everything an action did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The action.
    pub action: Action,
    /// Its target.
    pub target: Target,
    /// True when every node did it (and there was at least one).
    pub ok: bool,
    /// One per node asked.
    pub outcomes: Vec<Outcome>,
}

impl Report {
    /// "pause channel t/c: 2 of 2 nodes OK".
    pub fn summary(&self) -> String {
        let done = self.outcomes.iter().filter(|o| o.ok).count();
        if self.outcomes.is_empty() {
            return format!("{} {}: no node holds it", self.action, self.target);
        }
        format!(
            "{} {}: {done} of {} nodes OK",
            self.action,
            self.target,
            self.outcomes.len()
        )
    }
}

/// Applies `action` to `target` across the cluster.
pub async fn apply(cluster: &Cluster, action: Action, target: &Target) -> Report {
    let mut calls: Vec<(&'static str, String)> = Vec::new();
    let lookupds = cluster.lookupd_addrs();
    match action {
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
    let outcomes = join_all(calls.into_iter().map(|(role, node)| async move {
        let result = if action == Action::Create && target.channel.is_some() {
            // A channel's topic must exist first.
            let topic = Target {
                topic: target.topic.clone(),
                channel: None,
            };
            match cluster
                .upstream()
                .post(&node, &topic.path(Action::Create))
                .await
            {
                Ok(_) => cluster.upstream().post(&node, &target.path(action)).await,
                Err(e) => Err(e),
            }
        } else {
            cluster.upstream().post(&node, &target.path(action)).await
        };
        let (ok, detail) = match result {
            Ok(_) => (true, "OK".to_owned()),
            // A lookupd that never had the channel has nothing to delete: that is done.
            Err(e) if role == "lookupd" && action == Action::Delete && e.status() == Some(404) => {
                (true, "OK (was not registered)".to_owned())
            }
            Err(e) => (false, e.to_string()),
        };
        Outcome {
            role,
            node,
            ok,
            detail,
        }
    }))
    .await;
    cluster.invalidate().await;
    Report {
        action,
        target: target.clone(),
        ok: !outcomes.is_empty() && outcomes.iter().all(|o| o.ok),
        outcomes,
    }
}

/// HTTP addresses of the brokers holding `target`: from fresh stats and from every lookupd.
async fn holders(cluster: &Cluster, target: &Target) -> BTreeSet<String> {
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
            t.path(Action::Pause),
            "/channel/pause?topic=t%23ephemeral&channel=c"
        );
        let t = Target {
            topic: "t".into(),
            channel: None,
        };
        assert_eq!(t.path(Action::Delete), "/topic/delete?topic=t");
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
    }
}
