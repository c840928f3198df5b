//! Replicated topics in the broker (ARCHITECTURE.md, "Replicated topics"): a topic whose
//! directory holds `raft/` is one replica of a Raft group (`ferry-replica`).
//!
//! - Creation (`POST /topic/create?topic=T&replicas=N`): the broker asked picks N-1 other
//!   brokers among those lookupd lists (fewest topics first), asks each to join
//!   (`POST /raft/join?topic=T&first_seq=S`: an empty replica whose log starts at `S`), makes
//!   its own, and initialises the group's membership with all N.
//! - Publishing: [`Broker::append`](crate::broker::Broker::append) hands a replicated topic's
//!   batch to [`Broker::propose_publish`]: proposed here if this broker leads, else forwarded
//!   to the leader; answered once committed on a majority and applied, with the sequences it
//!   got. Every replica's [`TopicState`] appends the committed batch with the leader's times,
//!   so message IDs agree everywhere.
//! - Delivery: a task per group follows the node's role; only the leader's channels hand out
//!   messages (`Topic::set_leading`), and a new leader wakes the consumers already waiting.
//! - Restart: [`Broker::start_replicas`] restarts the node of every replicated topic found.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use anyhow::Context;
use ferry_replica::{
    Admin, Applied, Apply, Batch, BoxFuture, ChannelOp, Command, Groups, HttpNetworkFactory,
    Install, Node, NodeId, ProposeError, Raft, RaftLog, StateMachine, SyncMode, propose_local,
    propose_remote,
};
use ferry_store::{JournalOp, NewRecord};
use openraft::ServerState;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::broker::Broker;
use crate::topic::{PublishError, Topic};

pub mod snapshot;

/// The subdirectory of a replicated topic's directory that holds its Raft log and state.
pub const RAFT_DIR: &str = "raft";
/// Largest Raft log file (the log is purged by whole files).
const RAFT_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// How long a publish waits for a leader (an election under way) before it fails.
const LEADER_WAIT: Duration = Duration::from_secs(5);
/// Pause between two tries of a publish while there is no leader.
const RETRY: Duration = Duration::from_millis(100);
/// How often a leader looks for members that stopped following (a broker back on a wiped
/// disk answers on the member's address under a new node id).
const REPAIR_EVERY: Duration = Duration::from_secs(1);

/// A leader delivers only while a majority answered it this recently (`ELECTION_TIMEOUT`, the
/// shortest time after which another node may start an election, and less than the leader
/// lease other nodes wait before they vote): a leader cut off from the others stops before a
/// new one can be elected, so two leaders never deliver at the same time.
const QUORUM_LOST_AFTER: Duration = ferry_replica::ELECTION_TIMEOUT;
/// How often the role is checked when nothing else changes.
const QUORUM_CHECK: Duration = Duration::from_millis(100);

/// Whether this node's channels deliver: it leads and a majority acknowledged it lately.
fn delivers(m: &openraft::RaftMetrics<NodeId, Node>) -> bool {
    m.state == ServerState::Leader
        && m.millis_since_quorum_ack
            .is_some_and(|ms| ms < QUORUM_LOST_AFTER.as_millis() as u64)
}

/// Tests only: an HTTP proxy this broker's Raft traffic goes through.
const TEST_PROXY_ENV: &str = "FERRY_TEST_RAFT_PROXY";

/// Whether the topic directory `dir` is a replica of a group.
pub fn is_replicated_dir(dir: &Path) -> bool {
    dir.join(RAFT_DIR).is_dir()
}

