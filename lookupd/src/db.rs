//! The registration database: which broker (peer) holds which topic and channel.
//!
//! nsqlookupd's model, in one plain struct that the caller keeps behind one lock (see
//! [`crate::shared::Shared`]):
//!
//! ```text
//! registrations: Registration ──────────────▶ { PeerId ─▶ Membership { tombstoned_at } }
//!                (category, key, subkey)
//!                ("client",  "",      "")      every identified peer
//!                ("topic",   "orders", "")     peers that hold topic "orders"
//!                ("channel", "orders", "ship") peers that hold that channel
//! peers:         PeerId ─▶ Peer { PeerInfo, remote_address, last_update, registrations }
//! ```
//!
//! Invariants:
//! - a peer id is a member of a registration iff that registration is in the peer's
//!   `registrations` set (the reverse index that makes a disconnect O(its registrations));
//! - every member of a registration is a known peer;
//! - a registration may have no member: one created over HTTP, or one whose brokers left
//!   (nsqlookupd keeps those, so `/topics` still lists them), except that an `#ephemeral`
//!   registration is dropped when its last member goes, and with an ephemeral topic go its
//!   channels that have no member left.
//!
//! Reads never hide registrations, only producers: a peer whose last PING (or IDENTIFY) is older
//! than the inactive-producer timeout is left out of [`lookup`](RegistrationDb::lookup) and
//! [`nodes`](RegistrationDb::nodes), and a tombstoned topic membership is left out of `lookup`
//! for the tombstone lifetime. Time is passed in (`now`), so the rules are testable without
//! sleeping.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use ferry_proto::lookup::PeerInfo;
use ferry_proto::names::is_ephemeral;
use serde::Serialize;

/// A broker connection's id, unique for the life of the daemon.
pub type PeerId = u64;

/// What a registration is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// Every identified peer (key and subkey empty).
    Client,
    /// A topic (key = topic, subkey empty).
    Topic,
    /// A channel (key = topic, subkey = channel).
    Channel,
}

impl Category {
    /// nsqlookupd's name for the category.
    pub const fn as_str(self) -> &'static str {
        match self {
            Category::Client => "client",
            Category::Topic => "topic",
            Category::Channel => "channel",
        }
    }
}

/// One key of the database. Ordered by category, then key, then subkey, so the channels of a
/// topic are one contiguous range.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Registration {
    /// Client, topic or channel.
    pub category: Category,
    /// Topic name (empty for a client).
    pub key: String,
    /// Channel name (empty unless a channel).
    pub subkey: String,
}

impl Registration {
    /// The registration every identified peer has.
    pub fn client() -> Registration {
        Registration {
            category: Category::Client,
            key: String::new(),
            subkey: String::new(),
        }
    }

    /// A topic's registration.
    pub fn topic(topic: &str) -> Registration {
        Registration {
            category: Category::Topic,
            key: topic.to_owned(),
            subkey: String::new(),
        }
    }

    /// A channel's registration.
    pub fn channel(topic: &str, channel: &str) -> Registration {
        Registration {
            category: Category::Channel,
            key: topic.to_owned(),
            subkey: channel.to_owned(),
        }
    }

    /// Whether the registration vanishes with its last member.
    fn is_ephemeral(&self) -> bool {
        match self.category {
            Category::Client => false,
            Category::Topic => is_ephemeral(&self.key),
            Category::Channel => is_ephemeral(&self.subkey),
        }
    }
}

impl fmt::Display for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "category:{} key:{} subkey:{}",
            self.category.as_str(),
            self.key,
            self.subkey
        )
    }
}

/// A broker as `/lookup` shows it (field order is nsqlookupd's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Producer {
    /// Address of the broker's connection to this lookupd, as `ip:port`.
    pub remote_address: String,
    /// The broker's host name.
    pub hostname: String,
    /// Address clients should connect to.
    pub broadcast_address: String,
    /// The broker's TCP port.
    pub tcp_port: u16,
    /// The broker's HTTP port.
    pub http_port: u16,
    /// The broker's version.
    pub version: String,
}

/// A broker as `/nodes` shows it: its producer fields, its topics and, for each topic, whether
/// it is tombstoned there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The broker.
    #[serde(flatten)]
    pub producer: Producer,
    /// `tombstones[i]`: whether the broker is tombstoned for `topics[i]`.
    pub tombstones: Vec<bool>,
    /// Topics the broker registered, sorted.
    pub topics: Vec<String>,
}

