//! Shared by the `ferry` process tests: in-process brokers and lookupds on loopback, and
//! running the `ferry` binary.

#![allow(dead_code)] // each test file uses its own subset

use std::process::{Command, Output};

use ferry_brokerd::config::Config;
use tokio_util::sync::CancellationToken;

pub struct Broker {
    pub http: String,
    pub tcp: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

pub async fn broker() -> Broker {
    broker_with(|_| {}).await
}

/// A broker whose test config `tweak` adjusts.
pub async fn broker_with(tweak: impl FnOnce(&mut Config)) -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path());
    tweak(&mut config);
    let server = ferry_brokerd::Server::bind(config).await.unwrap();
    let http = server.http_addr().to_string();
    let tcp = server.tcp_addr().to_string();
    let stop = CancellationToken::new();
    let task = tokio::spawn(server.run(stop.clone()));
    Broker {
        http,
        tcp,
        stop,
        task,
        _dir: dir,
    }
}

impl Broker {
    pub async fn post(&self, path: &str, body: &str) {
        let r = reqwest::Client::new()
            .post(format!("http://{}{path}", self.http))
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }

    pub async fn stats(&self) -> serde_json::Value {
        reqwest::get(format!("http://{}/stats?format=json", self.http))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

pub async fn ferry(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(&args)
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A broker registered with the lookupd at `lookupd_tcp`.
pub async fn broker_registered_with(lookupd_tcp: &str) -> Broker {
    broker_with(|c| {
        c.lookupd_tcp_addresses = vec![lookupd_tcp.to_owned()];
        c.broadcast_address = Some("127.0.0.1".to_owned());
    })
    .await
}

/// An in-process lookupd on loopback.
pub struct Lookupd {
    pub tcp: String,
    pub http: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub async fn lookupd() -> Lookupd {
    let server = ferry_lookupd::Server::bind(ferry_lookupd::config::Config::for_tests())
        .await
        .unwrap();
    let tcp = server.tcp_addr().to_string();
    let http = server.http_addr().to_string();
    let stop = CancellationToken::new();
    let task = tokio::spawn(server.run(stop.clone()));
    Lookupd {
        tcp,
        http,
        stop,
        task,
    }
}

impl Lookupd {
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// How long a condition may take to come true.
pub const DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// Polls `check` until it returns `Some`, failing with `what` after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The channels of `topic` in a broker's `/stats`, as JSON.
pub fn channels(stats: &serde_json::Value, topic: &str) -> Vec<serde_json::Value> {
    stats["topics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["topic_name"] == topic)
        .flat_map(|t| t["channels"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Names of the channels of `topic` in a broker's `/stats`.
pub fn channel_names(stats: &serde_json::Value, topic: &str) -> Vec<String> {
    channels(stats, topic)
        .iter()
        .filter_map(|c| c["channel_name"].as_str().map(str::to_owned))
        .collect()
}

/// The `ferry` binary with `args`, stdout piped (stdin and stderr as given).
pub fn spawn_ferry(args: &[&str], stdin: std::process::Stdio) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .stdin(stdin)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (off the runtime) for a child to exit and returns its output.
pub async fn wait_output(child: std::process::Child) -> Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}
