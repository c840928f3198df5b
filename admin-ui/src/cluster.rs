//! What the cluster looks like right now: the lookup daemons' view (`/nodes`, `/topics`) and
//! every broker's `/stats`, fetched in parallel into one [`Snapshot`]; from a Ferry broker
//! also `/metrics`, for what `/stats` lacks (the disk space of each topic's log, `metrics.rs`).
//!
//! Brokers are the ones given with `--broker-http-address` plus every broker a lookupd lists
//! in `/nodes` (`broadcast_address:http_port`), each once. A node that cannot be reached or
//! answers nonsense becomes an error inside the snapshot, never a failed snapshot: the pages
//! show it next to what the other nodes said.
//!
//! Pages and live streams share one cached snapshot ([`Cluster::snapshot`]); the tokio mutex
//! around the cache also makes concurrent callers wait for one fetch instead of each making
//! their own.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::join_all;
use tokio::sync::Mutex;

use crate::config::Config;
use crate::metrics;
use crate::nsq::{self, BrokerInfo, Nodes, Producer, Stats, Topics};
use crate::upstream::{Upstream, UpstreamError, query};

/// One lookup daemon's answers.
#[derive(Debug, Clone)]
pub struct LookupdSnap {
    /// Its HTTP address as configured.
    pub addr: String,
    /// `/nodes` and `/topics`, or why they could not be had.
    pub result: Result<LookupdData, String>,
}

/// What a lookupd knows.
#[derive(Debug, Clone, Default)]
pub struct LookupdData {
    /// Registered brokers.
    pub producers: Vec<Producer>,
    /// Registered topics.
    pub topics: Vec<String>,
}

/// One broker's answers.
#[derive(Debug, Clone)]
pub struct BrokerSnap {
    /// Its HTTP address (`host:port`).
    pub addr: String,
    /// How the lookupds describe it (None if only given with `--broker-http-address`).
    pub producer: Option<Producer>,
    /// `/info`, asked only when no lookupd describes the broker.
    pub info: Option<BrokerInfo>,
    /// `/stats?format=json`, or why it could not be had.
    pub stats: Result<Stats, String>,
    /// Disk space of each topic's log, from a Ferry broker's `/metrics` (empty for nsqd, or
    /// when `/metrics` could not be had).
    pub disk_bytes: BTreeMap<String, u64>,
}

impl BrokerSnap {
    /// The broker's stats if it answered.
    pub fn ok(&self) -> Option<&Stats> {
        self.stats.as_ref().ok()
    }
}

/// The whole cluster at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When it was taken.
    pub taken: SystemTime,
    /// Every configured lookupd.
    pub lookupds: Vec<LookupdSnap>,
    /// Every known broker, in address order.
    pub brokers: Vec<BrokerSnap>,
}

impl Snapshot {
    /// Every error, as "node: reason" lines, lookupds first.
    pub fn errors(&self) -> Vec<String> {
        let lookupd = self
            .lookupds
            .iter()
            .filter_map(|l| l.result.as_ref().err().map(|e| format!("lookupd {e}")));
        let broker = self
            .brokers
            .iter()
            .filter_map(|b| b.stats.as_ref().err().map(|e| format!("broker {e}")));
        lookupd.chain(broker).collect()
    }

    /// Topics registered with any lookupd.
    pub fn lookupd_topics(&self) -> BTreeSet<String> {
        self.lookupds
            .iter()
            .filter_map(|l| l.result.as_ref().ok())
            .flat_map(|d| d.topics.iter().cloned())
            .collect()
    }
}

/// The cluster as configured: which lookupds and brokers to ask, and the cached snapshot.
#[derive(Debug)]
pub struct Cluster {
    upstream: Upstream,
    lookupds: Vec<String>,
    brokers: Vec<String>,
    cache: Mutex<Option<(Instant, Arc<Snapshot>)>>,
}

impl Cluster {
    /// A cluster view for `config`'s addresses.
    pub fn new(config: &Config) -> anyhow::Result<Cluster> {
        Ok(Cluster {
            upstream: Upstream::new(config)?,
            lookupds: dedup(&config.lookupd_http_addresses),
            brokers: dedup(&config.broker_http_addresses),
            cache: Mutex::new(None),
        })
    }

    /// The HTTP client.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Configured lookupd addresses.
    pub fn lookupd_addrs(&self) -> &[String] {
        &self.lookupds
    }

    /// Configured broker addresses.
    pub fn broker_addrs(&self) -> &[String] {
        &self.brokers
    }