/// This broker's replication state: its node id and the groups it is a member of.
pub struct Replication {
    node_id: NodeId,
    groups: RwLock<HashMap<String, Raft>>,
    /// Raft RPCs, joins and forwarded publishes.
    client: reqwest::Client,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Groups for Replication {
    fn group(&self, topic: &str) -> Option<Raft> {
        self.groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
            .cloned()
    }
}

impl Replication {
    /// The data directory's node id (made at its first start) and no groups yet.
    pub fn open(data_path: &Path, connect_timeout: Duration) -> anyhow::Result<Replication> {
        let node_id = ferry_replica::node_id::load_or_create(data_path).with_context(|| {
            format!("cannot read or make the node id in {}", data_path.display())
        })?;
        // Raft traffic goes straight to the other brokers, whatever proxy the environment
        // names; a test can put its own in the way to cut a broker off (a partition).
        let builder = reqwest::Client::builder().connect_timeout(connect_timeout);
        let builder = match std::env::var(TEST_PROXY_ENV) {
            Ok(proxy) => builder.proxy(reqwest::Proxy::http(&proxy).context("bad test proxy")?),
            Err(_) => builder.no_proxy(),
        };
        let client = builder
            .build()
            .context("cannot build the replication HTTP client")?;
        Ok(Replication {
            node_id,
            groups: RwLock::default(),
            client,
        })
    }

    /// This broker's node id in every group.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    fn insert(&self, topic: &str, raft: Raft) {
        self.groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.to_owned(), raft);
    }

    /// Stops and forgets `topic`'s node (the topic was deleted).
    pub(crate) async fn remove(&self, topic: &str) {
        let raft = self
            .groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(topic);
        if let Some(raft) = raft
            && let Err(e) = raft.shutdown().await
        {
            warn!(topic, error = %e, "raft node did not stop cleanly");
        }
    }

    /// Stops every node (the broker is stopping).
    pub(crate) async fn shutdown_all(&self) {
        let all: Vec<(String, Raft)> = self
            .groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        for (topic, raft) in all {
            if let Err(e) = raft.shutdown().await {
                warn!(topic, error = %e, "raft node did not stop cleanly");
            }
        }
    }
}

/// A replica's state machine: the topic's log and its channels.
struct TopicState {
    topic: Weak<Topic>,
    /// This broker's node id.
    me: NodeId,
    /// This broker's address in the group.
    addr: String,
    /// Fetches the messages a snapshot names.
    client: reqwest::Client,
    /// Deletes the topic when the group says so.
    broker: Weak<Broker>,
}

fn journal_op(op: ChannelOp) -> JournalOp {
    match op {
        ChannelOp::Finish { seq } => JournalOp::Finish { seq },
        ChannelOp::Requeue {
            seq,
            attempts,
            deliver_at_ns,
        } => JournalOp::Requeue {
            seq,
            attempts,
            deliver_at_ns,
        },
        ChannelOp::Empty { cursor } => JournalOp::Empty { cursor },
    }
}

fn channel_op(op: JournalOp) -> ChannelOp {
    match op {
        JournalOp::Finish { seq } => ChannelOp::Finish { seq },
        JournalOp::Requeue {
            seq,
            attempts,
            deliver_at_ns,
        } => ChannelOp::Requeue {
            seq,
            attempts,
            deliver_at_ns,
        },
        JournalOp::Empty { cursor } => ChannelOp::Empty { cursor },
    }
}

impl TopicState {
    fn topic(&self) -> io::Result<Arc<Topic>> {
        self.topic
            .upgrade()
            .ok_or_else(|| io::Error::other("the topic is gone"))
    }
}

impl Apply for TopicState {
    fn next_seq(&self) -> u64 {
        self.topic.upgrade().map_or(0, |t| t.log().next_seq())
    }

    fn publish(&self, batch: &Batch) -> io::Result<Range<u64>> {
        let topic = self.topic()?;
        let recs: Vec<NewRecord<'_>> = batch
            .bodies()
            .map(|body| NewRecord {
                timestamp_ns: batch.timestamp_ns,
                deliver_at_ns: batch.deliver_at_ns,
                body,
            })
            .collect();
        topic.append_records(&recs).map_err(io::Error::other)
    }

    fn channel_ops(&self, origin: NodeId, channel: &str, ops: &[ChannelOp]) -> io::Result<()> {
        let topic = self.topic()?;
        // The leader made them on its own channels; a replica that leads now has live
        // deliveries these ops know nothing of (ops of a leader before it arrive late), and
        // skips them: at worst it delivers a finished message again.
        if origin == self.me || topic.leads_group() {
            return Ok(());
        }
        let ops: Vec<JournalOp> = ops.iter().map(|op| journal_op(*op)).collect();
        topic.apply_channel_ops(channel, &ops);
        Ok(())
    }

