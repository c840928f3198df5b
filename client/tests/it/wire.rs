//! The client's exact wire behaviour, against a scripted fake broker: IDENTIFY contents,
//! heartbeats answered with NOP, RDY capped by the broker's max_rdy_count, FIN/CLS, non-fatal
//! errors, and requests in flight on a dying connection.

use std::time::Duration;

use crate::common::DEADLINE;
use bytes::{Bytes, BytesMut};
use ferry_client::{Config, Consumer, Error, ErrorCode, Producer};
use ferry_proto::identify::{IdentifyRequest, IdentifyResponse};
use ferry_proto::v2::{self, Command};
use ferry_proto::{MessageId, ProtocolError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One accepted client connection, seen from the broker's side.
struct FakeConn {
    stream: TcpStream,
    buf: BytesMut,
}

impl FakeConn {
    async fn accept(listener: &TcpListener) -> FakeConn {
        let (mut stream, _) = tokio::time::timeout(DEADLINE, listener.accept())
            .await
            .expect("client connects")
            .unwrap();
        let mut magic = [0u8; 4];
        stream.read_exact(&mut magic).await.unwrap();
        assert_eq!(magic, v2::MAGIC);
        FakeConn {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Accepts and completes IDENTIFY with `response`; returns the client's request.
    async fn accept_identified(
        listener: &TcpListener,
        response: IdentifyResponse,
    ) -> (FakeConn, IdentifyRequest) {
        let mut conn = FakeConn::accept(listener).await;
        let Command::Identify(body) = conn.command().await else {
            panic!("IDENTIFY first");
        };
        let request = IdentifyRequest::from_json(&body).unwrap();
        conn.respond(&response.to_json()).await;
        (conn, request)
    }

    /// The next command; `None` at EOF.
    async fn next_command(&mut self) -> Option<Command> {
        let limits = v2::DecodeLimits::default();
        tokio::time::timeout(DEADLINE, async {
            loop {
                if let Some(cmd) = v2::decode_command(&mut self.buf, &limits).unwrap() {
                    return Some(cmd);
                }
                if self.stream.read_buf(&mut self.buf).await.unwrap() == 0 {
                    return None;
                }
            }
        })
        .await
        .expect("a command in time")
    }

    async fn command(&mut self) -> Command {
        self.next_command().await.expect("connection open")
    }

    async fn respond(&mut self, data: &[u8]) {
        let mut out = BytesMut::new();
        v2::encode_response(&mut out, data);
        self.stream.write_all(&out).await.unwrap();
    }

    async fn error(&mut self, err: ProtocolError) {
        let mut out = BytesMut::new();
        v2::encode_error(&mut out, &err);
        self.stream.write_all(&out).await.unwrap();
    }

    async fn message(&mut self, seq: u64, attempts: u16, body: &[u8]) -> MessageId {
        let id = MessageId::from_seq(seq);
        let mut out = BytesMut::new();
        v2::encode_message(&mut out, 1, attempts, &id, body);
        self.stream.write_all(&out).await.unwrap();
        id
    }
}

fn negotiated(max_rdy_count: i64) -> IdentifyResponse {
    IdentifyResponse {
        max_rdy_count,
        version: "fake".into(),
        msg_timeout: 60_000,
        ..IdentifyResponse::default()
    }
}

async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

#[tokio::test]
async fn identify_carries_the_config_and_heartbeats_get_nop() {
    let (listener, addr) = listener().await;
    let config = Config::new()
        .client_id("cid")
        .hostname("host.example")
        .user_agent("test-agent/1")
        .heartbeat_interval(Duration::from_secs(5))
        .msg_timeout(Some(Duration::from_secs(90)))
        .output_buffer_size(4096)
        .output_buffer_timeout(Duration::from_millis(100))
        .sample_rate(10);
    let connecting = tokio::spawn(Producer::connect(addr, config));
    let (mut conn, identify) = FakeConn::accept_identified(&listener, negotiated(2500)).await;
    assert_eq!(identify.client_id, "cid");
    assert_eq!(identify.hostname, "host.example");
    assert_eq!(identify.user_agent, "test-agent/1");
    assert!(identify.feature_negotiation);
    assert_eq!(identify.heartbeat_interval, 5000);
    assert_eq!(identify.msg_timeout, 90_000);
    assert_eq!(identify.output_buffer_size, 4096);
    assert_eq!(identify.output_buffer_timeout, 100);
    assert_eq!(identify.sample_rate, 10);
    assert!(!identify.tls_v1 && !identify.snappy && !identify.deflate);
    let producer = connecting.await.unwrap().unwrap();

    conn.respond(v2::HEARTBEAT).await;
    assert_eq!(conn.command().await, Command::Nop);

    let publishing = tokio::spawn(async move { producer.publish("t", "hi").await });
    assert_eq!(
        conn.command().await,
        Command::Pub {
            topic: "t".into(),
            body: Bytes::from_static(b"hi")
        }
    );
    conn.respond(v2::OK).await;
    publishing.await.unwrap().unwrap();
}

#[tokio::test]
async fn requests_in_flight_when_the_connection_dies_fail_and_new_ones_reconnect() {
    let (listener, addr) = listener().await;
    let connecting = tokio::spawn(Producer::connect(addr, Config::new()));
    let (mut conn, _) = FakeConn::accept_identified(&listener, negotiated(2500)).await;
    let producer = connecting.await.unwrap().unwrap();

    let mut calls = Vec::new();
    for body in ["a", "b", "c"] {
        let producer = producer.clone();
        calls.push((
            body,
            tokio::spawn(async move { producer.publish("t", body).await }),
        ));
    }
    // All three are on the wire before anything is answered (pipelining).
    let mut order = Vec::new();
    for _ in 0..3 {
        let Command::Pub { body, .. } = conn.command().await else {
            panic!("PUB");
        };
        order.push(String::from_utf8(body.to_vec()).unwrap());
    }
    // The first gets OK, the second a fatal error, then the broker closes.
    conn.respond(v2::OK).await;
    conn.error(ProtocolError::new(ErrorCode::PubFailed, "disk full"))
        .await;
    drop(conn);
    for (body, call) in calls {
        let result = call.await.unwrap();
        match order.iter().position(|b| b == body) {
            Some(0) => assert!(result.is_ok(), "{result:?}"),
            Some(1) => assert!(
                matches!(&result, Err(Error::Protocol { code: ErrorCode::PubFailed, message }) if message == "disk full"),
                "{result:?}"
            ),
            _ => assert!(
                matches!(result, Err(Error::ConnectionLost { .. })),
                "{result:?}"
            ),
        }
    }

    let publishing = tokio::spawn(async move { producer.publish("t", "again").await });
    let (mut conn, _) = FakeConn::accept_identified(&listener, negotiated(2500)).await;
    assert!(matches!(conn.command().await, Command::Pub { .. }));
    conn.respond(v2::OK).await;
    publishing.await.unwrap().unwrap();
}

#[tokio::test]
async fn consumer_protocol_rdy_fin_nop_and_cls() {
    let (listener, addr) = listener().await;
    let (consumer, mut messages) =
        Consumer::stream("t", "c", Config::new().max_in_flight(100)).unwrap();
    let consumer = std::sync::Arc::new(consumer);
    let connecting = {
        let consumer = consumer.clone();
        tokio::spawn(async move { consumer.connect_to_broker(addr).await })
    };
    // The broker accepts at most RDY 3.
    let (mut conn, _) = FakeConn::accept_identified(&listener, negotiated(3)).await;
    assert_eq!(
        conn.command().await,
        Command::Sub {
            topic: "t".into(),
            channel: "c".into()
        }
    );
    conn.respond(v2::OK).await;
    connecting.await.unwrap().unwrap();
    assert_eq!(conn.command().await, Command::Rdy(3));

    let id = conn.message(7, 1, b"first").await;
    let msg = tokio::time::timeout(DEADLINE, messages.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((msg.id(), msg.attempts()), (id, 1));
    assert_eq!(msg.body().as_ref(), b"first");
    msg.finish().await.unwrap();
    assert_eq!(conn.command().await, Command::Fin(id));

    conn.respond(v2::HEARTBEAT).await;
    assert_eq!(conn.command().await, Command::Nop);

    // FIN of a message that timed out meanwhile: not fatal, the connection carries on.
    conn.error(ProtocolError::new(ErrorCode::FinFailed, "FIN failed"))
        .await;
    let id = conn.message(8, 2, b"second").await;
    let msg = tokio::time::timeout(DEADLINE, messages.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.attempts(), 2);
    msg.requeue(Some(Duration::from_millis(1500)))
        .await
        .unwrap();
    assert_eq!(
        conn.command().await,
        Command::Req {
            id,
            timeout_ms: 1500
        }
    );
    // A requeue is a failure: the consumer backs off (every connection RDY 0).
    assert_eq!(conn.command().await, Command::Rdy(0));

    let stopping = {
        let consumer = consumer.clone();
        tokio::spawn(async move { consumer.stop().await })
    };
    assert_eq!(conn.command().await, Command::Cls);
    conn.respond(v2::CLOSE_WAIT).await;
    // Nothing in flight: the client closes its side.
    assert_eq!(conn.next_command().await, None);
    drop(conn);
    tokio::time::timeout(DEADLINE, stopping)
        .await
        .unwrap()
        .unwrap();
    assert!(messages.recv().await.is_none());
}
