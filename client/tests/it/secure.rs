//! The client with TLS, snappy, DEFLATE and AUTH against a real brokerd; a wrong certificate and
//! a refused AUTH fail with clear errors and leave other clients alone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::common::{DEADLINE, client_config};
use ferry_brokerd::config::Config as BrokerConfig;
use ferry_client::{Config, Consumer, Error, ErrorCode, Producer};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio_util::sync::CancellationToken;

/// A CA and a broker certificate for 127.0.0.1 it signed, written as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, &ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

struct Broker {
    tcp: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn broker(tweak: impl FnOnce(&mut BrokerConfig)) -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = BrokerConfig::for_tests(dir.path());
    tweak(&mut cfg);
    let server = ferry_brokerd::Server::bind(cfg).await.unwrap();
    let tcp = server.tcp_addr().to_string();
    let stop = CancellationToken::new();
    let task = tokio::spawn(server.run(stop.clone()));
    Broker {
        tcp,
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

/// Publishes `n` messages and consumes them on a fresh channel, both with `config`.
async fn round_trip(addr: &str, topic: &str, config: Config, n: usize) {
    let (consumer, mut messages) =
        Consumer::stream(topic, "c", config.clone().max_in_flight(50)).expect("consumer");
    consumer
        .connect_to_broker(addr)
        .await
        .expect("consumer connects");
    let producer = Producer::connect(addr, config)
        .await
        .expect("producer connects");
    let bodies: Vec<String> = (0..n).map(|i| format!("{topic}-{i}")).collect();
    producer
        .multi_publish(topic, bodies.clone())
        .await
        .expect("MPUB");
    producer.publish(topic, "one more").await.expect("PUB");
    let mut got = Vec::new();
    while got.len() < n + 1 {
        let msg = tokio::time::timeout(DEADLINE, messages.recv())
            .await
            .expect("message in time")
            .expect("stream open");
        got.push(String::from_utf8_lossy(msg.body()).into_owned());
        msg.finish().await.unwrap();
    }
    let mut want = bodies;
    want.push("one more".into());
    assert_eq!(got, want, "{topic}");
    producer.stop().await;
    let stop = consumer.stop();
    let drain = async { while messages.recv().await.is_some() {} };
    tokio::join!(stop, drain);
}

fn tls(ca: &Path) -> Arc<rustls::ClientConfig> {
    ferry_client::tls::client_config(Some(ca), None).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_snappy_and_deflate_round_trips() {
    let pki = Pki::new();
    let b = broker(|c| {
        c.tls_cert = Some(pki.path("cert.pem"));
        c.tls_key = Some(pki.path("key.pem"));
    })
    .await;
    let ca = pki.path("ca.pem");
    let cases = [
        ("tls", client_config().tls(tls(&ca))),
        ("snappy", client_config().snappy(true)),
        ("deflate", client_config().deflate(6)),
        ("tlssnappy", client_config().tls(tls(&ca)).snappy(true)),
        ("tlsdeflate", client_config().tls(tls(&ca)).deflate(1)),
    ];
    for (topic, config) in cases {
        round_trip(&b.tcp, topic, config, 500).await;
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_certificate_fails_clearly_and_disturbs_no_one() {
    let (pki, other) = (Pki::new(), Pki::new());
    let b = broker(|c| {
        c.tls_cert = Some(pki.path("cert.pem"));
        c.tls_key = Some(pki.path("key.pem"));
    })
    .await;
    // A working TLS consumer.
    let good = client_config().tls(tls(&pki.path("ca.pem")));
    let (consumer, mut messages) = Consumer::stream("t", "c", good.clone()).unwrap();
    consumer.connect_to_broker(b.tcp.as_str()).await.unwrap();
    // A client trusting another CA.
    let bad = client_config().tls(tls(&other.path("ca.pem")));
    let err = Producer::connect(b.tcp.as_str(), bad).await.unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    let text = format!("{:#}", anyhow::Error::new(err));
    assert!(text.contains("TLS handshake with"), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    // The good consumer still works.
    let producer = Producer::connect(b.tcp.as_str(), good).await.unwrap();
    producer.publish("t", "still fine").await.unwrap();
    let msg = tokio::time::timeout(DEADLINE, messages.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&msg.body()[..], b"still fine");
    msg.finish().await.unwrap();
    producer.stop().await;
    let stop = consumer.stop();
    let drain = async { while messages.recv().await.is_some() {} };
    tokio::join!(stop, drain);
    b.stop().await;
}

/// An auth server that grants `secret` everything.
async fn auth_server(secret: &'static str) -> SocketAddr {
    let app = axum::Router::new().route(
        "/auth",
        axum::routing::get(
            move |axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>| async move {
                if q.get("secret").map(String::as_str) == Some(secret) {
                    axum::Json(serde_json::json!({
                        "ttl": 3600, "identity": "svc",
                        "authorizations": [{"topic": ".*", "channels": [".*"],
                                            "permissions": ["subscribe", "publish"]}]
                    }))
                    .into_response()
                } else {
                    (axum::http::StatusCode::FORBIDDEN, "no").into_response()
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

use axum::response::IntoResponse as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_secret_works_and_a_refused_one_fails_clearly() {
    let auth = auth_server("letmein").await;
    let b = broker(|c| c.auth_http_addresses = vec![auth.to_string()]).await;
    round_trip(
        &b.tcp,
        "authed",
        client_config().auth_secret("letmein"),
        100,
    )
    .await;
    let err = Producer::connect(b.tcp.as_str(), client_config().auth_secret("wrong"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::AuthFailed), "{err:?}");
    let err = Producer::connect(b.tcp.as_str(), client_config())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AuthRequired { .. }), "{err:?}");
    // A good client right after is unaffected.
    let p = Producer::connect(b.tcp.as_str(), client_config().auth_secret("letmein"))
        .await
        .unwrap();
    p.publish("authed", "after").await.unwrap();
    p.stop().await;
    b.stop().await;
}
