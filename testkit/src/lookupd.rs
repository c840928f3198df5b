//! A `ferry-lookupd` server in this process on 127.0.0.1 port 0 ([`Config::for_tests`]).

use std::net::SocketAddr;

use ferry_lookupd::config::Config;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{DEADLINE, Reply, eventually, http};

/// A lookup daemon running in this process.
#[derive(Debug)]
pub struct TestLookupd {
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Starts a lookup daemon; `tweak` adjusts the test config (set `tcp_address` /
/// `http_address` to come back on known ports).
pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestLookupd {
    let mut config = Config::for_tests();
    tweak(&mut config);
    let server = ferry_lookupd::Server::bind(config)
        .await
        .expect("lookupd binds");
    let (tcp, http) = (server.tcp_addr(), server.http_addr());
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(server.run(shutdown.clone()));
    TestLookupd {
        tcp,
        http,
        shutdown,
        handle,
    }
}

impl TestLookupd {
    /// Graceful stop; waits until every task is done.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.handle)
            .await
            .expect("lookupd stops in time")
            .expect("lookupd task")
            .expect("lookupd run ok");
    }

    pub async fn get(&self, path: &str) -> Reply {
        http::get(self.http, path).await
    }

    pub async fn post(&self, path: &str) -> Reply {
        http::post(self.http, path, b"").await
    }

    /// The body of a `GET` that must answer 200 with JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let reply = self.get(path).await;
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
        reply.json()
    }

    /// Broadcast addresses of `/lookup?topic=`'s producers, or None on 404.
    pub async fn producers(&self, topic: &str) -> Option<Vec<String>> {
        let reply = self.get(&format!("/lookup?topic={topic}")).await;
        if reply.status == 404 {
            return None;
        }
        assert_eq!(reply.status, 200, "{}", reply.body);
        let producers = reply.json()["producers"].as_array().unwrap().clone();
        Some(
            producers
                .iter()
                .map(|p| p["broadcast_address"].as_str().unwrap().to_owned())
                .collect(),
        )
    }

    /// Makes lookupd know `channel` of `topic` (as an operator would), through its HTTP API.
    pub async fn create_channel(&self, topic: &str, channel: &str) {
        let path = format!("/channel/create?topic={topic}&channel={channel}");
        let reply = self.post(&path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    }
}

/// Waits until the broker whose HTTP interface is `broker_http` knows the lookupd at
/// `lookupd_http` well enough to ask it for a new topic's channels. A broker learns lookupd's
/// HTTP port from its IDENTIFY answer and registers topics only after that, so once a topic
/// it has (`lookupd_probe`, published here) is listed by lookupd, the broker knows the port.
/// (lookupd listing the broker in `/nodes` is not enough: that happens before the broker has
/// read the answer.)
pub async fn wait_knows_lookupd(broker_http: SocketAddr, lookupd_http: SocketAddr) {
    http::post(broker_http, "/pub?topic=lookupd_probe", b"probe")
        .await
        .assert_success("publish the probe");
    eventually("the broker registered a topic with lookupd", || async {
        let r = http::get(lookupd_http, "/lookup?topic=lookupd_probe").await;
        let v = r.json_or_null();
        (r.status == 200 && v["producers"].as_array().is_some_and(|a| !a.is_empty())).then_some(())
    })
    .await;
}
