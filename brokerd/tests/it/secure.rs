//! TLS, snappy and DEFLATE on the TCP port, TLS on HTTPS, `--tls-required` and client
//! certificates; pynsq (the real NSQ client) drives the upgrades, a raw rustls client the
//! refusals. Certificates come from a CA generated here with rcgen.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::common::{DEADLINE, Pki, TestConn, pki};
use ferry_brokerd::config::Config;
use ferry_proto::v2::{self, Frame};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

struct Broker {
    tcp: SocketAddr,
    http: SocketAddr,
    https: SocketAddr,
    grpc: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn start(pki: &Pki, tweak: impl FnOnce(&mut Config)) -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::for_tests(dir.path());
    cfg.tls_cert = Some(pki.cert.clone());
    cfg.tls_key = Some(pki.key.clone());
    tweak(&mut cfg);
    let server = ferry_brokerd::Server::bind(cfg).await.unwrap();
    let (tcp, http) = (server.tcp_addr(), server.http_addr());
    let https = server.https_addr().expect("HTTPS with a certificate");
    let grpc = server.grpc_addr();
    let stop = CancellationToken::new();
    let task = tokio::spawn(server.run(stop.clone()));
    Broker {
        tcp,
        http,
        https,
        grpc,
        stop,
        task,
        _dir: dir,
    }
}