    fn admin(&self, action: &Admin, index: u64) -> io::Result<bool> {
        let topic = self.topic()?;
        // The change is made in memory whatever happens to its save: a failed save is the
        // disk's trouble, not the group's (an apply error would stop the node).
        let saved = |what: &str, result: Result<bool, ferry_store::StoreError>| match result {
            Ok(found) => found,
            Err(e) => {
                warn!(topic = topic.name(), error = %e, "{what}: not saved");
                true
            }
        };
        Ok(match action {
            Admin::PauseTopic(paused) => {
                saved("topic pause", topic.set_paused(*paused).map(|()| true))
            }
            Admin::PauseChannel { channel, paused } => {
                saved("channel pause", topic.set_channel_paused(channel, *paused))
            }
            Admin::DeleteChannel { channel } => {
                saved("channel delete", topic.delete_channel(channel))
            }
            Admin::DeleteTopic => {
                let (broker, raft) = (self.broker.clone(), topic.replica().cloned());
                let name = topic.name().to_owned();
                tokio::runtime::Handle::try_current()
                    .map_err(io::Error::other)?
                    .spawn(delete_replica(broker, raft, name, index));
                true
            }
        })
    }

    fn snapshot(&self) -> io::Result<Vec<u8>> {
        self.topic()?.replica_manifest()
    }

    fn sync(&self) -> io::Result<()> {
        self.topic()?
            .log()
            .sync()
            .map(drop)
            .map_err(io::Error::other)
    }

    fn install(&self, mut install: Install) -> BoxFuture<io::Result<()>> {
        // The leader first: it holds the most.
        let leader = self.topic.upgrade().and_then(|t| {
            let m = t.replica()?.metrics().borrow().clone();
            let id = m.current_leader?;
            Some(m.membership_config.membership().get_node(&id)?.addr.clone())
        });
        install.sources.sort_by_key(|s| Some(s) != leader.as_ref());
        Box::pin(snapshot::install(
            self.topic.clone(),
            self.client.clone(),
            self.addr.clone(),
            install,
        ))
    }
}

/// How long a leader that applied a topic delete waits for every member to have it before
/// its own replica goes (a member that missed it would be left with a group of its own).
const DELETE_GRACE: Duration = Duration::from_secs(5);

/// Deletes this broker's replica of `topic` once its group committed the delete (entry
/// `index`): at once on a follower; on the leader once every member has the entry (or after
/// [`DELETE_GRACE`]), since the group stops answering with it.
async fn delete_replica(broker: Weak<Broker>, raft: Option<Raft>, topic: String, index: u64) {
    if let Some(raft) = raft {
        let give_up = tokio::time::Instant::now() + DELETE_GRACE;
        let mut metrics = raft.metrics();
        loop {
            let all_have = {
                let m = metrics.borrow_and_update();
                match (&m.replication, m.state) {
                    (Some(r), ServerState::Leader) => r
                        .values()
                        .all(|matched| matched.is_some_and(|l| l.index >= index)),
                    _ => true,
                }
            };
            if all_have {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(give_up) => break,
                changed = metrics.changed() => if changed.is_err() { break },
            }
        }
    }
    let Some(broker) = broker.upgrade() else {
        return;
    };
    let name = topic.clone();
    match tokio::task::spawn_blocking(move || broker.delete_topic(&name)).await {
        Ok(_) => info!(topic, "replica deleted with its group"),
        Err(e) => warn!(topic, error = %e, "replica delete failed"),
    }
}

