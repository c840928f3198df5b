//! A `ferry-brokerd` server in this process: 127.0.0.1 port 0 on every interface
//! ([`Config::for_tests`]), a temp dir or a dir the caller keeps, restartable on the same dir
//! and TCP port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ferry_brokerd::config::Config;
use ferry_proto::stats::{ChannelStats, Stats};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{DEADLINE, TestConn, eventually, http};

/// A broker running in this process.
#[derive(Debug)]
pub struct TestBroker {
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub dir: PathBuf,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    tmp: Option<tempfile::TempDir>,
}

/// Starts a broker in a fresh temp dir (owned by the broker); `tweak` adjusts the test config.
pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestBroker {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut broker = start_in(tmp.path(), tweak).await;
    broker.tmp = Some(tmp);
    broker
}

/// Starts a broker on `dir`, which the caller keeps; `tweak` adjusts the test config.
pub async fn start_in(dir: &Path, tweak: impl FnOnce(&mut Config)) -> TestBroker {
    let mut cfg = Config::for_tests(dir);
    tweak(&mut cfg);
    let server = ferry_brokerd::Server::bind(cfg)
        .await
        .expect("broker binds");
    let shutdown = CancellationToken::new();
    let (tcp, http, grpc) = (server.tcp_addr(), server.http_addr(), server.grpc_addr());
    let handle = tokio::spawn(server.run(shutdown.clone()));
    TestBroker {
        tcp,
        http,
        grpc,
        dir: dir.to_path_buf(),
        shutdown,
        handle,
        tmp: None,
    }
}

impl TestBroker {
    /// `host:port` of the TCP interface.
    pub fn addr(&self) -> String {
        self.tcp.to_string()
    }

    /// Graceful stop; waits until state is persisted. Returns the temp dir (if this broker owns
    /// one) so the caller can keep the data.
    pub async fn stop(self) -> Option<tempfile::TempDir> {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.handle)
            .await
            .expect("broker stops in time")
            .expect("broker task")
            .expect("broker run ok");
        self.tmp
    }

    /// Stops, then starts again on the same data directory and TCP port (`tweak` adjusts the
    /// new config, after the TCP address is set).
    pub async fn restart_with(self, tweak: impl FnOnce(&mut Config)) -> TestBroker {
        let (dir, tcp) = (self.dir.clone(), self.tcp);
        let tmp = self.stop().await;
        let mut broker = start_in(&dir, |c| {
            c.tcp_address = tcp;
            tweak(c);
        })
        .await;
        broker.tmp = tmp;
        broker
    }

    /// [`restart_with`](Self::restart_with) the test config.
    pub async fn restart(self) -> TestBroker {
        self.restart_with(|_| {}).await
    }

    /// A raw protocol V2 connection (magic sent).
    pub async fn conn(&self) -> TestConn {
        TestConn::connect(self.tcp).await
    }

    /// A connection that has IDENTIFYed (heartbeats on) and subscribed with RDY `rdy`.
    pub async fn consumer(&self, topic: &str, channel: &str, rdy: u64) -> TestConn {
        let mut c = self.conn().await;
        c.identify(serde_json::json!({"client_id": "test", "feature_negotiation": true}))
            .await;
        c.sub(topic, channel).await;
        c.rdy(rdy).await;
        c
    }

    /// One request to the HTTP interface: (status, body).
    pub async fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let reply = http::request(self.http, method, path, body).await;
        (reply.status, reply.body)
    }

    /// `POST path` with `body`, which must succeed.
    pub async fn post(&self, path: &str, body: &str) {
        http::post(self.http, path, body.as_bytes())
            .await
            .assert_success(path);
    }

    /// `/stats?format=json`, typed.
    pub async fn stats(&self) -> Stats {
        http::get_stats(self.http).await
    }

    /// `/stats?format=json` as raw JSON, for tests of its exact shape.
    pub async fn stats_json(&self) -> Value {
        http::get_json(&format!("http://{}/stats?format=json", self.http)).await
    }

    /// A channel's stats; panics if there is no such channel.
    pub async fn channel_stats(&self, topic: &str, channel: &str) -> ChannelStats {
        let s = self.stats().await;
        s.channel(topic, channel)
            .cloned()
            .unwrap_or_else(|| panic!("no {topic}/{channel} in {s:?}"))
    }

    /// Waits until `pred` holds for the channel's stats; returns them.
    pub async fn wait_channel(
        &self,
        topic: &str,
        channel: &str,
        what: &str,
        pred: impl Fn(&ChannelStats) -> bool,
    ) -> ChannelStats {
        eventually(what, || async {
            let s = self.stats().await;
            s.channel(topic, channel).filter(|c| pred(c)).cloned()
        })
        .await
    }
}
