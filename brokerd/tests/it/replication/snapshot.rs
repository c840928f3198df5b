//! Snapshots and the Raft log's purge: with a small `--raft-snapshot-every`, every replica
//! snapshots and purges its Raft log as the topic grows; a broker that comes back on a wiped
//! disk once the entries it would need are gone installs the leader's snapshot, fetching the
//! messages from the other members (skipping those every channel had finished, deleted
//! everywhere), and then holds what they hold (the same messages under the same IDs, the same
//! channel state), and can deliver it.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use ferry_proto::v2::{Command, Frame, HEARTBEAT};
use serde_json::Value;

use super::Cluster;
use crate::common::{TestConn, eventually, get_stats, http};

const TOPIC: &str = "ledger";

/// Publishes `<prefix>-<i>` for `range` on one connection to `tcp`, one PUB (one Raft entry)
/// each.
async fn publish(tcp: SocketAddr, prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    let mut conn = TestConn::connect(tcp).await;
    let mut sent = Vec::new();
    for i in range {
        let body = format!("{prefix}-{i}");
        conn.publish(TOPIC, body.as_bytes()).await;
        sent.push(body);
    }
    sent
}

/// What `channel` holds on the broker at `h`, as `/channel/peek` lists it (IDs, bodies,
/// attempts) with its depth, for comparing replicas.
async fn peek(h: SocketAddr, channel: &str) -> Value {
    let path = format!("/channel/peek?topic={TOPIC}&channel={channel}&n=1000");
    let (code, body) = http(h, "GET", &path, b"").await;
    assert_eq!(code, 200, "{body}");
    let mut v: Value = serde_json::from_str(&body).unwrap();
    // Peek shows how long ago each message was published: not a replica's state.
    for list in ["messages", "in_flight", "deferred"] {
        for m in v[list].as_array_mut().into_iter().flatten() {
            if let Some(m) = m.as_object_mut() {
                m.retain(|k, _| k == "id" || k == "body" || k == "attempts");
            }
        }
    }
    v
}

/// Reads `channel` on the broker at `tcp` until it got every one of `want`, FINing each.
async fn consume_all(tcp: SocketAddr, channel: &str, want: &BTreeSet<String>) {
    let mut conn = TestConn::connect(tcp).await;
    conn.identify(serde_json::json!({"client_id": "snapshot-test", "heartbeat_interval": 1000}))
        .await;
    conn.sub(TOPIC, channel).await;
    conn.rdy(1000).await;
    let mut got = BTreeSet::new();
    while !want.is_subset(&got) {
        match conn.frame_within(ferry_testkit::DEADLINE).await {
            Ok(Some(Frame::Response(r))) if &r[..] == HEARTBEAT => conn.send(&Command::Nop).await,
            Ok(Some(Frame::Message(m))) => {
                got.insert(String::from_utf8(m.body.to_vec()).unwrap());
                conn.send(&Command::Fin(m.id)).await;
            }
            Ok(Some(_)) => {}
            other => panic!(
                "{channel} on {tcp}: {other:?} with {} of {} delivered",
                want.intersection(&got).count(),
                want.len()
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_broker_rejoins_from_a_snapshot_once_the_log_is_purged() {
    // Small segments, so what every channel finished is deleted as it goes.
    let flags = ["--raft-snapshot-every=16", "--max-bytes-per-file=4096"];
    let mut cluster = Cluster::start_with(|_| (flags.map(String::from).to_vec(), Vec::new())).await;
    let (tcp, h) = (cluster.tcp.clone(), cluster.http.clone());
    cluster.create(TOPIC, 0).await;
    let (leader, _) = cluster.wait_leader(TOPIC, &[0, 1, 2]).await;
    cluster.create_channel(TOPIC, "done", leader).await;
    // One PUB is one entry: 300 entries through all three brokers, many snapshots. The first
    // 200 are finished before `kept` exists, so their segments go.
    let mut sent = Vec::new();
    for (i, &t) in tcp.iter().enumerate().take(2) {
        sent.extend(publish(t, &format!("b{i}"), 0..100).await);
    }
    consume_all(tcp[leader], "done", &sent.iter().cloned().collect()).await;
    let oldest = |s: &ferry_proto::stats::Stats| s.topic(TOPIC).map(|t| t.oldest_sequence);
    let first_seq = oldest(&get_stats(h[leader]).await).unwrap();
    cluster.create_channel(TOPIC, "kept", leader).await;
    sent.extend(publish(tcp[2], "b2", 0..100).await);
    consume_all(tcp[leader], "done", &sent[200..].iter().cloned().collect()).await;
    eventually("the leader to delete finished segments", async || {
        (oldest(&get_stats(h[leader]).await)? > first_seq + 100).then_some(())
    })
    .await;
    // A channel setting the snapshot carries: `kept` is paused on the leader.
    let path = format!("/channel/pause?topic={TOPIC}&channel=kept");
    assert_eq!(http(h[leader], "POST", &path, b"").await.0, 200);

    // Every replica snapshots and purges its Raft log as it goes.
    for i in 0..3 {
        eventually("a replica to purge its raft log", async || {
            let r = cluster.replication(i, TOPIC).await?;
            (r.snapshot_index? >= 200 && r.purged_index? >= 150).then_some(())
        })
        .await;
    }

    // A follower's machine is replaced: it comes back with an empty disk, when the entries
    // it would replay are long gone.
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    cluster.kill(follower);
    cluster.wipe(follower);
    cluster.restart(follower);
    sent.extend(publish(tcp[other], "after", 0..40).await);
    let committed = cluster
        .replication(leader, TOPIC)
        .await
        .unwrap()
        .commit_index;
    cluster.wait_rejoined(follower, TOPIC, committed).await;
    let log = cluster.brokers[follower]
        .as_ref()
        .unwrap()
        .log
        .lock()
        .unwrap()
        .clone();
    assert!(
        log.iter()
            .any(|l| l.contains("installed a snapshot of the group")),
        "the rejoined replica installed no snapshot:\n{}",
        log.join("\n")
    );

    // It holds what the leader holds: the same messages under the same IDs in `kept` (the
    // last 100 of the first 300, and 40 since), the same paused flag; `done` owes what the
    // leader's owes (the 40 published since).
    let after: BTreeSet<String> = sent[300..].iter().cloned().collect();
    for channel in ["kept", "done"] {
        eventually(
            "the rejoined replica's channel to match the leader's",
            async || {
                let (mine, lead) = (
                    peek(h[follower], channel).await,
                    peek(h[leader], channel).await,
                );
                (mine == lead).then_some(())
            },
        )
        .await;
    }
    let kept = peek(h[follower], "kept").await;
    assert_eq!(kept["depth"], 140, "{kept}");
    let stats = get_stats(h[follower]).await;
    let topic = stats.topic(TOPIC).unwrap();
    assert!(topic.channel("kept").unwrap().paused);
    assert_eq!(topic.channel("done").unwrap().depth, 40);
    // What every channel had finished is not kept (not fetched, or deleted since).
    eventually(
        "the rejoined replica to keep no finished message",
        async || (oldest(&get_stats(h[follower]).await)? > first_seq + 100).then_some(()),
    )
    .await;

    // The leader dies: whichever replica leads next delivers every message `done` owes.
    cluster.kill(leader);
    let (next, _) = cluster.wait_leader(TOPIC, &[follower, other]).await;
    eprintln!(
        "new leader: the {} replica",
        if next == follower {
            "rejoined"
        } else {
            "other"
        }
    );
    consume_all(tcp[next], "done", &after).await;
}
