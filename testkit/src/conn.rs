//! [`TestConn`]: a raw protocol V2 connection, built on `ferry-proto`, that sends commands and
//! reads frames with a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use ferry_proto::MessageId;
use ferry_proto::v2::{self, Command, Frame, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::DEADLINE;

/// A raw protocol V2 connection. Heartbeats are answered with NOP by [`next`](Self::next)
/// and everything built on it.
#[derive(Debug)]
pub struct TestConn {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl TestConn {
    /// Connects and sends the magic.
    pub async fn connect(addr: SocketAddr) -> TestConn {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(&v2::MAGIC).await.expect("send magic");
        TestConn {
            stream,
            buf: BytesMut::new(),
        }
    }

    pub async fn send(&mut self, cmd: &Command) {
        let mut b = BytesMut::new();
        cmd.encode(&mut b);
        self.stream.write_all(&b).await.expect("send command");
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send bytes");
    }

    /// Next frame, or None if the connection closed. Panics after [`DEADLINE`].
    pub async fn frame(&mut self) -> Option<Frame> {
        tokio::time::timeout(DEADLINE, self.frame_inner())
            .await
            .expect("frame within deadline")
    }

    /// Next frame within `wait`, skipping nothing; `Err(())` on timeout.
    #[allow(clippy::result_unit_err)]
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
        if let Some(f) = self.frame().await {
            panic!("expected close, got {f:?}");
        }
    }

    /// The next message (RDY must allow it).
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

    /// Sends IDENTIFY with `json`; returns the response.
    pub async fn identify(&mut self, json: serde_json::Value) -> Vec<u8> {
        self.send(&Command::Identify(
            serde_json::to_vec(&json).expect("JSON").into(),
        ))
        .await;
        self.expect_response().await
    }

    /// SUB, expecting OK.
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

    /// PUB, expecting OK.
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

    /// REQ with `timeout_ms`.
    pub async fn req(&mut self, id: &MessageId, timeout_ms: u64) {
        self.send(&Command::Req {
            id: *id,
            timeout_ms,
        })
        .await;
    }
}
