//! Shared by the `ferry` process tests: in-process brokers and lookupds on loopback
//! (ferry-testkit's, with their addresses as strings, as the `ferry` command line takes them),
//! and running the `ferry` binary.

use std::process::{Command, Output};

use ferry_brokerd::config::Config;
use ferry_proto::stats::{ChannelStats, Stats};

pub use ferry_testkit::{DEADLINE, eventually};

/// An in-process broker in a temp dir.
pub struct Broker {
    pub http: String,
    pub tcp: String,
    inner: ferry_testkit::TestBroker,
}

pub async fn broker() -> Broker {
    broker_with(|_| {}).await
}

/// A broker whose test config `tweak` adjusts.
pub async fn broker_with(tweak: impl FnOnce(&mut Config)) -> Broker {
    let inner = ferry_testkit::broker::start(tweak).await;
    Broker {
        http: inner.http.to_string(),
        tcp: inner.tcp.to_string(),
        inner,
    }
}

impl Broker {
    /// `POST path` with `body`, which must succeed.
    pub async fn post(&self, path: &str, body: &str) {
        self.inner.post(path, body).await
    }

    pub async fn stats(&self) -> Stats {
        self.inner.stats().await
    }

    pub async fn stop(self) {
        self.inner.stop().await;
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
    inner: ferry_testkit::TestLookupd,
}

pub async fn lookupd() -> Lookupd {
    let inner = ferry_testkit::lookupd::start(|_| {}).await;
    Lookupd {
        tcp: inner.tcp.to_string(),
        http: inner.http.to_string(),
        inner,
    }
}

impl Lookupd {
    pub async fn stop(self) {
        self.inner.stop().await;
    }
}

/// The channels of `topic` in a broker's `/stats`, as JSON.
pub fn channels<'a>(stats: &'a Stats, topic: &str) -> &'a [ChannelStats] {
    stats.topic(topic).map_or(&[], |t| &t.channels)
}

/// Names of the channels of `topic` in a broker's `/stats`.
pub fn channel_names(stats: &Stats, topic: &str) -> Vec<String> {
    channels(stats, topic)
        .iter()
        .map(|c| c.channel_name.clone())
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

/// `ferry dev` in `cwd` with every listener on a free loopback port (stdio left to the caller).
pub fn dev_command(cwd: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
    command.arg("dev").current_dir(cwd);
    for flag in [
        "--broker-tcp-address",
        "--broker-http-address",
        "--broker-grpc-address",
        "--lookupd-tcp-address",
        "--lookupd-http-address",
        "--admin-http-address",
    ] {
        command.args([flag, "127.0.0.1:0"]);
    }
    command
}

/// Waits (off the runtime) for a child to exit and returns its output.
pub async fn wait_output(child: std::process::Child) -> Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}
