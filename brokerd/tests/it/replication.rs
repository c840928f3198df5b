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
    eventually("the rejoined replica's channel owes nothing", || async {
        let stats = get_stats(http_addrs[leader]).await;
        let topic = stats.topic(TOPIC)?;
        let channel = topic.channel(CHANNEL)?.clone();
        (topic.message_count == 550 && channel.depth == 0).then_some(())
    })
    .await;
    for b in brokers.into_iter().flatten() {
        b.kill9();
    }
}
