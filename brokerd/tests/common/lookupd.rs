//! An in-process lookupd for the tests that need one.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use super::{DEADLINE, eventually, http};

/// A lookupd running in this process.
pub struct Lookupd {
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Starts a lookupd on `tcp` and `http` (port 0: any free port).
pub async fn start_lookupd(tcp: SocketAddr, http: SocketAddr) -> Lookupd {
    let mut cfg = ferry_lookupd::config::Config::for_tests();
    cfg.tcp_address = tcp;
    cfg.http_address = http;
    let server = ferry_lookupd::Server::bind(cfg)
        .await
        .expect("lookupd binds");
    let (tcp, http) = (server.tcp_addr(), server.http_addr());
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
    /// Makes lookupd know `channel` of `topic` (as an operator or another broker's consumer
    /// would), through its HTTP API.
    pub async fn create_channel(&self, topic: &str, channel: &str) {
        let path = format!("/channel/create?topic={topic}&channel={channel}");
        let (code, body) = http(self.http, "POST", &path, b"").await;
        assert_eq!(code, 200, "{path}: {body}");
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(DEADLINE, self.task).await;
    }
}

pub async fn get_json(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let (code, body) = http(addr, "GET", path, b"").await;
    (
        code,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// Waits until the broker whose HTTP interface is `broker_http` knows the lookupd at
/// `lookupd_http` well enough to ask it for a new topic's channels. A broker learns lookupd's
/// HTTP port from its IDENTIFY answer and registers topics only after that, so once a topic
/// it has (`lookupd_probe`, published here) is listed by lookupd, the broker knows the port.
/// (lookupd listing the broker in `/nodes` is not enough: that happens before the broker has
/// read the answer.)
pub async fn wait_knows_lookupd(broker_http: SocketAddr, lookupd_http: SocketAddr) {
    let (code, body) = http(broker_http, "POST", "/pub?topic=lookupd_probe", b"probe").await;
    assert_eq!(code, 200, "{body}");
    eventually("the broker registered a topic with lookupd", || async {
        let (code, v) = get_json(lookupd_http, "/lookup?topic=lookupd_probe").await;
        (code == 200 && v["producers"].as_array().is_some_and(|a| !a.is_empty())).then_some(())
    })
    .await;
}
