//! Replicated topics (#20) as the dashboard sees them: which broker's copy of a topic counts
//! towards the cluster's totals, and each group's members as the Replication panel shows them.
//!
//! A replicated topic appears in the `/stats` of every replica, each with the whole topic:
//! the same messages, channels with the same depth. Summing the copies would count every
//! message N times, and only the leader delivers, so for a replicated topic exactly one copy
//! counts ([`Counted`]): the one that reports itself `leader` (the highest term if two do, as
//! during a partition), else, with no leader reachable, the copy that applied the most of the
//! group's log (ties: the lowest address). Every copy of a topic without a `replication`
//! object counts, as before. Per-broker rows still show each copy's own figures.
//!
//! Members are matched to the brokers that answered by node id (each replica reports its
//! own), so the panel works whatever address admin-ui reaches a broker by.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cluster::{BrokerSnap, Snapshot};
use crate::nsq::{ReplicationStats, TopicStats};

/// For each replicated topic, the broker whose copy counts; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct Counted {
    /// Topic name to the HTTP address of the counted copy's broker.
    by_topic: BTreeMap<String, String>,
}

impl Counted {
    /// Chooses the counted copy of every replicated topic in `snapshot`.
    pub fn of(snapshot: &Snapshot) -> Counted {
        let mut best: BTreeMap<&str, (&str, (bool, u64, u64))> = BTreeMap::new();
        for (b, t) in copies(snapshot) {
            let Some(r) = &t.replication else { continue };
            // A leader first (the highest term), else the most applied; brokers come in
            // address order, so keeping the first of equals keeps the lowest address.
            let rank = if r.role == "leader" {
                (true, r.term, r.last_applied)
            } else {
                (false, r.last_applied, r.term)
            };
            match best.get(t.topic_name.as_str()) {
                Some((_, held)) if *held >= rank => {}
                _ => {
                    best.insert(&t.topic_name, (&b.addr, rank));
                }
            }
        }
        Counted {
            by_topic: best
                .into_iter()
                .map(|(topic, (addr, _))| (topic.to_owned(), addr.to_owned()))
                .collect(),
        }
    }

    /// Whether the copy of `topic` on the broker at `broker` counts towards totals.
    pub fn counts(&self, broker: &str, topic: &str) -> bool {
        self.by_topic.get(topic).is_none_or(|a| a == broker)
    }

    /// The broker whose copy of a replicated `topic` counts (None: not replicated).
    pub fn broker(&self, topic: &str) -> Option<&str> {
        self.by_topic.get(topic).map(String::as_str)
    }
}

/// Every topic copy of every broker that answered, with its broker.
pub fn copies(snapshot: &Snapshot) -> impl Iterator<Item = (&BrokerSnap, &TopicStats)> {
    snapshot
        .brokers
        .iter()
        .filter_map(|b| b.ok().map(|s| (b, s)))
        .flat_map(|(b, s)| s.topics.iter().map(move |t| (b, t)))
}

/// The topic copies whose figures make the cluster's totals: every copy of an unreplicated
/// topic, one copy of a replicated one.
pub fn counted(snapshot: &Snapshot) -> impl Iterator<Item = (&BrokerSnap, &TopicStats)> {
    let counted = Counted::of(snapshot);
    copies(snapshot).filter(move |(b, t)| counted.counts(&b.addr, &t.topic_name))
}

/// One member of a group, on the topic page.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReplicaRow {
    /// Its broker's HTTP address (as the group knows it).
    pub address: String,
    /// Its node id.
    pub node_id: u64,
    /// Its role as it reports it (`leader`, `follower`, `candidate`, `learner`), or
    /// `unreachable` when its broker did not answer (or does not list the topic).
    pub role: String,
    /// Its membership as the leader records it: `leader`, `voter` or `learner`.
    pub state: String,
    /// Its current term (None: no answer).
    pub term: Option<u64>,
    /// Highest log index it knows committed.
    pub commit_index: Option<u64>,
    /// Highest log index it applied.
    pub last_applied: Option<u64>,
    /// Highest log index the leader knows it holds (only the leader knows).
    pub matched: Option<u64>,
    /// Entries it is behind the leader's log (only the leader knows).
    pub lag: Option<u64>,
    /// It answered and follows the current leader (or is it).
    pub healthy: bool,
}

