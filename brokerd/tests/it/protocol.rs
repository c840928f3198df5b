//! Protocol V2 against a real broker on loopback: every command, error codes, fatal vs non-fatal,
//! fan-out, load balancing, timeouts, REQ, DPUB, TOUCH, pause, ephemeral cleanup.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::*;
use ferry_proto::MessageId;
use ferry_proto::v2::{Command, Frame};

#[tokio::test]
async fn pub_sub_fin_round_trip() {
    let b = start(|_| {}).await;
    let mut c = b.consumer("t", "ch", 10).await;
    let mut p = b.conn().await;
    p.publish("t", b"hello").await;
    let m = c.message().await;
    assert_eq!(&m.body[..], b"hello");
    assert_eq!(m.attempts, 1);
    assert!(m.id.to_seq().is_some(), "ids are 16 hex chars");
    c.fin(&m.id).await;
    b.wait_channel("t", "ch", "fin", |c| {
        c.in_flight_count == 0 && c.message_count == 1
    })
    .await;
    b.stop().await;
}

#[tokio::test]
async fn identify_feature_negotiation_reply() {
    let b = start(|_| {}).await;
    let mut c = b.conn().await;
    let r = c
        .identify(serde_json::json!({
            "client_id": "x", "hostname": "h", "user_agent": "ua/1", "feature_negotiation": true,
            "heartbeat_interval": 5000, "msg_timeout": 3000, "short_id": "x", "long_id": "y",
            "tls_v1": true
        }))
        .await;
    let v: serde_json::Value = serde_json::from_slice(&r).unwrap();
    assert_eq!(v["max_rdy_count"], 2500);
    assert_eq!(v["msg_timeout"], 3000);
    assert_eq!(v["tls_v1"], false, "no certificate configured");
    assert_eq!(v["snappy"], false);
    assert_eq!(v["deflate"], false);
    assert_eq!(v["max_deflate_level"], 6);
    assert_eq!(v["auth_required"], false);
    assert_eq!(v["output_buffer_size"], 16384);
    assert_eq!(v["output_buffer_timeout"], 250);
    // Without feature negotiation the answer is a plain OK.
    let mut c2 = b.conn().await;
    assert_eq!(
        c2.identify(serde_json::json!({"client_id": "y"})).await,
        b"OK"
    );
    b.stop().await;
}

#[tokio::test]
async fn identify_compression_negotiation() {
    let b = start(|c| {
        c.snappy = false;
        c.max_deflate_level = 4;
    })
    .await;
    // Both at once: refused.
    let mut c = b.conn().await;
    c.send(&ferry_proto::v2::Command::Identify(
        serde_json::to_vec(&serde_json::json!({
            "feature_negotiation": true, "snappy": true, "deflate": true
        }))
        .unwrap()
        .into(),
    ))
    .await;
    let text = c.expect_error("E_IDENTIFY_FAILED").await;
    assert_eq!(
        text,
        "E_IDENTIFY_FAILED cannot enable both deflate and snappy compression"
    );
    c.expect_closed().await;
    // Snappy switched off by flag: answered false, the connection stays plain.
    let mut c = b.conn().await;
    let r = c
        .identify(serde_json::json!({"feature_negotiation": true, "snappy": true}))
        .await;
    let v: serde_json::Value = serde_json::from_slice(&r).unwrap();
    assert_eq!(
        (v["snappy"].clone(), v["deflate"].clone()),
        (false.into(), false.into())
    );
    c.send(&ferry_proto::v2::Command::Nop).await;
    c.publish("plain", b"x").await;
    // DEFLATE level capped at --max-deflate-level.
    let mut c = b.conn().await;
    let r = c
        .identify(
            serde_json::json!({"feature_negotiation": true, "deflate": true, "deflate_level": 9}),
        )
        .await;
    let v: serde_json::Value = serde_json::from_slice(&r).unwrap();
    assert_eq!(v["deflate"], true);
    assert_eq!(v["deflate_level"], 4);
    assert_eq!(v["max_deflate_level"], 4);
    b.stop().await;
}

