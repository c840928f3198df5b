//! Test harness: real brokers on 127.0.0.1 with port 0 in temp dirs, a raw protocol V2 client
//! built on ferry-proto, a minimal HTTP/1.1 client, and helpers to run the `brokerd` binary.
#![allow(dead_code)]

pub mod lookupd;
pub mod nsqd;

#[allow(unused_imports)]
pub use lookupd::{Lookupd, get_json, start_lookupd, wait_knows_lookupd};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as ProcCommand, Stdio};
use std::time::Duration;

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use ferry_brokerd::config::Config;
use ferry_proto::MessageId;
use ferry_proto::v2::{self, Command, Frame, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Longest any single expected event may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A broker running in this process.
pub struct TestBroker {
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub dir: PathBuf,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    _tmp: Option<tempfile::TempDir>,
}

/// Starts a broker in a fresh temp dir; `tweak` adjusts the config.
pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestBroker {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let mut b = start_in(&dir, tweak).await;
    b._tmp = Some(tmp);
    b
}

/// Starts a broker on `dir` (which the caller keeps).
pub async fn start_in(dir: &Path, tweak: impl FnOnce(&mut Config)) -> TestBroker {
    let mut cfg = Config::for_tests(dir);
    tweak(&mut cfg);
    let server = ferry_brokerd::Server::bind(cfg)
        .await
        .expect("broker binds");
    let tcp = server.tcp_addr();
    let http = server.http_addr();
    let grpc = server.grpc_addr();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(server.run(shutdown.clone()));
    TestBroker {
        tcp,
        http,
        grpc,
        dir: dir.to_path_buf(),
        shutdown,
        handle,
        _tmp: None,
    }
}

impl TestBroker {
    /// Graceful stop; waits until state is persisted.
    pub async fn stop(self) -> Option<tempfile::TempDir> {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.handle)
            .await
            .expect("broker stops in time")
            .expect("broker task")
            .expect("broker run ok");
        self._tmp
    }

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

    pub async fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        http(self.http, method, path, body).await
    }

    pub async fn stats(&self) -> serde_json::Value {
        let (code, body) = self.http("GET", "/stats?format=json", b"").await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// A channel's stats object.
    pub async fn channel_stats(&self, topic: &str, channel: &str) -> serde_json::Value {
        let s = self.stats().await;
        find_channel(&s, topic, channel).unwrap_or_else(|| panic!("no {topic}/{channel} in {s}"))
    }

    /// Waits until `pred` holds for the channel's stats.
    pub async fn wait_channel(
        &self,
        topic: &str,
        channel: &str,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        eventually(what, || async {
            let s = self.stats().await;
            find_channel(&s, topic, channel).filter(|c| pred(c))
        })
        .await
    }
}

/// Polls `check` until it returns `Some`, failing with `what` after [`DEADLINE`]: the one
/// condition-with-deadline loop the broker tests share.
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn find_topic(stats: &serde_json::Value, topic: &str) -> Option<serde_json::Value> {
    stats["topics"]
        .as_array()?
        .iter()
        .find(|t| t["topic_name"] == topic)
        .cloned()
}

pub fn find_channel(
    stats: &serde_json::Value,
    topic: &str,
    channel: &str,
) -> Option<serde_json::Value> {
    find_topic(stats, topic)?["channels"]
        .as_array()?
        .iter()
        .find(|c| c["channel_name"] == channel)
        .cloned()
}

/// A raw protocol V2 connection.
pub struct TestConn {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl TestConn {
    pub async fn connect(addr: SocketAddr) -> TestConn {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&v2::MAGIC).await.unwrap();
        TestConn {
            stream,
            buf: BytesMut::new(),
        }
    }

    pub async fn send(&mut self, cmd: &Command) {
        let mut b = BytesMut::new();
        cmd.encode(&mut b);
        self.stream.write_all(&b).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Next frame, or None if the connection closed. Panics after [`DEADLINE`].
    pub async fn frame(&mut self) -> Option<Frame> {
        tokio::time::timeout(DEADLINE, self.frame_inner())
            .await
            .expect("frame within deadline")
    }

    /// Next frame within `wait`, skipping nothing; `Err(())` on timeout.
    pub async fn frame_within(&mut self, wait: Duration) -> Result<Option<Frame>, ()> {
        tokio::time::timeout(wait, self.frame_inner())
            .await
            .map_err(drop)
    }

    async fn frame_inner(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = v2::decode_frame(&mut self.buf, 64 << 20).expect("valid frame") {
                return Some(f);
            }
            let n = self.stream.read_buf(&mut self.buf).await.ok()?;
            if n == 0 {
                return None;
            }
        }
    }

