//! The lookup page: what the lookup daemons have registered (topics, their channels, how many
//! brokers hold each), including topics no broker holds any more, which is what an operator
//! comes here to find and clean up.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::future::join_all;
use serde::Serialize;

use crate::cluster::{Cluster, Snapshot};

/// One registered topic.
#[derive(Debug, Clone, Serialize)]
pub struct LookupTopic {
    /// Name.
    pub name: String,
    /// Registered channels (union over lookupds).
    pub channels: Vec<String>,
    /// Brokers registered for it (over all lookupds, each broker once).
    pub producers: usize,
}

/// The lookup page.
#[derive(Debug, Clone, Serialize)]
pub struct LookupView {
    /// Lookupd addresses asked.
    pub lookupds: Vec<String>,
    /// Registered topics, by name.
    pub topics: Vec<LookupTopic>,
    /// Lookupds that failed.
    pub errors: Vec<String>,
}

/// Builds the lookup page from the snapshot's `/nodes` + `/topics`, asking each lookupd for
/// each topic's channels (`/channels?topic=`).
pub async fn view(cluster: &Cluster, snapshot: &Snapshot) -> LookupView {
    let mut producers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut asks = Vec::new();
    for l in &snapshot.lookupds {
        match &l.result {
            Err(e) => errors.push(format!("lookupd {e}")),
            Ok(data) => {
                for t in &data.topics {
                    producers.entry(t.clone()).or_default();
                    asks.push((l.addr.clone(), t.clone()));
                }
                for p in &data.producers {
                    for (i, t) in p.topics.iter().enumerate() {
                        if p.tombstones.get(i).copied().unwrap_or(false) {
                            continue;
                        }
                        producers
                            .entry(t.clone())
                            .or_default()
                            .insert(p.http_address());
                    }
                }
            }
        }
    }
    let answers =
        join_all(asks.iter().map(|(addr, topic)| async move {
            (topic, cluster.lookupd_channels(addr, topic).await)
        }))
        .await;
    let mut channels: BTreeMap<&String, BTreeSet<String>> = BTreeMap::new();
    for (topic, answer) in answers {
        match answer {
            Ok(list) => channels.entry(topic).or_default().extend(list),
            Err(e) => errors.push(format!("lookupd {e}")),
        }
    }
    let topics = producers
        .iter()
        .map(|(name, brokers)| LookupTopic {
            name: name.clone(),
            channels: channels
                .get(name)
                .map(|c| c.iter().cloned().collect())
                .unwrap_or_default(),
            producers: brokers.len(),
        })
        .collect();
    LookupView {
        lookupds: cluster.lookupd_addrs().to_vec(),
        topics,
        errors,
    }
}