#[tokio::test]
async fn identify_out_of_range_is_fatal_bad_body() {
    let b = start(|_| {}).await;
    for (field, value, text) in [
        (
            "heartbeat_interval",
            999,
            "IDENTIFY heartbeat interval (999) is invalid",
        ),
        (
            "heartbeat_interval",
            60001,
            "IDENTIFY heartbeat interval (60001) is invalid",
        ),
        (
            "output_buffer_size",
            10,
            "IDENTIFY output buffer size (10) is invalid",
        ),
        (
            "output_buffer_timeout",
            10,
            "IDENTIFY output buffer timeout (10) is invalid",
        ),
        ("sample_rate", 100, "IDENTIFY sample rate (100) is invalid"),
        ("msg_timeout", 999, "IDENTIFY msg timeout (999) is invalid"),
    ] {
        let mut c = b.conn().await;
        c.send(&Command::Identify(
            serde_json::to_vec(&serde_json::json!({ field: value }))
                .unwrap()
                .into(),
        ))
        .await;
        let e = c.expect_error("E_BAD_BODY").await;
        assert_eq!(e, format!("E_BAD_BODY {text}"));
        c.expect_closed().await;
    }
    let mut c = b.conn().await;
    c.send(&Command::Identify(b"{not json".to_vec().into()))
        .await;
    c.expect_error("E_BAD_BODY").await;
    c.expect_closed().await;
    b.stop().await;
}

#[tokio::test]
async fn bad_magic_gets_e_bad_protocol_and_close() {
    let b = start(|_| {}).await;
    let mut s = tokio::net::TcpStream::connect(b.tcp).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"  V1").await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let mut buf = bytes::BytesMut::from(&out[..]);
    match ferry_proto::v2::decode_frame(&mut buf, 1 << 20).unwrap() {
        Some(Frame::Error(e)) => assert_eq!(&e[..], b"E_BAD_PROTOCOL"),
        f => panic!("{f:?}"),
    }
    // The broker keeps serving others.
    let mut p = b.conn().await;
    p.publish("t", b"x").await;
    b.stop().await;
}

#[tokio::test]
async fn garbage_and_unknown_commands_are_fatal_e_invalid() {
    let b = start(|_| {}).await;
    let mut c = b.conn().await;
    c.send_raw(b"HELLO world\n").await;
    let e = c.expect_error("E_INVALID").await;
    assert_eq!(e, "E_INVALID invalid command HELLO");
    c.expect_closed().await;

    let mut c = b.conn().await;
    c.send_raw(&[0xff; 4096]).await;
    c.expect_error("E_INVALID").await;
    c.expect_closed().await;

    let mut ok = b.conn().await;
    ok.publish("still", b"serving").await;
    b.stop().await;
}

#[tokio::test]
async fn invalid_names_and_sizes() {
    let b = start(|c| c.max_msg_size = 100).await;
    let mut c = b.conn().await;
    c.send_raw(b"PUB bad!name\n").await;
    assert_eq!(
        c.expect_error("E_BAD_TOPIC").await,
        "E_BAD_TOPIC PUB topic name \"bad!name\" is not valid"
    );
    c.expect_closed().await;

    let mut c = b.conn().await;
    c.identify(serde_json::json!({})).await;
    c.send_raw(b"SUB good bad/channel\n").await;
    c.expect_error("E_BAD_CHANNEL").await;
    c.expect_closed().await;

    let mut c = b.conn().await;
    c.send_raw(b"PUB t\n\x00\x00\x00\x65").await; // 101 > 100
    assert_eq!(
        c.expect_error("E_BAD_MESSAGE").await,
        "E_BAD_MESSAGE PUB message too big 101 > 100"
    );
    c.expect_closed().await;

    let mut c = b.conn().await;
    c.send_raw(b"PUB t\n\x00\x00\x00\x00").await;
    c.expect_error("E_BAD_MESSAGE").await;
    c.expect_closed().await;

    let mut c = b.conn().await;
    c.send_raw(b"MPUB t\n\x7f\x00\x00\x00").await;
    c.expect_error("E_BAD_BODY").await;
    c.expect_closed().await;
    b.stop().await;
}

