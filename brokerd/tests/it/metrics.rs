//! Observability: `/metrics` after a known workload (exact counters, strict Prometheus text),
//! per-broker numbers with several brokers in one process, end-to-end latency percentiles in
//! `/stats` under an artificial handler delay, nsqd's text `/stats`, and JSON logs whose lines
//! carry the connection's span (remote address, client id).

use std::time::Duration;

use crate::common::*;
use ferry_proto::stats::Latency;
use ferry_proto::v2::Command;

const N: usize = 10;
const BODY: usize = 100;

/// Publishes `n` messages of `BODY` bytes with PUB; returns the (still open) connection.
async fn publish_n(b: &TestBroker, topic: &str, n: usize) -> TestConn {
    let mut p = b.conn().await;
    for i in 0..n {
        let mut body = format!("m{i:03}").into_bytes();
        body.resize(BODY, b'.');
        p.publish(topic, &body).await;
    }
    p
}

#[tokio::test]
async fn metrics_count_a_known_workload_exactly() {
    let b = start(|c| c.msg_timeout = Duration::from_millis(1000)).await;
    for path in [
        "/channel/create?topic=t&channel=fast",
        "/channel/create?topic=t&channel=mixed",
    ] {
        assert_eq!(b.http("POST", path, b"").await.0, 200);
    }
    let publisher = publish_n(&b, "t", N).await;

    // `fast` FINs everything.
    let mut fast = b.consumer("t", "fast", N as u64).await;
    for _ in 0..N {
        let m = fast.message().await;
        fast.fin(&m.id).await;
    }
    // `mixed`: 6 FIN, 2 REQ with a long delay (deferred), 2 left to time out, with RDY 0 so
    // that nothing comes back.
    let mut mixed = b.consumer("t", "mixed", N as u64).await;
    let mut msgs = Vec::new();
    for _ in 0..N {
        msgs.push(mixed.message().await);
    }
    mixed.rdy(0).await;
    for m in &msgs[..6] {
        mixed.fin(&m.id).await;
    }
    for m in &msgs[6..8] {
        mixed
            .send(&Command::Req {
                id: m.id,
                timeout_ms: 60_000,
            })
            .await;
    }
    b.wait_channel("t", "mixed", "2 timeouts", |c| c.timeout_count == 2)
        .await;
    b.wait_channel("t", "fast", "all FINed", |c| c.in_flight_count == 0)
        .await;

    let (m, text) = scrape(b.http).await;
    let t = [("topic", "t")];
    let fast_l = [("topic", "t"), ("channel", "fast")];
    let mixed_l = [("topic", "t"), ("channel", "mixed")];
    let val = |name: &str, labels: &[(&str, &str)]| metric(&m, name, labels);

    assert_eq!(val("ferry_topic_messages_total", &t), N as f64, "{text}");
    assert_eq!(
        val("ferry_topic_message_bytes_total", &t),
        (N * BODY) as f64
    );
    assert_eq!(val("ferry_topic_depth", &t), 0.0);
    assert_eq!(val("ferry_topic_channels", &t), 2.0);
    assert_eq!(val("ferry_topic_paused", &t), 0.0);
    assert_eq!(val("ferry_topic_corrupt_records_skipped_total", &t), 0.0);
    assert!(val("ferry_topic_segments", &t) >= 1.0);
    assert!(val("ferry_topic_disk_bytes", &t) > 0.0);
    assert_eq!(
        val("ferry_topic_publish_latency_seconds_count", &t),
        N as f64,
        "one per PUB"
    );

    assert_eq!(val("ferry_channel_messages_total", &fast_l), N as f64);
    assert_eq!(
        val("ferry_channel_message_bytes_total", &fast_l),
        (N * BODY) as f64
    );
    assert_eq!(val("ferry_channel_finished_total", &fast_l), N as f64);
    assert_eq!(val("ferry_channel_requeued_total", &fast_l), 0.0);
    assert_eq!(val("ferry_channel_timed_out_total", &fast_l), 0.0);
    assert_eq!(val("ferry_channel_depth", &fast_l), 0.0);
    assert_eq!(val("ferry_channel_in_flight", &fast_l), 0.0);
    assert_eq!(val("ferry_channel_clients", &fast_l), 1.0);
    assert_eq!(
        val("ferry_channel_delivery_latency_seconds_count", &fast_l),
        N as f64
    );

    assert_eq!(val("ferry_channel_messages_total", &mixed_l), N as f64);
    assert_eq!(val("ferry_channel_finished_total", &mixed_l), 6.0);
    assert_eq!(val("ferry_channel_requeued_total", &mixed_l), 2.0);
    assert_eq!(val("ferry_channel_timed_out_total", &mixed_l), 2.0);
    assert_eq!(
        val("ferry_channel_depth", &mixed_l),
        2.0,
        "timed out, waiting"
    );
    assert_eq!(val("ferry_channel_deferred", &mixed_l), 2.0, "REQ 60s");
    assert_eq!(val("ferry_channel_in_flight", &mixed_l), 0.0);
    assert_eq!(
        val("ferry_channel_delivery_latency_seconds_count", &mixed_l),
        N as f64,
        "first deliveries only"
    );

    // Publisher, `fast`, `mixed`.
    assert_eq!(val("ferry_connections_total", &[]), 3.0);
    assert_eq!(val("ferry_connections", &[]), 3.0);
    assert_eq!(val("ferry_topics", &[]), 1.0);
    assert_eq!(val("ferry_healthy", &[]), 1.0);
    assert!(val("ferry_process_resident_memory_bytes", &[]) > 1e6);
    assert!(val("ferry_process_open_fds", &[]) >= 3.0);
    // Every documented family is there with HELP and TYPE.
    for family in [
        "ferry_topic_fsync_duration_seconds histogram",
        "ferry_channel_delivery_latency_seconds histogram",
        "ferry_topic_publish_latency_seconds histogram",
        "ferry_channel_timed_out_total counter",
        "ferry_channel_in_flight gauge",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family}\n")),
            "{family}: {text}"
        );
    }
    assert!(text.contains("# HELP ferry_channel_depth "), "{text}");

    // Deleting the channel removes its series from the next scrape.
    assert_eq!(
        b.http("POST", "/channel/delete?topic=t&channel=mixed", b"")
            .await
            .0,
        200
    );
    let (_, text) = scrape(b.http).await;
    assert!(!text.contains("channel=\"mixed\""), "{text}");
    drop((publisher, fast, mixed));
    b.stop().await;
}

