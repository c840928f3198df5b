//! The `admin-ui` binary: flags, the "listening on" log line, serving while a broker is
//! unreachable, and a clean exit on SIGTERM and SIGINT even with a live page open.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};

use crate::common::{DEADLINE, client, dead_addr};
use ferry_testkit::process::{listening_on, signal, spawn_until};

/// Runs `admin-ui` with `args`; waits for "HTTP: listening on ADDR".
fn spawn(args: &[&str]) -> (Child, SocketAddr) {
    let bin = Path::new(env!("CARGO_BIN_EXE_admin-ui"));
    let (child, _log, addr) = spawn_until(bin, args, &[], |line| listening_on(line, "HTTP"));
    (child, addr)
}

fn wait_exit(mut child: Child) -> std::process::ExitStatus {
    ferry_testkit::process::wait_exit(&mut child)
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