#[tokio::test]
async fn state_errors() {
    let b = start(|_| {}).await;
    for cmd in [
        Command::Rdy(1),
        Command::Fin(MessageId::from_seq(1)),
        Command::Req {
            id: MessageId::from_seq(1),
            timeout_ms: 0,
        },
        Command::Touch(MessageId::from_seq(1)),
        Command::Cls,
    ] {
        let mut c = b.conn().await;
        let name = cmd.name();
        c.send(&cmd).await;
        let e = c.expect_error("E_INVALID").await;
        assert_eq!(e, format!("E_INVALID cannot {name} in current state"));
        c.expect_closed().await;
    }
    // SUB with heartbeats disabled.
    let mut c = b.conn().await;
    c.identify(serde_json::json!({"heartbeat_interval": -1}))
        .await;
    c.send(&Command::Sub {
        topic: "t".into(),
        channel: "c".into(),
    })
    .await;
    assert_eq!(
        c.expect_error("E_INVALID").await,
        "E_INVALID cannot SUB with heartbeats disabled"
    );
    // A second SUB is fatal.
    let mut c = b.consumer("t", "c", 0).await;
    c.send(&Command::Sub {
        topic: "t".into(),
        channel: "c".into(),
    })
    .await;
    c.expect_error("E_INVALID").await;
    c.expect_closed().await;
    // AUTH when auth is not enabled.
    let mut c = b.conn().await;
    c.send(&Command::Auth(b"secret".to_vec().into())).await;
    assert_eq!(
        c.expect_error("E_AUTH_DISABLED").await,
        "E_AUTH_DISABLED AUTH Disabled"
    );
    c.expect_closed().await;
    b.stop().await;
}

#[tokio::test]
async fn rdy_above_max_is_fatal() {
    let b = start(|c| c.max_rdy_count = 50).await;
    let mut c = b.consumer("t", "c", 50).await;
    c.rdy(51).await;
    assert_eq!(
        c.expect_error("E_INVALID").await,
        "E_INVALID RDY count 51 out of range 0-50"
    );
    c.expect_closed().await;
    b.stop().await;
}

#[tokio::test]
async fn fin_unknown_id_is_not_fatal() {
    let b = start(|_| {}).await;
    let mut c = b.consumer("t", "c", 1).await;
    let id = MessageId::from_seq(42);
    c.fin(&id).await;
    let e = c.expect_error("E_FIN_FAILED").await;
    assert_eq!(e, format!("E_FIN_FAILED FIN {id} failed ID not in flight"));
    c.send(&Command::Req { id, timeout_ms: 0 }).await;
    c.expect_error("E_REQ_FAILED").await;
    c.send(&Command::Touch(id)).await;
    c.expect_error("E_TOUCH_FAILED").await;
    // Still connected and working.
    let mut p = b.conn().await;
    p.publish("t", b"after").await;
    assert_eq!(&c.message().await.body[..], b"after");
    // A malformed id (not 16 bytes) is fatal.
    c.send_raw(b"FIN 123\n").await;
    c.expect_error("E_INVALID").await;
    c.expect_closed().await;
    b.stop().await;
}

#[tokio::test]
async fn only_owner_may_fin() {
    let b = start(|_| {}).await;
    let mut a = b.consumer("t", "c", 1).await;
    let mut other = b.consumer("t", "c", 0).await;
    b.conn().await.publish("t", b"m").await;
    let m = a.message().await;
    other.fin(&m.id).await;
    let e = other.expect_error("E_FIN_FAILED").await;
    assert!(e.ends_with("client does not own message"), "{e}");
    a.fin(&m.id).await;
    b.wait_channel("t", "c", "fin", |c| c.in_flight_count == 0)
        .await;
    b.stop().await;
}