#[tokio::test]
async fn two_brokers_in_one_process_report_their_own_numbers() {
    let a = start(|_| {}).await;
    let b = start(|_| {}).await;
    publish_n(&a, "only_a", 3).await;
    publish_n(&b, "only_b", 5).await;
    let (ma, text_a) = scrape(a.http).await;
    let (mb, text_b) = scrape(b.http).await;
    assert_eq!(
        metric(&ma, "ferry_topic_messages_total", &[("topic", "only_a")]),
        3.0
    );
    assert_eq!(
        metric(&mb, "ferry_topic_messages_total", &[("topic", "only_b")]),
        5.0
    );
    assert!(!text_a.contains("only_b"), "{text_a}");
    assert!(!text_b.contains("only_a"), "{text_b}");
    assert_eq!(metric(&ma, "ferry_connections_total", &[]), 1.0);
    a.stop().await;
    b.stop().await;
}

fn percentile(latency: &Latency, q: f64) -> i64 {
    latency
        .percentiles
        .as_ref()
        .unwrap_or_else(|| panic!("percentiles in {latency:?}"))
        .iter()
        .find(|p| p.quantile == q)
        .map(|p| p.value)
        .unwrap_or_else(|| panic!("p{q} in {latency:?}"))
}

#[tokio::test]
async fn e2e_latency_percentiles_follow_the_handler_delay() {
    const DELAY: Duration = Duration::from_millis(200);
    let b = start(|c| {
        c.e2e_processing_latency_percentiles = vec![0.5, 0.99];
    })
    .await;
    for path in [
        "/channel/create?topic=e2e&channel=quick",
        "/channel/create?topic=e2e&channel=slow",
    ] {
        assert_eq!(b.http("POST", path, b"").await.0, 200);
    }
    // Before any FIN: tracked, nothing counted yet.
    let c = b.channel_stats("e2e", "slow").await;
    assert_eq!(c.e2e_processing_latency.count, 0, "{c:?}");
    assert_eq!(percentile(&c.e2e_processing_latency, 0.99), 0);

    // Subscribed before publishing, so that `quick` measures little more than a round trip.
    let mut quick = b.consumer("e2e", "quick", N as u64).await;
    let mut slow = b.consumer("e2e", "slow", N as u64).await;
    let publisher = publish_n(&b, "e2e", N).await;
    for _ in 0..N {
        let m = quick.message().await;
        quick.fin(&m.id).await;
    }
    let mut held = Vec::new();
    for _ in 0..N {
        held.push(slow.message().await);
    }
    // The artificial handler delay: the slow consumer works on its batch before FINing it.
    tokio::time::sleep(DELAY).await;
    for m in &held {
        slow.fin(&m.id).await;
    }
    let slow_c = b
        .wait_channel("e2e", "slow", "slow FINs counted", |c| {
            c.e2e_processing_latency.count == N as u64
        })
        .await;
    let quick_c = b
        .wait_channel("e2e", "quick", "quick FINs counted", |c| {
            c.e2e_processing_latency.count == N as u64
        })
        .await;
    let (slow_l, quick_l) = (
        &slow_c.e2e_processing_latency,
        &quick_c.e2e_processing_latency,
    );
    let delay_ns = DELAY.as_nanos() as i64;
    // HDR values are within 1% of the truth; the delay is a hard lower bound for `slow`.
    assert!(
        percentile(slow_l, 0.5) >= delay_ns * 99 / 100,
        "slow p50 {slow_l:?}"
    );
    assert!(
        percentile(slow_l, 0.99) >= delay_ns * 99 / 100,
        "slow p99 {slow_l:?}"
    );
    assert!(
        percentile(quick_l, 0.99) < percentile(slow_l, 0.99),
        "quick {quick_l:?} vs slow {slow_l:?}"
    );
    assert!(
        percentile(quick_l, 0.5) < delay_ns,
        "quick p50 should not include the delay: {quick_l:?}"
    );

    // The topic aggregates its channels.
    let stats = b.stats().await;
    let topic = stats.topic("e2e").unwrap();
    let tl = &topic.e2e_processing_latency;
    assert_eq!(tl.count, 2 * N as u64, "{tl:?}");
    assert!(percentile(tl, 0.99) >= delay_ns * 99 / 100, "{tl:?}");

    // nsqd's text /stats shows them in the e2e% column.
    let (code, text) = b.http("GET", "/stats", b"").await;
    assert_eq!(code, 200);
    let slow_line = text
        .lines()
        .find(|l| l.contains("[slow "))
        .unwrap_or_else(|| panic!("{text}"));
    let e2e = slow_line.split("e2e%: ").nth(1).unwrap();
    assert_eq!(e2e.split(", ").count(), 2, "{slow_line}");
    assert!(e2e.contains("ms"), "{slow_line}");
    assert!(text.contains("\nTopics:\n"), "{text}");
    assert!(text.contains("\nProducers:"), "{text}");
    drop((publisher, quick, slow));
    b.stop().await;
}

