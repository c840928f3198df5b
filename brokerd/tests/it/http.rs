//! nsqd's HTTP API against a real broker.

use crate::common::*;

#[tokio::test]
async fn ping_info_and_header() {
    let b = start(|_| {}).await;
    let (code, headers, body) = http_full(b.http, "GET", "/ping", b"").await;
    assert_eq!((code, body.as_str()), (200, "OK"));
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("x-nsq-content-type: nsq; version=1.0")
    );
    let (code, body) = b.http("GET", "/info", b"").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["tcp_port"], b.tcp.port());
    assert_eq!(v["http_port"], b.http.port());
    assert!(v["version"].as_str().unwrap().starts_with("ferry-"));
    b.stop().await;
}

#[tokio::test]
async fn pub_and_mpub_deliver() {
    let b = start(|_| {}).await;
    let mut c = b.consumer("t", "c", 100).await;
    assert_eq!(
        b.http("POST", "/pub?topic=t", b"one").await,
        (200, "OK".into())
    );
    assert_eq!(
        b.http("POST", "/mpub?topic=t", b"two\nthree\n\nfour").await,
        (200, "OK".into())
    );
    let mut bin = Vec::new();
    bin.extend_from_slice(&2u32.to_be_bytes());
    for m in [&b"five"[..], b"six\nwith newline"] {
        bin.extend_from_slice(&(m.len() as u32).to_be_bytes());
        bin.extend_from_slice(m);
    }
    assert_eq!(
        b.http("POST", "/mpub?topic=t&binary=true", &bin).await.0,
        200
    );
    for want in [
        &b"one"[..],
        b"two",
        b"three",
        b"four",
        b"five",
        b"six\nwith newline",
    ] {
        let m = c.message().await;
        assert_eq!(&m.body[..], want);
        c.fin(&m.id).await;
    }
    b.stop().await;
}

#[tokio::test]
async fn pub_with_defer() {
    let b = start(|_| {}).await;
    let mut c = b.consumer("t", "c", 1).await;
    assert_eq!(
        b.http("POST", "/pub?topic=t&defer=300", b"later").await.0,
        200
    );
    b.wait_channel("t", "c", "deferred", |c| c.deferred_count == 1)
        .await;
    let m = c.message().await;
    assert!(ferry_brokerd::clock::now_ns() - m.timestamp_ns >= 300_000_000);
    b.stop().await;
}

#[tokio::test]
async fn http_errors_use_nsq_codes() {
    let b = start(|c| {
        c.max_msg_size = 10;
        c.max_body_size = 100;
    })
    .await;
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("POST", "/pub", b"x".to_vec(), 400, "MISSING_ARG_TOPIC"),
        (
            "POST",
            "/pub?topic=bad!",
            b"x".to_vec(),
            400,
            "INVALID_TOPIC",
        ),
        ("POST", "/pub?topic=t", b"".to_vec(), 400, "MSG_EMPTY"),
        ("POST", "/pub?topic=t", vec![b'x'; 11], 413, "MSG_TOO_BIG"),
        (
            "POST",
            "/pub?topic=t&defer=-1",
            b"x".to_vec(),
            400,
            "INVALID_DEFER",
        ),
        (
            "POST",
            "/pub?topic=t&defer=abc",
            b"x".to_vec(),
            400,
            "INVALID_DEFER",
        ),
        (
            "POST",
            "/mpub?topic=t",
            vec![b'x'; 101],
            413,
            "BODY_TOO_BIG",
        ),
        (
            "POST",
            "/mpub?topic=t",
            b"ok\nxxxxxxxxxxxx".to_vec(),
            413,
            "MSG_TOO_BIG",
        ),
        (
            "POST",
            "/mpub?topic=t&binary=true",
            b"\x00\x00".to_vec(),
            400,
            "BAD_BODY",
        ),
        (
            "POST",
            "/topic/delete?topic=nope",
            vec![],
            404,
            "TOPIC_NOT_FOUND",
        ),
        (
            "POST",
            "/topic/pause?topic=nope",
            vec![],
            404,
            "TOPIC_NOT_FOUND",
        ),
        (
            "POST",
            "/channel/create?topic=t",
            vec![],
            400,
            "MISSING_ARG_CHANNEL",
        ),
        (
            "POST",
            "/channel/create?topic=t&channel=b@d",
            vec![],
            400,
            "INVALID_CHANNEL",
        ),
        ("GET", "/pub?topic=t", vec![], 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/nope", vec![], 404, "NOT_FOUND"),
        ("GET", "/config/bogus", vec![], 400, "INVALID_OPTION"),
    ];
    for (method, path, body, code, msg) in cases {
        let (got, text) = b.http(method, path, &body).await;
        assert_eq!(got, code, "{method} {path}: {text}");
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: {text}"));
        assert_eq!(v["message"], msg, "{method} {path}");
    }
    assert_eq!(b.http("POST", "/topic/create?topic=t", b"").await.0, 200);
    let (code, text) = b
        .http("POST", "/channel/delete?topic=t&channel=none", b"")
        .await;
    assert_eq!((code, text.contains("CHANNEL_NOT_FOUND")), (404, true));
    b.stop().await;
}

