//! Test harness: real brokers on 127.0.0.1 with port 0 in temp dirs, the raw protocol V2
//! connection, HTTP and the `brokerd` binary as a process (all from ferry-testkit), plus what
//! only the broker's tests need: tmpfs mounts, Prometheus checks, TLS certificates, an auth
//! server.

pub mod lookupd;
pub mod nsqd;

pub use lookupd::{Lookupd, get_json, start_lookupd, wait_knows_lookupd};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command as ProcCommand;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub use ferry_testkit::broker::{start, start_in};
pub use ferry_testkit::http::get_stats;
pub use ferry_testkit::{DEADLINE, TestBroker, TestConn, eventually};

/// A `brokerd` process, for restart and signal tests.
pub type BrokerProcess = ferry_testkit::DaemonProcess;

/// One HTTP request; returns (status, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let reply = ferry_testkit::http::request(addr, method, path, body).await;
    (reply.status, reply.body)
}

/// Like [`http`] but also returns the header block (`name: value` lines).
pub async fn http_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, String, String) {
    let reply = ferry_testkit::http::request(addr, method, path, body).await;
    (reply.status, reply.header_block(), reply.body)
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
    ferry_testkit::spawn_brokerd(Path::new(env!("CARGO_BIN_EXE_brokerd")), dir, extra, env)
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
