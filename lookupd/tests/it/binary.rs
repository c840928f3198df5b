//! The `lookupd` binary: flags, the config file, the "listening on" log lines, and a clean exit
//! on SIGTERM and SIGINT.

use std::path::Path;
use std::process::Command;

use crate::common::{Peer, broker_info, http};
use ferry_testkit::DaemonProcess;

/// Runs `lookupd` with `args`; waits for both "listening on" lines.
fn spawn(args: &[&str]) -> DaemonProcess {
    ferry_testkit::spawn_lookupd(Path::new(env!("CARGO_BIN_EXE_lookupd")), args)
}

#[tokio::test]
async fn serves_and_stops_on_sigterm_with_a_broker_connected() {
    let process = spawn(&[
        "--tcp-address=127.0.0.1:0",
        "--http-address=127.0.0.1:0",
        "--broadcast-address=lookup.test",
    ]);
    let ping = http(process.http, "GET", "/ping").await;
    assert_eq!((ping.status, ping.body.as_str()), (200, "OK"));

    let mut peer = Peer::connect(process.tcp).await;
    let reply = peer.identify(broker_info("b1", 4150, 4151)).await;
    assert_eq!(reply["broadcast_address"], "lookup.test");
    assert_eq!(reply["tcp_port"], process.tcp.port());
    assert_eq!(reply["http_port"], process.http.port());
    peer.register("orders", None).await;
    let lookup = http(process.http, "GET", "/lookup?topic=orders").await;
    assert_eq!(lookup.json()["producers"][0]["broadcast_address"], "b1");

    tokio::task::spawn_blocking(move || process.signal_and_wait("TERM"))
        .await
        .unwrap();
    peer.expect_closed().await;
}

#[tokio::test]
async fn reads_a_config_file_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nsqlookupd.cfg");
    std::fs::write(
        &path,
        "tcp_address = \"127.0.0.1:0\"\nhttp_address = \"127.0.0.1:0\"\n\
         broadcast_address = \"from-file\"\ntombstone_lifetime = \"10s\"\n",
    )
    .unwrap();
    let config = format!("--config={}", path.display());
    let process = spawn(&[&config, "--broadcast-address=from-flag"]);
    let mut peer = Peer::connect(process.tcp).await;
    let reply = peer.identify(broker_info("b1", 4150, 4151)).await;
    assert_eq!(reply["broadcast_address"], "from-flag", "flags win");
    tokio::task::spawn_blocking(move || process.signal_and_wait("INT"))
        .await
        .unwrap();
}

#[tokio::test]
async fn nsqlookupd_command_line_with_every_flag() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nsqlookupd.cfg");
    std::fs::write(
        &path,
        "tombstone_lifetime = \"10s\"\nlog_prefix = \"[lookupd] \"\n",
    )
    .unwrap();
    let config = format!("-config={}", path.display());
    // Every flag of nsqlookupd 1.3 but -version, single-dash as NSQ's docs write them.
    let process = spawn(&[
        &config,
        "-log-level=info",
        "-log-prefix=[nsqlookupd] ",
        "-verbose",
        "-tcp-address=127.0.0.1:0",
        "-http-address",
        "127.0.0.1:0",
        "-broadcast-address=127.0.0.1",
        "-inactive-producer-timeout=300s",
        "-tombstone-lifetime=45s",
    ]);
    let ping = http(process.http, "GET", "/ping").await;
    assert_eq!((ping.status, ping.body.as_str()), (200, "OK"));
    let mut peer = Peer::connect(process.tcp).await;
    let reply = peer.identify(broker_info("b1", 4150, 4151)).await;
    assert_eq!(reply["broadcast_address"], "127.0.0.1");
    peer.register("orders", None).await;
    let lookup = http(process.http, "GET", "/lookup?topic=orders").await;
    assert_eq!(lookup.json()["producers"][0]["broadcast_address"], "b1");
    {
        let log = process.log.lock().unwrap().join("\n");
        for flag in ["--verbose", "--log-prefix"] {
            let warning = format!("{flag} is accepted for NSQ compatibility and ignored");
            assert_eq!(log.matches(&warning).count(), 1, "{warning}\n{log}");
        }
    }
    tokio::task::spawn_blocking(move || process.signal_and_wait("TERM"))
        .await
        .unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_lookupd"))
        .arg("-version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn bad_flags_exit_with_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_lookupd"))
        .arg("--tombstone-lifetime=soon")
        .output()
        .expect("run lookupd");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid duration"), "{stderr}");
}

#[tokio::test]
async fn json_log_format_writes_one_json_object_per_line() {
    let process = spawn(&[
        "--tcp-address=127.0.0.1:0",
        "--http-address=127.0.0.1:0",
        "--log-format=json",
    ]);
    let mut seen = 0;
    for line in process.log_lines() {
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}"));
        assert!(v["level"].is_string(), "{v}");
        let message = v["fields"]["message"].as_str().unwrap_or_default();
        if let Some(addr) = message.strip_prefix("HTTP: listening on ") {
            assert_eq!(process.http, addr.parse().unwrap());
            seen += 1;
        }
        if let Some(addr) = message.strip_prefix("TCP: listening on ") {
            assert_eq!(process.tcp, addr.parse().unwrap());
            seen += 1;
        }
    }
    assert_eq!(seen, 2, "both listening lines are JSON");
    let metrics = http(process.http, "GET", "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .body
            .contains("# TYPE ferry_lookupd_producers gauge"),
        "{}",
        metrics.body
    );
    tokio::task::spawn_blocking(move || process.signal_and_wait("TERM"))
        .await
        .unwrap();
}
