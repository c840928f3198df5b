//! Test harness: real brokers and lookup daemons in this process (ferry-testkit's: 127.0.0.1,
//! port 0, temp dirs), the dashboard itself, a protocol V2 consumer over the testkit's raw
//! connection, tiny HTTP servers that play a broker from a JSON fixture (nsqd's shape) or a
//! broken one, and an HTTP client. Every wait is a condition polled against a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use ferry_proto::stats::{ChannelStats, Stats, TopicStats};
use ferry_proto::v2::{self, Command};
use ferry_testkit::TestConn;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use ferry_testkit::http::client;
pub use ferry_testkit::{DEADLINE, eventually, get_json};

/// A broker running in this process, with the HTTP calls the dashboard tests make.
pub struct TestBroker {
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    inner: ferry_testkit::TestBroker,
}

/// Starts a broker in a fresh temp dir, registering with `lookupd_tcp` if given.
pub async fn start_broker(lookupd_tcp: Option<SocketAddr>) -> TestBroker {
    let inner = ferry_testkit::broker::start(|cfg| {
        if let Some(l) = lookupd_tcp {
            cfg.lookupd_tcp_addresses.push(l.to_string());
        }
    })
    .await;
    TestBroker {
        tcp: inner.tcp,
        http: inner.http,
        inner,
    }
}

impl TestBroker {
    pub async fn stop(self) {
        self.inner.stop().await;
    }

    /// Publishes `n` messages with one MPUB over HTTP.
    pub async fn publish(&self, topic: &str, n: usize) {
        let body: Vec<String> = (0..n).map(|i| format!("message {i}")).collect();
        self.inner
            .post(&format!("/mpub?topic={topic}"), &body.join("\n"))
            .await;
    }

    /// `POST /{kind}/create?...` on the broker.
    pub async fn create(&self, topic: &str, channel: Option<&str>) {
        let path = match channel {
            Some(c) => format!("/channel/create?topic={topic}&channel={c}"),
            None => format!("/topic/create?topic={topic}"),
        };
        self.inner.post(&path, "").await;
    }

    /// `POST /channel/empty?...` on the broker.
    pub async fn empty_channel(&self, topic: &str, channel: &str) {
        let path = format!("/channel/empty?topic={topic}&channel={channel}");
        self.inner.post(&path, "").await;
    }

    /// `POST /pub?topic=` with `body` (one message).
    pub async fn publish_body(&self, topic: &str, body: &str) {
        self.inner.post(&format!("/pub?topic={topic}"), body).await;
    }

    /// `GET path` on the broker, as JSON.
    pub async fn get(&self, path: &str) -> Value {
        get_json(&format!("http://{}{path}", self.http)).await
    }

    pub async fn stats(&self) -> Stats {
        self.inner.stats().await
    }

    /// A channel's stats, if it exists.
    pub async fn channel_stats(&self, topic: &str, channel: &str) -> Option<ChannelStats> {
        self.stats().await.channel(topic, channel).cloned()
    }

    pub async fn topic_stats(&self, topic: &str) -> Option<TopicStats> {
        self.stats().await.topic(topic).cloned()
    }
}

/// A lookup daemon running in this process.
pub struct TestLookupd {
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    inner: ferry_testkit::TestLookupd,
}

pub async fn start_lookupd() -> TestLookupd {
    let inner = ferry_testkit::lookupd::start(|_| {}).await;
    TestLookupd {
        tcp: inner.tcp,
        http: inner.http,
        inner,
    }
}

impl TestLookupd {
    pub async fn stop(self) {
        self.inner.stop().await;
    }

    /// `GET path`, which must answer 2xx with JSON.
    pub async fn get(&self, path: &str) -> Value {
        get_json(&format!("http://{}{path}", self.http)).await
    }
}