#[tokio::test]
async fn mpub_and_dpub() {
    let b = start(|_| {}).await;
    let mut c = b.consumer("t", "c", 100).await;
    let mut p = b.conn().await;
    p.send(&Command::Mpub {
        topic: "t".into(),
        bodies: (0..10)
            .map(|i| format!("m{i}").into_bytes().into())
            .collect(),
    })
    .await;
    p.expect_ok().await;
    for i in 0..10 {
        let m = c.message().await;
        assert_eq!(m.body, format!("m{i}").into_bytes());
        c.fin(&m.id).await;
    }
    // DPUB: not delivered before its time, delivered after.
    p.send(&Command::Dpub {
        topic: "t".into(),
        defer_ms: 300,
        body: b"later".to_vec().into(),
    })
    .await;
    p.expect_ok().await;
    b.wait_channel("t", "c", "deferred", |c| c.deferred_count == 1)
        .await;
    let m = c.message().await;
    assert_eq!(&m.body[..], b"later");
    let age = ferry_brokerd::clock::now_ns() - m.timestamp_ns;
    assert!(age >= 300_000_000, "delivered after {age} ns");
    // DPUB out of range.
    p.send(&Command::Dpub {
        topic: "t".into(),
        defer_ms: 3_600_001,
        body: b"x".to_vec().into(),
    })
    .await;
    assert_eq!(
        p.expect_error("E_INVALID").await,
        "E_INVALID DPUB timeout 3600001 out of range 0-3600000"
    );
    b.stop().await;
}

#[tokio::test]
async fn fan_out_to_every_channel() {
    let b = start(|_| {}).await;
    let mut c1 = b.consumer("t", "one", 100).await;
    let mut c2 = b.consumer("t", "two", 100).await;
    let mut p = b.conn().await;
    for i in 0..20 {
        p.publish("t", format!("{i}").as_bytes()).await;
    }
    for c in [&mut c1, &mut c2] {
        for i in 0..20 {
            let m = c.message().await;
            assert_eq!(m.body, format!("{i}").into_bytes());
            c.fin(&m.id).await;
        }
    }
    b.stop().await;
}

#[tokio::test]
async fn consumers_of_one_channel_share_its_messages() {
    let b = start(|_| {}).await;
    let mut a = b.consumer("t", "shared", 5).await;
    let mut c = b.consumer("t", "shared", 5).await;
    let mut p = b.conn().await;
    let n = 200;
    p.send(&Command::Mpub {
        topic: "t".into(),
        bodies: (0..n).map(|i| format!("{i}").into_bytes().into()).collect(),
    })
    .await;
    p.expect_ok().await;
    let mut seen = HashSet::new();
    let (mut got_a, mut got_c) = (0, 0);
    while seen.len() < n {
        tokio::select! {
            m = a.message() => { assert!(seen.insert(m.body.clone()), "duplicate"); a.fin(&m.id).await; got_a += 1; }
            m = c.message() => { assert!(seen.insert(m.body.clone()), "duplicate"); c.fin(&m.id).await; got_c += 1; }
        }
    }
    assert!(
        got_a > 0 && got_c > 0,
        "both consumers got messages: {got_a} {got_c}"
    );
    b.stop().await;
}

#[tokio::test]
async fn rdy_is_an_in_flight_window() {
    let b = start(|_| {}).await;
    let mut c = b.consumer("t", "c", 2).await;
    let mut p = b.conn().await;
    for i in 0..5 {
        p.publish("t", format!("{i}").as_bytes()).await;
    }
    let m1 = c.message().await;
    let _m2 = c.message().await;
    c.expect_no_message(Duration::from_millis(200)).await;
    c.fin(&m1.id).await;
    let m3 = c.message().await;
    assert_eq!(&m3.body[..], b"2");
    // RDY 0 stops delivery.
    c.rdy(0).await;
    c.fin(&m3.id).await;
    c.expect_no_message(Duration::from_millis(200)).await;
    b.stop().await;
}

#[tokio::test]
async fn req_requeues_with_attempts_and_delay() {
    let b = start(|_| {}).await;
    let mut c = b.consumer("t", "c", 1).await;
    b.conn().await.publish("t", b"again").await;
    let m = c.message().await;
    c.send(&Command::Req {
        id: m.id,
        timeout_ms: 0,
    })
    .await;
    let m2 = c.message().await;
    assert_eq!(m2.id, m.id);
    assert_eq!(m2.attempts, 2);
    c.send(&Command::Req {
        id: m.id,
        timeout_ms: 300,
    })
    .await;
    b.wait_channel("t", "c", "deferred", |c| c.deferred_count == 1)
        .await;
    let m3 = c.message().await;
    assert_eq!(m3.attempts, 3);
    c.fin(&m3.id).await;
    let s = b
        .wait_channel("t", "c", "fin", |c| c.in_flight_count == 0)
        .await;
    assert_eq!(s.requeue_count, 2);
    b.stop().await;
}

