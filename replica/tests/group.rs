//! A group's storage against openraft's own storage suite, and 3-node groups over real HTTP on
//! loopback whose state is a real topic log (ferry-store) in a temp dir: commit on a majority,
//! the leader's death, a restart that catches up, a wiped replica that rejoins from a
//! snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferry_replica::{
    Admin, Applied, Apply, Batch, BoxFuture, ChannelOp, Command, Groups, Install, Node, NodeId,
    ProposeError, Raft, RaftLog, StateMachine, StorageError, SyncMode, TypeConfig, propose_remote,
    raft_config, router,
};
use ferry_store::{LogOptions, NewRecord, TopicLog};
use ferry_testkit::eventually;
use openraft::ServerState;
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

const TOPIC: &str = "orders";
const FIRST_SEQ: u64 = 1_000_000;

/// A replica's state: a topic log on disk and the channel ops it was given.
struct LogApp {
    dir: PathBuf,
    log: Mutex<TopicLog>,
    ops: Mutex<Vec<(String, ChannelOp)>>,
}

fn open_log(dir: &Path, initial_seq: u64) -> TopicLog {
    let opts = LogOptions {
        initial_seq,
        ..LogOptions::default()
    };
    TopicLog::open(dir, opts).expect("open topic log").0
}

impl LogApp {
    fn new(dir: &Path) -> LogApp {
        LogApp {
            dir: dir.to_path_buf(),
            log: Mutex::new(open_log(dir, FIRST_SEQ)),
            ops: Mutex::default(),
        }
    }

    /// Every record as (seq, timestamp, body).
    fn records(&self) -> Vec<(u64, i64, Vec<u8>)> {
        let log = self.log.lock().unwrap();
        (log.first_seq()..log.next_seq())
            .map(|seq| {
                let r = log.read(seq).unwrap().expect("a record");
                (r.seq, r.timestamp_ns, r.body.to_vec())
            })
            .collect()
    }
}

impl Apply for LogApp {
    fn next_seq(&self) -> u64 {
        self.log.lock().unwrap().next_seq()
    }

    fn publish(&self, batch: &Batch) -> io::Result<Range<u64>> {
        let recs: Vec<NewRecord<'_>> = batch
            .bodies()
            .map(|body| NewRecord {
                timestamp_ns: batch.timestamp_ns,
                deliver_at_ns: batch.deliver_at_ns,
                body,
            })
            .collect();
        self.log
            .lock()
            .unwrap()
            .append_batch(&recs)
            .map_err(io::Error::other)
    }

    fn channel_ops(&self, _origin: u64, channel: &str, ops: &[ChannelOp]) -> io::Result<()> {
        let mut all = self.ops.lock().unwrap();
        all.extend(ops.iter().map(|op| (channel.to_string(), *op)));
        Ok(())
    }

    fn snapshot(&self) -> io::Result<Vec<u8>> {
        let records = self.records();
        let ops = self.ops.lock().unwrap().clone();
        let first = self.log.lock().unwrap().first_seq();
        Ok(encode_snapshot(&(first, records, ops)))
    }

    fn admin(&self, _action: &Admin, _index: u64) -> io::Result<bool> {
        Ok(true)
    }

    fn sync(&self) -> io::Result<()> {
        self.log
            .lock()
            .unwrap()
            .sync()
            .map(drop)
            .map_err(io::Error::other)
    }

    /// The test app's manifest holds its records too, so it needs no source.
    fn install(&self, install: Install) -> BoxFuture<io::Result<()>> {
        Box::pin(std::future::ready(self.install_now(&install.data)))
    }
}

impl LogApp {
    fn install_now(&self, data: &[u8]) -> io::Result<()> {
        type Contents = (u64, Vec<(u64, i64, Vec<u8>)>, Vec<(String, ChannelOp)>);
        let (first, records, ops): Contents =
            serde_json::from_slice(data).map_err(io::Error::other)?;
        let mut log = self.log.lock().unwrap();
        // Close the old log before its files go.
        *log = TopicLog::in_memory(1);
        std::fs::remove_dir_all(&self.dir)?;
        *log = open_log(&self.dir, first);
        for (_, ts, body) in &records {
            log.append(NewRecord {
                timestamp_ns: *ts,
                deliver_at_ns: 0,
                body,
            })
            .map_err(io::Error::other)?;
        }
        *self.ops.lock().unwrap() = ops;
        Ok(())
    }
}

/// The test app's snapshot encoding (JSON; the crate wraps it in its own frame).
fn encode_snapshot<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

struct OneGroup(Mutex<Option<Raft>>);

impl Groups for OneGroup {
    fn group(&self, topic: &str) -> Option<Raft> {
        (topic == TOPIC)
            .then(|| self.0.lock().unwrap().clone())
            .flatten()
    }
}