    /// Next non-heartbeat frame (heartbeats are answered with NOP).
    pub async fn next(&mut self) -> Frame {
        loop {
            match self.frame().await.expect("connection open") {
                Frame::Response(r) if &r[..] == v2::HEARTBEAT => self.send(&Command::Nop).await,
                f => return f,
            }
        }
    }

    pub async fn expect_ok(&mut self) {
        match self.next().await {
            Frame::Response(r) => assert_eq!(&r[..], b"OK"),
            f => panic!("expected OK, got {f:?}"),
        }
    }

    pub async fn expect_response(&mut self) -> Vec<u8> {
        match self.next().await {
            Frame::Response(r) => r.to_vec(),
            f => panic!("expected response, got {f:?}"),
        }
    }

    /// Expects an error frame with `code`; returns its text.
    pub async fn expect_error(&mut self, code: &str) -> String {
        match self.next().await {
            Frame::Error(e) => {
                let text = String::from_utf8_lossy(&e).into_owned();
                assert!(text.starts_with(code), "expected {code}, got {text:?}");
                text
            }
            f => panic!("expected error {code}, got {f:?}"),
        }
    }

    /// Expects the server to close the connection.
    pub async fn expect_closed(&mut self) {
        match self.frame().await {
            None => {}
            Some(f) => panic!("expected close, got {f:?}"),
        }
    }

    pub async fn message(&mut self) -> Message {
        match self.next().await {
            Frame::Message(m) => m,
            f => panic!("expected message, got {f:?}"),
        }
    }

    /// Asserts no message arrives within `wait` (a bounded wait for an absence).
    pub async fn expect_no_message(&mut self, wait: Duration) {
        let end = tokio::time::Instant::now() + wait;
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match self.frame_within(left).await {
                Err(()) => return,
                Ok(Some(Frame::Response(r))) if &r[..] == v2::HEARTBEAT => {
                    self.send(&Command::Nop).await
                }
                Ok(f) => panic!("expected nothing, got {f:?}"),
            }
        }
    }

    pub async fn identify(&mut self, json: serde_json::Value) -> Vec<u8> {
        self.send(&Command::Identify(
            serde_json::to_vec(&json).unwrap().into(),
        ))
        .await;
        self.expect_response().await
    }

    pub async fn sub(&mut self, topic: &str, channel: &str) {
        self.send(&Command::Sub {
            topic: topic.into(),
            channel: channel.into(),
        })
        .await;
        self.expect_ok().await;
    }

    pub async fn rdy(&mut self, n: u64) {
        self.send(&Command::Rdy(n)).await;
    }

    pub async fn publish(&mut self, topic: &str, body: &[u8]) {
        self.send(&Command::Pub {
            topic: topic.into(),
            body: body.to_vec().into(),
        })
        .await;
        self.expect_ok().await;
    }

    pub async fn fin(&mut self, id: &MessageId) {
        self.send(&Command::Fin(*id)).await;
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let (status, _headers, body) = http_full(addr, method, path, body).await;
    (status, body)
}

/// Like [`http`] but also returns the raw header block.
pub async fn http_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, String, String) {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(body).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status: u16 = headers
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = if headers
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        (status, headers.to_owned(), body)
    };
    tokio::time::timeout(DEADLINE, fut)
        .await
        .expect("HTTP within deadline")
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A `brokerd` process, for restart and signal tests.
pub struct BrokerProcess {
    pub child: Child,
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    /// Every line it wrote to stderr so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// The Python of the test venv (pynsq, grpcio), which `scripts/setup-test-deps.sh` installs.
pub fn python() -> PathBuf {
    let py = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/setup-test-deps.sh (scripts/test.sh does) to install pynsq \
         and grpcio",
        py.display()
    );
    py
}

/// Runs the `brokerd` binary on `dir` with ports 0 and `extra` flags; waits for its listeners.
pub fn spawn_brokerd(dir: &Path, extra: &[&str]) -> BrokerProcess {
    spawn_brokerd_env(dir, extra, &[])
}