#[tokio::test]
async fn timeout_redelivers_and_touch_extends() {
    let b = start(|_| {}).await;
    // msg_timeout of 1 s (the smallest a client may ask) on a second connection.
    let mut t = b.conn().await;
    t.identify(serde_json::json!({"msg_timeout": 1000})).await;
    t.sub("t2", "c").await;
    t.rdy(1).await;
    b.conn().await.publish("t2", b"slow").await;
    let m = t.message().await;
    assert_eq!(m.attempts, 1);
    let m2 = t.message().await; // after the timeout, redelivered
    assert_eq!(m2.id, m.id);
    assert_eq!(m2.attempts, 2);
    let s = b.channel_stats("t2", "c").await;
    assert_eq!(s.timeout_count, 1);
    // TOUCH keeps it in flight past its first deadline.
    let start = tokio::time::Instant::now();
    for _ in 0..3 {
        t.send(&Command::Touch(m2.id)).await;
        t.expect_no_message(Duration::from_millis(400)).await;
    }
    assert!(start.elapsed() > Duration::from_millis(1100));
    t.fin(&m2.id).await;
    b.wait_channel("t2", "c", "fin", |c| c.in_flight_count == 0)
        .await;
    assert_eq!(b.channel_stats("t2", "c").await.timeout_count, 1);
    // The channel's timer task ended with its last deadline; the next delivery starts another.
    b.conn().await.publish("t2", b"slow again").await;
    let m3 = t.message().await;
    let m4 = t.message().await;
    assert_eq!((m4.id, m4.attempts), (m3.id, 2));
    b.stop().await;
}

#[tokio::test]
async fn disconnect_requeues_in_flight_at_once() {
    let b = start(|_| {}).await;
    let mut a = b.consumer("t", "c", 1).await;
    b.conn().await.publish("t", b"m").await;
    let m = a.message().await;
    drop(a);
    let mut c = b.consumer("t", "c", 1).await;
    let m2 = c.message().await;
    assert_eq!(m2.id, m.id);
    assert_eq!(m2.attempts, 2);
    b.stop().await;
}

#[tokio::test]
async fn cls_then_close_wait() {
    let b = start(|_| {}).await;
    let mut c = b.consumer("t", "c", 1).await;
    b.conn().await.publish("t", b"m").await;
    let m = c.message().await;
    c.send(&Command::Cls).await;
    assert_eq!(c.expect_response().await, b"CLOSE_WAIT");
    // FIN still allowed while closing; RDY ignored.
    c.rdy(5).await;
    c.fin(&m.id).await;
    b.conn().await.publish("t", b"n").await;
    c.expect_no_message(Duration::from_millis(200)).await;
    b.stop().await;
}

#[tokio::test]
async fn paused_channel_and_topic_hold_messages() {
    let b = start(|_| {}).await;
    let mut c = b.consumer("t", "c", 10).await;
    assert_eq!(
        b.http("POST", "/channel/pause?topic=t&channel=c", b"")
            .await
            .0,
        200
    );
    b.conn().await.publish("t", b"held").await;
    c.expect_no_message(Duration::from_millis(200)).await;
    assert!(b.channel_stats("t", "c").await.paused);
    assert_eq!(
        b.http("POST", "/channel/unpause?topic=t&channel=c", b"")
            .await
            .0,
        200
    );
    assert_eq!(&c.message().await.body[..], b"held");

    assert_eq!(b.http("POST", "/topic/pause?topic=t", b"").await.0, 200);
    b.conn().await.publish("t", b"held2").await;
    c.expect_no_message(Duration::from_millis(200)).await;
    assert_eq!(b.http("POST", "/topic/unpause?topic=t", b"").await.0, 200);
    assert_eq!(&c.message().await.body[..], b"held2");
    b.stop().await;
}

