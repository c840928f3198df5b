//! `--max-connections`: the clients within the limit keep working, one more is refused at once
//! with a reason (`E_TOO_MANY_CONNECTIONS` over TCP, 503 over HTTP) instead of hanging, a freed
//! slot is served again, and `/metrics` counts the refusals.

use std::time::Duration;

use crate::common::*;
use ferry_proto::v2::{Command, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MAX: usize = 5;
/// How soon a refused client must hear about it.
const REFUSED_WITHIN: Duration = Duration::from_secs(1);

/// Asserts that a new V2 client is refused within [`REFUSED_WITHIN`]: an
/// `E_TOO_MANY_CONNECTIONS` frame naming the limit, then a close.
async fn assert_refused(mut c: TestConn) {
    match c.frame_within(REFUSED_WITHIN).await {
        Ok(Some(Frame::Error(e))) => {
            let text = String::from_utf8_lossy(&e);
            assert!(
                text.starts_with("E_TOO_MANY_CONNECTIONS ") && text.contains(&MAX.to_string()),
                "{text}"
            );
            c.expect_closed().await;
        }
        Ok(None) => {}
        other => panic!("expected E_TOO_MANY_CONNECTIONS or a close, got {other:?}"),
    }
}

/// Publishes on a new connection; `None` if it was refused.
async fn try_publish(b: &TestBroker, topic: &str) -> Option<TestConn> {
    let mut c = b.conn().await;
    c.send(&Command::Pub {
        topic: topic.into(),
        body: b"late".to_vec().into(),
    })
    .await;
    match c.frame().await {
        Some(Frame::Response(r)) if &r[..] == b"OK" => Some(c),
        Some(Frame::Error(e)) if e.starts_with(b"E_TOO_MANY_CONNECTIONS") => None,
        None => None,
        other => panic!("unexpected reply {other:?}"),
    }
}

#[tokio::test]
async fn tcp_client_over_the_limit_is_refused_and_a_freed_slot_is_served() {
    let b = start(|c| c.max_connections = MAX).await;
    let mut consumer = b.consumer("t", "c", 10).await;
    let mut producers = Vec::new();
    for i in 0..MAX - 1 {
        let mut p = b.conn().await;
        p.publish("t", format!("m{i}").as_bytes()).await;
        producers.push(p);
    }
    for _ in 0..MAX - 1 {
        let m = consumer.message().await;
        consumer.fin(&m.id).await;
    }

    assert_refused(b.conn().await).await;
    // A client that never sends the magic is closed too.
    let mut silent = TcpStream::connect(b.tcp).await.unwrap();
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(DEADLINE, silent.read(&mut byte))
        .await
        .expect("silent client closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0);

    // The five are still served.
    for p in &mut producers {
        p.publish("t", b"again").await;
    }
    for _ in 0..MAX - 1 {
        let m = consumer.message().await;
        consumer.fin(&m.id).await;
    }

    // One leaves; its slot goes to a new client once the broker has seen it go.
    drop(producers.pop());
    let mut late = eventually("a new client is served after one left", || {
        try_publish(&b, "t")
    })
    .await;
    let m = consumer.message().await;
    assert_eq!(&m.body[..], b"late");
    consumer.fin(&m.id).await;
    late.publish("t", b"still served").await;

    drop(late);
    // HTTP has a limit of its own, so /metrics answers while TCP is full.
    let (scrape, _) = scrape(b.http).await;
    let refused = metric(
        &scrape,
        "ferry_connections_refused_total",
        &[("listener", "tcp")],
    );
    assert!(refused >= 2.0, "refused {refused}");
    b.stop().await;
}

/// An HTTP/1.1 keep-alive connection that has been served one `/ping`.
async fn keep_alive_ping(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET /ping HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).ends_with("OK") {
        let n = tokio::time::timeout(DEADLINE, s.read(&mut buf))
            .await
            .expect("ping answered in time")
            .unwrap();
        assert!(
            n > 0,
            "closed before answering: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    s
}

#[tokio::test]
async fn http_connection_over_the_limit_gets_503() {
    let b = start(|c| c.max_connections = MAX).await;
    let mut open = Vec::new();
    for _ in 0..MAX {
        open.push(keep_alive_ping(b.http).await);
    }
    let (status, body) = tokio::time::timeout(REFUSED_WITHIN * 2, b.http("GET", "/ping", b""))
        .await
        .expect("refused in time");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("TOO_MANY_CONNECTIONS"), "{body}");
    // A V2 client is not affected by the HTTP limit.
    b.conn().await.publish("t", b"x").await;

    drop(open.pop());
    let scrape = eventually("/metrics once a slot is free", || async {
        let (status, body) = b.http("GET", "/metrics", b"").await;
        (status == 200).then(|| parse_prometheus(&body))
    })
    .await;
    let refused = metric(
        &scrape,
        "ferry_connections_refused_total",
        &[("listener", "http")],
    );
    assert!(refused >= 1.0, "refused {refused}");
    assert_eq!(
        metric(
            &scrape,
            "ferry_connections_refused_total",
            &[("listener", "tcp")]
        ),
        0.0
    );
    b.stop().await;
}