/// A leader's channel ops reach the group: each time the topic's sync journals ops (so at
/// most every `--sync-timeout` under load), they are proposed, one entry per channel, in order.
/// A proposal that fails while this node still leads is tried again (with what follows it):
/// a follower that missed a FIN would owe that message for ever. Once leadership is lost they
/// are dropped: the new leader delivers those messages again.
async fn propose_channel_ops(topic: Weak<Topic>, raft: Raft, me: NodeId) {
    let mut pending: std::collections::VecDeque<(String, Vec<JournalOp>)> = Default::default();
    loop {
        let Some(t) = topic.upgrade() else { return };
        let (cancel, ready) = (t.cancel.clone(), t.outbox_ready.clone());
        drop(t);
        if pending.is_empty() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ready.notified() => {}
            }
        } else {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
        let Some(t) = topic.upgrade() else { return };
        pending.extend(std::mem::take(
            &mut *t.outbox.lock().unwrap_or_else(PoisonError::into_inner),
        ));
        let name = t.name().to_owned();
        drop(t);
        while let Some((channel, ops)) = pending.pop_front() {
            let command = Command::Channels {
                origin: me,
                channel: channel.clone(),
                ops: ops.iter().copied().map(channel_op).collect(),
            };
            if let Err(e) = propose_local(&raft, command).await {
                if raft.metrics().borrow().state == ServerState::Leader {
                    warn!(topic = name, error = %e, "channel ops not replicated yet; trying again");
                    pending.push_front((channel, ops));
                } else {
                    warn!(topic = name, error = %e, "channel ops not replicated: leadership lost");
                    pending.clear();
                }
                break;
            }
        }
    }
}

/// A leader's watch over its group's members: a voter whose log has not moved for two checks
/// while behind is asked who it is (`GET /raft/node` on its address); a broker that answers
/// with another node id lost its disk, so it is asked to join again as an empty replica of
/// the group (log from the group's first sequence), added as a learner, which catches up
/// from the log, and then put in place of the lost member.
async fn repair_members(topic: Weak<Topic>, raft: Raft, client: reqwest::Client, me: NodeId) {
    let mut seen_behind: HashMap<NodeId, u64> = HashMap::new();
    loop {
        let Some(cancel) = topic.upgrade().map(|t| t.cancel.clone()) else {
            return;
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(REPAIR_EVERY) => {}
        }
        let m = raft.metrics().borrow().clone();
        let Some(replication) = m
            .replication
            .as_ref()
            .filter(|_| m.state == ServerState::Leader)
        else {
            seen_behind.clear();
            continue;
        };
        let membership = m.membership_config.membership();
        if membership.get_joint_config().len() > 1 {
            continue; // a change under way
        }
        let last = m.last_log_index.unwrap_or(0);
        let mut stuck = Vec::new();
        for id in membership.voter_ids().filter(|&id| id != me) {
            let matched = replication
                .get(&id)
                .copied()
                .flatten()
                .map_or(0, |l| l.index);
            if matched >= last {
                seen_behind.remove(&id);
            } else if seen_behind.insert(id, matched) == Some(matched)
                && let Some(node) = membership.get_node(&id)
            {
                stuck.push((id, node.addr.clone()));
            }
        }
        for (lost, addr) in stuck {
            let Some(t) = topic.upgrade() else { return };
            let (name, dir) = (t.name().to_owned(), t.dir().map(|d| d.join(RAFT_DIR)));
            drop(t);
            let Some(dir) = dir else { return };
            match replace_if_wiped(&raft, &client, &name, &dir, lost, &addr).await {
                Ok(Some(new)) => {
                    info!(
                        topic = name,
                        lost, new, addr, "replaced a member that lost its disk"
                    );
                    seen_behind.remove(&lost);
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(topic = name, member = lost, addr, error = %e, "cannot replace a member")
                }
            }
        }
    }
}

