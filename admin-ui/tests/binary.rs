//! The `admin-ui` binary: flags, the "listening on" log line, serving while a broker is
//! unreachable, and a clean exit on SIGTERM and SIGINT even with a live page open.

mod common;

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{DEADLINE, client, dead_addr};

/// Runs `admin-ui` with `args`; waits for "HTTP: listening on ADDR".
fn spawn(args: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_admin-ui"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn admin-ui");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let end = Instant::now() + DEADLINE;
    let addr = loop {
        let left = end.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("admin-ui logs its listening address");
        if let Some(a) = line.split("HTTP: listening on ").nth(1) {
            let a: String = a.chars().take_while(|c| !c.is_whitespace()).collect();
            let a = a.trim_end_matches(|c: char| !c.is_ascii_digit());
            break a.parse().unwrap_or_else(|e| panic!("{e}: {line}"));
        }
    };
    std::thread::spawn(move || while rx.recv().is_ok() {});
    (child, addr)
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(mut child: Child) -> std::process::ExitStatus {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("admin-ui did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn serves_and_stops_cleanly_on_sigterm_and_sigint() {
    let dead = dead_addr().await.to_string();
    for sig in ["TERM", "INT"] {
        let (child, addr) = spawn(&[
            "--http-address=127.0.0.1:0",
            "--nsqd-http-address",
            &dead,
            "--refresh-interval=100ms",
        ]);
        let base = format!("http://{addr}");
        let ping = client().get(format!("{base}/ping")).send().await.unwrap();
        assert_eq!(ping.text().await.unwrap(), "OK");
        let page = client().get(format!("{base}/nodes")).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(
            page.text().await.unwrap().contains(&dead),
            "the dead broker is shown"
        );
        // A live page is open while the signal arrives.
        let mut events = client()
            .get(format!("{base}/events?view=nodes"))
            .send()
            .await
            .unwrap();
        let first = tokio::time::timeout(DEADLINE, events.chunk())
            .await
            .unwrap();
        assert!(first.unwrap().is_some());
        signal(&child, sig);
        let status = tokio::task::spawn_blocking(move || wait_exit(child))
            .await
            .unwrap();
        assert!(status.success(), "SIG{sig}: {status}");
    }
}

#[test]
fn rejects_bad_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_admin-ui"))
        .args(["--sample-interval=10s", "--history=1s"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--history"));
    let out = Command::new(env!("CARGO_BIN_EXE_admin-ui"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--http-address",
        "--lookupd-http-address",
        "--broker-http-address",
        "--admin-user",
        "--acl-http-header",
        "--sample-interval",
        "--history",
    ] {
        assert!(help.contains(flag), "{flag} in --help");
    }
}