/// The answer to `/lookup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lookup {
    /// The topic's channels, sorted.
    pub channels: Vec<String>,
    /// Active, not tombstoned brokers that hold the topic.
    pub producers: Vec<Producer>,
}

#[derive(Debug)]
struct Peer {
    info: PeerInfo,
    remote_address: String,
    last_update: Instant,
    registrations: BTreeSet<Registration>,
}

impl Peer {
    fn producer(&self) -> Producer {
        Producer {
            remote_address: self.remote_address.clone(),
            hostname: self.info.hostname.clone(),
            broadcast_address: self.info.broadcast_address.clone(),
            tcp_port: self.info.tcp_port,
            http_port: self.info.http_port,
            version: self.info.version.clone(),
        }
    }
}

/// A peer's membership in one registration (nsqlookupd's `Producer`).
#[derive(Debug, Clone, Copy, Default)]
struct Membership {
    tombstoned_at: Option<Instant>,
}

type Members = BTreeMap<PeerId, Membership>;

/// The database. Not synchronised: the caller holds it behind one lock.
#[derive(Debug)]
pub struct RegistrationDb {
    registrations: BTreeMap<Registration, Members>,
    peers: HashMap<PeerId, Peer>,
    inactive_producer_timeout: Duration,
    tombstone_lifetime: Duration,
}

impl RegistrationDb {
    /// An empty database with the daemon's two time limits.
    pub fn new(inactive_producer_timeout: Duration, tombstone_lifetime: Duration) -> Self {
        RegistrationDb {
            registrations: BTreeMap::new(),
            peers: HashMap::new(),
            inactive_producer_timeout,
            tombstone_lifetime,
        }
    }

    // ---- brokers (TCP) ----

    /// A peer IDENTIFYed: remembers it and registers it as a client.
    /// An id that is already known starts over (its registrations are removed first).
    pub fn add_peer(&mut self, id: PeerId, info: PeerInfo, remote_address: String, now: Instant) {
        if self.peers.contains_key(&id) {
            self.remove_peer(id);
        }
        self.peers.insert(
            id,
            Peer {
                info,
                remote_address,
                last_update: now,
                registrations: BTreeSet::new(),
            },
        );
        self.add_member(Registration::client(), id);
    }

    /// A peer PINGed: refreshes its last update. Returns the time since the previous one.
    pub fn touch(&mut self, id: PeerId, now: Instant) -> Option<Duration> {
        let peer = self.peers.get_mut(&id)?;
        let since = now.saturating_duration_since(peer.last_update);
        peer.last_update = now;
        Some(since)
    }

    /// A peer disconnected: removes it from every registration. Returns those registrations.
    pub fn remove_peer(&mut self, id: PeerId) -> Vec<Registration> {
        let Some(peer) = self.peers.get(&id) else {
            return Vec::new();
        };
        // Channels before their topic, so that an ephemeral topic that goes takes its emptied
        // channels with it.
        let registrations: Vec<Registration> = peer.registrations.iter().rev().cloned().collect();
        for reg in &registrations {
            self.remove_member(reg, id);
        }
        self.peers.remove(&id);
        registrations
    }

    /// `REGISTER topic [channel]`: the peer holds the topic (and the channel). Returns the
    /// registrations it was not yet a member of.
    pub fn register(
        &mut self,
        id: PeerId,
        topic: &str,
        channel: Option<&str>,
    ) -> Vec<Registration> {
        let mut added = Vec::new();
        if !self.peers.contains_key(&id) {
            return added;
        }
        if let Some(channel) = channel {
            let reg = Registration::channel(topic, channel);
            if self.add_member(reg.clone(), id) {
                added.push(reg);
            }
        }
        let reg = Registration::topic(topic);
        if self.add_member(reg.clone(), id) {
            added.push(reg);
        }
        added
    }

