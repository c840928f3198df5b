//! Replicated topics across three `brokerd` processes and a lookupd (ARCHITECTURE.md,
//! "Replicated topics"); faults are injected by the tests: SIGKILL, a wiped disk, restarts,
//! and proxies that cut a broker off from the others.
//!
//! - `failover`: the group forms, the leader alone delivers, its SIGKILL (with its disk) under
//!   load loses nothing, the wiped broker rejoins.
//! - `restart`: a rolling restart under load.
//! - `partition`: a follower, then the leader, cut off from the others.
//! - `snapshot`: the Raft log purged behind snapshots; a wiped broker rejoins from one.
//! - `admin`: pause, channel delete and topic delete sent to one replica reach all.

mod admin;
mod failover;
mod partition;
mod restart;
mod snapshot;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferry_proto::stats::ReplicationStats;
use ferry_testkit::DaemonProcess;
use tempfile::TempDir;

use crate::common::{Lookupd, eventually, get_stats, http, start_lookupd};

/// Extra flags and environment of one broker of a [`Cluster`].
type Extra = (Vec<String>, Vec<(&'static str, String)>);

/// Three `brokerd` processes on disks of their own, registered with an in-process lookupd.
struct Cluster {
    lookupd: Lookupd,
    dirs: Vec<TempDir>,
    /// `None` while a broker is down.
    brokers: Vec<Option<DaemonProcess>>,
    tcp: Vec<SocketAddr>,
    http: Vec<SocketAddr>,
    extra: Vec<Extra>,
}

impl Cluster {
    /// Starts the three brokers on free ports, once lookupd lists them all.
    async fn start() -> Cluster {
        Cluster::start_with(|_| Extra::default()).await
    }

    /// [`Cluster::start`], broker `i` with `extra(i)`'s flags and environment.
    async fn start_with(extra: impl Fn(usize) -> Extra) -> Cluster {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut cluster = Cluster {
            lookupd: start_lookupd(any, any).await,
            dirs: (0..3).map(|_| TempDir::new().unwrap()).collect(),
            brokers: Vec::new(),
            tcp: Vec::new(),
            http: Vec::new(),
            extra: (0..3).map(extra).collect(),
        };
        for i in 0..3 {
            let b = cluster.spawn(i, 0, 0);
            cluster.tcp.push(b.tcp);
            cluster.http.push(b.http);
            cluster.brokers.push(Some(b));
        }
        eventually("lookupd lists the three brokers", async || {
            let nodes = cluster.lookupd.get_json("/nodes").await;
            (nodes["producers"].as_array()?.len() == 3).then_some(())
        })
        .await;
        cluster
    }

    /// Starts broker `i` on its disk and the given ports (0: free ones).
    fn spawn(&self, i: usize, tcp: u16, http: u16) -> DaemonProcess {
        let (flags, env) = &self.extra[i];
        let mut args = vec![
            format!("--tcp-address=127.0.0.1:{tcp}"),
            format!("--http-address=127.0.0.1:{http}"),
            "--grpc-address=127.0.0.1:0".to_string(),
            format!("--data-path={}", self.dirs[i].path().display()),
            format!("--lookupd-tcp-address={}", self.lookupd.tcp),
            "--broadcast-address=127.0.0.1".to_string(),
        ];
        args.extend(flags.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, Path::new(v))).collect();
        ferry_testkit::process::spawn(Path::new(env!("CARGO_BIN_EXE_brokerd")), &args, &env)
    }

    /// Brings broker `i` back on its disk and its old ports.
    fn restart(&mut self, i: usize) {
        assert!(self.brokers[i].is_none(), "broker {i} still runs");
        self.brokers[i] = Some(self.spawn(i, self.tcp[i].port(), self.http[i].port()));
    }

    /// SIGKILLs broker `i`.
    fn kill(&mut self, i: usize) {
        self.brokers[i].take().expect("running").kill9();
    }

    /// Empties broker `i`'s disk (it is down): the machine was replaced.
    fn wipe(&self, i: usize) {
        assert!(self.brokers[i].is_none(), "broker {i} still runs");
        let dir = self.dirs[i].path();
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::create_dir_all(dir).unwrap();
    }

    /// Creates `topic` with 3 replicas through broker `via`.
    async fn create(&self, topic: &str, via: usize) {
        let path = format!("/topic/create?topic={topic}&replicas=3");
        let (code, body) = http(self.http[via], "POST", &path, b"").await;
        assert_eq!(code, 200, "{body}");
    }

    /// Creates channel `channel` of `topic` through broker `via`.
    async fn create_channel(&self, topic: &str, channel: &str, via: usize) {
        let path = format!("/channel/create?topic={topic}&channel={channel}");
        assert_eq!(http(self.http[via], "POST", &path, b"").await.0, 200);
    }

    /// The `replication` object of `topic` on broker `i`, if it answers and has one.
    async fn replication(&self, i: usize, topic: &str) -> Option<ReplicationStats> {
        self.brokers[i].as_ref()?;
        let stats = get_stats(self.http[i]).await;
        stats.topic(topic).and_then(|t| t.replication.clone())
    }

    /// The broker among `among` that delivers `topic` (its group's leader), and its stats.
    async fn leader(&self, topic: &str, among: &[usize]) -> Option<(usize, ReplicationStats)> {
        for &i in among {
            if let Some(r) = self.replication(i, topic).await
                && r.delivering
            {
                return Some((i, r));
            }
        }
        None
    }

    /// Waits for a broker among `among` to deliver `topic`; its index and stats.
    async fn wait_leader(&self, topic: &str, among: &[usize]) -> (usize, ReplicationStats) {
        eventually("a delivering leader", async || {
            self.leader(topic, among).await
        })
        .await
    }

    /// A publisher ([`spawn_publisher`]) on each broker, `<prefix><i>-<n>` on broker `i`,
    /// until `stop`; what they got acknowledged goes to the [`Acked`] returned.
    fn publish_everywhere(
        &self,
        topic: &'static str,
        prefix: &str,
        while_down: bool,
        stop: &tokio_util::sync::CancellationToken,
    ) -> (Acked, Vec<tokio::task::JoinHandle<()>>) {
        let acked = Acked::default();
        let publishers = (0..3)
            .map(|i| {
                let to = (acked.clone(), while_down);
                spawn_publisher(
                    format!("{prefix}{i}"),
                    self.http[i],
                    topic,
                    to,
                    stop.clone(),
                )
            })
            .collect();
        (acked, publishers)
    }

    /// The brokers that run now.
    fn live(&self) -> Vec<usize> {
        (0..3).filter(|&i| self.brokers[i].is_some()).collect()
    }

    /// Waits until lookupd lists `topic` on all three brokers.
    async fn wait_listed(&self, topic: &str) {
        eventually("lookupd lists the topic on all three brokers", async || {
            let v = self
                .lookupd
                .get_json(&format!("/lookup?topic={topic}"))
                .await;
            (v["producers"].as_array()?.len() == 3).then_some(())
        })
        .await;
    }

    /// Waits until broker `i` is a member of `topic`'s group again: a follower the leader
    /// counts as a voter, holding at least what was committed at `committed`.
    async fn wait_rejoined(&self, i: usize, topic: &str, committed: u64) {
        let others: Vec<usize> = (0..3).filter(|&j| j != i).collect();
        eventually("the broker is back in its group", async || {
            let mine = self.replication(i, topic).await?;
            let (_, lead) = self.leader(topic, &others).await?;
            let voter = lead
                .replicas
                .iter()
                .any(|r| r.node_id == mine.node_id && r.state == "voter");
            (voter
                && lead.replicas.len() == 3
                && mine.role == "follower"
                && !mine.delivering
                && mine.last_applied >= committed)
                .then_some(())
        })
        .await;
    }
}

/// A pynsq Reader of `topic/channel` found through lookupd, in a Python process: every body it
/// receives, with when.
struct PyReader {
    child: std::process::Child,
    got: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl PyReader {
    fn start(lookupd_http: SocketAddr, topic: &str, channel: &str) -> PyReader {
        use std::io::BufRead;
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/replica_reader.py");
        let mut child = std::process::Command::new(crate::common::python())
            .arg(script)
            .arg(lookupd_http.to_string())
            .arg(topic)
            .arg(channel)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the pynsq reader");
        let got: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let (stdout, sink) = (child.stdout.take().unwrap(), got.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        PyReader { child, got }
    }

    fn bodies(&self) -> BTreeSet<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// When it first received one of `bodies` after `after`, if it did.
    fn first_after(&self, after: Instant, bodies: &BTreeSet<String>) -> Option<Instant> {
        let got = self.got.lock().unwrap();
        got.iter()
            .find(|(at, b)| *at > after && bodies.contains(b))
            .map(|(at, _)| *at)
    }
}

impl Drop for PyReader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the publishers got acknowledged, with when.
type Acked = Arc<Mutex<Vec<(Instant, String)>>>;

/// Publishes `<name>-<n>` with HTTP `/pub` to the broker at `http` one after the other until
/// `stop`, recording each one answered 200. A failed publish is tried again; a broker that
/// stops answering ends the publisher, unless `while_down` (it is tried until it is back).
fn spawn_publisher(
    name: String,
    http: SocketAddr,
    topic: &'static str,
    (acked, while_down): (Acked, bool),
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let url = format!("http://{http}/pub?topic={topic}");
        let mut n = 0;
        let mut failures = 0;
        while !stop.is_cancelled() {
            let body = format!("{name}-{n}");
            match client.post(&url).body(body.clone()).send().await {
                Ok(reply) if reply.status() == 200 => {
                    acked.lock().unwrap().push((Instant::now(), body));
                    n += 1;
                    failures = 0;
                }
                Ok(_) => failures += 1, // no leader yet: E_PUB_FAILED; the same body again
                Err(_) if while_down => failures += 1,
                Err(_) => return, // the broker is gone
            }
            if failures > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    })
}

/// Waits until every reader got every message `acked` holds; how many that is.
async fn wait_all_delivered(acked: &Acked, readers: &[&PyReader]) -> usize {
    let all: BTreeSet<String> = acked
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| b.clone())
        .collect();
    for r in readers {
        eventually("every acknowledged message delivered", || async {
            all.is_subset(&r.bodies()).then_some(())
        })
        .await;
    }
    all.len()
}