/// The dashboard running in this process.
pub struct TestAdmin {
    pub http: SocketAddr,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Starts admin-ui with [`Config::for_tests`](ferry_admin_ui::config::Config::for_tests),
/// adjusted by `tweak`.
pub async fn start_admin(tweak: impl FnOnce(&mut ferry_admin_ui::config::Config)) -> TestAdmin {
    let mut cfg = ferry_admin_ui::config::Config::for_tests();
    tweak(&mut cfg);
    let server = ferry_admin_ui::Server::bind(cfg)
        .await
        .expect("admin-ui binds");
    let http = server.http_addr();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(server.run(shutdown.clone()));
    TestAdmin {
        http,
        shutdown,
        handle,
    }
}

impl TestAdmin {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// Graceful stop, which must be prompt even with live streams open.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.handle)
            .await
            .expect("admin-ui stops in time")
            .expect("admin-ui task")
            .expect("admin-ui run ok");
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = client().get(self.url(path)).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    /// `POST path` with a form body, as htmx sends a form (add `HX-Request` to `headers` for
    /// the HTML answer).
    pub async fn post_form(
        &self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let mut req = client()
            .post(self.url(path))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// Sends `method path` with an optional JSON body and extra headers.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        json: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let mut req = client().request(method, self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(j) = json {
            req = req
                .header("Content-Type", "application/json")
                .body(j.to_string());
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

/// Two brokers registered with one lookupd, one topic on both with two channels.
pub struct Cluster {
    pub lookupd: TestLookupd,
    pub b1: TestBroker,
    pub b2: TestBroker,
    pub admin: TestAdmin,
}

pub async fn cluster(topic: &str, per_broker: usize) -> Cluster {
    let lookupd = start_lookupd().await;
    let b1 = start_broker(Some(lookupd.tcp)).await;
    let b2 = start_broker(Some(lookupd.tcp)).await;
    for b in [&b1, &b2] {
        b.create(topic, Some("ch1")).await;
        b.create(topic, Some("ch2")).await;
        b.publish(topic, per_broker).await;
    }
    let l = lookupd.http.to_string();
    let admin = start_admin(|c| c.lookupd_http_addresses.push(l)).await;
    // Both brokers registered (lookupd) and visible in the dashboard.
    let path = format!("/api/topics/{topic}");
    eventually("both brokers in the topic view", || async {
        let (status, body) = admin.get(&path).await;
        let v: Value = serde_json::from_str(&body).ok()?;
        (status == 200 && v["brokers"].as_array()?.len() == 2).then_some(())
    })
    .await;
    Cluster {
        lookupd,
        b1,
        b2,
        admin,
    }
}

impl Cluster {
    pub async fn stop(self) {
        self.admin.stop().await;
        self.b1.stop().await;
        self.b2.stop().await;
        self.lookupd.stop().await;
    }
}

/// A subscribed protocol V2 consumer.
pub struct Consumer(TestConn);

impl Consumer {
    /// Connects, IDENTIFYs (with a user agent), subscribes; RDY stays 0 until [`consume`].
    pub async fn subscribe(addr: SocketAddr, topic: &str, channel: &str) -> Consumer {
        let mut c = TestConn::connect(addr).await;
        c.identify(serde_json::json!({
            "client_id": "test-consumer",
            "hostname": "consumer.test",
            "user_agent": "admin-ui-test/1.0",
            "feature_negotiation": true,
        }))
        .await;
        c.sub(topic, channel).await;
        Consumer(c)
    }

    /// Receives `n` messages (RDY `n`), sets RDY 0 so no more come, then FINs them.
    pub async fn consume(&mut self, n: u64) {
        self.0.rdy(n).await;
        let mut ids = Vec::new();
        for _ in 0..n {
            ids.push(self.0.message().await.id);
        }
        self.0.rdy(0).await;
        for id in ids {
            self.0.fin(&id).await;
        }
    }

    /// Sets RDY to `n` and returns without waiting for messages.
    pub async fn ready(&mut self, n: u64) {
        self.0.rdy(n).await;
    }

    /// The next message delivered (RDY must allow it).
    pub async fn message(&mut self) -> v2::Message {
        self.0.message().await
    }

    /// Requeues a message at once.
    pub async fn requeue(&mut self, id: ferry_proto::MessageId) {
        self.0.send(&Command::Req { id, timeout_ms: 0 }).await;
    }

    /// Receives `n` messages and keeps them in flight.
    pub async fn hold(&mut self, n: u64) {
        self.0.rdy(n).await;
        for _ in 0..n {
            self.0.message().await;
        }
    }
}

/// A tiny HTTP server answering fixed bodies: plays an nsqd from a fixture, or a broken node.
pub struct FakeNode {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
}

impl FakeNode {
    /// Serves `stats` at `/stats` and `info` at `/info`, both with status `status`.
    pub async fn start(status: u16, stats: String, info: String) -> FakeNode {
        FakeNode::serve(status, vec![("/stats", stats), ("/info", info)]).await
    }

    /// Serves each `(path, JSON body)` with status `status`; anything else is 404.
    pub async fn serve(status: u16, routes: Vec<(&'static str, String)>) -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let code = axum::http::StatusCode::from_u16(status).unwrap();
        let mut app = Router::new();
        for (path, body) in routes {
            app = app.route(
                path,
                get(move || {
                    let body = body.clone();
                    async move { (code, [("content-type", "application/json")], body) }
                }),
            );
        }
        let shutdown = serve(listener, app);
        FakeNode { addr, shutdown }
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Serves `app` on `listener` in a task until the returned token is cancelled.
fn serve(listener: TcpListener, app: Router) -> CancellationToken {
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .ok();
    });
    shutdown
}

/// An address nothing listens on (bound then released).
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// nsqd 1.2's `/stats?format=json` (unwrapped), as a fixture file.
pub fn nsqd_fixture() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/fixtures/nsqd-1.2-stats.json"
    ))
    .unwrap()
}

/// A webhook receiver on 127.0.0.1:0 that answers 500 to its first `fail_first` POSTs and
/// keeps the JSON bodies of the ones it accepted.
pub struct WebhookReceiver {
    pub url: String,
    accepted: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    shutdown: CancellationToken,
}

impl WebhookReceiver {
    pub async fn start(fail_first: usize) -> WebhookReceiver {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (acc, req) = (accepted.clone(), requests.clone());
        let app = Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let (acc, req) = (acc.clone(), req.clone());
                async move {
                    if req.fetch_add(1, Ordering::SeqCst) < fail_first {
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let v: Value = serde_json::from_slice(&body).expect("JSON notification");
                    acc.lock().unwrap().push(v);
                    axum::http::StatusCode::OK
                }
            }),
        );
        let shutdown = serve(listener, app);
        WebhookReceiver {
            url: format!("http://{addr}/hook"),
            accepted,
            requests,
            shutdown,
        }
    }

    /// POSTs received, accepted or not.
    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits for an accepted notification of `rule` in `state`.
    pub async fn notification(&self, rule: &str, state: &str) -> Value {
        eventually(&format!("a {state} {rule} notification"), || async {
            self.accepted
                .lock()
                .unwrap()
                .iter()
                .find(|n| n["rule"] == rule && n["state"] == state)
                .cloned()
        })
        .await
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Publishes one message to `topic` on the broker at `http` every `every`, until dropped.
pub struct Publisher {
    stop: CancellationToken,
}

impl Publisher {
    pub fn start(http: SocketAddr, topic: &str, every: Duration) -> Publisher {
        let stop = CancellationToken::new();
        let done = stop.clone();
        let url = format!("http://{http}/pub?topic={topic}");
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = done.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let _ = client().post(&url).body("tick").send().await;
            }
        });
        Publisher { stop }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The active alert of `rule` in `/api/alerts`, once there.
pub async fn active_alert(admin: &TestAdmin, rule: &str) -> Value {
    listed_alert(admin, "active", rule, None).await
}

/// The alert of `rule` on `topic/channel` (any subject if None) in `/api/alerts`'s `list`
/// ("active" or "resolved"), once there.
pub async fn listed_alert(
    admin: &TestAdmin,
    list: &str,
    rule: &str,
    channel: Option<(&str, &str)>,
) -> Value {
    eventually(&format!("{list} {rule} alert on {channel:?}"), || async {
        let v = admin.get_json("/api/alerts").await;
        v[list]
            .as_array()?
            .iter()
            .find(|a| {
                a["rule"] == rule
                    && channel.is_none_or(|(t, c)| a["topic"] == t && a["channel"] == c)
            })
            .cloned()
    })
    .await
}