#[tokio::test]
async fn backlog_goes_to_first_channel_only() {
    let b = start(|_| {}).await;
    let mut p = b.conn().await;
    for i in 0..3 {
        p.publish("t", format!("early{i}").as_bytes()).await;
    }
    assert_eq!(b.stats().await.topic("t").unwrap().depth, 3);
    let mut first = b.consumer("t", "first", 10).await;
    for i in 0..3 {
        assert_eq!(first.message().await.body, format!("early{i}").into_bytes());
    }
    let mut second = b.consumer("t", "second", 10).await;
    p.publish("t", b"late").await;
    assert_eq!(&second.message().await.body[..], b"late");
    assert_eq!(&first.message().await.body[..], b"late");
    b.stop().await;
}

#[tokio::test]
async fn ephemeral_channel_and_topic_vanish_with_last_client() {
    let b = start(|_| {}).await;
    let mut c = b.consumer("e#ephemeral", "c#ephemeral", 1).await;
    b.conn().await.publish("e#ephemeral", b"m").await;
    assert_eq!(&c.message().await.body[..], b"m");
    let mut d = b.consumer("t", "tmp#ephemeral", 1).await;
    d.rdy(0).await;
    drop(c);
    drop(d);
    let s = eventually("ephemeral cleanup", || async {
        let s = b.stats().await;
        let gone_topic = s.topic("e#ephemeral").is_none();
        let gone_channel = s.channel("t", "tmp#ephemeral").is_none();
        (gone_topic && gone_channel).then_some(s)
    })
    .await;
    assert!(s.topic("t").is_some(), "durable topic stays");
    b.stop().await;
}

#[tokio::test]
async fn heartbeats_sent_and_silent_clients_closed() {
    let b = start(|_| {}).await;
    let mut c = b.conn().await;
    c.identify(serde_json::json!({"heartbeat_interval": 1000}))
        .await;
    match c.frame().await {
        Some(Frame::Response(r)) => assert_eq!(&r[..], b"_heartbeat_"),
        f => panic!("{f:?}"),
    }
    // Never answering: closed after two missed intervals.
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        match c.frame().await {
            None => break,
            Some(Frame::Response(r)) if &r[..] == b"_heartbeat_" => {}
            f => panic!("{f:?}"),
        }
        assert!(tokio::time::Instant::now() < end);
    }
    b.stop().await;
}

#[tokio::test]
async fn max_channel_consumers_is_enforced() {
    let b = start(|c| c.max_channel_consumers = 1).await;
    let _a = b.consumer("t", "c", 1).await;
    let mut c = b.conn().await;
    c.identify(serde_json::json!({})).await;
    c.send(&Command::Sub {
        topic: "t".into(),
        channel: "c".into(),
    })
    .await;
    c.expect_error("E_TOO_MANY_CHANNEL_CONSUMERS").await;
    c.expect_closed().await;
    b.stop().await;
}

#[tokio::test]
async fn touch_is_capped_at_max_msg_timeout() {
    let b = start(|c| c.max_msg_timeout = Duration::from_millis(1500)).await;
    let mut t = b.conn().await;
    t.identify(serde_json::json!({"msg_timeout": 1000})).await;
    t.sub("t", "c").await;
    t.rdy(1).await;
    b.conn().await.publish("t", b"m").await;
    let m = t.message().await;
    let delivered = tokio::time::Instant::now();
    loop {
        t.send(&Command::Touch(m.id)).await;
        match t.frame_within(Duration::from_millis(300)).await {
            Err(()) => {}
            Ok(Some(Frame::Message(again))) => {
                assert_eq!(again.id, m.id);
                assert_eq!(again.attempts, 2);
                let after = delivered.elapsed();
                assert!(
                    after >= Duration::from_millis(1400),
                    "redelivered after {after:?}"
                );
                break;
            }
            // A TOUCH that raced the timeout fails without closing the connection.
            Ok(Some(Frame::Error(e))) => assert!(e.starts_with(b"E_TOUCH_FAILED"), "{e:?}"),
            Ok(Some(Frame::Response(r))) => assert_eq!(&r[..], b"_heartbeat_"),
            Ok(None) => panic!("connection closed"),
        }
        assert!(
            delivered.elapsed() < DEADLINE,
            "TOUCH kept the message past max_msg_timeout"
        );
    }
    b.stop().await;
}