#[tokio::test]
async fn e2e_latency_is_off_by_default_as_in_nsqd() {
    let b = start(|_| {}).await;
    publish_n(&b, "off", 1).await;
    let mut c = b.consumer("off", "c", 1).await;
    let m = c.message().await;
    c.fin(&m.id).await;
    let ch = b
        .wait_channel("off", "c", "FIN", |c| c.in_flight_count == 0)
        .await;
    assert_eq!(ch.e2e_processing_latency.count, 0);
    assert!(ch.e2e_processing_latency.percentiles.is_none(), "{ch:?}");
    let (_, text) = b.http("GET", "/stats", b"").await;
    assert!(text.contains("e2e%: \n"), "{text}");
    b.stop().await;
}

#[tokio::test]
async fn lookupd_serves_metrics_too() {
    let server = ferry_lookupd::Server::bind(ferry_lookupd::config::Config::for_tests())
        .await
        .unwrap();
    let (tcp, http) = (server.tcp_addr(), server.http_addr());
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(server.run(stop.clone()));
    let b = start(|c| c.lookupd_tcp_addresses = vec![tcp.to_string()]).await;
    assert_eq!(
        b.http("POST", "/channel/create?topic=reg&channel=c", b"")
            .await
            .0,
        200
    );
    let (m, text) = eventually("lookupd to count the registered channel", || async {
        let (m, text) = scrape(http).await;
        (metric(&m, "ferry_lookupd_channels", &[]) == 1.0).then_some((m, text))
    })
    .await;
    assert_eq!(metric(&m, "ferry_lookupd_producers", &[]), 1.0, "{text}");
    assert_eq!(metric(&m, "ferry_lookupd_topics", &[]), 1.0, "{text}");
    assert_eq!(metric(&m, "ferry_lookupd_connections", &[]), 1.0, "{text}");
    assert_eq!(metric(&m, "ferry_lookupd_connections_total", &[]), 1.0);
    assert!(metric(&m, "ferry_process_resident_memory_bytes", &[]) > 0.0);
    b.stop().await;
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn json_logs_carry_the_connection_span() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn_brokerd(dir.path(), &["--log-format=json"]);
    let mut c = TestConn::connect(p.tcp).await;
    c.identify(serde_json::json!({"client_id": "json-client"}))
        .await;
    // A fatal protocol error is logged at info level inside the connection's span.
    c.send_raw(b"BOGUS\n").await;
    c.expect_error("E_INVALID").await;
    let line = eventually("a log line naming json-client", || async {
        p.log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("json-client"))
            .cloned()
    })
    .await;
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(v["span"]["client_id"], "json-client", "{v}");
    assert_eq!(v["span"]["name"], "conn", "{v}");
    let remote = v["span"]["remote"].as_str().unwrap();
    assert!(remote.starts_with("127.0.0.1:"), "{v}");
    for l in p.log.lock().unwrap().iter() {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
    p.sigterm();
}