    /// `UNREGISTER topic [channel]`: the peer no longer holds the channel, or the topic and all
    /// its channels (it deleted them). Returns the registrations it left. A registration this
    /// leaves with no producer goes (a topic's with its channels that have none either), so a
    /// deleted topic or channel is not listed as a ghost; nsqlookupd keeps them unless
    /// ephemeral. (A broker that merely disconnects keeps its registrations listed, as there.)
    pub fn unregister(
        &mut self,
        id: PeerId,
        topic: &str,
        channel: Option<&str>,
    ) -> Vec<Registration> {
        let Some(peer) = self.peers.get(&id) else {
            return Vec::new();
        };
        let targets: Vec<Registration> = match channel {
            Some(channel) => vec![Registration::channel(topic, channel)],
            None => {
                let mut regs: Vec<Registration> = peer
                    .registrations
                    .iter()
                    .filter(|r| r.category == Category::Channel && r.key == topic)
                    .cloned()
                    .collect();
                regs.push(Registration::topic(topic));
                regs
            }
        };
        let left: Vec<Registration> = targets
            .into_iter()
            .filter(|reg| self.remove_member(reg, id))
            .collect();
        for reg in &left {
            if self.registrations.get(reg).is_some_and(|m| m.is_empty()) {
                self.registrations.remove(reg);
            }
        }
        if channel.is_none() && !self.registrations.contains_key(&Registration::topic(topic)) {
            let orphans: Vec<Registration> = self
                .channel_registrations(topic)
                .filter(|ch| self.registrations[*ch].is_empty())
                .cloned()
                .collect();
            for orphan in orphans {
                self.registrations.remove(&orphan);
            }
        }
        left
    }

    // ---- administration (HTTP) ----

    /// `/topic/create`: the topic exists, with or without brokers.
    pub fn create_topic(&mut self, topic: &str) {
        self.registrations
            .entry(Registration::topic(topic))
            .or_default();
    }

    /// `/channel/create`: the channel and its topic exist.
    pub fn create_channel(&mut self, topic: &str, channel: &str) {
        self.registrations
            .entry(Registration::channel(topic, channel))
            .or_default();
        self.create_topic(topic);
    }

    /// `/topic/delete`: forgets the topic and its channels, brokers included. Returns whether
    /// there was anything to forget.
    pub fn delete_topic(&mut self, topic: &str) -> bool {
        let mut regs: Vec<Registration> = self.channel_registrations(topic).cloned().collect();
        regs.push(Registration::topic(topic));
        let mut any = false;
        for reg in regs {
            any |= self.remove_registration(&reg);
        }
        any
    }

    /// `/channel/delete`: forgets the channel. Returns false if it was not known.
    pub fn delete_channel(&mut self, topic: &str, channel: &str) -> bool {
        self.remove_registration(&Registration::channel(topic, channel))
    }

    /// `/topic/tombstone`: hides the broker `node` (`broadcast_address:http_port`) from the
    /// topic's lookups for the tombstone lifetime. Returns how many memberships were marked.
    pub fn tombstone(&mut self, topic: &str, node: &str, now: Instant) -> usize {
        let Some(members) = self.registrations.get_mut(&Registration::topic(topic)) else {
            return 0;
        };
        let mut marked = 0;
        for (id, membership) in members.iter_mut() {
            let Some(peer) = self.peers.get(id) else {
                continue;
            };
            let address = format!("{}:{}", peer.info.broadcast_address, peer.info.http_port);
            if address == node {
                membership.tombstoned_at = Some(now);
                marked += 1;
            }
        }
        marked
    }

    // ---- queries ----

    /// `/lookup`: the topic's channels and its active, not tombstoned brokers; `None` if the
    /// topic is not registered.
    pub fn lookup(&self, topic: &str, now: Instant) -> Option<Lookup> {
        let members = self.registrations.get(&Registration::topic(topic))?;
        let mut producers: Vec<Producer> = members
            .iter()
            .filter(|(_, m)| !self.is_tombstoned(m, now))
            .filter_map(|(id, _)| self.active_peer(*id, now))
            .map(Peer::producer)
            .collect();
        sort_producers(&mut producers);
        Some(Lookup {
            channels: self.channels(topic),
            producers,
        })
    }

    /// `/topics`: every registered topic, sorted.
    pub fn topics(&self) -> Vec<String> {
        let start = Registration::topic("");
        self.registrations
            .range(start..)
            .map(|(reg, _)| reg)
            .take_while(|reg| reg.category == Category::Topic)
            .map(|reg| reg.key.clone())
            .collect()
    }

    /// `/channels`: the topic's registered channels, sorted.
    pub fn channels(&self, topic: &str) -> Vec<String> {
        self.channel_registrations(topic)
            .map(|reg| reg.subkey.clone())
            .collect()
    }

