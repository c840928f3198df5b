//! Operator actions on a replicated topic go through its group: a pause, an unpause or a
//! channel delete sent to any one replica is carried out by all three (and survives a
//! restart); a topic delete sent to one replica deletes the topic, its group and its data on
//! every broker.

use ferry_proto::stats::Stats;

use super::Cluster;
use crate::common::{eventually, get_stats, http};

const TOPIC: &str = "settled";

/// Waits until `check` holds for `TOPIC`'s stats on every broker of `brokers`.
async fn on_all(cluster: &Cluster, brokers: &[usize], what: &str, check: impl Fn(&Stats) -> bool) {
    eventually(what, async || {
        for &i in brokers {
            if !check(&get_stats(cluster.http[i]).await) {
                return None;
            }
        }
        Some(())
    })
    .await;
}

fn channel_paused(s: &Stats, channel: &str) -> Option<bool> {
    Some(s.topic(TOPIC)?.channel(channel)?.paused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn actions_sent_to_one_replica_reach_every_replica() {
    let mut cluster = Cluster::start().await;
    let h = cluster.http.clone();
    cluster.create(TOPIC, 0).await;
    let (leader, _) = cluster.wait_leader(TOPIC, &[0, 1, 2]).await;
    for channel in ["kept", "dropped"] {
        cluster.create_channel(TOPIC, channel, leader).await;
    }
    let all = [0, 1, 2];
    on_all(&cluster, &all, "both channels on every replica", |s| {
        channel_paused(s, "kept").is_some() && channel_paused(s, "dropped").is_some()
    })
    .await;
    let follower = (leader + 1) % 3;
    let post = async |path: String| http(h[follower], "POST", &path, b"").await;

    // Each action sent to a follower, which is not the group's leader.
    let (code, body) = post(format!("/channel/pause?topic={TOPIC}&channel=kept")).await;
    assert_eq!(code, 200, "{body}");
    on_all(&cluster, &all, "the channel paused everywhere", |s| {
        channel_paused(s, "kept") == Some(true)
    })
    .await;
    assert_eq!(post(format!("/topic/pause?topic={TOPIC}")).await.0, 200);
    on_all(&cluster, &all, "the topic paused everywhere", |s| {
        s.topic(TOPIC).is_some_and(|t| t.paused)
    })
    .await;
    assert_eq!(post(format!("/topic/unpause?topic={TOPIC}")).await.0, 200);
    let (code, body) = post(format!("/channel/delete?topic={TOPIC}&channel=dropped")).await;
    assert_eq!(code, 200, "{body}");
    on_all(&cluster, &all, "the channel deleted everywhere", |s| {
        s.topic(TOPIC)
            .is_some_and(|t| !t.paused && t.channel("dropped").is_none())
    })
    .await;
    let (code, body) = post(format!("/channel/pause?topic={TOPIC}&channel=dropped")).await;
    assert_eq!(
        (code, body.contains("CHANNEL_NOT_FOUND")),
        (404, true),
        "{body}"
    );

    // A replica killed and restarted keeps what the group did.
    let other = (leader + 2) % 3;
    cluster.kill(other);
    cluster.restart(other);
    on_all(
        &cluster,
        &[other],
        "the restarted replica as the group left it",
        |s| {
            s.topic(TOPIC).is_some_and(|t| {
                !t.paused
                    && t.channel("dropped").is_none()
                    && t.channel("kept").is_some_and(|c| c.paused)
            })
        },
    )
    .await;

    let holds_topic = |dir: &std::path::Path| {
        std::fs::read_dir(dir.join("topics"))
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().contains(TOPIC))
    };
    assert!(cluster.dirs.iter().all(|d| holds_topic(d.path())));

    // A topic delete sent to one replica removes the topic, its group and its data everywhere,
    // and the topic leaves lookupd.
    let (code, body) = post(format!("/topic/delete?topic={TOPIC}")).await;
    assert_eq!(code, 200, "{body}");
    on_all(&cluster, &all, "the topic deleted everywhere", |s| {
        s.topic(TOPIC).is_none()
    })
    .await;
    for dir in &cluster.dirs {
        eventually("the replica's files to go", async || {
            (!holds_topic(dir.path())).then_some(())
        })
        .await;
    }
    eventually("lookupd to forget the topic", async || {
        let (code, _) = http(
            cluster.lookupd.http,
            "GET",
            &format!("/lookup?topic={TOPIC}"),
            b"",
        )
        .await;
        (code == 404).then_some(())
    })
    .await;
}
