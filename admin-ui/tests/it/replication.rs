//! Replicated topics (#20) in the dashboard: three `brokerd` processes and a lookupd, the
//! dashboard sampling every 200ms. A topic created through admin-ui with replicas=3 shows its
//! group (JSON and HTML), its depth counted once, not once per replica; a follower SIGKILLed
//! while publishes go on raises `replica_lost` (and its webhook), and resolves once it is back.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ferry_testkit::DaemonProcess;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::common::*;

const TOPIC: &str = "orders";
const CHANNEL: &str = "billing";

/// Starts the `brokerd` binary on `dir`, registering with `lookupd_tcp`, on the given ports
/// (0: free ones); its broadcast address is 127.0.0.1, so the group knows it as admin-ui does.
fn spawn_broker(dir: &Path, lookupd_tcp: SocketAddr, tcp: u16, http: u16) -> DaemonProcess {
    let args = [
        format!("--tcp-address=127.0.0.1:{tcp}"),
        format!("--http-address=127.0.0.1:{http}"),
        "--grpc-address=127.0.0.1:0".to_owned(),
        format!("--data-path={}", dir.display()),
        format!("--lookupd-tcp-address={lookupd_tcp}"),
        "--broadcast-address=127.0.0.1".to_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ferry_testkit::process::spawn(&ferry_testkit::process::binary("brokerd"), &args, &[])
}

/// Publishes `n` messages to the topic with one MPUB on the broker at `http`.
async fn publish(http: SocketAddr, prefix: &str, n: usize) {
    let body: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let resp = client()
        .post(format!("http://{http}/mpub?topic={TOPIC}"))
        .body(body.join("\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "MPUB through {http}");
}

/// `POST /api/topics` with `body` as JSON: status and the report.
async fn create(admin: &TestAdmin, body: Value) -> (u16, Value) {
    let (status, text) = admin
        .send(reqwest::Method::POST, "/api/topics", Some(body), &[])
        .await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_topic_panel_counts_and_replica_lost_alert() {
    let lookupd = start_lookupd().await;
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    let mut brokers: Vec<Option<DaemonProcess>> = dirs
        .iter()
        .map(|d| Some(spawn_broker(d.path(), lookupd.tcp, 0, 0)))
        .collect();
    let addrs: Vec<(SocketAddr, SocketAddr)> =
        brokers.iter().flatten().map(|b| (b.tcp, b.http)).collect();
    eventually("lookupd lists the three brokers", || async {
        let nodes = lookupd.get("/nodes").await;
        (nodes["producers"].as_array()?.len() == 3).then_some(())
    })
    .await;
    let hook = WebhookReceiver::start(0).await;
    let (l, url) = (lookupd.http.to_string(), hook.url.clone());
    let admin = start_admin(|c| {
        c.lookupd_http_addresses.push(l);
        c.sample_interval = Duration::from_millis(200);
        c.alert_replica_lost_after = Duration::from_secs(2);
        c.alert_webhook_urls.push(url);
    })
    .await;
    eventually("the dashboard sees the three brokers", || async {
        let v = admin.get_json("/api/nodes").await;
        (v["nodes"].as_array()?.len() == 3).then_some(())
    })
    .await;

    // Refusals come back with the broker's code and status.
    let (status, report) = create(&admin, json!({"topic": TOPIC, "replicas": 2})).await;
    assert_eq!(status, 400, "{report}");
    assert_eq!(
        report["outcomes"][0]["code"], "INVALID_REPLICAS",
        "{report}"
    );
    assert_eq!(
        report["outcomes"].as_array().unwrap().len(),
        1,
        "one broker"
    );
    let (status, report) = create(&admin, json!({"topic": TOPIC, "replicas": "5"})).await;
    assert_eq!(status, 503, "{report}");
    assert_eq!(report["outcomes"][0]["code"], "TOO_FEW_BROKERS", "{report}");
    let (status, html) = admin
        .post_form(
            "/api/topics",
            &[("topic", "e#ephemeral"), ("channel", ""), ("replicas", "3")],
            &[("HX-Request", "true"), ("X-Ferry-Action", "1")],
        )
        .await;
    assert_eq!(status, 400, "{html}");
    assert!(
        html.contains(r#"data-code="EPHEMERAL_NOT_REPLICATED""#),
        "{html}"
    );

    // Created through one broker, with a channel on every replica.
    let (status, report) = create(
        &admin,
        json!({"topic": TOPIC, "channel": CHANNEL, "replicas": "3"}),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["params"]["replicas"], "3", "{report}");
    assert_eq!(report["outcomes"][0]["role"], "broker", "{report}");
    let path = format!("/api/topics/{TOPIC}");
    let panel = eventually("a leader and three healthy replicas", || async {
        let v = admin.get_json(&path).await;
        let r = v["replication"].clone();
        let channels_everywhere = v["brokers"].as_array()?.len() == 3
            && v["brokers"].as_array()?.iter().all(|b| b["channels"] == 1);
        (r["leader"].is_string() && r["healthy"] == 3 && channels_everywhere).then_some(r)
    })
    .await;
    assert_eq!(panel["total"], 3, "{panel}");
    let leader = panel["leader"].as_str().unwrap().to_owned();
    let replicas = panel["replicas"].as_array().unwrap();
    let mut members: Vec<&str> = replicas
        .iter()
        .map(|m| m["address"].as_str().unwrap())
        .collect();
    members.sort_unstable();
    let mut want: Vec<String> = addrs.iter().map(|(_, h)| h.to_string()).collect();
    want.sort_unstable();
    assert_eq!(members, want, "{panel}");
    for m in replicas {
        let is_leader = m["address"] == leader.as_str();
        assert_eq!(
            m["role"],
            if is_leader { "leader" } else { "follower" },
            "{m}"
        );
        assert!(m["term"].as_u64().unwrap() >= 1, "{m}");
        assert!(
            m["commit_index"].is_u64() && m["last_applied"].is_u64(),
            "{m}"
        );
        assert!(m["lag"].is_u64(), "the leader reports every lag: {m}");
    }

    // N messages, nobody consuming: the list and the page say N, not 3N, while every
    // replica's own row holds all N.
    const N: u64 = 40;
    let follower_http = addrs
        .iter()
        .map(|(_, h)| *h)
        .find(|h| h.to_string() != leader)
        .unwrap();
    publish(follower_http, "first", N as usize).await;
    let row = eventually("the list counts the topic once", || async {
        let v = admin.get_json("/api/topics").await;
        let row = v["topics"]
            .as_array()?
            .iter()
            .find(|t| t["name"] == TOPIC)?
            .clone();
        let replicated_everywhere = admin.get_json(&path).await["brokers"]
            .as_array()?
            .iter()
            .all(|b| b["channel_depth"] == N);
        (row["channel_depth"] == N && replicated_everywhere).then_some(row)
    })
    .await;
    assert_eq!(row["messages"], N, "{row}");
    assert_eq!(row["brokers"], 3, "{row}");
    assert_eq!(row["replication"]["healthy"], 3, "{row}");
    let topic = admin.get_json(&path).await;
    assert_eq!(topic["total"]["channel_depth"], N, "{topic}");
    assert_eq!(topic["total"]["messages"], N, "{topic}");
    assert_eq!(topic["channels"][0]["depth"], N, "{topic}");
    assert_eq!(
        topic["replication"]["counted_from"],
        leader.as_str(),
        "{topic}"
    );
    let (status, page) = admin.get(&format!("/topics/{TOPIC}")).await;
    assert_eq!(status, 200);
    assert!(page.contains(r#"id="replication-table""#), "{page}");
    for a in &want {
        assert!(
            page.contains(&format!(r#"data-replica="{a}""#)),
            "{a}: {page}"
        );
    }
    assert!(
        page.contains(&format!("leader <code>{leader}</code>")),
        "{page}"
    );
    let (_, list) = admin.get("/topics").await;
    assert!(
        list.contains(&format!("3/3 · leader {leader}")),
        "replicas cell: {list}"
    );

    // A follower is SIGKILLed and publishes go on: the leader sees its lag grow and stay.
    let lost = addrs.iter().position(|&(_, h)| h == follower_http).unwrap();
    brokers[lost].take().unwrap().kill9();
    let live = addrs
        .iter()
        .map(|(_, h)| *h)
        .find(|h| *h != follower_http)
        .unwrap();
    publish(live, "second", 10).await;
    let alert = active_alert(&admin, "replica_lost").await;
    let lost_addr = follower_http.to_string();
    assert_eq!(alert["topic"], TOPIC, "{alert}");
    assert_eq!(alert["broker"], lost_addr.as_str(), "{alert}");
    assert_eq!(alert["link"], format!("/topics/{TOPIC}"), "{alert}");
    let fired = hook.notification("replica_lost", "firing").await;
    assert_eq!(fired["topic"], TOPIC, "{fired}");
    assert_eq!(fired["broker"], lost_addr.as_str(), "{fired}");
    assert!(
        fired["text"]
            .as_str()
            .unwrap()
            .starts_with(&format!("[FIRING] replica_lost {TOPIC}@{lost_addr}: ")),
        "{fired}"
    );
    let topic = admin.get_json(&path).await;
    let row = topic["replication"]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["address"] == lost_addr.as_str())
        .cloned()
        .unwrap();
    assert_eq!(row["role"], "unreachable", "{row}");
    assert!(row["lag"].as_u64().unwrap() > 0, "{row}");
    assert_eq!(topic["total"]["channel_depth"], N + 10, "{topic}");

    // Back on the same data and ports: it catches up, the alert resolves.
    let (tcp, http) = addrs[lost];
    brokers[lost] = Some(spawn_broker(
        dirs[lost].path(),
        lookupd.tcp,
        tcp.port(),
        http.port(),
    ));
    let resolved = hook.notification("replica_lost", "resolved").await;
    assert_eq!(resolved["broker"], lost_addr.as_str(), "{resolved}");
    let v = admin.get_json("/api/alerts").await;
    assert!(
        !v["active"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["rule"] == "replica_lost"),
        "{v}"
    );
    eventually("three healthy replicas again", || async {
        let v = admin.get_json(&path).await;
        (v["replication"]["healthy"] == 3).then_some(())
    })
    .await;

    admin.stop().await;
    for b in brokers.into_iter().flatten() {
        b.kill9();
    }
    lookupd.stop().await;
}