/// Replaces member `lost` by the node now answering on its address `addr`, if that is another
/// node (its disk was wiped); returns the new member's id.
async fn replace_if_wiped(
    raft: &Raft,
    client: &reqwest::Client,
    topic: &str,
    raft_dir: &Path,
    lost: NodeId,
    addr: &str,
) -> anyhow::Result<Option<NodeId>> {
    let Ok(reply) = client.get(format!("http://{addr}/raft/node")).send().await else {
        return Ok(None); // down: nothing to do but wait
    };
    let Ok(who) = reply.json::<Joined>().await else {
        return Ok(None);
    };
    if who.node_id == lost {
        return Ok(None); // the same node, only slow or restarting
    }
    let dir = raft_dir.to_path_buf();
    let first_seq = tokio::task::spawn_blocking(move || ferry_replica::group_first_seq(&dir))
        .await??
        .context("the group's first sequence is not recorded")?;
    let url = reqwest::Url::parse_with_params(
        &format!("http://{addr}/raft/join"),
        [("topic", topic), ("first_seq", &first_seq.to_string())],
    )?;
    let reply = client.post(url).send().await?;
    let status = reply.status();
    if !status.is_success() {
        let text = reply.text().await.unwrap_or_default();
        anyhow::bail!("{addr} refused to join: {status} {text}");
    }
    let joined: Joined = reply.json().await?;
    raft.add_learner(joined.node_id, Node::new(addr.to_owned()), true)
        .await
        .map_err(|e| anyhow::anyhow!("cannot add {addr} as a learner: {e}"))?;
    let voters: std::collections::BTreeSet<NodeId> = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .filter(|&id| id != lost)
        .chain([joined.node_id])
        .collect();
    raft.change_membership(voters, false)
        .await
        .map_err(|e| anyhow::anyhow!("cannot put {addr} in place of node {lost}: {e}"))?;
    Ok(Some(joined.node_id))
}

/// Whether `topic`'s replica belongs to the group that starts at `first_seq` (each creation
/// picks its own); [`ReplicaError::OtherGroup`] if not.
async fn same_group(topic: &Topic, first_seq: u64) -> Result<(), ReplicaError> {
    let Some(dir) = topic.dir().map(|d| d.join(RAFT_DIR)) else {
        return Err(ReplicaError::OtherGroup(topic.name().to_owned()));
    };
    let ours = tokio::task::spawn_blocking(move || ferry_replica::group_first_seq(&dir))
        .await
        .context("reading the group's first sequence")?
        .context("reading the group's first sequence")?;
    if ours == Some(first_seq) {
        Ok(())
    } else {
        Err(ReplicaError::OtherGroup(topic.name().to_owned()))
    }
}

/// `/raft/join`'s and `/raft/node`'s answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Joined {
    /// The joining broker's node id.
    pub node_id: NodeId,
}

