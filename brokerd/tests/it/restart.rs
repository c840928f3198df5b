//! Restarts of the real `brokerd` binary: after SIGTERM and after SIGKILL, topics, channels and
//! paused state come back, no acknowledged message is lost, everything not FINed is delivered
//! again, and deferred messages keep their due time.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::*;
use ferry_proto::v2::Command;

const N: usize = 300;

struct Before {
    finished: HashSet<Vec<u8>>,
    deferred_due_ns: i64,
}

/// Publishes N messages on `t`, consumes some (FINs half of those), leaves some in flight, DPUBs
/// one far enough ahead, pauses channel `p`, creates an empty topic.
async fn workload(p: &BrokerProcess) -> Before {
    for path in [
        "/channel/create?topic=t&channel=c",
        "/channel/create?topic=t&channel=paused",
        "/channel/pause?topic=t&channel=paused",
        "/topic/create?topic=empty_topic",
    ] {
        let (code, body) = http(p.http, "POST", path, b"").await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    let mut pubc = TestConn::connect(p.tcp).await;
    pubc.send(&Command::Mpub {
        topic: "t".into(),
        bodies: (0..N)
            .map(|i| format!("msg-{i}").into_bytes().into())
            .collect(),
    })
    .await;
    pubc.expect_ok().await;

    let mut c = TestConn::connect(p.tcp).await;
    c.identify(serde_json::json!({"client_id": "before"})).await;
    c.sub("t", "c").await;
    c.rdy(20).await;
    let mut finished = HashSet::new();
    for i in 0..20 {
        let m = c.message().await;
        if i % 2 == 0 {
            c.fin(&m.id).await;
            finished.insert(m.body.to_vec());
        }
    }
    // DPUB due in 4 s.
    let defer_ms = 4000;
    let before = ferry_brokerd::clock::now_ns();
    pubc.send(&Command::Dpub {
        topic: "d".into(),
        defer_ms,
        body: b"deferred".to_vec().into(),
    })
    .await;
    pubc.expect_ok().await;
    let (code, _) = http(p.http, "POST", "/channel/create?topic=d&channel=c", b"").await;
    assert_eq!(code, 200);
    // Make sure the FINs were processed (a NOP round trip is not acknowledged, so use stats).
    eventually("the broker to count 10 FINs", || async {
        let s = ferry_testkit::http::get(p.http, "/stats?format=json&topic=t&channel=c")
            .await
            .stats();
        (s.channel("t", "c")?.clients.first()?.finish_count == 10).then_some(())
    })
    .await;
    Before {
        finished,
        deferred_due_ns: before + defer_ms as i64 * 1_000_000,
    }
}

async fn verify_after_restart(p: &BrokerProcess, before: &Before, exact: bool) {
    let s = get_stats(p.http).await;
    assert!(s.topic("empty_topic").is_some(), "empty topic back: {s:?}");
    let paused = s.channel("t", "paused").expect("paused channel back");
    assert!(paused.paused);

    // Every message not FINed comes again; with a clean stop, exactly those.
    let mut c = TestConn::connect(p.tcp).await;
    c.identify(serde_json::json!({"client_id": "after"})).await;
    c.sub("t", "c").await;
    c.rdy(100).await;
    let all: HashSet<Vec<u8>> = (0..N).map(|i| format!("msg-{i}").into_bytes()).collect();
    let must: HashSet<Vec<u8>> = all.difference(&before.finished).cloned().collect();
    let mut got = HashSet::new();
    while !must.is_subset(&got) {
        let m = c.message().await;
        assert!(all.contains(&m.body.to_vec()), "unknown message");
        got.insert(m.body.to_vec());
        c.fin(&m.id).await;
    }
    if exact {
        assert_eq!(
            got, must,
            "a clean restart redelivers exactly the unfinished messages"
        );
        c.expect_no_message(Duration::from_millis(300)).await;
    }

    // The paused channel still holds all N.
    let s = ferry_testkit::http::get(p.http, "/stats?format=json&topic=t&channel=paused")
        .await
        .stats();
    assert_eq!(s.channel("t", "paused").unwrap().depth, N as u64);

    // The deferred message comes at its time, not before.
    let mut d = TestConn::connect(p.tcp).await;
    d.identify(serde_json::json!({})).await;
    d.sub("d", "c").await;
    d.rdy(1).await;
    let m = d.message().await;
    assert_eq!(&m.body[..], b"deferred");
    let now = ferry_brokerd::clock::now_ns();
    assert!(
        now >= before.deferred_due_ns,
        "deferred message came {} ms early",
        (before.deferred_due_ns - now) / 1_000_000
    );
}

#[tokio::test]
async fn sigterm_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn_brokerd(dir.path(), &[]);
    let before = workload(&p).await;
    p.sigterm();
    let p = spawn_brokerd(dir.path(), &[]);
    verify_after_restart(&p, &before, true).await;
    p.sigterm();
}

#[tokio::test]
async fn sigkill_restart_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn_brokerd(dir.path(), &["--sync-timeout=100ms"]);
    let before = workload(&p).await;
    p.kill9();
    let p = spawn_brokerd(dir.path(), &[]);
    verify_after_restart(&p, &before, false).await;
    p.kill9();
}

#[tokio::test]
async fn second_broker_on_same_data_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn_brokerd(dir.path(), &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_brokerd"))
        .arg("--tcp-address=127.0.0.1:0")
        .arg("--http-address=127.0.0.1:0")
        .arg("--grpc-address=127.0.0.1:0")
        .arg(format!("--data-path={}", dir.path().display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use"), "{err}");
    p.kill9();
}

/// Logs written to a pipe (or a file) carry no terminal colour codes.
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_brokerd"))
        .args([
            "--tcp-address=127.0.0.1:0",
            "--http-address=127.0.0.1:0",
            "--grpc-address=127.0.0.1:0",
        ])
        .arg(format!("--data-path={}", dir.path().display()))
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines.next().expect("a log line").unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(line.contains("listening on"), "{line}");
    assert!(!line.contains('\u{1b}'), "colour codes in {line:?}");
}
