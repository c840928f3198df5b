//! Channel state is as durable as the log (the per-topic journal): an answered `/channel/empty`
//! survives a SIGKILL right after it, and FINs covered by a sync are never redelivered after a
//! SIGKILL, while everything not FINed is.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::*;
use ferry_proto::stats::ChannelStats;
use ferry_proto::v2::Command;

async fn post(p: &BrokerProcess, path: &str) {
    let (code, body) = http(p.http, "POST", path, b"").await;
    assert_eq!(code, 200, "{path}: {body}");
}

async fn mpub(p: &BrokerProcess, topic: &str, bodies: Vec<Vec<u8>>) {
    let mut c = TestConn::connect(p.tcp).await;
    c.send(&Command::Mpub {
        topic: topic.into(),
        bodies: bodies.into_iter().map(Into::into).collect(),
    })
    .await;
    c.expect_ok().await;
}

async fn channel(p: &BrokerProcess, topic: &str, channel: &str) -> ChannelStats {
    let s = get_stats(p.http).await;
    s.channel(topic, channel)
        .cloned()
        .unwrap_or_else(|| panic!("no {topic}/{channel} in {s:?}"))
}

/// Receives messages until one with body `marker`, FINing them; returns the bodies before it.
async fn until_marker(c: &mut TestConn, marker: &[u8]) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    loop {
        let m = c.message().await;
        c.fin(&m.id).await;
        if &m.body[..] == marker {
            return got;
        }
        got.push(m.body.to_vec());
    }
}

#[tokio::test]
async fn channel_empty_answered_survives_an_immediate_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    // A long sync timeout: only the empty itself can have made it durable.
    let p = spawn_brokerd(dir.path(), &["--sync-timeout=60s"]);
    post(&p, "/channel/create?topic=t&channel=c").await;
    mpub(
        &p,
        "t",
        (0..200).map(|i| format!("m{i}").into_bytes()).collect(),
    )
    .await;
    // Some in flight, some requeued with a delay, the rest waiting.
    let mut c = TestConn::connect(p.tcp).await;
    c.identify(serde_json::json!({})).await;
    c.sub("t", "c").await;
    c.rdy(20).await;
    for i in 0..20 {
        let m = c.message().await;
        if i % 4 == 0 {
            c.send(&Command::Req {
                id: m.id,
                timeout_ms: 600_000,
            })
            .await;
        }
    }
    c.rdy(0).await;
    post(&p, "/channel/empty?topic=t&channel=c").await;
    p.kill9();

    let p = spawn_brokerd(dir.path(), &["--sync-timeout=60s"]);
    let ch = channel(&p, "t", "c").await;
    assert_eq!(ch.depth, 0, "{ch:?}");
    assert_eq!(ch.in_flight_count, 0, "{ch:?}");
    assert_eq!(ch.deferred_count, 0, "{ch:?}");
    // Nothing from before the empty is delivered: the first message is one published now.
    assert_first_delivery_is_new(&p).await;
    p.kill9();
}

/// Publishes a marker to `t` and checks it is the first message channel `c` delivers.
async fn assert_first_delivery_is_new(p: &BrokerProcess) {
    mpub(p, "t", vec![b"after".to_vec()]).await;
    let mut c = TestConn::connect(p.tcp).await;
    c.identify(serde_json::json!({})).await;
    c.sub("t", "c").await;
    c.rdy(10).await;
    assert!(until_marker(&mut c, b"after").await.is_empty());
}

/// The topic's channel ops made durable in its journal so far, from `/metrics`.
async fn journal_ops(p: &BrokerProcess, topic: &str) -> f64 {
    let (s, _) = scrape(p.http).await;
    metric(&s, "ferry_topic_journal_ops_total", &[("topic", topic)])
}

#[tokio::test]
async fn fins_covered_by_a_sync_are_not_redelivered_after_sigkill() {
    const N: usize = 1_100;
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--sync-timeout=200ms"];
    let p = spawn_brokerd(dir.path(), &flags);
    post(&p, "/channel/create?topic=t&channel=c").await;
    mpub(
        &p,
        "t",
        (0..N).map(|i| format!("m{i}").into_bytes()).collect(),
    )
    .await;
    let mut c = TestConn::connect(p.tcp).await;
    c.identify(serde_json::json!({"msg_timeout": 600_000}))
        .await;
    c.sub("t", "c").await;
    c.rdy(N as u64).await;
    // FIN 1,000 of them; every 11th stays in flight.
    let (mut finished, mut unfinished) = (HashSet::new(), HashSet::new());
    for i in 0..N {
        let m = c.message().await;
        if i % 11 == 10 {
            unfinished.insert(m.body.to_vec());
        } else {
            c.fin(&m.id).await;
            finished.insert(m.body.to_vec());
        }
    }
    assert_eq!(finished.len(), 1_000);
    eventually("the FINs to be processed", || async {
        let ch = channel(&p, "t", "c").await;
        (ch.clients.first()?.finish_count == 1_000).then_some(())
    })
    .await;
    // The FINs are the only ops (nothing timed out or was requeued): a sync covered them all
    // once the journal holds 1,000 ops.
    eventually("a journal sync covering the FINs", || async {
        (journal_ops(&p, "t").await >= 1_000.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    p.kill9();

    let p = spawn_brokerd(dir.path(), &flags);
    // The journal was folded into a new snapshot at open: no journal file is left (nothing
    // happened since to start the next one).
    let topic_dir = dir.path().join("topics/t.topic");
    let journals: Vec<_> = std::fs::read_dir(&topic_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("journal."))
        .collect();
    assert!(journals.is_empty(), "{journals:?}");
    mpub(&p, "t", vec![b"marker".to_vec()]).await;
    let mut c = TestConn::connect(p.tcp).await;
    c.identify(serde_json::json!({})).await;
    c.sub("t", "c").await;
    c.rdy(500).await;
    let got = until_marker(&mut c, b"marker").await;
    let got: HashSet<Vec<u8>> = got.into_iter().collect();
    let again: Vec<_> = got.intersection(&finished).collect();
    assert!(
        again.is_empty(),
        "{} FINed messages redelivered",
        again.len()
    );
    assert_eq!(got, unfinished, "exactly the unFINed ones are redelivered");
    p.kill9();
}

#[tokio::test]
async fn topic_empty_answered_survives_an_immediate_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--sync-timeout=60s"];
    let p = spawn_brokerd(dir.path(), &flags);
    // No channel: the topic keeps a backlog of its own, which /topic/empty drops.
    mpub(
        &p,
        "t",
        (0..50).map(|i| format!("m{i}").into_bytes()).collect(),
    )
    .await;
    post(&p, "/topic/empty?topic=t").await;
    p.kill9();

    let p = spawn_brokerd(dir.path(), &flags);
    let s = get_stats(p.http).await;
    let t = s
        .topic("t")
        .unwrap_or_else(|| panic!("no topic t in {s:?}"));
    assert_eq!(t.depth, 0, "{t:?}");
    // A first channel starts after the emptied backlog.
    assert_first_delivery_is_new(&p).await;
    p.kill9();
}
