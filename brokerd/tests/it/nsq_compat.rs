//! Drop-in for nsqd users: `brokerd` started with nsqd 1.3's command line (every flag once,
//! Go-style single dashes) and config file serves as nsqd would, warning once about each flag it
//! has no use for; and the scenarios of pynsq's and go-nsq's own test suites pass with pynsq
//! against `brokerd` and `lookupd` installed under the names `nsqd` and `nsqlookupd`.

use std::path::{Path, PathBuf};
use std::process::Command as ProcCommand;

use crate::common::{DEADLINE, TestConn, auth_server, eventually, grant, http, pki, spawn_brokerd};
use bytes::Bytes;
use ferry_proto::v2::Command;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// nsqd 1.3's flags that Ferry accepts and ignores (each must be warned about exactly once).
const IGNORED: &[&str] = &[
    "verbose",
    "worker-id",
    "log-prefix",
    "queue-scan-worker-pool-max",
    "queue-scan-selection-count",
    "output-buffer-timeout",
    "statsd-address",
    "statsd-interval",
    "statsd-mem-stats",
    "statsd-prefix",
    "statsd-udp-packet-size",
    "auth-fail-closed",
    "auth-fail-default-ttl",
    "auth-fail-default-identity",
    "auth-fail-default-identity-url",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsqd_command_line_with_every_flag() {
    let certs = pki();
    let (auth, grants) = auth_server().await;
    grants.grant(
        "s3cret",
        grant("ops", 3600, ".*", &[".*"], &["publish", "subscribe"]),
    );
    let lookupd = ferry_lookupd::Server::bind(ferry_lookupd::config::Config::for_tests())
        .await
        .unwrap();
    let (lookup_tcp, lookup_http) = (lookupd.tcp_addr(), lookupd.http_addr());
    let stop_lookupd = CancellationToken::new();
    let lookupd_task = tokio::spawn(lookupd.run(stop_lookupd.clone()));

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("nsqd.cfg");
    std::fs::write(&config, "max_msg_size = 10\nmax_rdy_count = 50\n").unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let (ca, cert, key) = (
        certs.ca.display(),
        certs.cert.display(),
        certs.key.display(),
    );
    // Every flag of nsqd 1.3 (apps/nsqd/options.go) but -version, written as operators and
    // NSQ's docs write them: one dash, `=value` or a separate value.
    let flags: Vec<String> = [
        format!("-config={}", config.display()),
        "-log-level=info".into(),
        "-log-prefix=[nsqd] ".into(),
        "-verbose".into(),
        "-node-id=7".into(),
        "-worker-id".into(),
        "-https-address=127.0.0.1:0".into(),
        "-http-address=127.0.0.1:0".into(),
        "-tcp-address".into(),
        "127.0.0.1:0".into(),
        format!("-auth-http-address={auth}"),
        "-auth-fail-closed=false".into(),
        "-auth-fail-default-ttl=360".into(),
        "-auth-fail-default-identity=anonymous".into(),
        "-auth-fail-default-identity-url=https://example.invalid/".into(),
        "-broadcast-address=127.0.0.1".into(),
        format!("-lookupd-tcp-address={lookup_tcp}"),
        "-http-client-connect-timeout=2s".into(),
        "-http-client-request-timeout=5s".into(),
        "-data-path".into(),
        data.display().to_string(),
        "-mem-queue-size=10000".into(),
        "-max-bytes-per-file=1048576".into(),
        "-sync-every=2500".into(),
        "-sync-timeout=2s".into(),
        "-queue-scan-worker-pool-max=4".into(),
        "-queue-scan-selection-count=20".into(),
        "-msg-timeout=60s".into(),
        "-max-msg-timeout=15m".into(),
        "-max-msg-size=1000".into(),
        "-max-req-timeout=1h".into(),
        "-max-body-size=5000".into(),
        "-max-heartbeat-interval=60s".into(),
        "-max-rdy-count=60".into(),
        "-max-output-buffer-size=65536".into(),
        "-max-output-buffer-timeout=30s".into(),
        "-min-output-buffer-timeout=25ms".into(),
        "-output-buffer-timeout=250ms".into(),
        "-max-channel-consumers=0".into(),
        "-statsd-address=127.0.0.1:8125".into(),
        "-statsd-interval=60s".into(),
        "-statsd-mem-stats".into(),
        "-statsd-prefix=nsq.%s".into(),
        "-statsd-udp-packet-size=508".into(),
        "-e2e-processing-latency-percentile=0.99,0.5".into(),
        "-e2e-processing-latency-window-time=10m".into(),
        format!("-tls-cert={cert}"),
        format!("-tls-key={key}"),
        "-tls-client-auth-policy=require-verify".into(),
        format!("-tls-root-ca-file={ca}"),
        "-tls-required=false".into(),
        "-tls-min-version=tls1.2".into(),
        "-deflate=true".into(),
        "-max-deflate-level=6".into(),
        "-snappy=false".into(),
    ]
    .into();
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let broker = spawn_brokerd(&data, &flag_refs);

    let (code, body) = http(broker.http, "GET", "/ping", b"").await;
    assert_eq!((code, body.as_str()), (200, "OK"));

    // The flags act: features, limits (the command line wins over the config file), AUTH.
    let mut c = TestConn::connect(broker.tcp).await;
    let reply = c
        .identify(json!({"feature_negotiation": true, "snappy": true}))
        .await;
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["snappy"], false, "-snappy=false: {reply}");
    assert_eq!(reply["auth_required"], true, "-auth-http-address: {reply}");
    assert_eq!(reply["max_rdy_count"], 60, "flag over file: {reply}");
    assert_eq!(reply["max_deflate_level"], 6);
    c.send(&Command::Auth(Bytes::from_static(b"s3cret"))).await;
    c.expect_response().await;
    c.send(&Command::Pub {
        topic: "drop_in".into(),
        body: Bytes::from(vec![b'x'; 1001]),
    })
    .await;
    c.expect_error("E_BAD_MESSAGE").await;
    c.expect_closed().await;
    let mut c = TestConn::connect(broker.tcp).await;
    c.identify(json!({"feature_negotiation": true})).await;
    c.send(&Command::Auth(Bytes::from_static(b"s3cret"))).await;
    c.expect_response().await;
    c.publish("drop_in", b"hello").await;
    c.sub("drop_in", "ch").await;
    c.rdy(1).await;
    assert_eq!(&c.message().await.body[..], b"hello");

    // Registered with the lookupd it was given, under its broadcast address.
    let what = "drop_in registered with lookupd as 127.0.0.1";
    eventually(what, || async {
        let (_, body) = http(lookup_http, "GET", "/lookup?topic=drop_in", b"").await;
        let v: Value = serde_json::from_str(&body).ok()?;
        (v["producers"][0]["broadcast_address"] == "127.0.0.1").then_some(())
    })
    .await;

    // One warning per ignored flag, naming it.
    let log = broker.log.lock().unwrap().join("\n");
    for name in IGNORED {
        let needle = format!("--{name} is accepted for NSQ compatibility and ignored");
        assert_eq!(log.matches(&needle).count(), 1, "{needle}\n{log}");
    }
    assert_eq!(
        log.matches("accepted for NSQ compatibility").count(),
        IGNORED.len()
    );
    broker.sigterm();
    stop_lookupd.cancel();
    let _ = tokio::time::timeout(DEADLINE, lookupd_task).await;
}