/// [`spawn_brokerd`] with extra environment variables.
pub fn spawn_brokerd_env(dir: &Path, extra: &[&str], env: &[(&str, &Path)]) -> BrokerProcess {
    use std::io::BufRead as _;
    let mut child = ProcCommand::new(env!("CARGO_BIN_EXE_brokerd"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg("--tcp-address=127.0.0.1:0")
        .arg("--http-address=127.0.0.1:0")
        .arg("--grpc-address=127.0.0.1:0")
        .arg(format!("--data-path={}", dir.display()))
        .args(extra)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn brokerd");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let (mut tcp, mut http) = (None, None);
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let end = std::time::Instant::now() + DEADLINE;
    while tcp.is_none() || http.is_none() {
        let left = end.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("brokerd prints its listening addresses");
        let clean = strip_ansi(&line);
        // The address ends the message (text logs) or is followed by `"` (JSON logs).
        let addr = |a: &str| a.split('"').next().unwrap().trim().parse().unwrap();
        if let Some(a) = clean.split("TCP: listening on ").nth(1) {
            tcp = Some(addr(a));
        }
        if let Some(a) = clean.split("HTTP: listening on ").nth(1) {
            http = Some(addr(a));
        }
        log.lock().unwrap().push(line);
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    let sink = log.clone();
    std::thread::spawn(move || {
        while let Ok(line) = rx.recv() {
            sink.lock().unwrap().push(line);
        }
    });
    BrokerProcess {
        child,
        tcp: tcp.unwrap(),
        http: http.unwrap(),
        log,
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl BrokerProcess {
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn sigterm(mut self) {
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        let rc = unsafe { libc_kill(self.child.id() as i32, 15) };
        assert_eq!(rc, 0);
        let end = std::time::Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "brokerd exited with {status}");
                return;
            }
            assert!(
                std::time::Instant::now() < end,
                "brokerd did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A tmpfs mounted by a test, unmounted when dropped (also when the test fails).
pub struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = ProcCommand::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Mounts a tmpfs of `size` (as `mount -o size=` takes it) on `dir`, or says why it cannot
/// (mounting needs root) and returns `None`.
pub fn mount_tmpfs(dir: &Path, size: &str) -> Option<Mount> {
    let out = ProcCommand::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output()
        .ok()?;
    if out.status.success() {
        Some(Mount(dir.to_path_buf()))
    } else {
        eprintln!(
            "cannot mount a tmpfs here ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        None
    }
}

impl Drop for BrokerProcess {
    /// A test that fails half-way leaves no broker running behind it.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Checks that `text` is Prometheus text exposition format line by line (every line a `# HELP`,
/// a `# TYPE`, a sample or empty; one `# TYPE` per metric, before its samples; sample values are
/// numbers; label sets well formed; histogram buckets cumulative), then parses it with
/// `prometheus-parse`.
pub fn parse_prometheus(text: &str) -> prometheus_parse::Scrape {
    use prometheus_parse::{LineInfo, SampleType, Value};
    use std::collections::HashMap;
    let mut types: HashMap<String, SampleType> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        match LineInfo::parse(line) {
            LineInfo::Empty | LineInfo::Doc { .. } => {}
            LineInfo::Type {
                metric_name,
                metric_alias,
                sample_type,
            } => {
                let base = metric_alias.unwrap_or(metric_name);
                assert!(
                    types.insert(base.clone(), sample_type).is_none(),
                    "line {n}: second # TYPE for {base}"
                );
            }
            LineInfo::Sample {
                metric_name,
                labels,
                value,
                timestamp,
            } => {
                assert!(
                    timestamp.is_none(),
                    "line {n}: unexpected timestamp: {line}"
                );
                assert!(
                    matches!(value, "+Inf" | "-Inf" | "NaN") || value.parse::<f64>().is_ok(),
                    "line {n}: bad value: {line}"
                );
                if let Some(labels) = labels {
                    assert!(labels_well_formed(labels), "line {n}: bad labels: {line}");
                }
                let typed = types.contains_key(metric_name)
                    || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                        metric_name
                            .strip_suffix(suffix)
                            .is_some_and(|base| types.get(base) == Some(&SampleType::Histogram))
                    });
                assert!(typed, "line {n}: sample before its # TYPE: {line}");
            }
            LineInfo::Ignored => panic!("line {n} is not Prometheus text format: {line:?}"),
        }
    }
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    for s in &scrape.samples {
        if let Value::Histogram(buckets) = &s.value {
            assert!(
                buckets.windows(2).all(|w| w[0].count <= w[1].count),
                "{} buckets not cumulative",
                s.metric
            );
        }
    }
    scrape
}

/// `a="x",b="y\"z"`: names are identifiers, values quoted with only `\\`, `\"`, `\n` escapes.
fn labels_well_formed(labels: &str) -> bool {
    let mut chars = labels.chars().peekable();
    loop {
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            name.push(c);
            chars.next();
        }
        let ident = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident || chars.next() != Some('=') || chars.next() != Some('"') {
            return false;
        }
        loop {
            match chars.next() {
                None => return false,
                Some('"') => break,
                Some('\\') => {
                    if !matches!(chars.next(), Some('\\' | '"' | 'n')) {
                        return false;
                    }
                }
                Some(_) => {}
            }
        }
        match chars.next() {
            None => return true,
            Some(',') => continue,
            Some(_) => return false,
        }
    }
}

/// The value of the sample `name` whose labels are exactly `labels` (counter, gauge, or a
/// histogram's `_sum`/`_count`).
pub fn metric(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus_parse::Value;
    let found = scrape.samples.iter().find(|s| {
        s.metric == name
            && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            && s.labels.len() == labels.len()
    });
    match found.map(|s| &s.value) {
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
        other => panic!("no scalar sample {name}{labels:?}: {other:?}"),
    }
}

/// Fetches and strictly parses a `/metrics` page.
pub async fn scrape(addr: SocketAddr) -> (prometheus_parse::Scrape, String) {
    let (status, headers, body) = http_full(addr, "GET", "/metrics", b"").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    (parse_prometheus(&body), body)
}

/// A CA, a server certificate for 127.0.0.1 signed by it, and a client certificate.
pub struct Pki {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn write_pem(dir: &Path, name: &str, pem: String) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path
}

/// Generates a fresh [`Pki`] in a temp dir (rcgen).
pub fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Ferry test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);

    let leaf = |names: Vec<String>, cn: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (cert, key) = leaf(vec!["127.0.0.1".into(), "localhost".into()], "broker");
    let (client_cert, client_key) = leaf(vec!["client.test".into()], "client");
    let d = dir.path();
    Pki {
        ca: write_pem(d, "ca.pem", ca_cert.pem()),
        cert: write_pem(d, "cert.pem", cert),
        key: write_pem(d, "key.pem", key),
        client_cert: write_pem(d, "client.pem", client_cert),
        client_key: write_pem(d, "client-key.pem", client_key),
        _dir: dir,
    }
}

/// The auth server's grants by secret, and what it was asked.
#[derive(Default)]
pub struct AuthServer {
    grants: std::sync::Mutex<std::collections::HashMap<String, serde_json::Value>>,
    asked: std::sync::Mutex<Vec<std::collections::HashMap<String, String>>>,
}

impl AuthServer {
    pub fn grant(&self, secret: &str, reply: serde_json::Value) {
        self.grants.lock().unwrap().insert(secret.into(), reply);
    }

    pub fn asked(&self) -> Vec<std::collections::HashMap<String, String>> {
        self.asked.lock().unwrap().clone()
    }
}

async fn auth(
    State(s): State<Arc<AuthServer>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    s.asked.lock().unwrap().push(q.clone());
    let secret = q.get("secret").cloned().unwrap_or_default();
    match s.grants.lock().unwrap().get(&secret) {
        Some(reply) => axum::Json(reply.clone()).into_response(),
        None => (StatusCode::FORBIDDEN, "no such secret").into_response(),
    }
}

/// Runs an auth server on 127.0.0.1 (nsqd's contract: `GET /auth?secret=...`).
pub async fn auth_server() -> (SocketAddr, Arc<AuthServer>) {
    let state = Arc::new(AuthServer::default());
    let app = axum::Router::new()
        .route("/auth", axum::routing::get(auth))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, state)
}

/// An auth reply granting `perms` on `topic` / `channels` (regexes).
pub fn grant(
    identity: &str,
    ttl: u64,
    topic: &str,
    channels: &[&str],
    perms: &[&str],
) -> serde_json::Value {
    serde_json::json!({
        "ttl": ttl,
        "identity": identity,
        "identity_url": format!("https://people.example/{identity}"),
        "authorizations": [{"topic": topic, "channels": channels, "permissions": perms}],
    })
}
