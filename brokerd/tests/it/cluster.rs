//! Ferry across several machines, on loopback: two `brokerd` processes registered with two
//! lookupds. `/lookup` on each lookupd lists both brokers; a killed broker vanishes; a restarted
//! lookupd gets everything re-registered; pynsq's Reader finds both brokers through lookupd; a
//! broker pre-creates the channels lookupd already knows.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::common::*;

/// TCP ports of the producers `/lookup?topic=` lists.
async fn lookup_ports(lookupd: SocketAddr, topic: &str) -> Vec<u64> {
    let (code, v) = get_json(lookupd, &format!("/lookup?topic={topic}")).await;
    if code != 200 {
        return Vec::new();
    }
    let mut ports: Vec<u64> = v["producers"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["tcp_port"].as_u64()).collect())
        .unwrap_or_default();
    ports.sort();
    ports
}

async fn wait_lookup(lookupd: SocketAddr, topic: &str, want: &[u16], what: &str) {
    let mut want: Vec<u64> = want.iter().map(|&p| p as u64).collect();
    want.sort();
    let what = format!("{what}: /lookup?topic={topic} on {lookupd} lists {want:?}");
    eventually(&what, || async {
        (lookup_ports(lookupd, topic).await == want).then_some(())
    })
    .await;
}

/// Waits until the lookupd at `http` lists channel `c1` of topic `shared`.
async fn wait_channel_c1(http_addr: SocketAddr, what: &str) {
    eventually(&format!("{what}: channel c1 on {http_addr}"), || async {
        let (_, v) = get_json(http_addr, "/channels?topic=shared").await;
        v["channels"]
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c == "c1"))
            .then_some(())
    })
    .await;
}