/// One replica: a Raft node, its HTTP server, its state.
struct Replica {
    id: NodeId,
    addr: String,
    dir: PathBuf,
    raft: Raft,
    app: Arc<LogApp>,
    log: RaftLog,
    server: tokio::task::JoinHandle<()>,
}

impl Replica {
    /// Starts a replica on `dir` (its node id kept there), on `addr` or a free port.
    async fn start(dir: &Path, addr: Option<&str>, snapshot_every: u64) -> Replica {
        std::fs::create_dir_all(dir).unwrap();
        let id = ferry_replica::node_id::load_or_create(dir).unwrap();
        let listener = tokio::net::TcpListener::bind(addr.unwrap_or("127.0.0.1:0"))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let app = Arc::new(LogApp::new(&dir.join("topic")));
        let log = RaftLog::open(&dir.join("raft"), SyncMode::Written, 64 * 1024).unwrap();
        let sm = StateMachine::open(&dir.join("raft"), Arc::clone(&app), FIRST_SEQ).unwrap();
        let network = ferry_replica::HttpNetworkFactory::new(reqwest::Client::new(), TOPIC);
        let config = Arc::new(raft_config(Some(snapshot_every)).unwrap());
        let raft = Raft::new(id, config, network, log.clone(), sm)
            .await
            .unwrap();
        let groups = Arc::new(OneGroup(Mutex::new(Some(raft.clone()))));
        let app_router = router(groups);
        let server = tokio::spawn(async move {
            axum::serve(listener, app_router).await.unwrap();
        });
        Replica {
            id,
            addr,
            dir: dir.to_path_buf(),
            raft,
            app,
            log,
            server,
        }
    }

    fn node(&self) -> Node {
        Node::new(self.addr.clone())
    }

    fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Stops it as a crash would: no more answers, no goodbye.
    async fn kill(self) -> (PathBuf, String) {
        self.server.abort();
        let _ = self.server.await;
        self.raft.shutdown().await.unwrap();
        (self.dir, self.addr)
    }
}

async fn start_group(root: &Path, snapshot_every: u64) -> Vec<Replica> {
    let mut replicas = Vec::new();
    for i in 0..3 {
        replicas.push(Replica::start(&root.join(format!("r{i}")), None, snapshot_every).await);
    }
    let members: BTreeMap<NodeId, Node> = replicas.iter().map(|r| (r.id, r.node())).collect();
    replicas[0].raft.initialize(members).await.unwrap();
    replicas
}

/// Batch `b` of `n` messages, `message <b*n + i>`, stamped `b`.
fn batch(b: usize, n: usize) -> Batch {
    let bodies: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("message {}", b * n + i).into_bytes())
        .collect();
    let bodies: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    Batch::new(1_700_000_000_000_000_000 + b as i64, 0, &bodies)
}

/// Proposes through any replica, following NotLeader answers, until one commits it.
async fn propose(client: &reqwest::Client, addrs: &[String], command: Command) -> Applied {
    eventually("a leader to commit a proposal", async || {
        for addr in addrs {
            let mut target = addr.clone();
            for _ in 0..2 {
                match propose_remote(client, &target, TOPIC, &command).await {
                    Ok(applied) => return Some(applied),
                    Err(ProposeError::NotLeader {
                        leader: Some((_, leader)),
                    }) => target = leader,
                    Err(_) => break,
                }
            }
        }
        None
    })
    .await
}

async fn publish_batches(
    client: &reqwest::Client,
    addrs: &[String],
    batches: Range<usize>,
    per_batch: usize,
) -> Vec<Range<u64>> {
    let mut seqs = Vec::new();
    for b in batches {
        let applied = propose(
            client,
            addrs,
            Command::Publish {
                batch: batch(b, per_batch),
            },
        )
        .await;
        seqs.push(
            applied
                .published()
                .expect("a publish answers its sequences"),
        );
    }
    seqs
}

async fn wait_same_records(replicas: &[&Replica], count: u64) {
    let what = format!("{count} records on {} replicas", replicas.len());
    eventually(&what, || async {
        replicas
            .iter()
            .all(|r| r.app.next_seq() == FIRST_SEQ + count)
            .then_some(())
    })
    .await;
    let first = replicas[0].app.records();
    for r in &replicas[1..] {
        assert_eq!(r.app.records(), first, "replica {} differs", r.id);
    }
}