    /// `/nodes`: every active broker with its topics and tombstones (tombstoned brokers are
    /// listed: the tombstones say where).
    pub fn nodes(&self, now: Instant) -> Vec<Node> {
        let Some(clients) = self.registrations.get(&Registration::client()) else {
            return Vec::new();
        };
        let mut nodes: Vec<Node> = clients
            .keys()
            .filter_map(|id| Some((*id, self.active_peer(*id, now)?)))
            .map(|(id, peer)| {
                let topics: Vec<String> = peer
                    .registrations
                    .iter()
                    .filter(|reg| reg.category == Category::Topic)
                    .map(|reg| reg.key.clone())
                    .collect();
                let tombstones = topics
                    .iter()
                    .map(|topic| {
                        self.registrations
                            .get(&Registration::topic(topic))
                            .and_then(|members| members.get(&id))
                            .is_some_and(|m| self.is_tombstoned(m, now))
                    })
                    .collect();
                Node {
                    producer: peer.producer(),
                    tombstones,
                    topics,
                }
            })
            .collect();
        nodes.sort_by(|a, b| producer_order(&a.producer, &b.producer));
        nodes
    }

    /// Number of connected, identified peers (active or not).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    // ---- internals ----

    fn channel_registrations<'a>(
        &'a self,
        topic: &'a str,
    ) -> impl Iterator<Item = &'a Registration> + 'a {
        let start = Registration::channel(topic, "");
        self.registrations
            .range(start..)
            .map(|(reg, _)| reg)
            .take_while(move |reg| reg.category == Category::Channel && reg.key == topic)
    }

    fn active_peer(&self, id: PeerId, now: Instant) -> Option<&Peer> {
        self.peers.get(&id).filter(|peer| {
            now.saturating_duration_since(peer.last_update) <= self.inactive_producer_timeout
        })
    }

    fn is_tombstoned(&self, membership: &Membership, now: Instant) -> bool {
        membership
            .tombstoned_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.tombstone_lifetime)
    }

    /// Makes `id` a member of `reg`; false if it already was (its tombstone is kept).
    fn add_member(&mut self, reg: Registration, id: PeerId) -> bool {
        let Some(peer) = self.peers.get_mut(&id) else {
            return false;
        };
        peer.registrations.insert(reg.clone());
        let members = self.registrations.entry(reg).or_default();
        if members.contains_key(&id) {
            return false;
        }
        members.insert(id, Membership::default());
        true
    }

    /// Takes `id` out of `reg`; false if it was not a member. An ephemeral registration left
    /// without members goes, and an ephemeral topic takes its member-less channels along.
    fn remove_member(&mut self, reg: &Registration, id: PeerId) -> bool {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.registrations.remove(reg);
        }
        let Some(members) = self.registrations.get_mut(reg) else {
            return false;
        };
        let removed = members.remove(&id).is_some();
        if members.is_empty() && reg.is_ephemeral() {
            self.registrations.remove(reg);
            if reg.category == Category::Topic {
                let orphans: Vec<Registration> = self
                    .channel_registrations(&reg.key)
                    .filter(|ch| self.registrations[*ch].is_empty())
                    .cloned()
                    .collect();
                for orphan in orphans {
                    self.registrations.remove(&orphan);
                }
            }
        }
        removed
    }

    /// Forgets `reg` and its members; false if it was not known.
    fn remove_registration(&mut self, reg: &Registration) -> bool {
        let Some(members) = self.registrations.remove(reg) else {
            return false;
        };
        for id in members.keys() {
            if let Some(peer) = self.peers.get_mut(id) {
                peer.registrations.remove(reg);
            }
        }
        true
    }

    /// Panics if the reverse index disagrees with the registrations (tests only).
    #[cfg(test)]
    fn check_invariants(&self) {
        for (reg, members) in &self.registrations {
            for id in members.keys() {
                let peer = self
                    .peers
                    .get(id)
                    .unwrap_or_else(|| panic!("{reg} has unknown member {id}"));
                assert!(peer.registrations.contains(reg), "{reg} missing from {id}");
            }
        }
        for (id, peer) in &self.peers {
            for reg in &peer.registrations {
                assert!(
                    self.registrations
                        .get(reg)
                        .is_some_and(|m| m.contains_key(id)),
                    "peer {id} lists {reg} but is not a member"
                );
            }
        }
    }
}

fn producer_order(a: &Producer, b: &Producer) -> std::cmp::Ordering {
    (
        &a.broadcast_address,
        a.tcp_port,
        a.http_port,
        &a.remote_address,
    )
        .cmp(&(
            &b.broadcast_address,
            b.tcp_port,
            b.http_port,
            &b.remote_address,
        ))
}

fn sort_producers(producers: &mut [Producer]) {
    producers.sort_by(producer_order);
}

#[cfg(test)]
#[path = "db_tests.rs"]
mod tests;
