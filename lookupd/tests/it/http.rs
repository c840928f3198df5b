//! nsqlookupd's HTTP API against a real daemon: shapes, codes, header, tombstones and the
//! inactive-producer timeout.

use std::time::Duration;

use crate::common::{LookupdPeers, eventually, start};
use serde_json::json;
use tokio::time::Instant;

#[tokio::test]
async fn ping_info_and_the_nsq_header() {
    let lookupd = start(|_| {}).await;
    let ping = lookupd.get("/ping").await;
    assert_eq!((ping.status, ping.body.as_str()), (200, "OK"));
    assert_eq!(ping.header("x-nsq-content-type"), Some("nsq; version=1.0"));

    let info = lookupd.get("/info").await;
    assert_eq!(info.status, 200);
    assert_eq!(info.json(), json!({"version": ferry_lookupd::VERSION}));
    assert_eq!(info.header("x-nsq-content-type"), Some("nsq; version=1.0"));
    assert_eq!(info.header("content-type"), Some("application/json"));

    for path in ["/topics", "/nodes", "/channels?topic=x"] {
        let reply = lookupd.get(path).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(
            reply.header("x-nsq-content-type"),
            Some("nsq; version=1.0"),
            "{path}"
        );
    }
    lookupd.stop().await;
}

#[tokio::test]
async fn unknown_path_and_wrong_method() {
    let lookupd = start(|_| {}).await;
    lookupd.get("/nope").await.assert_error(404, "NOT_FOUND");
    lookupd
        .post("/lookup?topic=a")
        .await
        .assert_error(405, "METHOD_NOT_ALLOWED");
    lookupd
        .post("/ping")
        .await
        .assert_error(405, "METHOD_NOT_ALLOWED");
    for path in [
        "/topic/create?topic=a",
        "/topic/delete?topic=a",
        "/topic/tombstone?topic=a&node=b:1",
        "/channel/create?topic=a&channel=b",
        "/channel/delete?topic=a&channel=b",
    ] {
        lookupd
            .get(path)
            .await
            .assert_error(405, "METHOD_NOT_ALLOWED");
    }
    assert_eq!(
        lookupd.get_json("/topics").await,
        json!({"topics": []}),
        "a refused GET created nothing"
    );
    lookupd.stop().await;
}

#[tokio::test]
async fn lookup_shape_and_errors() {
    let lookupd = start(|_| {}).await;
    lookupd
        .get("/lookup")
        .await
        .assert_error(400, "MISSING_ARG_TOPIC");
    lookupd
        .get("/lookup?topic=orders")
        .await
        .assert_error(404, "TOPIC_NOT_FOUND");
    lookupd
        .get("/lookup?topic=")
        .await
        .assert_error(404, "TOPIC_NOT_FOUND");

    let mut b1 = lookupd.broker("b1", 4150, 4151).await;
    b1.register("orders", Some("ship")).await;
    let reply = lookupd.get("/lookup?topic=orders").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-nsq-content-type"), Some("nsq; version=1.0"));
    let remote = b1.local_addr();
    // Exact bytes: nsqlookupd's field order.
    assert_eq!(
        reply.body,
        format!(
            r#"{{"channels":["ship"],"producers":[{{"remote_address":"{remote}","hostname":"b1.host","broadcast_address":"b1","tcp_port":4150,"http_port":4151,"version":"1.3.0"}}]}}"#
        )
    );
    lookupd.stop().await;
}