    /// A snapshot no older than `max_age`: the cached one, or a fresh fetch (one at a time).
    pub async fn snapshot(&self, max_age: Duration) -> Arc<Snapshot> {
        let mut cache = self.cache.lock().await;
        if let Some((at, snap)) = cache.as_ref()
            && at.elapsed() <= max_age
        {
            return snap.clone();
        }
        let snap = Arc::new(self.fetch().await);
        *cache = Some((Instant::now(), snap.clone()));
        snap
    }

    /// Forgets the cached snapshot (after an action changed the cluster).
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    /// Asks every lookupd, then every broker, in parallel.
    pub async fn fetch(&self) -> Snapshot {
        let lookupds: Vec<LookupdSnap> =
            join_all(self.lookupds.iter().map(|addr| self.fetch_lookupd(addr))).await;
        // Brokers: configured first, then those the lookupds know, each address once.
        let mut targets: Vec<(String, Option<Producer>)> =
            self.brokers.iter().map(|a| (a.clone(), None)).collect();
        for data in lookupds.iter().filter_map(|l| l.result.as_ref().ok()) {
            for p in &data.producers {
                let addr = p.http_address();
                match targets.iter_mut().find(|(a, _)| *a == addr) {
                    Some((_, slot @ None)) => *slot = Some(p.clone()),
                    Some(_) => {}
                    None => targets.push((addr, Some(p.clone()))),
                }
            }
        }
        let mut brokers: Vec<BrokerSnap> = join_all(
            targets
                .into_iter()
                .map(|(addr, producer)| self.fetch_broker(addr, producer)),
        )
        .await;
        brokers.sort_by(|a, b| a.addr.cmp(&b.addr));
        Snapshot {
            taken: SystemTime::now(),
            lookupds,
            brokers,
        }
    }

    async fn fetch_lookupd(&self, addr: &str) -> LookupdSnap {
        let nodes = self.upstream.get_json::<Nodes>(addr, "/nodes");
        let topics = self.upstream.get_json::<Topics>(addr, "/topics");
        let result = match tokio::join!(nodes, topics) {
            (Ok(nodes), Ok(topics)) => Ok(LookupdData {
                producers: nodes.producers,
                topics: topics.topics,
            }),
            (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
        };
        LookupdSnap {
            addr: addr.to_owned(),
            result,
        }
    }

    async fn fetch_broker(&self, addr: String, producer: Option<Producer>) -> BrokerSnap {
        let stats = self.upstream.get_json::<Stats>(&addr, "/stats?format=json");
        let (stats, info) = if producer.is_some() {
            (stats.await, None)
        } else {
            let info = self.upstream.get_json::<BrokerInfo>(&addr, "/info");
            let (stats, info) = tokio::join!(stats, info);
            (stats, info.ok())
        };
        // Only Ferry's brokers have it; nsqd would answer 404 on every refresh.
        let is_ferry = stats.as_ref().is_ok_and(|s| s.version.starts_with("ferry"));
        let disk_bytes = if is_ferry {
            match self.upstream.get_text(&addr, "/metrics").await {
                Ok(text) => metrics::topic_disk_bytes(&text),
                Err(e) => {
                    tracing::debug!(broker = %addr, error = %e, "no disk figures from /metrics");
                    BTreeMap::new()
                }
            }
        } else {
            BTreeMap::new()
        };
        BrokerSnap {
            addr,
            producer,
            info,
            stats: stats.map_err(|e| e.to_string()),
            disk_bytes,
        }
    }

    /// Channels a lookupd has registered for `topic` (`/channels?topic=`).
    pub async fn lookupd_channels(
        &self,
        lookupd: &str,
        topic: &str,
    ) -> Result<Vec<String>, UpstreamError> {
        let path = format!("/channels{}", query(&[("topic", topic)]));
        let reply: nsq::Channels = self.upstream.get_json(lookupd, &path).await?;
        Ok(reply.channels)
    }

    /// Brokers a lookupd lists for `topic` (`/lookup?topic=`); an unknown topic is no broker.
    pub async fn lookupd_producers(
        &self,
        lookupd: &str,
        topic: &str,
    ) -> Result<Vec<Producer>, UpstreamError> {
        let path = format!("/lookup{}", query(&[("topic", topic)]));
        match self.upstream.get_json::<nsq::Lookup>(lookupd, &path).await {
            Ok(reply) => Ok(reply.producers),
            Err(e) if e.status() == Some(404) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

fn dedup(addrs: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(addrs.len());
    for a in addrs {
        let a = a.trim().to_owned();
        if !a.is_empty() && !out.contains(&a) {
            out.push(a);
        }
    }
    out
}