#[test]
fn version_and_bad_flags_as_nsqd_users_type_them() {
    let out = ProcCommand::new(env!("CARGO_BIN_EXE_brokerd"))
        .arg("-version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    for bad in [
        &["-no-such-flag=1"][..],
        &["-max-msg-size=lots"],
        &["-statsd-mem-stats=maybe"],
        &["-tls-required=sometimes"],
    ] {
        let out = ProcCommand::new(env!("CARGO_BIN_EXE_brokerd"))
            .args(bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("error:"), "{bad:?}: {stderr}");
    }
}

/// The directory with `lookupd`, built beside `brokerd` by `cargo test --workspace`.
fn lookupd_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_brokerd")).with_file_name("lookupd");
    assert!(
        path.exists(),
        "{} is missing: run the workspace's tests (scripts/test.sh), or `cargo build -p \
         ferry-lookupd` first",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsq_client_suites_scenarios_with_pynsq() {
    let certs = pki();
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_brokerd"), bin.path().join("nsqd")).unwrap();
    std::os::unix::fs::symlink(lookupd_binary(), bin.path().join("nsqlookupd")).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/python/nsq_suite.py");
    let args = [
        script.into_os_string(),
        bin.path().as_os_str().to_owned(),
        certs.cert.clone().into_os_string(),
        certs.key.clone().into_os_string(),
        certs.ca.clone().into_os_string(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        ProcCommand::new(crate::common::python())
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "NSQ client suite scenarios failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for scenario in [
        "tls_snappy",
        "tls_deflate",
        "lookupd",
        "auth",
        "go_nsq_command_line",
    ] {
        assert!(
            stdout.lines().any(|l| l == format!("ok {scenario}")),
            "{scenario} did not pass\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
    }
}