#[tokio::test]
async fn topic_and_channel_admin() {
    let b = start(|_| {}).await;
    assert_eq!(
        b.http("POST", "/channel/create?topic=t&channel=c", b"")
            .await
            .0,
        200
    );
    for _ in 0..3 {
        b.http("POST", "/pub?topic=t", b"m").await;
    }
    let c = b.channel_stats("t", "c").await;
    assert_eq!(c.depth, 3);
    assert_eq!(
        b.http("POST", "/channel/empty?topic=t&channel=c", b"")
            .await
            .0,
        200
    );
    assert_eq!(b.channel_stats("t", "c").await.depth, 0);
    assert_eq!(
        b.http("POST", "/channel/delete?topic=t&channel=c", b"")
            .await
            .0,
        200
    );
    assert!(b.stats().await.channel("t", "c").is_none());
    // A topic with no channel keeps its backlog; /topic/empty drops it.
    b.http("POST", "/pub?topic=t", b"m").await;
    assert_eq!(b.stats().await.topic("t").unwrap().depth, 1);
    assert_eq!(b.http("POST", "/topic/empty?topic=t", b"").await.0, 200);
    assert_eq!(b.stats().await.topic("t").unwrap().depth, 0);
    assert_eq!(b.http("POST", "/topic/delete?topic=t", b"").await.0, 200);
    assert!(b.stats().await.topic("t").is_none());
    assert!(
        !b.dir.join("topics/t.topic").exists(),
        "topic files removed"
    );
    b.stop().await;
}

#[tokio::test]
async fn stats_json_shape_filters_and_text() {
    let b = start(|_| {}).await;
    let mut c = b.consumer("t", "c", 1).await;
    b.http("POST", "/pub?topic=t", b"hello").await;
    b.http("POST", "/pub?topic=other", b"x").await;
    let m = c.message().await;
    // nsqd's field names, so the raw JSON: the typed model would default a missing one.
    let s = b.stats_json().await;
    assert_eq!(s["health"], "OK");
    let topics = s["topics"].as_array().unwrap();
    let t = topics.iter().find(|t| t["topic_name"] == "t").unwrap();
    for k in [
        "topic_name",
        "depth",
        "backend_depth",
        "message_count",
        "message_bytes",
        "paused",
        "e2e_processing_latency",
        "channels",
    ] {
        assert!(t.get(k).is_some(), "topic field {k}");
    }
    assert_eq!(t["message_count"], 1);
    assert_eq!(t["message_bytes"], 5);
    let channels = t["channels"].as_array().unwrap();
    let ch = channels.iter().find(|c| c["channel_name"] == "c").unwrap();
    for k in [
        "channel_name",
        "depth",
        "backend_depth",
        "in_flight_count",
        "deferred_count",
        "message_count",
        "requeue_count",
        "timeout_count",
        "client_count",
        "clients",
        "paused",
        "e2e_processing_latency",
    ] {
        assert!(ch.get(k).is_some(), "channel field {k}");
    }
    assert_eq!(ch["in_flight_count"], 1);
    let client = &ch["clients"][0];
    for k in [
        "client_id",
        "hostname",
        "version",
        "remote_address",
        "state",
        "ready_count",
        "in_flight_count",
        "message_count",
        "finish_count",
        "requeue_count",
        "connect_ts",
        "sample_rate",
        "deflate",
        "snappy",
        "user_agent",
        "tls",
        "authed",
    ] {
        assert!(client.get(k).is_some(), "client field {k}");
    }
    assert_eq!(client["state"], 3);
    assert_eq!(client["in_flight_count"], 1);
    c.fin(&m.id).await;

    let f = ferry_testkit::http::get(b.http, "/stats?format=json&topic=t&include_clients=false")
        .await
        .stats();
    assert_eq!(f.topics.len(), 1);
    assert!(f.topics[0].channels[0].clients.is_empty());

    let (code, text) = b.http("GET", "/stats", b"").await;
    assert_eq!(code, 200);
    assert!(text.contains("Health: OK") && text.contains("[t"), "{text}");
    let (code, v) = b.http("GET", "/config/max_msg_size", b"").await;
    assert_eq!((code, v.as_str()), (200, "1048576"));
    b.stop().await;
}
