//! The `replica_lost` rule (#20), pure like the others in `rules.rs`: per replicated topic it
//! remembers since when each member has been stuck and since when the group has had no
//! leader, and reports what has lasted `--alert-replica-lost-after`.
//!
//! - A member is **stuck** when the leader reports it with no `matched` index, or with a lag
//!   above 0 while its `matched` has not moved since the previous sample (a follower catching
//!   up moves; a lost one does not), or when its own broker was asked and did not answer.
//!   Only the leader knows `matched` and `lag`, so with no leader reachable members are left
//!   as they were (the no-leader condition below covers that time).
//! - A group is **leaderless** when no broker that answered reports itself leader of it.
//!
//! A member that is healthy again (matched known, lag 0, its broker answering) clears at once,
//! so its alert resolves at the next sample. A topic no broker reports as replicated any more
//! is forgotten.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::rules::{Finding, Rule, Subject};
use crate::cluster::Snapshot;
use crate::nsq::ReplicationStats;

/// What the rule remembers about one member.
#[derive(Debug, Clone, Copy)]
struct MemberTrack {
    /// The leader's `matched` for it at the previous sample.
    matched: Option<u64>,
    /// Since when it has been stuck (None: healthy or moving).
    stuck_since: Option<SystemTime>,
}

/// What the rule remembers about one group.
#[derive(Debug, Clone, Default)]
struct GroupTrack {
    leaderless_since: Option<SystemTime>,
    /// By member address.
    members: HashMap<String, MemberTrack>,
}

/// The rule's memory between samples.
#[derive(Debug, Default)]
pub struct ReplicaRule {
    groups: HashMap<String, GroupTrack>,
}

impl ReplicaRule {
    /// Adds to `out` every `replica_lost` condition that has held for `after` at `snapshot`
    /// (`after` = 0: the rule is off and remembers nothing).
    pub fn evaluate(
        &mut self,
        snapshot: &Snapshot,
        after: Duration,
        out: &mut BTreeMap<(Rule, Subject), Finding>,
    ) {
        if after.is_zero() {
            self.groups.clear();
            return;
        }
        let now = snapshot.taken;
        let groups = reports(snapshot);
        self.groups
            .retain(|topic, _| groups.contains_key(topic.as_str()));
        let unreachable: BTreeSet<&str> = snapshot
            .brokers
            .iter()
            .filter(|b| b.ok().is_none())
            .map(|b| b.addr.as_str())
            .collect();
        let lasted = |since: SystemTime| now.duration_since(since).unwrap_or_default() >= after;
        let wait = humantime::format_duration(Duration::from_secs(after.as_secs().max(1)));
        for (topic, reports) in groups {
            let track = self.groups.entry(topic.to_owned()).or_default();
            let leader = reports
                .iter()
                .filter(|(_, r)| r.role == "leader")
                .max_by_key(|(_, r)| r.term)
                .map(|(_, r)| *r);
            let Some(leader) = leader else {
                let since = *track.leaderless_since.get_or_insert(now);
                if lasted(since) {
                    let roles: Vec<String> = reports
                        .iter()
                        .map(|(addr, r)| format!("{addr} {}", r.role))
                        .collect();
                    out.insert(
                        (Rule::ReplicaLost, subject(topic, None)),
                        Finding {
                            value: json!("no leader"),
                            summary: format!(
                                "replicated topic {topic} has had no leader for {wait} ({})",
                                roles.join(", ")
                            ),
                        },
                    );
                }
                continue;
            };
            track.leaderless_since = None;
            let members: BTreeSet<&str> = leader
                .replicas
                .iter()
                .filter(|m| m.node_id != leader.node_id)
                .map(|m| m.address.as_str())
                .collect();
            track.members.retain(|a, _| members.contains(a.as_str()));
            for m in leader
                .replicas
                .iter()
                .filter(|m| m.node_id != leader.node_id)
            {
                let seen = track
                    .members
                    .entry(m.address.clone())
                    .or_insert(MemberTrack {
                        matched: m.matched,
                        stuck_since: None,
                    });
                let down = unreachable.contains(m.address.as_str());
                let healthy = !down && m.matched.is_some() && m.lag == Some(0);
                let moved = m.matched.is_some() && seen.matched != m.matched;
                if healthy || (moved && !down) {
                    seen.stuck_since = None;
                } else {
                    seen.stuck_since.get_or_insert(now);
                }
                seen.matched = m.matched;
                if !seen.stuck_since.is_some_and(lasted) {
                    continue;
                }
                let why = if down {
                    "its broker does not answer".to_owned()
                } else {
                    match (m.matched, m.lag) {
                        (None, _) => "the leader has no matched index for it".to_owned(),
                        (Some(h), lag) => format!(
                            "stuck at index {h}, {} entries behind",
                            lag.unwrap_or_default()
                        ),
                    }
                };
                out.insert(
                    (Rule::ReplicaLost, subject(topic, Some(&m.address))),
                    Finding {
                        value: json!(m.lag),
                        summary: format!("replica {} of {topic} lost for {wait}: {why}", m.address),
                    },
                );
            }
        }
    }
}

fn subject(topic: &str, replica: Option<&str>) -> Subject {
    Subject::Replica {
        topic: topic.to_owned(),
        address: replica.map(str::to_owned),
    }
}

/// Every replicated topic's reports: (broker address, its `replication`), per topic.
fn reports(snapshot: &Snapshot) -> BTreeMap<&str, Vec<(&str, &ReplicationStats)>> {
    let mut out: BTreeMap<&str, Vec<(&str, &ReplicationStats)>> = BTreeMap::new();
    for (b, t) in crate::replication::copies(snapshot) {
        if let Some(r) = &t.replication {
            out.entry(t.topic_name.as_str())
                .or_default()
                .push((b.addr.as_str(), r));
        }
    }
    out
}