#[tokio::test]
async fn topics_channels_and_nodes_shapes() {
    let lookupd = start(|_| {}).await;
    assert_eq!(lookupd.get_json("/topics").await, json!({"topics": []}));
    assert_eq!(lookupd.get_json("/nodes").await, json!({"producers": []}));
    lookupd
        .get("/channels")
        .await
        .assert_error(400, "MISSING_ARG_TOPIC");
    assert_eq!(
        lookupd.get_json("/channels?topic=unknown").await,
        json!({"channels": []})
    );

    let mut b2 = lookupd.broker("b2", 5150, 5151).await;
    let mut b1 = lookupd.broker("b1", 4150, 4151).await;
    b1.register("zeta", Some("z2")).await;
    b1.register("zeta", Some("z1")).await;
    b1.register("alpha", None).await;
    b2.register("zeta", None).await;

    assert_eq!(
        lookupd.get_json("/topics").await,
        json!({"topics": ["alpha", "zeta"]})
    );
    assert_eq!(
        lookupd.get_json("/channels?topic=zeta").await,
        json!({"channels": ["z1", "z2"]})
    );
    let nodes = lookupd.get("/nodes").await;
    assert!(
        nodes
            .body
            .starts_with(r#"{"producers":[{"remote_address":"#),
        "nsqlookupd's key order: {}",
        nodes.body
    );
    assert!(
        nodes
            .body
            .contains(r#""version":"1.3.0","tombstones":[false,false],"topics":["alpha","zeta"]}"#)
    );
    assert_eq!(
        nodes.json(),
        json!({"producers": [
            {
                "remote_address": b1.local_addr().to_string(),
                "hostname": "b1.host",
                "broadcast_address": "b1",
                "tcp_port": 4150,
                "http_port": 4151,
                "version": "1.3.0",
                "tombstones": [false, false],
                "topics": ["alpha", "zeta"],
            },
            {
                "remote_address": b2.local_addr().to_string(),
                "hostname": "b2.host",
                "broadcast_address": "b2",
                "tcp_port": 5150,
                "http_port": 5151,
                "version": "1.3.0",
                "tombstones": [false],
                "topics": ["zeta"],
            },
        ]})
    );
    lookupd.stop().await;
}

#[tokio::test]
async fn create_and_delete_topics_and_channels() {
    let lookupd = start(|_| {}).await;
    lookupd
        .post("/topic/create")
        .await
        .assert_error(400, "MISSING_ARG_TOPIC");
    lookupd
        .post("/topic/create?topic=bad!name")
        .await
        .assert_error(400, "INVALID_ARG_TOPIC");
    lookupd
        .post("/topic/create?topic=")
        .await
        .assert_error(400, "INVALID_ARG_TOPIC");
    lookupd
        .post("/topic/create?topic=empty")
        .await
        .assert_empty_ok();
    assert_eq!(
        lookupd.get_json("/lookup?topic=empty").await,
        json!({"channels": [], "producers": []})
    );

    lookupd
        .post("/channel/create?channel=c")
        .await
        .assert_error(400, "MISSING_ARG_TOPIC");
    lookupd
        .post("/channel/create?topic=bad!&channel=bad!")
        .await
        .assert_error(400, "INVALID_ARG_TOPIC");
    lookupd
        .post("/channel/create?topic=orders")
        .await
        .assert_error(400, "MISSING_ARG_CHANNEL");
    lookupd
        .post("/channel/create?topic=orders&channel=bad!")
        .await
        .assert_error(400, "INVALID_ARG_CHANNEL");
    lookupd
        .post("/channel/create?topic=orders&channel=ship")
        .await
        .assert_empty_ok();
    lookupd
        .post("/channel/create?topic=orders&channel=bill")
        .await
        .assert_empty_ok();
    assert_eq!(
        lookupd.get_json("/topics").await,
        json!({"topics": ["empty", "orders"]}),
        "creating a channel creates its topic"
    );
    assert_eq!(
        lookupd.get_json("/channels?topic=orders").await,
        json!({"channels": ["bill", "ship"]})
    );

    lookupd
        .post("/channel/delete?topic=orders&channel=nope")
        .await
        .assert_error(404, "CHANNEL_NOT_FOUND");
    lookupd
        .post("/channel/delete?topic=orders&channel=bad!")
        .await
        .assert_error(400, "INVALID_ARG_CHANNEL");
    lookupd
        .post("/channel/delete?topic=orders&channel=bill")
        .await
        .assert_empty_ok();
    assert_eq!(
        lookupd.get_json("/channels?topic=orders").await,
        json!({"channels": ["ship"]})
    );

    // A broker's registration is deleted too, with its channels.
    let mut b1 = lookupd.broker("b1", 4150, 4151).await;
    b1.register("orders", Some("tail")).await;
    lookupd
        .post("/topic/delete")
        .await
        .assert_error(400, "MISSING_ARG_TOPIC");
    lookupd
        .post("/topic/delete?topic=orders")
        .await
        .assert_empty_ok();
    lookupd
        .post("/topic/delete?topic=never")
        .await
        .assert_empty_ok();
    assert_eq!(
        lookupd.get_json("/topics").await,
        json!({"topics": ["empty"]})
    );
    assert_eq!(
        lookupd.get_json("/channels?topic=orders").await,
        json!({"channels": []})
    );
    assert_eq!(
        lookupd.get_json("/nodes").await["producers"][0]["topics"],
        json!([])
    );
    // The broker re-registers: back again.
    b1.register("orders", None).await;
    assert_eq!(lookupd.producers("orders").await.unwrap(), ["b1"]);
    lookupd.stop().await;
}

#[tokio::test]
async fn tombstone_hides_a_producer_for_the_lifetime() {
    let lifetime = Duration::from_millis(500);
    let lookupd = start(|c| c.tombstone_lifetime = lifetime).await;
    let mut b1 = lookupd.broker("b1", 4150, 4151).await;
    let mut b2 = lookupd.broker("b2", 5150, 5151).await;
    b1.register("orders", None).await;
    b1.register("audit", None).await;
    b2.register("orders", None).await;

    lookupd
        .post("/topic/tombstone?node=b1:4151")
        .await
        .assert_error(400, "MISSING_ARG_TOPIC");
    lookupd
        .post("/topic/tombstone?topic=orders")
        .await
        .assert_error(400, "MISSING_ARG_NODE");
    // As nsqlookupd: nothing to tombstone is still a 200.
    lookupd
        .post("/topic/tombstone?topic=nope&node=b1:4151")
        .await
        .assert_empty_ok();
    lookupd
        .post("/topic/tombstone?topic=orders&node=b9:1")
        .await
        .assert_empty_ok();

    let start = Instant::now();
    lookupd
        .post("/topic/tombstone?topic=orders&node=b1:4151")
        .await
        .assert_empty_ok();
    let orders = lookupd.producers("orders").await.unwrap();
    let audit = lookupd.producers("audit").await.unwrap();
    let nodes = lookupd.get_json("/nodes").await;
    // Only conclusive if the machine was quick enough to ask within the lifetime.
    if start.elapsed() < lifetime {
        assert_eq!(orders, ["b2"], "tombstoned for orders");
        assert_eq!(audit, ["b1"], "a tombstone is per topic");
        let b1_node = &nodes["producers"][0];
        assert_eq!(b1_node["broadcast_address"], "b1", "{nodes}");
        assert_eq!(b1_node["topics"], json!(["audit", "orders"]));
        assert_eq!(b1_node["tombstones"], json!([false, true]));
    }
    eventually("the tombstone to expire", || async {
        lookupd.producers("orders").await.unwrap() == ["b1", "b2"]
    })
    .await;
    assert!(start.elapsed() >= lifetime, "expired early");
    let nodes = lookupd.get_json("/nodes").await;
    assert_eq!(nodes["producers"][0]["tombstones"], json!([false, false]));
    lookupd.stop().await;
}

#[tokio::test]
async fn a_producer_that_stops_pinging_disappears() {
    let timeout = Duration::from_millis(300);
    let lookupd = start(|c| c.inactive_producer_timeout = timeout).await;
    let mut b1 = lookupd.broker("b1", 4150, 4151).await;
    let mut b2 = lookupd.broker("b2", 5150, 5151).await;
    b1.register("orders", Some("ship")).await;
    b2.register("orders", None).await;

    // b2 keeps pinging; b1 goes quiet and drops out of /lookup and /nodes.
    eventually("b1 to turn inactive", async || {
        b2.ping().await;
        lookupd.producers("orders").await.unwrap() == ["b2"]
    })
    .await;
    let nodes = lookupd.get_json("/nodes").await;
    assert!(
        nodes["producers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["broadcast_address"] != "b1"),
        "{nodes}"
    );
    // Its registrations are still there: the topic and channel are still listed.
    assert_eq!(
        lookupd.get_json("/channels?topic=orders").await,
        json!({"channels": ["ship"]})
    );

    // A PING brings it back.
    eventually("b1 to come back", async || {
        b1.ping().await;
        lookupd
            .producers("orders")
            .await
            .unwrap()
            .contains(&"b1".to_owned())
    })
    .await;
    lookupd.stop().await;
}

/// The value of the unlabelled sample `name` in a parsed scrape.
fn sample(scrape: &prometheus_parse::Scrape, name: &str) -> f64 {
    use prometheus_parse::Value;
    match scrape
        .samples
        .iter()
        .find(|s| s.metric == name)
        .map(|s| &s.value)
    {
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
        other => panic!("no sample {name}: {other:?}"),
    }
}

#[tokio::test]
async fn metrics_count_brokers_topics_and_channels() {
    let lookupd = start(|_| {}).await;
    let mut b1 = lookupd.broker("b1", 4150, 4151).await;
    b1.register("orders", Some("billing")).await;
    b1.register("orders", Some("audit")).await;
    let mut b2 = lookupd.broker("b2", 4150, 4151).await;
    b2.register("clicks", None).await;

    let reply = lookupd.get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    // Every line is Prometheus text: HELP, TYPE, a sample, or empty.
    for line in reply.body.lines() {
        assert_ne!(
            prometheus_parse::LineInfo::parse(line),
            prometheus_parse::LineInfo::Ignored,
            "not Prometheus text: {line:?}"
        );
    }
    let scrape =
        prometheus_parse::Scrape::parse(reply.body.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert_eq!(sample(&scrape, "ferry_lookupd_producers"), 2.0);
    assert_eq!(sample(&scrape, "ferry_lookupd_active_producers"), 2.0);
    assert_eq!(sample(&scrape, "ferry_lookupd_topics"), 2.0);
    assert_eq!(sample(&scrape, "ferry_lookupd_channels"), 2.0);
    assert_eq!(sample(&scrape, "ferry_lookupd_connections"), 2.0);
    assert_eq!(sample(&scrape, "ferry_lookupd_connections_total"), 2.0);
    assert!(sample(&scrape, "ferry_process_open_fds") >= 3.0);
    // One series per active broker, labelled as the broker-not-in-lookupd rule joins it.
    let mut listed: Vec<String> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "ferry_lookupd_producer")
        .map(|s| s.labels.get("http_address").unwrap_or_default().to_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, ["b1:4151", "b2:4151"]);
    assert!(
        reply
            .body
            .contains("# TYPE ferry_lookupd_connections_total counter"),
        "{}",
        reply.body
    );

    drop(b2);
    eventually("b2's connection closed", || async {
        let body = lookupd.get("/metrics").await.body;
        body.contains("ferry_lookupd_connections 1\n")
            && body.contains("ferry_lookupd_producers 1\n")
    })
    .await;
    drop(b1);
    lookupd.stop().await;
}