async fn wait_leader(replicas: &[&Replica]) -> NodeId {
    eventually("a leader", || async {
        replicas.iter().find(|r| r.is_leader()).map(|r| r.id)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_commits_on_a_majority_and_survives_its_leaders_death() {
    let root = TempDir::new().unwrap();
    let client = reqwest::Client::new();
    let mut replicas = start_group(root.path(), 10_000).await;
    let addrs: Vec<String> = replicas.iter().map(|r| r.addr.clone()).collect();
    wait_leader(&replicas.iter().collect::<Vec<_>>()).await;

    let seqs = publish_batches(&client, &addrs, 0..40, 5).await;
    let expected: Vec<Range<u64>> = (0..40)
        .map(|b| FIRST_SEQ + b * 5..FIRST_SEQ + b * 5 + 5)
        .collect();
    assert_eq!(seqs, expected, "every publish gets the next sequences");
    propose(
        &client,
        &addrs,
        Command::Channels {
            origin: 1,
            channel: "billing".to_string(),
            ops: vec![ChannelOp::Finish { seq: FIRST_SEQ + 3 }],
        },
    )
    .await;
    wait_same_records(&replicas.iter().collect::<Vec<_>>(), 200).await;
    for r in &replicas {
        eventually("the channel op on every replica", || async {
            (r.app.ops.lock().unwrap().len() == 1).then_some(())
        })
        .await;
    }

    // The leader dies; the other two elect one and go on committing.
    let leader = replicas.iter().position(|r| r.is_leader()).unwrap();
    let dead = replicas.remove(leader);
    let dead_id = dead.id;
    let died = Instant::now();
    let (dead_dir, dead_addr) = dead.kill().await;
    let new_leader = wait_leader(&replicas.iter().collect::<Vec<_>>()).await;
    eprintln!("new leader {new_leader} after {:?}", died.elapsed());
    assert_ne!(new_leader, dead_id);
    let seqs = publish_batches(&client, &addrs, 40..60, 5).await;
    assert_eq!(seqs.first().unwrap().start, FIRST_SEQ + 200);
    wait_same_records(&replicas.iter().collect::<Vec<_>>(), 300).await;

    // It comes back on its own disk and address, and catches up.
    let back = Replica::start(&dead_dir, Some(&dead_addr), 10_000).await;
    assert_eq!(
        back.id, dead_id,
        "the node id stays with its data directory"
    );
    replicas.push(back);
    wait_same_records(&replicas.iter().collect::<Vec<_>>(), 300).await;
    let leaders = replicas.iter().filter(|r| r.is_leader()).count();
    assert_eq!(leaders, 1);
    for r in replicas {
        r.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_replica_rejoins_under_a_new_id_from_a_snapshot() {
    let root = TempDir::new().unwrap();
    let client = reqwest::Client::new();
    let mut replicas = start_group(root.path(), 20).await;
    let addrs: Vec<String> = replicas.iter().map(|r| r.addr.clone()).collect();
    wait_leader(&replicas.iter().collect::<Vec<_>>()).await;
    publish_batches(&client, &addrs, 0..100, 2).await;
    wait_same_records(&replicas.iter().collect::<Vec<_>>(), 200).await;

    // Snapshots let the log be purged: the first entries are gone from every leader's log.
    eventually("the leader's raft log purged", || async {
        replicas
            .iter()
            .find(|r| r.is_leader())
            .filter(|r| r.log.len() < 50)
            .map(|_| ())
    })
    .await;

    // A follower loses its disk and comes back empty: a new node, on the same address.
    let follower = replicas.iter().position(|r| !r.is_leader()).unwrap();
    let gone = replicas.remove(follower);
    let gone_id = gone.id;
    let (dir, addr) = gone.kill().await;
    std::fs::remove_dir_all(&dir).unwrap();
    let fresh = Replica::start(&dir, Some(&addr), 20).await;
    assert_ne!(fresh.id, gone_id, "a wiped disk is a new node");

    // The leader replaces the old member: learner first (it installs a snapshot), then voter.
    let leader = replicas.iter().find(|r| r.is_leader()).unwrap();
    leader
        .raft
        .add_learner(fresh.id, fresh.node(), true)
        .await
        .unwrap();
    let voters: BTreeSet<NodeId> = replicas.iter().map(|r| r.id).chain([fresh.id]).collect();
    leader.raft.change_membership(voters, false).await.unwrap();
    replicas.push(fresh);
    wait_same_records(&replicas.iter().collect::<Vec<_>>(), 200).await;

    // Still a working group of three: more publishes reach the new member too.
    publish_batches(&client, &addrs, 100..110, 2).await;
    wait_same_records(&replicas.iter().collect::<Vec<_>>(), 220).await;
    for r in replicas {
        r.kill().await;
    }
}

/// Builds a fresh log store and state machine in a temp dir for each suite case.
struct Fresh;

impl StoreBuilder<TypeConfig, RaftLog, StateMachine<LogApp>, TempDir> for Fresh {
    async fn build(&self) -> Result<(TempDir, RaftLog, StateMachine<LogApp>), StorageError> {
        let dir = TempDir::new().unwrap();
        let log = RaftLog::open(&dir.path().join("raft"), SyncMode::Synced, 4096).unwrap();
        let app = Arc::new(LogApp::new(&dir.path().join("topic")));
        let sm = StateMachine::open(&dir.path().join("raft"), app, FIRST_SEQ).unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
fn log_store_and_state_machine_pass_openrafts_storage_suite() {
    Suite::test_all(Fresh).unwrap();
}
