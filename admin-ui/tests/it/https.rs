//! admin-ui reading a broker over HTTPS (`https://` address + `--http-client-tls-root-ca-file`).

use crate::common::{eventually, start_admin};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_are_read_over_https_when_told_to() {
    let certs = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
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
    let p = |name: &str| certs.path().join(name);
    std::fs::write(p("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(p("cert.pem"), cert.pem()).unwrap();
    std::fs::write(p("key.pem"), key.serialize_pem()).unwrap();

    let data = tempfile::tempdir().unwrap();
    let mut cfg = ferry_brokerd::config::Config::for_tests(data.path());
    cfg.tls_cert = Some(p("cert.pem"));
    cfg.tls_key = Some(p("key.pem"));
    cfg.tls_required = "true".into(); // plain HTTP refused: only HTTPS can work
    let server = ferry_brokerd::Server::bind(cfg).await.unwrap();
    let https = server.https_addr().unwrap();
    let broker = server.broker();
    let stop = CancellationToken::new();
    let task = tokio::spawn(server.run(stop.clone()));
    broker.get_or_create_topic("secure_topic").await.unwrap();

    let ca = p("ca.pem");
    let admin = start_admin(|c| {
        c.broker_http_addresses = vec![format!("https://{https}")];
        c.http_client_tls_root_ca_file = Some(ca);
    })
    .await;
    eventually("the topic read over HTTPS", || async {
        let (_, body) = admin.get("/api/topics").await;
        body.contains("secure_topic").then_some(())
    })
    .await;
    admin.stop().await;
    stop.cancel();
    task.await.unwrap().unwrap();
}