impl Broker {
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Runs tests/python/secure.py; returns (success, output).
async fn pynsq(
    tcp: SocketAddr,
    topic: &str,
    options: &str,
    pki: &Pki,
    client_cert: bool,
) -> (bool, String) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/python/secure.py");
    let mut cmd = Command::new(crate::common::python());
    cmd.arg(script)
        .arg(tcp.to_string())
        .arg(topic)
        .arg(options)
        .arg(&pki.ca);
    if client_cert {
        cmd.arg(&pki.client_cert).arg(&pki.client_key);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pynsq_publishes_and_consumes_over_tls_snappy_and_deflate() {
    let pki = pki();
    let b = start(&pki, |_| {}).await;
    for (i, options) in ["tls", "snappy", "deflate", "tls+snappy", "tls+deflate"]
        .iter()
        .enumerate()
    {
        let (ok, out) = pynsq(b.tcp, &format!("secure{i}"), options, &pki, false).await;
        assert!(ok, "{options}: {out}");
        assert!(out.contains("ok 200"), "{options}: {out}");
    }
    b.stop().await;
}

/// A TLS client for raw protocol tests: trusts `ca`, presents `client` if given.
fn connector(ca: &Path, client: Option<(&Path, &Path)>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// IDENTIFY with tls_v1 on a raw connection, then the TLS handshake; returns the first frame
/// read over TLS (`Ok(Some(OK))` when all went well) or the error that ended it.
async fn raw_tls_identify(
    tcp: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> Result<Option<Frame>, std::io::Error> {
    let mut c = TestConn::connect(tcp).await;
    let reply = c
        .identify(serde_json::json!({"feature_negotiation": true, "tls_v1": true}))
        .await;
    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["tls_v1"], true, "{reply}");
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio::time::timeout(DEADLINE, connector.connect(name, c.stream))
        .await
        .expect("handshake in time")?;
    let mut buf = bytes::BytesMut::new();
    loop {
        if let Some(f) = v2::decode_frame(&mut buf, 1 << 20).unwrap() {
            return Ok(Some(f));
        }
        let n = tokio::time::timeout(DEADLINE, tls.read_buf(&mut buf))
            .await
            .expect("read in time")?;
        if n == 0 {
            return Ok(None);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_refuses_plain_commands_and_plain_http() {
    let pki = pki();
    let b = start(&pki, |c| c.tls_required = "true".into()).await;
    // Plain TCP: IDENTIFY is allowed, anything else is a fatal E_INVALID.
    let mut c = TestConn::connect(b.tcp).await;
    c.identify(serde_json::json!({})).await;
    c.send(&v2::Command::Pub {
        topic: "t".into(),
        body: bytes::Bytes::from_static(b"x"),
    })
    .await;
    let text = c.expect_error("E_INVALID").await;
    assert_eq!(text, "E_INVALID cannot PUB in current state (TLS required)");
    c.expect_closed().await;
    // Upgraded: fine.
    let ok = raw_tls_identify(b.tcp, &connector(&pki.ca, None))
        .await
        .unwrap();
    assert!(matches!(ok, Some(Frame::Response(r)) if &r[..] == b"OK"));
    // Plain HTTP: 403 TLS_REQUIRED. HTTPS: served.
    let (code, body) = crate::common::http(b.http, "GET", "/ping", b"").await;
    assert_eq!(
        (code, body.as_str()),
        (403, r#"{"message":"TLS_REQUIRED"}"#)
    );
    let resp = https_get(b.https, &pki.ca, "/ping").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("OK"), "{resp}");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_verified_and_a_wrong_one_disturbs_no_one() {
    let pki = pki();
    let b = start(&pki, |c| {
        c.tls_root_ca_file = Some(pki.ca.clone());
        c.tls_client_auth_policy = Some("require-verify".into());
    })
    .await;
    // A plain consumer keeps working throughout.
    let mut plain = b_consumer(b.tcp, "certs").await;
    // Without a client certificate the upgrade fails.
    let refused = raw_tls_identify(b.tcp, &connector(&pki.ca, None)).await;
    assert!(
        !matches!(refused, Ok(Some(Frame::Response(ref r))) if &r[..] == b"OK"),
        "{refused:?}"
    );
    // A certificate from another CA fails too.
    let other = pki_other();
    let refused = raw_tls_identify(
        b.tcp,
        &connector(&pki.ca, Some((&other.client_cert, &other.client_key))),
    )
    .await;
    assert!(
        !matches!(refused, Ok(Some(Frame::Response(ref r))) if &r[..] == b"OK"),
        "{refused:?}"
    );
    // With the right one: OK, and pynsq works end to end with it.
    let ok = raw_tls_identify(
        b.tcp,
        &connector(&pki.ca, Some((&pki.client_cert, &pki.client_key))),
    )
    .await
    .unwrap();
    assert!(matches!(ok, Some(Frame::Response(r)) if &r[..] == b"OK"));
    let (ok, out) = pynsq(b.tcp, "certs2", "tls", &pki, true).await;
    assert!(ok, "{out}");
    // The plain consumer still gets its messages.
    let (code, _) = crate::common::http(b.http, "POST", "/pub?topic=certs", b"still here").await;
    assert_eq!(code, 200);
    assert_eq!(&plain.message().await.body[..], b"still here");
    b.stop().await;
}

/// A second, unrelated PKI (its client certificate is not signed by the broker's CA).
fn pki_other() -> Pki {
    pki()
}

async fn b_consumer(tcp: SocketAddr, topic: &str) -> TestConn {
    let mut c = TestConn::connect(tcp).await;
    c.identify(serde_json::json!({})).await;
    c.sub(topic, "plain").await;
    c.rdy(10).await;
    c
}

/// GET over HTTPS with a raw rustls client; the whole response as text.
async fn https_get(addr: SocketAddr, ca: &Path, path: &str) -> String {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector(ca, None).connect(name, stream).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, tls.read_to_end(&mut out))
        .await
        .expect("response in time")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_port_speaks_tls_with_a_certificate() {
    use ferry_brokerd::grpc::pb;
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};
    let pki = pki();
    let b = start(&pki, |_| {}).await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&pki.ca).unwrap()))
        .domain_name("127.0.0.1");
    let channel = Channel::from_shared(format!("https://{}", b.grpc))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("TLS connection");
    let mut client = pb::broker_client::BrokerClient::new(channel);
    let reply = client
        .publish(pb::PublishRequest {
            topic: "grpc_tls".into(),
            bodies: vec![bytes::Bytes::from_static(b"over tls")],
            ..Default::default()
        })
        .await
        .expect("publish over TLS")
        .into_inner();
    assert_eq!(reply.count, 1);
    // Plain text is not served on that port.
    let plain = Channel::from_shared(format!("http://{}", b.grpc))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        let mut client = pb::broker_client::BrokerClient::new(channel);
        let r = client
            .publish(pb::PublishRequest {
                topic: "grpc_tls".into(),
                bodies: vec![bytes::Bytes::from_static(b"plain")],
                ..Default::default()
            })
            .await;
        assert!(r.is_err(), "plain gRPC accepted on a TLS port");
    }
    b.stop().await;
}
