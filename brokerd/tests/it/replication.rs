//! Replicated topics across three `brokerd` processes and a lookupd: `POST
//! /topic/create?replicas=3` forms the group, publishes to any broker are committed through
//! the leader and delivered by the leader only, the leader is SIGKILLed under load and another
//! takes over for the consumers already connected, the killed broker comes back and catches up.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferry_proto::stats::ReplicationStats;
use ferry_proto::v2::{Command, Frame, HEARTBEAT};
use ferry_testkit::DaemonProcess;
use tempfile::TempDir;

use crate::common::{Lookupd, TestConn, eventually, get_stats, http, start_lookupd};

const TOPIC: &str = "orders";
const CHANNEL: &str = "billing";

/// Starts `brokerd` on `dir` registering with `lookupd`, on the given ports (0: free ones).
fn spawn_broker(dir: &Path, lookupd: &Lookupd, tcp: u16, http: u16) -> DaemonProcess {
    let args = [
        format!("--tcp-address=127.0.0.1:{tcp}"),
        format!("--http-address=127.0.0.1:{http}"),
        "--grpc-address=127.0.0.1:0".to_string(),
        format!("--data-path={}", dir.display()),
        format!("--lookupd-tcp-address={}", lookupd.tcp),
        "--broadcast-address=127.0.0.1".to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ferry_testkit::process::spawn(Path::new(env!("CARGO_BIN_EXE_brokerd")), &args, &[])
}

/// The `replication` object of the topic on the broker at `http`, once it has one.
async fn replication(http_addr: SocketAddr) -> Option<ReplicationStats> {
    let stats = get_stats(http_addr).await;
    stats.topic(TOPIC).and_then(|t| t.replication.clone())
}

/// Waits until exactly one of `brokers` leads and every one of them knows it; its index.
async fn wait_one_leader(brokers: &[SocketAddr]) -> usize {
    eventually("one leader every replica agrees on", async || {
        let mut roles = Vec::new();
        for &b in brokers {
            roles.push(replication(b).await?);
        }
        let leaders: Vec<usize> = (0..roles.len())
            .filter(|&i| roles[i].role == "leader")
            .collect();
        let [leader] = leaders[..] else { return None };
        let id = roles[leader].node_id;
        roles.iter().all(|r| r.leader == Some(id)).then_some(leader)
    })
    .await
}

/// A consumer of `orders/billing` on one broker that FINs everything it gets, in a task.
struct Consumer {
    got: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Consumer {
    async fn start(tcp: SocketAddr) -> Consumer {
        let mut conn = TestConn::connect(tcp).await;
        conn.identify(serde_json::json!({"client_id": "replica-test", "heartbeat_interval": 1000}))
            .await;
        conn.sub(TOPIC, CHANNEL).await;
        conn.rdy(500).await;
        let got: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let sink = got.clone();
        tokio::spawn(async move {
            while let Ok(Some(frame)) = conn.frame_within(ferry_testkit::DEADLINE * 4).await {
                match frame {
                    Frame::Response(r) if &r[..] == HEARTBEAT => conn.send(&Command::Nop).await,
                    Frame::Message(m) => {
                        sink.lock().unwrap().push(m.body.to_vec());
                        conn.send(&Command::Fin(m.id)).await;
                    }
                    _ => {}
                }
            }
        });
        Consumer { got }
    }

    fn bodies(&self) -> BTreeSet<Vec<u8>> {
        self.got.lock().unwrap().iter().cloned().collect()
    }

    fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }
}

/// Publishes `bodies` on one connection to `tcp`, each answered OK.
async fn publish_all(tcp: SocketAddr, bodies: &[Vec<u8>]) {
    let mut conn = TestConn::connect(tcp).await;
    for body in bodies {
        conn.publish(TOPIC, body).await;
    }
}

fn bodies(prefix: &str, range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    range
        .map(|i| format!("{prefix}-{i}").into_bytes())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replicated_topic_survives_its_leaders_sigkill() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let lookupd = start_lookupd(any, any).await;
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    let mut brokers: Vec<Option<DaemonProcess>> = dirs
        .iter()
        .map(|d| Some(spawn_broker(d.path(), &lookupd, 0, 0)))
        .collect();
    let tcp: Vec<SocketAddr> = brokers.iter().map(|b| b.as_ref().unwrap().tcp).collect();
    let http_addrs: Vec<SocketAddr> = brokers.iter().map(|b| b.as_ref().unwrap().http).collect();
    eventually("lookupd lists the three brokers", async || {
        let nodes = lookupd.get_json("/nodes").await;
        (nodes["producers"].as_array()?.len() == 3).then_some(())
    })
    .await;

    let (code, body) = http(
        http_addrs[0],
        "POST",
        &format!("/topic/create?topic={TOPIC}&replicas=3"),
        b"",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let leader = wait_one_leader(&http_addrs).await;
    for &h in &http_addrs {
        let r = replication(h).await.unwrap();
        assert_eq!(r.replicas.len(), 3, "{r:?}");
    }
    // /metrics: the leader says so, and reports each replica's lag.
    for (i, &h) in http_addrs.iter().enumerate() {
        let (code, metrics) = http(h, "GET", "/metrics", b"").await;
        assert_eq!(code, 200);
        let want = format!(
            "ferry_replication_leader{{topic=\"{TOPIC}\"}} {}",
            u8::from(i == leader)
        );
        assert!(metrics.contains(&want), "{want} not in\n{metrics}");
        assert!(metrics.contains(&format!(
            "ferry_replication_replicas{{topic=\"{TOPIC}\"}} 3"
        )));
        let lag_lines = metrics
            .lines()
            .filter(|l| l.starts_with("ferry_replication_lag_entries{"))
            .count();
        assert_eq!(lag_lines, if i == leader { 3 } else { 0 }, "{metrics}");
    }
    eventually("lookupd lists the topic on all three brokers", async || {
        let v = lookupd.get_json(&format!("/lookup?topic={TOPIC}")).await;
        (v["producers"].as_array()?.len() == 3).then_some(())
    })
    .await;

    // Consumers on every replica, as an NSQ client that found all three through lookupd.
    let mut consumers = Vec::new();
    for &t in &tcp {
        consumers.push(Consumer::start(t).await);
    }
    // Publishers on all three: followers forward to the leader.
    let first = bodies("first", 0..300);
    let mut publishers = Vec::new();
    for (i, &t) in tcp.iter().enumerate() {
        let part = first[i * 100..(i + 1) * 100].to_vec();
        publishers.push(tokio::spawn(async move { publish_all(t, &part).await }));
    }
    for p in publishers {
        p.await.unwrap();
    }
    let want: BTreeSet<Vec<u8>> = first.iter().cloned().collect();
    eventually("the leader delivers all 300", || async {
        (consumers[leader].bodies() == want).then_some(())
    })
    .await;
    for (i, c) in consumers.iter().enumerate() {
        if i != leader {
            assert_eq!(c.count(), 0, "follower {i} delivered");
        }
    }
    // The FINs reach the followers (batched, at each of the leader's syncs): their channels
    // owe nothing.
    for &i in (0..3).filter(|&i| i != leader).collect::<Vec<_>>().iter() {
        eventually("a follower's channel to learn the FINs", || async {
            let stats = get_stats(http_addrs[i]).await;
            let channel = stats.topic(TOPIC)?.channel(CHANNEL)?.clone();
            (channel.depth == 0 && channel.in_flight_count == 0).then_some(())
        })
        .await;
    }

    // The leader dies mid-load: publishes go on through the others.
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let second = bodies("second", 0..200);
    let publisher = {
        let (t, part) = (tcp[survivors[0]], second.clone());
        tokio::spawn(async move { publish_all(t, &part).await })
    };
    let killed = Instant::now();
    brokers[leader].take().unwrap().kill9();
    publisher.await.unwrap();
    let live: Vec<SocketAddr> = survivors.iter().map(|&i| http_addrs[i]).collect();
    let new_leader = survivors[wait_one_leader(&live).await];
    eprintln!("new leader after {:?}", killed.elapsed());
    // Every acknowledged message reaches the consumer already connected to the new leader,
    // and none that was FINed before the kill comes again: the FINs were replicated.
    let want: BTreeSet<Vec<u8>> = second.iter().cloned().collect();
    eventually(
        "the new leader delivers every acknowledged message",
        || async {
            consumers[new_leader]
                .bodies()
                .is_superset(&want)
                .then_some(())
        },
    )
    .await;
    let again: Vec<Vec<u8>> = consumers[new_leader]
        .bodies()
        .intersection(&first.iter().cloned().collect())
        .cloned()
        .collect();
    assert!(
        again.is_empty(),
        "FINed before the kill, delivered again: {}",
        again.len()
    );
    eprintln!("delivering again after {:?}", killed.elapsed());

    // The killed broker's disk is lost: it comes back empty on its ports, under a new node id,
    // and the leader puts it in place of the lost member; it catches up from the group's log.
    std::fs::remove_dir_all(dirs[leader].path()).unwrap();
    std::fs::create_dir_all(dirs[leader].path()).unwrap();
    let back = spawn_broker(
        dirs[leader].path(),
        &lookupd,
        tcp[leader].port(),
        http_addrs[leader].port(),
    );
    brokers[leader] = Some(back);
    let third = bodies("third", 0..50);
    publish_all(tcp[new_leader], &third).await;
    let caught_up = eventually("the wiped broker rejoins and catches up", async || {
        let lead = replication(http_addrs[new_leader]).await?;
        let mine = replication(http_addrs[leader]).await?;
        let member = lead
            .replicas
            .iter()
            .any(|r| r.node_id == mine.node_id && r.state == "voter");
        (member
            && lead.replicas.len() == 3
            && mine.role == "follower"
            && mine.last_applied == lead.commit_index
            && lead.commit_index > 0)
            .then_some(())
    })
    .await;
    let _: () = caught_up;
    eprintln!("rejoined after {:?}", killed.elapsed());
    // It holds every message and what the consumers finished: nothing owed.
    let owes_nothing = async |h: SocketAddr| {
        let stats = get_stats(h).await;
        let topic = stats.topic(TOPIC)?;
        let channel = topic.channel(CHANNEL)?.clone();
        Some((topic.message_count, channel.depth, channel.in_flight_count))
    };
    let end = Instant::now() + ferry_testkit::DEADLINE;
    loop {
        let mine = owes_nothing(http_addrs[leader]).await;
        if mine == Some((550, 0, 0)) {
            break;
        }
        if Instant::now() > end {
            for b in brokers.iter().flatten() {
                for line in b
                    .log_lines()
                    .iter()
                    .filter(|l| l.contains("WARN") || l.contains("delivers"))
                {
                    eprintln!("{}: {line}", b.http);
                }
            }
            let lead = owes_nothing(http_addrs[new_leader]).await;
            panic!(
                "the rejoined replica still owes: {mine:?}; the leader: {lead:?}; consumer got {}",
                consumers[new_leader].count()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for b in brokers.into_iter().flatten() {
        b.kill9();
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
    name: &'static str,
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

/// The failover test: publishers on all three brokers, pynsq Readers on two channels
/// found through lookupd; the leader is SIGKILLed under load and its data directory deleted:
/// every acknowledged message reaches both channels, delivery resumes within 5 s, and the
/// broker, restarted empty, catches up and becomes a follower again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pynsq_readers_lose_nothing_when_the_leader_dies_with_its_disk() {
    const TOPIC: &str = "payments";
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let lookupd = start_lookupd(any, any).await;
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    let mut brokers: Vec<Option<DaemonProcess>> = dirs
        .iter()
        .map(|d| Some(spawn_broker(d.path(), &lookupd, 0, 0)))
        .collect();
    let tcp: Vec<SocketAddr> = brokers.iter().map(|b| b.as_ref().unwrap().tcp).collect();
    let http_addrs: Vec<SocketAddr> = brokers.iter().map(|b| b.as_ref().unwrap().http).collect();
    eventually("lookupd lists the three brokers", async || {
        let nodes = lookupd.get_json("/nodes").await;
        (nodes["producers"].as_array()?.len() == 3).then_some(())
    })
    .await;
    let (code, body) = http(
        http_addrs[1],
        "POST",
        &format!("/topic/create?topic={TOPIC}&replicas=3"),
        b"",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let topic_replication = async |h: SocketAddr| -> Option<ReplicationStats> {
        get_stats(h)
            .await
            .topic(TOPIC)
            .and_then(|t| t.replication.clone())
    };
    let leader = eventually("a leader", async || {
        for (i, &h) in http_addrs.iter().enumerate() {
            if topic_replication(h).await?.role == "leader" {
                return Some(i);
            }
        }
        None
    })
    .await;
    // The channels are made on the leader; the group makes them on every replica.
    for channel in ["billing", "audit"] {
        let path = format!("/channel/create?topic={TOPIC}&channel={channel}");
        assert_eq!(http(http_addrs[leader], "POST", &path, b"").await.0, 200);
    }
    eventually("every replica has both channels", async || {
        for &h in &http_addrs {
            let stats = get_stats(h).await;
            let topic = stats.topic(TOPIC)?;
            topic.channel("billing")?;
            topic.channel("audit")?;
        }
        Some(())
    })
    .await;
    eventually("lookupd lists the topic on all three brokers", async || {
        let v = lookupd.get_json(&format!("/lookup?topic={TOPIC}")).await;
        (v["producers"].as_array()?.len() == 3).then_some(())
    })
    .await;
    let readers = [
        PyReader::start(lookupd.http, TOPIC, "billing"),
        PyReader::start(lookupd.http, TOPIC, "audit"),
    ];

    let acked: Acked = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let names = ["p0", "p1", "p2"];
    let publishers: Vec<_> = (0..3)
        .map(|i| {
            spawn_publisher(
                names[i],
                http_addrs[i],
                TOPIC,
                (acked.clone(), false),
                stop.clone(),
            )
        })
        .collect();
    let acked_count = || acked.lock().unwrap().len();
    eventually("300 publishes acknowledged", || async {
        (acked_count() >= 300).then_some(())
    })
    .await;
    eventually("the readers get messages", || async {
        readers.iter().all(|r| !r.bodies().is_empty()).then_some(())
    })
    .await;

    // The leader's machine is lost under load: process and disk.
    let killed = Instant::now();
    brokers[leader].take().unwrap().kill9();
    std::fs::remove_dir_all(dirs[leader].path()).unwrap();
    std::fs::create_dir_all(dirs[leader].path()).unwrap();
    let before = acked_count();
    eventually("300 more acknowledged through the survivors", || async {
        (acked_count() >= before + 300).then_some(())
    })
    .await;
    let after_kill: BTreeSet<String> = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, _)| *at > killed)
        .map(|(_, b)| b.clone())
        .collect();
    let mut resumed = std::time::Duration::ZERO;
    for r in &readers {
        let at = eventually("delivery resumes after the kill", || async {
            r.first_after(killed, &after_kill)
        })
        .await;
        resumed = resumed.max(at - killed);
    }
    eprintln!("delivery resumed {resumed:?} after the leader's SIGKILL");
    assert!(
        resumed < std::time::Duration::from_secs(5),
        "delivery resumed after {resumed:?}"
    );

    // The broker comes back empty on its old ports and rejoins under a new node id.
    let live: Vec<SocketAddr> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| http_addrs[i])
        .collect();
    let leader_stats = async || {
        for &h in &live {
            let r = topic_replication(h).await?;
            if r.role == "leader" {
                return Some(r);
            }
        }
        None
    };
    let committed_before = eventually("the new leader", leader_stats)
        .await
        .commit_index;
    brokers[leader] = Some(spawn_broker(
        dirs[leader].path(),
        &lookupd,
        tcp[leader].port(),
        http_addrs[leader].port(),
    ));
    eventually(
        "the wiped broker is a member again, past its restart",
        async || {
            let mine = topic_replication(http_addrs[leader]).await?;
            let lead = leader_stats().await?;
            let voter = lead
                .replicas
                .iter()
                .any(|r| r.node_id == mine.node_id && r.state == "voter");
            (voter
                && lead.replicas.len() == 3
                && mine.role == "follower"
                && mine.last_applied >= committed_before)
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "the wiped broker rejoined {:?} after the kill",
        killed.elapsed()
    );
    stop.cancel();
    for p in publishers {
        p.await.unwrap();
    }
    eventually(
        "the wiped broker holds all the group committed",
        async || {
            let mine = topic_replication(http_addrs[leader]).await?;
            (mine.last_applied == leader_stats().await?.commit_index).then_some(())
        },
    )
    .await;

    let all: BTreeSet<String> = acked
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| b.clone())
        .collect();
    for (r, channel) in readers.iter().zip(["billing", "audit"]) {
        let missing = eventually(
            "every acknowledged message delivered on both channels",
            || async {
                let missing = all.difference(&r.bodies()).count();
                (missing == 0).then_some(missing)
            },
        )
        .await;
        assert_eq!(missing, 0, "{channel}");
    }
    eprintln!(
        "{} acknowledged messages, all delivered on both channels",
        all.len()
    );
    for b in brokers.into_iter().flatten() {
        b.kill9();
    }
}

/// Every broker of the group is restarted in turn under load (SIGTERM for the first two, SIGKILL
/// for the last), each one back and caught up before the next goes: every acknowledged message
/// reaches a pynsq Reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_load_loses_nothing() {
    const TOPIC: &str = "ledger";
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let lookupd = start_lookupd(any, any).await;
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    let mut brokers: Vec<Option<DaemonProcess>> = dirs
        .iter()
        .map(|d| Some(spawn_broker(d.path(), &lookupd, 0, 0)))
        .collect();
    let tcp: Vec<SocketAddr> = brokers.iter().map(|b| b.as_ref().unwrap().tcp).collect();
    let http_addrs: Vec<SocketAddr> = brokers.iter().map(|b| b.as_ref().unwrap().http).collect();
    eventually("lookupd lists the three brokers", async || {
        let nodes = lookupd.get_json("/nodes").await;
        (nodes["producers"].as_array()?.len() == 3).then_some(())
    })
    .await;
    let path = format!("/topic/create?topic={TOPIC}&replicas=3");
    assert_eq!(http(http_addrs[2], "POST", &path, b"").await.0, 200);
    let topic_replication = async |h: SocketAddr| -> Option<ReplicationStats> {
        get_stats(h)
            .await
            .topic(TOPIC)
            .and_then(|t| t.replication.clone())
    };
    let leader_stats = async || {
        for &h in &http_addrs {
            if let Some(r) = topic_replication(h).await
                && r.role == "leader"
            {
                return Some((h, r));
            }
        }
        None
    };
    let (leader_http, _) = eventually("a leader", leader_stats).await;
    let path = format!("/channel/create?topic={TOPIC}&channel=c");
    assert_eq!(http(leader_http, "POST", &path, b"").await.0, 200);
    eventually("lookupd lists the topic on all three brokers", async || {
        let v = lookupd.get_json(&format!("/lookup?topic={TOPIC}")).await;
        (v["producers"].as_array()?.len() == 3).then_some(())
    })
    .await;
    let reader = PyReader::start(lookupd.http, TOPIC, "c");
    let acked: Acked = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let names = ["r0", "r1", "r2"];
    let publishers: Vec<_> = (0..3)
        .map(|i| {
            spawn_publisher(
                names[i],
                http_addrs[i],
                TOPIC,
                (acked.clone(), true),
                stop.clone(),
            )
        })
        .collect();
    let acked_count = || acked.lock().unwrap().len();

    for i in 0..3 {
        let before = acked_count();
        eventually("100 more acknowledged", || async {
            (acked_count() >= before + 100).then_some(())
        })
        .await;
        let committed = eventually("a leader", leader_stats).await.1.commit_index;
        let broker = brokers[i].take().unwrap();
        if i < 2 {
            broker.sigterm();
        } else {
            broker.kill9();
        }
        let down = acked_count();
        eventually("publishes go on while a broker is down", || async {
            (acked_count() >= down + 100).then_some(())
        })
        .await;
        brokers[i] = Some(spawn_broker(
            dirs[i].path(),
            &lookupd,
            tcp[i].port(),
            http_addrs[i].port(),
        ));
        eventually("the restarted broker is back in its group", async || {
            let mine = topic_replication(http_addrs[i]).await?;
            let (_, lead) = leader_stats().await?;
            (lead.replicas.len() == 3
                && lead.replicas.iter().any(|r| r.node_id == mine.node_id)
                && mine.last_applied >= committed)
                .then_some(())
        })
        .await;
        eprintln!(
            "broker {i} restarted; {} acknowledged so far",
            acked_count()
        );
    }
    stop.cancel();
    for p in publishers {
        p.await.unwrap();
    }
    let all: BTreeSet<String> = acked
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| b.clone())
        .collect();
    eventually("every acknowledged message delivered", || async {
        all.is_subset(&reader.bodies()).then_some(())
    })
    .await;
    eprintln!("{} acknowledged messages, all delivered", all.len());
    for b in brokers.into_iter().flatten() {
        b.kill9();
    }
}

/// The test's cut-off switch for one broker's Raft traffic: a TCP proxy in front of its HTTP
/// port (the port it registers, `--broadcast-http-port`, so the others reach it only through
/// here) and an HTTP forward proxy its own Raft requests go through (`FERRY_TEST_RAFT_PROXY`).
/// While cut, both drop every connection, open or new.
struct Cut {
    inbound: SocketAddr,
    outbound: SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Cut {
    /// Proxies in front of a broker whose HTTP port is not known yet (`target` fills it in).
    async fn new(target: Arc<std::sync::OnceLock<SocketAddr>>) -> Cut {
        let (cut, _) = tokio::sync::watch::channel(false);
        let inbound = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let outbound = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addrs = (
            inbound.local_addr().unwrap(),
            outbound.local_addr().unwrap(),
        );
        let watch = cut.subscribe();
        tokio::spawn(async move {
            while let Ok((client, _)) = inbound.accept().await {
                let Some(&to) = target.get() else { continue };
                let watch = watch.clone();
                tokio::spawn(async move {
                    if let Ok(server) = tokio::net::TcpStream::connect(to).await {
                        pipe(client, server, watch).await;
                    }
                });
            }
        });
        let watch = cut.subscribe();
        tokio::spawn(async move {
            while let Ok((client, _)) = outbound.accept().await {
                tokio::spawn(forward(client, watch.clone()));
            }
        });
        Cut {
            inbound: addrs.0,
            outbound: addrs.1,
            cut,
        }
    }

    fn set(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// Copies both ways until either side closes or the switch is cut.
async fn pipe(
    mut a: tokio::net::TcpStream,
    mut b: tokio::net::TcpStream,
    mut cut: tokio::sync::watch::Receiver<bool>,
) {
    if *cut.borrow_and_update() {
        return;
    }
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
        _ = cut.wait_for(|&c| c) => {}
    }
}

/// One proxied HTTP request: `METHOD http://host:port/path HTTP/1.1` is sent to host:port as
/// `METHOD /path HTTP/1.1` with `Connection: close`, and the answer copied back.
async fn forward(mut client: tokio::net::TcpStream, cut: tokio::sync::watch::Receiver<bool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        let Ok(n) = client.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let request = lines.next().unwrap_or_default();
    let mut parts = request.split(' ');
    let (Some(method), Some(uri), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let Some(rest) = uri.strip_prefix("http://") else {
        return;
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut out = format!("{method} {path} {version}\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if name != "connection" && name != "proxy-connection" {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("connection: close\r\n\r\n");
    if *cut.borrow() {
        return;
    }
    let Ok(mut server) = tokio::net::TcpStream::connect(authority).await else {
        return;
    };
    if server.write_all(out.as_bytes()).await.is_err()
        || server.write_all(&head[end..]).await.is_err()
    {
        return;
    }
    pipe(client, server, cut).await;
}

/// A follower, then the leader, is cut off from the others under load: nothing acknowledged is
/// lost, the cut-off leader stops delivering before another is elected (never two delivering
/// at once for as long as an election timeout), and each one rejoins once the cut heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_replica_loses_nothing_and_never_makes_two_leaders() {
    const TOPIC: &str = "audit";
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let lookupd = start_lookupd(any, any).await;
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    let targets: Vec<Arc<std::sync::OnceLock<SocketAddr>>> =
        (0..3).map(|_| Arc::default()).collect();
    let mut cuts = Vec::new();
    for t in &targets {
        cuts.push(Cut::new(t.clone()).await);
    }
    let mut brokers = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let args = [
            "--tcp-address=127.0.0.1:0".to_string(),
            "--http-address=127.0.0.1:0".to_string(),
            "--grpc-address=127.0.0.1:0".to_string(),
            format!("--data-path={}", d.path().display()),
            format!("--lookupd-tcp-address={}", lookupd.tcp),
            "--broadcast-address=127.0.0.1".to_string(),
            format!("--broadcast-http-port={}", cuts[i].inbound.port()),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proxy = format!("http://{}", cuts[i].outbound);
        let b = ferry_testkit::process::spawn(
            Path::new(env!("CARGO_BIN_EXE_brokerd")),
            &args,
            &[("FERRY_TEST_RAFT_PROXY", Path::new(&proxy))],
        );
        targets[i].set(b.http).unwrap();
        brokers.push(b);
    }
    let http_addrs: Vec<SocketAddr> = brokers.iter().map(|b| b.http).collect();
    eventually("lookupd lists the three brokers", async || {
        let nodes = lookupd.get_json("/nodes").await;
        (nodes["producers"].as_array()?.len() == 3).then_some(())
    })
    .await;
    let path = format!("/topic/create?topic={TOPIC}&replicas=3");
    let (code, body) = http(http_addrs[0], "POST", &path, b"").await;
    assert_eq!(code, 200, "{body}");
    let roles = async || -> Vec<Option<ReplicationStats>> {
        let mut all = Vec::new();
        for &h in &http_addrs {
            all.push(
                get_stats(h)
                    .await
                    .topic(TOPIC)
                    .and_then(|t| t.replication.clone()),
            );
        }
        all
    };
    let leader_of = async |among: &[usize]| -> Option<usize> {
        let all = roles().await;
        among
            .iter()
            .copied()
            .find(|&i| all[i].as_ref().is_some_and(|r| r.delivering))
    };
    let leader = eventually("a delivering leader", async || leader_of(&[0, 1, 2]).await).await;
    let path = format!("/channel/create?topic={TOPIC}&channel=c");
    assert_eq!(http(http_addrs[leader], "POST", &path, b"").await.0, 200);
    eventually("lookupd lists the topic on all three brokers", async || {
        let v = lookupd.get_json(&format!("/lookup?topic={TOPIC}")).await;
        (v["producers"].as_array()?.len() == 3).then_some(())
    })
    .await;
    let reader = PyReader::start(lookupd.http, TOPIC, "c");
    let acked: Acked = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let names = ["q0", "q1", "q2"];
    let publishers: Vec<_> = (0..3)
        .map(|i| {
            spawn_publisher(
                names[i],
                http_addrs[i],
                TOPIC,
                (acked.clone(), true),
                stop.clone(),
            )
        })
        .collect();
    // Watches how many brokers deliver at once, and for how long two or more did.
    let overlap = Arc::new(Mutex::new(std::time::Duration::ZERO));
    let watcher = {
        let (overlap, stop, http_addrs) = (overlap.clone(), stop.clone(), http_addrs.clone());
        tokio::spawn(async move {
            let mut since: Option<Instant> = None;
            while !stop.is_cancelled() {
                let mut delivering = 0;
                for &h in &http_addrs {
                    let stats = get_stats(h).await;
                    let r = stats.topic(TOPIC).and_then(|t| t.replication.clone());
                    delivering += usize::from(r.is_some_and(|r| r.delivering));
                }
                if delivering > 1 {
                    let start = *since.get_or_insert_with(Instant::now);
                    let mut worst = overlap.lock().unwrap();
                    *worst = (*worst).max(start.elapsed());
                } else {
                    since = None;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
    };
    let acked_count = || acked.lock().unwrap().len();

    // First a follower, then the leader of the moment.
    for victim_is_leader in [false, true] {
        let before = acked_count();
        eventually("100 more acknowledged", || async {
            (acked_count() >= before + 100).then_some(())
        })
        .await;
        let leader = eventually("a delivering leader", async || leader_of(&[0, 1, 2]).await).await;
        let victim = if victim_is_leader {
            leader
        } else {
            (leader + 1) % 3
        };
        let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
        cuts[victim].set(true);
        let cut_at = Instant::now();
        if victim_is_leader {
            eventually("the cut-off leader stops delivering", async || {
                let r = roles().await[victim].clone()?;
                (!r.delivering).then_some(())
            })
            .await;
            eprintln!(
                "the cut-off leader stopped delivering after {:?}",
                cut_at.elapsed()
            );
        }
        let during = acked_count();
        eventually("publishes go on through the two others", || async {
            (acked_count() >= during + 200).then_some(())
        })
        .await;
        let lead = eventually("one of the others delivers", async || {
            leader_of(&others).await
        })
        .await;
        eprintln!(
            "cut {victim} (leader: {victim_is_leader}); {lead} delivers after {:?}",
            cut_at.elapsed()
        );
        let committed = roles().await[lead].clone().unwrap().commit_index;
        cuts[victim].set(false);
        eventually(
            "the cut-off broker rejoins as a follower and catches up",
            async || {
                let all = roles().await;
                let mine = all[victim].clone()?;
                (mine.role == "follower" && !mine.delivering && mine.last_applied >= committed)
                    .then_some(())
            },
        )
        .await;
        eprintln!("{victim} rejoined {:?} after the cut", cut_at.elapsed());
    }
    stop.cancel();
    for p in publishers {
        p.await.unwrap();
    }
    watcher.await.unwrap();
    let all: BTreeSet<String> = acked
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| b.clone())
        .collect();
    eventually("every acknowledged message delivered", || async {
        all.is_subset(&reader.bodies()).then_some(())
    })
    .await;
    let worst = *overlap.lock().unwrap();
    eprintln!(
        "{} acknowledged, all delivered; two brokers delivering at once for at most {worst:?}",
        all.len()
    );
    assert!(
        worst < ferry_replica::ELECTION_TIMEOUT,
        "two leaders delivered for {worst:?}"
    );
    for b in brokers {
        b.kill9();
    }
}