/// Why a replicated topic could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// Not enough brokers registered with lookupd.
    #[error("{0}")]
    TooFewBrokers(String),
    /// The topic exists on this broker without replicas.
    #[error("topic {0} exists without replicas")]
    ExistsUnreplicated(String),
    /// This broker already holds a replica of another group of that name.
    #[error("topic {0} is a replica of another group")]
    OtherGroup(String),
    /// The local replica could not be made.
    #[error(transparent)]
    Create(#[from] crate::creation::CreateError),
    /// Anything else (a broker that did not answer, storage).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Broker {
    /// This broker's address in its groups (what peers send Raft RPCs to): the broadcast
    /// address and HTTP port.
    pub fn raft_addr(&self) -> String {
        format!(
            "{}:{}",
            self.config.broadcast_address(),
            self.broadcast_ports().http
        )
    }

    /// Starts the Raft node of `topic`, a replica (its directory has `raft/`), before anyone
    /// can publish to it: from then on its publishes go through the group.
    pub(crate) async fn start_replica(
        self: &Arc<Self>,
        topic: &Arc<Topic>,
    ) -> anyhow::Result<Raft> {
        let dir = topic
            .dir()
            .context("an ephemeral topic cannot be replicated")?
            .join(RAFT_DIR);
        let mode = if self.config.sync_every <= 1 {
            SyncMode::Synced
        } else {
            SyncMode::Written
        };
        let state = Arc::new(TopicState {
            topic: Arc::downgrade(topic),
            me: self.replication().node_id,
            addr: self.raft_addr(),
            client: self.replication().client.clone(),
            broker: Arc::downgrade(self),
        });
        let first_seq = topic.log().first_seq();
        let (log, sm) = tokio::task::spawn_blocking(move || {
            let log = RaftLog::open(&dir, mode, RAFT_FILE_BYTES)?;
            let sm = StateMachine::open(&dir, state, first_seq)?;
            io::Result::Ok((log, sm))
        })
        .await??;
        let network = HttpNetworkFactory::new(self.replication().client.clone(), topic.name());
        let every = self.config.raft_snapshot_every;
        let config = Arc::new(ferry_replica::raft_config((every > 0).then_some(every))?);
        let raft = Raft::new(self.replication().node_id, config, network, log, sm)
            .await
            .context("cannot start the topic's raft node")?;
        topic.set_replica(raft.clone());
        self.replication().insert(topic.name(), raft.clone());
        let (weak, mut metrics, cancel) =
            (Arc::downgrade(topic), raft.metrics(), topic.cancel.clone());
        self.tracker.spawn(propose_channel_ops(
            Arc::downgrade(topic),
            raft.clone(),
            self.replication().node_id,
        ));
        self.tracker.spawn(repair_members(
            Arc::downgrade(topic),
            raft.clone(),
            self.replication().client.clone(),
            self.replication().node_id,
        ));
        let name = topic.name().to_owned();
        self.tracker.spawn(async move {
            let mut recheck = tokio::time::interval(QUORUM_CHECK);
            loop {
                let leading = delivers(&metrics.borrow_and_update());
                let Some(topic) = weak.upgrade() else { break };
                if leading != topic.is_leading() {
                    info!(topic = name, leading, "replica delivers: {leading}");
                    topic.set_leading(leading);
                }
                drop(topic);
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = recheck.tick() => {}
                    changed = metrics.changed() => if changed.is_err() { break },
                }
            }
        });
        Ok(raft)
    }

    /// Restarts the node of every replicated topic found at start.
    pub(crate) async fn start_replicas(self: &Arc<Self>) -> anyhow::Result<()> {
        for topic in self.topics() {
            if topic.dir().is_some_and(is_replicated_dir) {
                self.start_replica(&topic)
                    .await
                    .with_context(|| format!("cannot start replica of topic {}", topic.name()))?;
            }
        }
        Ok(())
    }

    /// A member's part of a new group: the topic, empty, its log starting at `first_seq`, its
    /// node running but not initialised (the creator does that). Joining again is harmless.
    pub async fn join_replicated_topic(
        self: &Arc<Self>,
        name: &str,
        first_seq: u64,
    ) -> Result<NodeId, ReplicaError> {
        // A consumer that found this broker through lookupd may have made the topic here by
        // subscribing (NSQ clients SUB wherever lookupd lists the topic), before the group
        // asked; with no message in it, it gives way to the replica. One with messages is
        // refused: they are not the group's.
        if let Some(topic) = self.topic(name)
            && topic.replica().is_none()
            && !topic.is_ephemeral()
            && topic.log().next_seq() == topic.log().first_seq()
        {
            info!(
                topic = name,
                "an empty topic made by a consumer gives way to the group's replica"
            );
            let (broker, topic_name) = (self.clone(), name.to_owned());
            tokio::task::spawn_blocking(move || broker.delete_topic(&topic_name))
                .await
                .context("topic delete")?;
        }
        let topic = self.get_or_create_replicated_topic(name, first_seq).await?;
        if topic.replica().is_none() {
            return Err(ReplicaError::ExistsUnreplicated(name.to_owned()));
        }
        // Joining again the group this replica is in is harmless (a leader's repeated repair);
        // a replica of another group of the same name (two brokers creating it at once) must
        // not take a second group's traffic.
        same_group(&topic, first_seq).await?;
        Ok(self.replication().node_id)
    }

    /// Creates `name` as a group of `replicas` brokers: this one and `replicas - 1` others that
    /// lookupd lists. Creating it again answers at once.
    pub async fn create_replicated_topic(
        self: &Arc<Self>,
        name: &str,
        replicas: usize,
    ) -> Result<(), ReplicaError> {
        if let Some(topic) = self.topic(name) {
            return match topic.replica() {
                Some(_) => Ok(()),
                None => Err(ReplicaError::ExistsUnreplicated(name.to_owned())),
            };
        }
        let peers = self.pick_peers(replicas - 1).await?;
        let first_seq = crate::clock::now_ns().max(1) as u64;
        let mut members: BTreeMap<NodeId, Node> = BTreeMap::new();
        for peer in &peers {
            let url = reqwest::Url::parse_with_params(
                &format!("http://{peer}/raft/join"),
                [("topic", name), ("first_seq", &first_seq.to_string())],
            )
            .context("bad peer address")?;
            let reply = self
                .http_client()
                .post(url)
                .send()
                .await
                .with_context(|| format!("broker {peer} did not answer the join"))?;
            let status = reply.status();
            if !status.is_success() {
                let text = reply.text().await.unwrap_or_default();
                return Err(
                    anyhow::anyhow!("broker {peer} refused to join: {status} {text}").into(),
                );
            }
            let joined: Joined = reply
                .json()
                .await
                .with_context(|| format!("broker {peer}: bad join answer"))?;
            members.insert(joined.node_id, Node::new(peer.clone()));
        }
        let topic = self.get_or_create_replicated_topic(name, first_seq).await?;
        let raft = topic
            .replica()
            .cloned()
            .ok_or_else(|| ReplicaError::ExistsUnreplicated(name.to_owned()))?;
        // Another broker creating the same topic at the same moment may have made it here as
        // a member of its group: that replica is not this creation's to initialise.
        same_group(&topic, first_seq).await?;
        members.insert(self.replication().node_id, Node::new(self.raft_addr()));
        match raft.initialize(members).await {
            Ok(()) => {}
            // Already initialised: a repeated create of the same group.
            Err(openraft::error::RaftError::APIError(
                openraft::error::InitializeError::NotAllowed(_),
            )) => {}
            Err(e) => return Err(anyhow::anyhow!("cannot form the group: {e}").into()),
        }
        info!(topic = name, replicas, peers = ?peers, "replicated topic created");
        Ok(())
    }

    /// HTTP addresses of `count` other brokers that lookupd lists, fewest topics first.
    async fn pick_peers(&self, count: usize) -> Result<Vec<String>, ReplicaError> {
        let me = self.raft_addr();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for lookupd in self.lookup_peers().http_addresses() {
            let reply = self
                .http_client()
                .get(format!("http://{lookupd}/nodes"))
                .send()
                .await;
            let Ok(reply) = reply else { continue };
            let Ok(nodes) = reply.json::<serde_json::Value>().await else {
                continue;
            };
            let producers = nodes
                .get("producers")
                .or_else(|| nodes.get("data").and_then(|d| d.get("producers")));
            for p in producers.and_then(|p| p.as_array()).into_iter().flatten() {
                let (Some(host), Some(port)) = (
                    p.get("broadcast_address").and_then(|v| v.as_str()),
                    p.get("http_port").and_then(|v| v.as_u64()),
                ) else {
                    continue;
                };
                let topics = p
                    .get("topics")
                    .and_then(|t| t.as_array())
                    .map_or(0, Vec::len);
                seen.insert(format!("{host}:{port}"), topics);
            }
        }
        seen.remove(&me);
        let mut peers: Vec<(usize, String)> = seen.into_iter().map(|(a, n)| (n, a)).collect();
        peers.sort();
        if peers.len() < count {
            return Err(ReplicaError::TooFewBrokers(format!(
                "{} replicas need {count} other brokers registered with lookupd; it lists {}",
                count + 1,
                peers.len()
            )));
        }
        Ok(peers.into_iter().take(count).map(|(_, a)| a).collect())
    }

    /// Publishes a batch to a replicated topic through its group; returns the sequences the
    /// messages got, once committed on a majority and applied.
    pub(crate) async fn propose_publish(
        &self,
        topic: &Topic,
        raft: &Raft,
        bodies: &[&[u8]],
        defer: Duration,
    ) -> Result<Range<u64>, PublishError> {
        let (timestamp_ns, deliver_at_ns) = Topic::stamp(defer);
        let command = Command::Publish {
            batch: Batch::new(timestamp_ns, deliver_at_ns, bodies),
        };
        match self.propose(topic.name(), raft, command).await {
            Ok(Applied::Published { first, end }) => Ok(first..end),
            Ok(_) => Err(PublishError::NotReplicated("no sequences applied".into())),
            Err(why) => Err(PublishError::NotReplicated(why)),
        }
    }

    /// Has every replica of a replicated topic carry out an operator's action, through its
    /// group; whether what it names exists.
    pub(crate) async fn propose_admin(
        &self,
        topic: &Topic,
        raft: &Raft,
        action: Admin,
    ) -> Result<bool, String> {
        match self
            .propose(topic.name(), raft, Command::Admin(action))
            .await?
        {
            Applied::Admin { found } => Ok(found),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// Proposes `command` to `topic`'s group: here if this broker leads, else forwarded to the
    /// leader; waits up to 5 s for a leader (an election). Answers once committed on a
    /// majority and applied on the leader.
    async fn propose(&self, topic: &str, raft: &Raft, command: Command) -> Result<Applied, String> {
        let give_up = tokio::time::Instant::now() + LEADER_WAIT;
        loop {
            let result = match propose_local(raft, command.clone()).await {
                Err(ProposeError::NotLeader {
                    leader: Some((_, addr)),
                }) => propose_remote(&self.replication().client, &addr, topic, &command).await,
                other => other,
            };
            let why = match result {
                Ok(applied) => return Ok(applied),
                Err(e @ (ProposeError::NotLeader { .. } | ProposeError::Unreachable(_))) => e,
                Err(e) => return Err(e.to_string()),
            };
            if tokio::time::Instant::now() >= give_up || self.cancel.is_cancelled() {
                return Err(why.to_string());
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// `/stats`' `replication` object of a replicated topic, from its node's metrics.
pub fn stats(raft: &Raft) -> ferry_proto::stats::ReplicationStats {
    use ferry_proto::stats::{ReplicaStats, ReplicationStats};
    let m = raft.metrics().borrow().clone();
    let role = match m.state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "stopped",
    };
    let last_applied = m.last_applied.map_or(0, |l| l.index);
    let last_log = m.last_log_index.unwrap_or(0);
    let membership = m.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let matched = |id: NodeId| -> Option<u64> {
        if id == m.id {
            return (m.state == ServerState::Leader).then_some(last_log);
        }
        m.replication
            .as_ref()
            .map(|r| r.get(&id).copied().flatten().map_or(0, |l| l.index))
    };
    // The leader knows what a majority holds; a follower reports what it applied (all of it
    // committed, so a lower bound of the leader's figure).
    let commit_index = if m.state == ServerState::Leader {
        let mut held: Vec<u64> = voters.iter().map(|&id| matched(id).unwrap_or(0)).collect();
        held.sort_unstable_by(|a, b| b.cmp(a));
        held.get(voters.len() / 2).copied().unwrap_or(0)
    } else {
        last_applied
    };
    let replicas = membership
        .nodes()
        .map(|(&id, node)| {
            let matched = matched(id);
            ReplicaStats {
                node_id: id,
                address: node.addr.clone(),
                state: if m.current_leader == Some(id) {
                    "leader"
                } else if voters.contains(&id) {
                    "voter"
                } else {
                    "learner"
                }
                .to_owned(),
                matched,
                lag: matched.map(|h| last_log.saturating_sub(h)),
            }
        })
        .collect();
    ReplicationStats {
        role: role.to_owned(),
        delivering: delivers(&m),
        node_id: m.id,
        term: m.current_term,
        leader: m.current_leader,
        commit_index,
        last_applied,
        snapshot_index: m.snapshot.map(|l| l.index),
        purged_index: m.purged.map(|l| l.index),
        replicas,
    }
}
