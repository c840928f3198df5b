//! One connection pipelining many commands in one write: consecutive PUBs/MPUBs are appended
//! as one batch, yet every command keeps its own answer in order (errors included), and with
//! `--sync-every=1` the answers wait for group-committed syncs without blocking the connection.

use crate::common::*;
use bytes::{Bytes, BytesMut};
use ferry_proto::MessageId;
use ferry_proto::v2::{Command, Frame};

fn encode(cmds: &[Command]) -> BytesMut {
    let mut b = BytesMut::new();
    for c in cmds {
        c.encode(&mut b);
    }
    b
}

fn pub_(topic: &str, body: &str) -> Command {
    Command::Pub {
        topic: topic.into(),
        body: Bytes::copy_from_slice(body.as_bytes()),
    }
}

/// Receives `n` messages on `c` and FINs them; returns their bodies in arrival order.
async fn drain(c: &mut TestConn, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..n {
        let m = c.message().await;
        got.push(String::from_utf8_lossy(&m.body).into_owned());
        c.fin(&m.id).await;
    }
    got
}

/// The number of log syncs `topic` has done, from `/metrics`.
async fn fsync_count(b: &TestBroker, topic: &str) -> u64 {
    let (_, body) = scrape(b.http).await;
    let label = format!("topic=\"{topic}\"");
    body.lines()
        .find(|l| l.starts_with("ferry_topic_fsync_duration_seconds_count{") && l.contains(&label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// A fatal invalid message in the middle of a pipelined burst: the PUBs before it are
/// acknowledged and delivered, then comes its own error, and nothing after it is executed
/// (the connection closes, as nsqd does for `E_BAD_MESSAGE`).
async fn invalid_message_in_burst(sync_every: u64) {
    let b = start(|c| c.sync_every = sync_every).await;
    let mut p = b.conn().await;
    let mut burst = encode(
        &(0..5)
            .map(|i| pub_("t", &format!("m{i}")))
            .collect::<Vec<_>>(),
    );
    burst.extend_from_slice(b"PUB t\n\0\0\0\0");
    burst.extend_from_slice(&encode(&[pub_("t", "after")]));
    p.send_raw(&burst).await;
    for _ in 0..5 {
        p.expect_ok().await;
    }
    let text = p.expect_error("E_BAD_MESSAGE").await;
    assert!(text.contains("invalid message body size 0"), "{text}");
    p.expect_closed().await;
    let mut c = b.consumer("t", "ch", 100).await;
    assert_eq!(drain(&mut c, 5).await, ["m0", "m1", "m2", "m3", "m4"]);
    c.expect_no_message(std::time::Duration::from_millis(200))
        .await;
    b.stop().await;
}

#[tokio::test]
async fn invalid_message_mid_burst_answers_in_order() {
    invalid_message_in_burst(2500).await;
}

#[tokio::test]
async fn invalid_message_mid_burst_answers_in_order_power_safe() {
    invalid_message_in_burst(1).await;
}

/// PUBs and MPUBs to two topics interleaved in one buffer: one OK per command, in order, and
/// each topic gets its own messages in order.
async fn two_topics_interleaved(sync_every: u64) {
    let b = start(|c| c.sync_every = sync_every).await;
    let mut ca = b.consumer("a", "ch", 100).await;
    let mut cb = b.consumer("b", "ch", 100).await;
    let mut p = b.conn().await;
    let cmds = vec![
        pub_("a", "a0"),
        pub_("a", "a1"),
        pub_("b", "b0"),
        pub_("a", "a2"),
        Command::Mpub {
            topic: "b".into(),
            bodies: vec![Bytes::from_static(b"b1"), Bytes::from_static(b"b2")],
        },
        pub_("b", "b3"),
        Command::Mpub {
            topic: "a".into(),
            bodies: vec![Bytes::from_static(b"a3"), Bytes::from_static(b"a4")],
        },
        pub_("a", "a5"),
    ];
    let n = cmds.len();
    p.send_raw(&encode(&cmds)).await;
    for _ in 0..n {
        p.expect_ok().await;
    }
    assert_eq!(
        drain(&mut ca, 6).await,
        ["a0", "a1", "a2", "a3", "a4", "a5"]
    );
    assert_eq!(drain(&mut cb, 4).await, ["b0", "b1", "b2", "b3"]);
    let stats = b.stats().await;
    assert_eq!(stats.topic("a").unwrap().message_count, 6);
    assert_eq!(stats.topic("b").unwrap().message_count, 4);
    b.stop().await;
}

#[tokio::test]
async fn two_topics_interleaved_in_one_buffer() {
    two_topics_interleaved(2500).await;
}

#[tokio::test]
async fn two_topics_interleaved_in_one_buffer_power_safe() {
    two_topics_interleaved(1).await;
}

/// SUB, FIN (a non-fatal error) and RDY between PUBs in one buffer: the answers keep the
/// commands' order, the failing FIN gets its error at its position, and the PUBs after it
/// still succeed; the subscribed connection then receives what it published.
async fn sub_and_fin_keep_order(sync_every: u64) {
    let b = start(|c| c.sync_every = sync_every).await;
    let mut c = b.conn().await;
    c.identify(serde_json::json!({"client_id": "p", "feature_negotiation": true}))
        .await;
    let bogus = MessageId::from_seq(12345);
    let cmds = vec![
        pub_("t", "m0"),
        pub_("t", "m1"),
        Command::Sub {
            topic: "t".into(),
            channel: "ch".into(),
        },
        pub_("t", "m2"),
        Command::Fin(bogus),
        pub_("t", "m3"),
        pub_("other", "x"),
        Command::Fin(bogus),
        pub_("t", "m4"),
    ];
    c.send_raw(&encode(&cmds)).await;
    c.expect_ok().await; // PUB m0
    c.expect_ok().await; // PUB m1
    c.expect_ok().await; // SUB
    c.expect_ok().await; // PUB m2
    c.expect_error("E_FIN_FAILED").await;
    c.expect_ok().await; // PUB m3
    c.expect_ok().await; // PUB other
    c.expect_error("E_FIN_FAILED").await;
    c.expect_ok().await; // PUB m4
    c.rdy(10).await;
    assert_eq!(drain(&mut c, 5).await, ["m0", "m1", "m2", "m3", "m4"]);
    b.wait_channel("t", "ch", "all finished", |ch| {
        ch.in_flight_count == 0 && ch.message_count == 5
    })
    .await;
    b.stop().await;
}

#[tokio::test]
async fn sub_and_fin_in_pipeline_keep_response_order() {
    sub_and_fin_keep_order(2500).await;
}

#[tokio::test]
async fn sub_and_fin_in_pipeline_keep_response_order_power_safe() {
    sub_and_fin_keep_order(1).await;
}

/// `--sync-every=1`: 2,000 PUBs pipelined on one connection are all answered, and the syncs
/// that made them durable are shared (group commit across the connection's batches), far
/// fewer than one per PUB.
#[tokio::test]
async fn power_safe_pipelined_pubs_share_syncs() {
    const N: usize = 2000;
    let b = start(|c| c.sync_every = 1).await;
    let mut p = b.conn().await;
    let cmds: Vec<Command> = (0..N).map(|i| pub_("durable", &format!("m{i}"))).collect();
    p.send_raw(&encode(&cmds)).await;
    for _ in 0..N {
        match p.frame().await.expect("connection open") {
            Frame::Response(r) => assert_eq!(&r[..], b"OK"),
            f => panic!("expected OK, got {f:?}"),
        }
    }
    let syncs = fsync_count(&b, "durable").await;
    assert!(syncs >= 1, "acknowledged without a sync");
    assert!(syncs <= N as u64 / 10, "{syncs} syncs for {N} PUBs");
    let stats = b.stats().await;
    let topic = stats.topic("durable").expect("topic listed");
    assert_eq!(topic.message_count, N as u64);
    // The consumer gets them all, in order.
    let mut c = b.consumer("durable", "ch", 2500).await;
    let got = drain(&mut c, N).await;
    assert!(got.iter().enumerate().all(|(i, m)| *m == format!("m{i}")));
    b.stop().await;
}

/// With auth: a pipelined PUB to a topic the grant does not cover fails at its position (after
/// the OKs of the authorized PUBs before it, which are delivered) and closes the connection.
#[tokio::test]
async fn unauthorized_pub_mid_burst_answers_in_order() {
    let (addr, server) = auth_server().await;
    server.grant(
        "pub",
        grant("publisher", 3600, "^orders$", &[".*"], &["publish"]),
    );
    server.grant(
        "sub",
        grant("reader", 3600, "^orders$", &[".*"], &["subscribe"]),
    );
    let b = start(|c| c.auth_http_addresses = vec![addr.to_string()]).await;
    let mut p = b.conn().await;
    p.identify(serde_json::json!({"feature_negotiation": true}))
        .await;
    p.send(&Command::Auth(Bytes::from_static(b"pub"))).await;
    p.expect_response().await;
    let cmds = vec![
        pub_("orders", "o0"),
        pub_("orders", "o1"),
        pub_("secret", "s0"),
        pub_("orders", "o2"),
    ];
    p.send_raw(&encode(&cmds)).await;
    p.expect_ok().await;
    p.expect_ok().await;
    p.expect_error("E_UNAUTHORIZED").await;
    p.expect_closed().await;
    let mut c = b.conn().await;
    c.identify(serde_json::json!({"feature_negotiation": true}))
        .await;
    c.send(&Command::Auth(Bytes::from_static(b"sub"))).await;
    c.expect_response().await;
    c.sub("orders", "ch").await;
    c.rdy(10).await;
    assert_eq!(drain(&mut c, 2).await, ["o0", "o1"]);
    c.expect_no_message(std::time::Duration::from_millis(200))
        .await;
    let stats = b.stats().await;
    assert!(stats.topic("secret").is_none(), "nothing published to it");
    b.stop().await;
}