/// A replicated topic's group, on the topics list and the topic page.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReplicationView {
    /// The leader's HTTP address, when a reachable member reports itself leader.
    pub leader: Option<String>,
    /// The leader's term (else the highest any member reports).
    pub term: u64,
    /// The broker whose copy the topic's totals come from (the leader's, when reachable).
    pub counted_from: Option<String>,
    /// Members that answered and follow the leader.
    pub healthy: usize,
    /// Members.
    pub total: usize,
    /// Every member, by address.
    pub replicas: Vec<ReplicaRow>,
}

impl ReplicationView {
    /// The topics list's cell: "2/3 · leader 127.0.0.1:4151" or "3/3 · no leader".
    pub fn summary(&self) -> String {
        let leader = match &self.leader {
            Some(l) => format!("leader {l}"),
            None => "no leader".to_owned(),
        };
        format!("{}/{} · {leader}", self.healthy, self.total)
    }

    /// Every member answered and follows the leader.
    pub fn all_healthy(&self) -> bool {
        self.leader.is_some() && self.healthy == self.total
    }
}

/// The group of `topic` as the brokers that answered describe it (None: not replicated).
pub fn view(snapshot: &Snapshot, topic: &str) -> Option<ReplicationView> {
    let reports: Vec<(&BrokerSnap, &ReplicationStats)> = copies(snapshot)
        .filter(|(_, t)| t.topic_name == topic)
        .filter_map(|(b, t)| t.replication.as_ref().map(|r| (b, r)))
        .collect();
    if reports.is_empty() {
        return None;
    }
    let counted = Counted::of(snapshot);
    let leader = reports
        .iter()
        .filter(|(_, r)| r.role == "leader")
        .max_by_key(|(_, r)| r.term)
        .map(|(_, r)| *r);
    let term = leader.map_or_else(
        || reports.iter().map(|(_, r)| r.term).max().unwrap_or(0),
        |l| l.term,
    );
    // Membership: the leader's, else every member any copy lists.
    let mut members: BTreeMap<u64, &crate::nsq::ReplicaStats> = BTreeMap::new();
    match leader {
        Some(l) => members.extend(l.replicas.iter().map(|m| (m.node_id, m))),
        None => {
            for (_, r) in &reports {
                for m in &r.replicas {
                    members.entry(m.node_id).or_insert(m);
                }
            }
        }
    }
    let mut replicas: Vec<ReplicaRow> = members
        .values()
        .map(|m| {
            let own = reports.iter().find(|(_, r)| r.node_id == m.node_id);
            let healthy = own.is_some_and(|(_, r)| {
                leader.is_some_and(|l| r.leader == Some(l.node_id))
                    && matches!(r.role.as_str(), "leader" | "follower")
            });
            ReplicaRow {
                address: m.address.clone(),
                node_id: m.node_id,
                role: own.map_or_else(|| "unreachable".to_owned(), |(_, r)| r.role.clone()),
                state: m.state.clone(),
                term: own.map(|(_, r)| r.term),
                commit_index: own.map(|(_, r)| r.commit_index),
                last_applied: own.map(|(_, r)| r.last_applied),
                matched: leader.and(m.matched),
                lag: leader.and(m.lag),
                healthy,
            }
        })
        .collect();
    replicas.sort_by(|a, b| a.address.cmp(&b.address));
    let leader_addr = leader.map(|l| {
        replicas
            .iter()
            .find(|m| m.node_id == l.node_id)
            .map(|m| m.address.clone())
            .or_else(|| {
                reports
                    .iter()
                    .find(|(_, r)| r.node_id == l.node_id)
                    .map(|(b, _)| b.addr.clone())
            })
            .unwrap_or_default()
    });
    Some(ReplicationView {
        leader: leader_addr,
        term,
        counted_from: counted.broker(topic).map(str::to_owned),
        healthy: replicas.iter().filter(|m| m.healthy).count(),
        total: replicas.len(),
        replicas,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::nsq::{ChannelStats, ReplicaStats, Stats};

    /// A member `id` at `addr` as the leader lists it.
    pub(crate) fn member(id: u64, addr: &str, state: &str, matched: u64, lag: u64) -> ReplicaStats {
        ReplicaStats {
            node_id: id,
            address: addr.into(),
            state: state.into(),
            matched: Some(matched),
            lag: Some(lag),
        }
    }

    /// Broker `addr` holding topic `t` (channel `c` of `depth`) as node `id` in `role`,
    /// following `leader`, listing `replicas`.
    pub(crate) fn copy(
        addr: &str,
        id: u64,
        role: &str,
        leader: Option<u64>,
        depth: u64,
        replicas: Vec<ReplicaStats>,
    ) -> BrokerSnap {
        BrokerSnap {
            addr: addr.into(),
            producer: None,
            info: None,
            disk_bytes: Default::default(),
            stats: Ok(Stats {
                health: "OK".into(),
                topics: vec![TopicStats {
                    topic_name: "t".into(),
                    message_count: depth,
                    channels: vec![ChannelStats {
                        channel_name: "c".into(),
                        depth,
                        ..ChannelStats::default()
                    }],
                    replication: Some(ReplicationStats {
                        delivering: role == "leader",
                        role: role.into(),
                        node_id: id,
                        term: 2,
                        leader,
                        commit_index: 10,
                        last_applied: 10 - id,
                        replicas,
                        ..ReplicationStats::default()
                    }),
                    ..TopicStats::default()
                }],
                ..Stats::default()
            }),
        }
    }

    pub(crate) fn snapshot(secs: u64, brokers: Vec<BrokerSnap>) -> Snapshot {
        Snapshot {
            taken: UNIX_EPOCH + Duration::from_secs(secs),
            lookupds: Vec::new(),
            brokers,
        }
    }

    fn three() -> Vec<ReplicaStats> {
        vec![
            member(1, "a:1", "voter", 10, 0),
            member(2, "b:1", "leader", 10, 0),
            member(3, "c:1", "voter", 7, 3),
        ]
    }

    #[test]
    fn the_leaders_copy_counts_else_the_most_applied() {
        let snap = snapshot(
            0,
            vec![
                copy("a:1", 1, "follower", Some(2), 5, vec![]),
                copy("b:1", 2, "leader", Some(2), 5, three()),
                copy("c:1", 3, "follower", Some(2), 5, vec![]),
            ],
        );
        let c = Counted::of(&snap);
        assert_eq!(c.broker("t"), Some("b:1"));
        assert!(c.counts("b:1", "t") && !c.counts("a:1", "t"));
        assert!(c.counts("a:1", "other"), "unreplicated topics always count");
        assert_eq!(counted(&snap).count(), 1);
        // No leader reachable: node 1 applied the most (10 - 1).
        let snap = snapshot(
            0,
            vec![
                copy("c:1", 3, "candidate", None, 5, vec![]),
                copy("a:1", 1, "follower", None, 5, vec![]),
            ],
        );
        assert_eq!(Counted::of(&snap).broker("t"), Some("a:1"));
    }

    #[test]
    fn the_panel_lists_members_with_the_leaders_lag() {
        let snap = snapshot(
            0,
            vec![
                copy("a:1", 1, "follower", Some(2), 5, three()),
                copy("b:1", 2, "leader", Some(2), 5, three()),
            ],
        );
        let v = view(&snap, "t").unwrap();
        assert_eq!(v.leader.as_deref(), Some("b:1"));
        assert_eq!((v.healthy, v.total, v.term), (2, 3, 2));
        assert_eq!(v.summary(), "2/3 · leader b:1");
        assert_eq!(v.counted_from.as_deref(), Some("b:1"));
        let c = &v.replicas[2];
        assert_eq!(
            (c.address.as_str(), c.role.as_str()),
            ("c:1", "unreachable")
        );
        assert_eq!((c.matched, c.lag, c.term), (Some(7), Some(3), None));
        assert!(!c.healthy && v.replicas[0].healthy);
        assert_eq!(v.replicas[0].last_applied, Some(9));
        assert!(view(&snapshot(0, vec![]), "t").is_none());
    }
}
