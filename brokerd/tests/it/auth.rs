//! AUTH against an auth server (a small axum app here, speaking nsqd's auth contract): the
//! order of checks, permissions by topic/channel regex, ttl renewal, `/stats` identity, and
//! pynsq's `auth_secret`.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::common::{TestConn, auth_server, grant, start};
use bytes::Bytes;
use ferry_proto::v2::Command;
use serde_json::{Value, json};

async fn identified(tcp: SocketAddr) -> TestConn {
    let mut c = TestConn::connect(tcp).await;
    let reply = c.identify(json!({"feature_negotiation": true})).await;
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["auth_required"], true);
    c
}

async fn send_auth(c: &mut TestConn, secret: &str) {
    c.send(&Command::Auth(Bytes::from(secret.to_owned()))).await;
}

fn publish(topic: &str) -> Command {
    Command::Pub {
        topic: topic.into(),
        body: Bytes::from_static(b"x"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_required_checked_and_refusals_disturb_no_one() {
    let (addr, server) = auth_server().await;
    server.grant(
        "pub",
        grant("publisher", 3600, "^orders", &[".*"], &["publish"]),
    );
    server.grant(
        "sub",
        grant("billing", 3600, "^orders$", &["^billing$"], &["subscribe"]),
    );
    server.grant(
        "none",
        json!({"ttl": 3600, "identity": "nobody", "authorizations": []}),
    );
    let b = start(|c| c.auth_http_addresses = vec![addr.to_string()]).await;

    // An authorized consumer, receiving throughout.
    let mut consumer = identified(b.tcp).await;
    send_auth(&mut consumer, "sub").await;
    let reply: Value = serde_json::from_slice(&consumer.expect_response().await).unwrap();
    assert_eq!(
        reply,
        json!({"identity": "billing", "identity_url": "https://people.example/billing", "permission_count": 1})
    );
    consumer.sub("orders", "billing").await;
    consumer.rdy(10).await;

    // SUB or PUB before AUTH.
    for (cmd, name) in [
        (
            Command::Sub {
                topic: "orders".into(),
                channel: "billing".into(),
            },
            "SUB",
        ),
        (publish("orders"), "PUB"),
    ] {
        let mut c = identified(b.tcp).await;
        c.send(&cmd).await;
        let text = c.expect_error("E_AUTH_FIRST").await;
        assert_eq!(text, format!("E_AUTH_FIRST AUTH required before {name}"));
        c.expect_closed().await;
    }
    // A secret the server refuses; a grant without authorizations.
    let mut c = identified(b.tcp).await;
    send_auth(&mut c, "wrong").await;
    assert_eq!(
        c.expect_error("E_AUTH_FAILED").await,
        "E_AUTH_FAILED AUTH failed"
    );
    c.expect_closed().await;
    let mut c = identified(b.tcp).await;
    send_auth(&mut c, "none").await;
    assert_eq!(
        c.expect_error("E_UNAUTHORIZED").await,
        "E_UNAUTHORIZED AUTH no authorizations found"
    );
    c.expect_closed().await;

    // A publisher: allowed on orders*, not elsewhere, and may not subscribe.
    let mut p = identified(b.tcp).await;
    send_auth(&mut p, "pub").await;
    p.expect_response().await;
    p.send(&publish("orders")).await;
    p.expect_ok().await;
    p.send(&publish("refunds")).await;
    assert_eq!(
        p.expect_error("E_UNAUTHORIZED").await,
        r#"E_UNAUTHORIZED AUTH failed for PUB on "refunds" """#
    );
    p.expect_closed().await;
    let mut p = identified(b.tcp).await;
    send_auth(&mut p, "pub").await;
    p.expect_response().await;
    p.send(&Command::Sub {
        topic: "orders".into(),
        channel: "billing".into(),
    })
    .await;
    p.expect_error("E_UNAUTHORIZED").await;
    // The subscriber may not read another channel either.
    let mut s = identified(b.tcp).await;
    send_auth(&mut s, "sub").await;
    s.expect_response().await;
    s.send(&Command::Sub {
        topic: "orders".into(),
        channel: "audit".into(),
    })
    .await;
    s.expect_error("E_UNAUTHORIZED").await;

    // None of that disturbed the authorized consumer.
    assert_eq!(&consumer.message().await.body[..], b"x");
    // The auth server heard the client's address, TLS state and secret.
    let asked = server.asked();
    assert!(
        asked
            .iter()
            .all(|q| q["remote_ip"] == "127.0.0.1" && q["tls"] == "false")
    );
    assert!(asked.iter().any(|q| q["secret"] == "pub"));
    // /stats shows who the consumer is.
    let stats = b.stats().await;
    let client = &stats.channel("orders", "billing").unwrap().clients[0];
    assert!(client.authed, "{client:?}");
    assert_eq!(client.auth_identity, "billing");
    assert_eq!(client.auth_identity_url, "https://people.example/billing");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_grant_is_asked_again() {
    let (addr, server) = auth_server().await;
    // ttl 0: every check renews the grant.
    server.grant("s", grant("p", 0, ".*", &[".*"], &["publish"]));
    let b = start(|c| c.auth_http_addresses = vec![addr.to_string()]).await;
    let mut c = identified(b.tcp).await;
    send_auth(&mut c, "s").await;
    c.expect_response().await;
    c.send(&publish("t")).await;
    c.expect_ok().await;
    assert_eq!(server.asked().len(), 2, "AUTH, then renewal at PUB");
    // The server withdraws the grant: the next PUB is refused.
    server.grant("s", grant("p", 0, "^other$", &[".*"], &["publish"]));
    c.send(&publish("t")).await;
    c.expect_error("E_UNAUTHORIZED").await;
    b.stop().await;
}

#[tokio::test]
async fn auth_without_an_auth_server_is_disabled() {
    let b = start(|_| {}).await;
    let mut c = TestConn::connect(b.tcp).await;
    let reply = c.identify(json!({"feature_negotiation": true})).await;
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["auth_required"], false);
    send_auth(&mut c, "anything").await;
    assert_eq!(
        c.expect_error("E_AUTH_DISABLED").await,
        "E_AUTH_DISABLED AUTH Disabled"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pynsq_with_auth_secret() {
    let (addr, server) = auth_server().await;
    server.grant(
        "pynsq-secret",
        grant(
            "pynsq",
            3600,
            "^authed$",
            &[".*"],
            &["publish", "subscribe"],
        ),
    );
    let b = start(|c| c.auth_http_addresses = vec![addr.to_string()]).await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let py = root.join(".venv/bin/python");
    assert!(
        py.exists(),
        "{} missing: run scripts/setup-test-deps.sh",
        py.display()
    );
    let script = root.join("tests/python/secure.py");
    let tcp = b.tcp.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(py)
            .args([script.to_str().unwrap(), &tcp, "authed", "auth", "-"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok 200"), "{text}");
    b.stop().await;
}