fn lookupd_flags(l: &[&Lookupd]) -> Vec<String> {
    l.iter()
        .map(|l| format!("--lookupd-tcp-address={}", l.tcp))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_two_lookupds() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let l1 = start_lookupd(any, any).await;
    let l2 = start_lookupd(any, any).await;
    let flags = lookupd_flags(&[&l1, &l2]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b1 = spawn_brokerd(d1.path(), &flags);
    let b2 = spawn_brokerd(d2.path(), &flags);

    for b in [&b1, &b2] {
        let (code, _) = http(b.http, "POST", "/pub?topic=shared", b"hello").await;
        assert_eq!(code, 200);
    }
    let both = [b1.tcp.port(), b2.tcp.port()];
    wait_lookup(l1.http, "shared", &both, "both brokers on lookupd 1").await;
    wait_lookup(l2.http, "shared", &both, "both brokers on lookupd 2").await;

    // A channel created on one broker shows up in lookupd's /channels.
    let (code, _) = http(
        b1.http,
        "POST",
        "/channel/create?topic=shared&channel=c1",
        b"",
    )
    .await;
    assert_eq!(code, 200);
    wait_channel_c1(l1.http, "on lookupd 1").await;

    // Restarting a lookupd on the same ports: both brokers re-register everything.
    let (t1, h1) = (l1.tcp, l1.http);
    l1.stop().await;
    let l1 = start_lookupd(t1, h1).await;
    wait_lookup(
        l1.http,
        "shared",
        &both,
        "re-registered after lookupd restart",
    )
    .await;
    // Channels are registered right after their topic: wait for them too.
    wait_channel_c1(l1.http, "re-registered after lookupd restart").await;

    // Killing a broker removes it (its connection drops).
    let b2_port = b2.tcp.port();
    b2.kill9();
    wait_lookup(
        l1.http,
        "shared",
        &[b1.tcp.port()],
        "killed broker gone from lookupd 1",
    )
    .await;
    wait_lookup(
        l2.http,
        "shared",
        &[b1.tcp.port()],
        "killed broker gone from lookupd 2",
    )
    .await;
    assert_ne!(b2_port, b1.tcp.port());

    b1.kill9();
    l1.stop().await;
    l2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_topic_precreates_channels_lookupd_knows() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let l = start_lookupd(any, any).await;
    // lookupd knows channel "early" of topic "fresh" (from an operator or another broker).
    l.create_channel("fresh", "early").await;
    let dir = tempfile::tempdir().unwrap();
    let flags = lookupd_flags(&[&l]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let b = spawn_brokerd(dir.path(), &flags);
    // Wait until the broker knows lookupd's HTTP port.
    wait_knows_lookupd(b.http, l.http).await;
    // Creating the topic makes the broker ask lookupd for its channels. Another channel is
    // created at once, so without pre-creation "early" (made later by SUB) would start at the
    // log's end and miss everything published before its consumer arrived.
    for path in [
        "/topic/create?topic=fresh",
        "/channel/create?topic=fresh&channel=other",
    ] {
        let (code, _) = http(b.http, "POST", path, b"").await;
        assert_eq!(code, 200, "{path}");
    }
    for i in 0..3 {
        let (code, _) = http(
            b.http,
            "POST",
            "/pub?topic=fresh",
            format!("m{i}").as_bytes(),
        )
        .await;
        assert_eq!(code, 200);
    }
    let mut c = TestConn::connect(b.tcp).await;
    c.identify(serde_json::json!({})).await;
    c.sub("fresh", "early").await;
    c.rdy(10).await;
    for i in 0..3 {
        assert_eq!(c.message().await.body, format!("m{i}").into_bytes());
    }
    b.kill9();
    l.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pynsq_reader_finds_both_brokers_through_lookupd() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let l = start_lookupd(any, any).await;
    let flags = lookupd_flags(&[&l]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b1 = spawn_brokerd(d1.path(), &flags);
    let b2 = spawn_brokerd(d2.path(), &flags);
    // The channel exists on both brokers before publishing, so it gets every message.
    for b in [&b1, &b2] {
        let (code, _) = http(
            b.http,
            "POST",
            "/channel/create?topic=spread&channel=r",
            b"",
        )
        .await;
        assert_eq!(code, 200);
    }
    let per_broker = 150;
    for (n, b) in [&b1, &b2].iter().enumerate() {
        let body: Vec<String> = (0..per_broker).map(|i| format!("b{n}-{i}")).collect();
        let (code, _) = http(
            b.http,
            "POST",
            "/mpub?topic=spread",
            body.join("\n").as_bytes(),
        )
        .await;
        assert_eq!(code, 200);
    }
    wait_lookup(
        l.http,
        "spread",
        &[b1.tcp.port(), b2.tcp.port()],
        "both registered",
    )
    .await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/python/lookup_reader.py");
    let lookup_http = l.http.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::common::python())
            .arg(script)
            .arg(lookup_http)
            .arg("spread")
            .arg("r")
            .arg((2 * per_broker).to_string())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("received 300 distinct"), "{stdout}");
    b1.kill9();
    b2.kill9();
    l.stop().await;
}

/// A deleted topic leaves lookupd with its channels, as nsqd's does: `/lookup` answers 404 and
/// `/topics` no longer lists it within 2 s (no ghost row in the dashboard).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_topic_and_channels_leave_lookupd() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let l = start_lookupd(any, any).await;
    let flags = lookupd_flags(&[&l]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let d = tempfile::tempdir().unwrap();
    let b = spawn_brokerd(d.path(), &flags);
    for path in [
        "/pub?topic=greet2",
        "/channel/create?topic=greet2&channel=a",
    ] {
        let (code, _) = http(b.http, "POST", path, b"hi").await;
        assert_eq!(code, 200);
    }
    eventually("lookupd lists greet2 and its channel", || async {
        let (_, v) = get_json(l.http, "/channels?topic=greet2").await;
        (v["channels"].as_array().is_some_and(|a| a.len() == 1)).then_some(())
    })
    .await;
    // A channel deleted alone leaves lookupd too.
    let (code, _) = http(
        b.http,
        "POST",
        "/channel/create?topic=greet2&channel=b",
        b"",
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = http(
        b.http,
        "POST",
        "/channel/delete?topic=greet2&channel=b",
        b"",
    )
    .await;
    assert_eq!(code, 200);

    let (code, _) = http(b.http, "POST", "/topic/delete?topic=greet2", b"").await;
    assert_eq!(code, 200);
    let deleted = std::time::Instant::now();
    eventually("lookupd forgets greet2", || async {
        let (lookup, _) = get_json(l.http, "/lookup?topic=greet2").await;
        let (_, topics) = get_json(l.http, "/topics").await;
        let listed = topics["topics"]
            .as_array()
            .is_some_and(|a| a.iter().any(|t| t == "greet2"));
        (lookup == 404 && !listed).then_some(())
    })
    .await;
    assert!(
        deleted.elapsed() < std::time::Duration::from_secs(2),
        "took {:?}",
        deleted.elapsed()
    );
    let (_, v) = get_json(l.http, "/channels?topic=greet2").await;
    assert_eq!(v["channels"], serde_json::json!([]), "{v}");
    b.sigterm();
}
