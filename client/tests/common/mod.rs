//! Test harness: real brokers (ferry-brokerd, in-process) on 127.0.0.1 in temp dirs, restartable
//! on the same port and data directory, and condition waits with deadlines.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_brokerd::config::Config as BrokerConfig;
use ferry_client::{Config, Consumer, Error, Message, handler_fn};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Longest any single expected event may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A client config for tests: fast reconnects and backoff.
pub fn client_config() -> Config {
    Config::new()
        .client_id("test")
        .reconnect_delay(Duration::from_millis(20))
        .max_reconnect_delay(Duration::from_millis(200))
        .backoff_multiplier(Duration::from_millis(5))
        .max_backoff_duration(Duration::from_millis(50))
        .default_requeue_delay(Duration::from_millis(10))
        .max_requeue_delay(Duration::from_millis(100))
        .dial_timeout(Duration::from_secs(2))
        .write_timeout(Duration::from_secs(5))
        .shutdown_timeout(Duration::from_secs(5))
}

/// A broker running in this process.
pub struct TestBroker {
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    pub dir: PathBuf,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    tmp: Option<tempfile::TempDir>,
}

/// Starts a broker in a fresh temp dir.
pub async fn start() -> TestBroker {
    let tmp = tempfile::tempdir().unwrap();
    let mut broker = start_in(tmp.path(), "127.0.0.1:0".parse().unwrap()).await;
    broker.tmp = Some(tmp);
    broker
}

/// Starts a broker on `dir`, listening for TCP on `tcp`.
pub async fn start_in(dir: &Path, tcp: SocketAddr) -> TestBroker {
    let mut cfg = BrokerConfig::for_tests(dir);
    cfg.tcp_address = tcp;
    let server = ferry_brokerd::Server::bind(cfg)
        .await
        .expect("broker binds");
    let tcp = server.tcp_addr();
    let http = server.http_addr();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(server.run(shutdown.clone()));
    TestBroker {
        tcp,
        http,
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

    /// Graceful stop; returns the temp dir (if this broker owns one) to keep it alive.
    pub async fn stop(self) -> Option<tempfile::TempDir> {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.handle)
            .await
            .expect("broker stops in time")
            .expect("broker task")
            .expect("broker run ok");
        self.tmp
    }

    /// Stops and starts again on the same data directory and TCP port.
    pub async fn restart(self) -> TestBroker {
        let (dir, tcp) = (self.dir.clone(), self.tcp);
        let tmp = self.stop().await;
        let mut broker = start_in(&dir, tcp).await;
        broker.tmp = tmp;
        broker
    }

    pub async fn stats(&self) -> Value {
        let url = format!("http://{}/stats?format=json", self.http);
        let resp = reqwest::get(url).await.expect("stats request");
        assert!(resp.status().is_success());
        resp.json().await.expect("stats JSON")
    }

    /// A channel's stats object, if it exists.
    pub async fn channel_stats(&self, topic: &str, channel: &str) -> Option<Value> {
        let stats = self.stats().await;
        find_channel(&stats, topic, channel)
    }

    /// Waits until `pred` holds for the channel's stats; returns them.
    pub async fn wait_channel(
        &self,
        topic: &str,
        channel: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(c) = self.channel_stats(topic, channel).await
                && pred(&c)
            {
                return c;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "timed out waiting for {what}: {:?}",
                self.channel_stats(topic, channel).await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn find_channel(stats: &Value, topic: &str, channel: &str) -> Option<Value> {
    stats["topics"]
        .as_array()?
        .iter()
        .find(|t| t["topic_name"] == topic)?["channels"]
        .as_array()?
        .iter()
        .find(|c| c["channel_name"] == channel)
        .cloned()
}

/// Polls `cond` every 10 ms until it holds; panics after [`DEADLINE`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Like [`wait_until`] with an async condition.
pub async fn wait_until_async<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + DEADLINE;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Bodies seen by a handler, shared with the test.
#[derive(Clone, Default)]
pub struct Seen(pub Arc<Mutex<Vec<String>>>);

impl Seen {
    pub fn push(&self, msg: &Message) {
        let body = String::from_utf8_lossy(msg.body()).into_owned();
        self.0.lock().unwrap().push(body);
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn bodies(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn sorted(&self) -> Vec<String> {
        let mut v = self.bodies();
        v.sort();
        v
    }
}

/// A consumer of `topic`/`channel` (not yet connected) that records every body it finishes.
pub fn recording_consumer(topic: &str, channel: &str, config: Config) -> (Consumer, Seen) {
    let seen = Seen::default();
    let s = seen.clone();
    let consumer = Consumer::new(
        topic,
        channel,
        config,
        handler_fn(move |msg| {
            let s = s.clone();
            async move {
                s.push(&msg);
                Ok::<_, Error>(())
            }
        }),
    )
    .unwrap();
    (consumer, seen)
}

/// `prefix-0000` ... as strings, sorted.
pub fn numbered(prefix: &str, n: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:05}")).collect();
    v.sort();
    v
}
