//! Test harness: real lookup daemons on 127.0.0.1 with port 0, a raw lookup protocol V1 peer
//! built on ferry-proto, and a minimal HTTP/1.1 client.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferry_lookupd::config::Config;
use ferry_proto::lookup::{self, LookupCommand};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Longest any single expected event may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A lookup daemon running in this process.
pub struct TestLookupd {
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Starts a lookup daemon; `tweak` adjusts the config.
pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestLookupd {
    let mut config = Config::for_tests();
    tweak(&mut config);
    let server = ferry_lookupd::Server::bind(config)
        .await
        .expect("lookupd binds");
    let tcp = server.tcp_addr();
    let http = server.http_addr();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(server.run(shutdown.clone()));
    TestLookupd {
        tcp,
        http,
        shutdown,
        handle,
    }
}

impl TestLookupd {
    /// Graceful stop; waits until every task is done.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.handle)
            .await
            .expect("lookupd stops in time")
            .expect("lookupd task")
            .expect("lookupd run ok");
    }

    /// A raw connection that has sent the magic.
    pub async fn peer(&self) -> Peer {
        Peer::connect(self.tcp).await
    }

    /// A peer that has IDENTIFYed as broker `broadcast_address` with the given ports.
    pub async fn broker(&self, broadcast_address: &str, tcp_port: u16, http_port: u16) -> Peer {
        let mut peer = self.peer().await;
        peer.identify(broker_info(broadcast_address, tcp_port, http_port))
            .await;
        peer
    }

    pub async fn get(&self, path: &str) -> Reply {
        http(self.http, "GET", path).await
    }

    pub async fn post(&self, path: &str) -> Reply {
        http(self.http, "POST", path).await
    }

    /// The body of a `GET` that must answer 200 with JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let reply = self.get(path).await;
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
        reply.json()
    }

    /// Broadcast addresses of `/lookup?topic=`'s producers, or None on 404.
    pub async fn producers(&self, topic: &str) -> Option<Vec<String>> {
        let reply = self.get(&format!("/lookup?topic={topic}")).await;
        if reply.status == 404 {
            return None;
        }
        assert_eq!(reply.status, 200, "{}", reply.body);
        let producers = reply.json()["producers"].as_array().unwrap().clone();
        Some(
            producers
                .iter()
                .map(|p| p["broadcast_address"].as_str().unwrap().to_owned())
                .collect(),
        )
    }
}

/// An IDENTIFY body as a broker sends it.
pub fn broker_info(broadcast_address: &str, tcp_port: u16, http_port: u16) -> Value {
    json!({
        "broadcast_address": broadcast_address,
        "hostname": format!("{broadcast_address}.host"),
        "tcp_port": tcp_port,
        "http_port": http_port,
        "version": "1.3.0",
    })
}

/// Polls `check` until it holds; fails the test after [`DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A raw lookup protocol V1 connection (what a broker opens).
pub struct Peer {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl Peer {
    pub async fn connect(addr: SocketAddr) -> Peer {
        let mut peer = Peer::connect_raw(addr).await;
        peer.send_raw(&lookup::MAGIC).await;
        peer
    }

    /// A connection that has sent nothing yet.
    pub async fn connect_raw(addr: SocketAddr) -> Peer {
        Peer {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    /// The address lookupd sees this connection come from.
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    pub async fn send(&mut self, cmd: &LookupCommand) {
        let mut b = BytesMut::new();
        cmd.encode(&mut b);
        self.send_raw(&b).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next response, or None if the connection closed. Panics after [`DEADLINE`].
    pub async fn response(&mut self) -> Option<Bytes> {
        let fut = async {
            loop {
                if let Some(r) = lookup::decode_response(&mut self.buf, 1 << 20).unwrap() {
                    return Some(r);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(DEADLINE, fut)
            .await
            .expect("response within deadline")
    }

    pub async fn expect_ok(&mut self) {
        let r = self.response().await.expect("connection open");
        assert_eq!(&r[..], b"OK", "{:?}", String::from_utf8_lossy(&r));
    }

    /// Expects the error response `text` exactly, then the close that follows every error.
    pub async fn expect_fatal(&mut self, text: &str) {
        let r = self.response().await.expect("an error response");
        assert_eq!(String::from_utf8_lossy(&r), text);
        self.expect_closed().await;
    }

    pub async fn expect_closed(&mut self) {
        if let Some(r) = self.response().await {
            panic!("expected close, got {:?}", String::from_utf8_lossy(&r));
        }
    }

    /// Sends IDENTIFY with `body` and returns the reply as JSON.
    pub async fn identify(&mut self, body: Value) -> Value {
        self.send(&LookupCommand::Identify(
            serde_json::to_vec(&body).unwrap().into(),
        ))
        .await;
        let r = self.response().await.expect("IDENTIFY reply");
        serde_json::from_slice(&r)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&r)))
    }

    pub async fn register(&mut self, topic: &str, channel: Option<&str>) {
        self.send(&LookupCommand::Register {
            topic: topic.into(),
            channel: channel.map(Into::into),
        })
        .await;
        self.expect_ok().await;
    }

    pub async fn unregister(&mut self, topic: &str, channel: Option<&str>) {
        self.send(&LookupCommand::Unregister {
            topic: topic.into(),
            channel: channel.map(Into::into),
        })
        .await;
        self.expect_ok().await;
    }

    pub async fn ping(&mut self) {
        self.send(&LookupCommand::Ping).await;
        self.expect_ok().await;
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Header lines, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: body {:?}", self.body))
    }

    /// Asserts an NSQ error: `status` and `{"message": message}`, with the NSQ header.
    pub fn assert_error(&self, status: u16, message: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.json(), serde_json::json!({ "message": message }));
        assert_eq!(self.header("x-nsq-content-type"), Some("nsq; version=1.0"));
    }

    /// Asserts nsqlookupd's empty 200.
    pub fn assert_empty_ok(&self) {
        assert_eq!(self.status, 200, "{}", self.body);
        assert_eq!(self.body, "");
        assert_eq!(self.header("x-nsq-content-type"), Some("nsq; version=1.0"));
    }
}

/// One HTTP/1.1 request without a body, with `Connection: close`.
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> Reply {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8(raw).expect("UTF-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("header end");
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        assert!(
            !headers
                .iter()
                .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")),
            "this client does not read chunked bodies"
        );
        Reply {
            status,
            headers,
            body: body.to_owned(),
        }
    };
    tokio::time::timeout(DEADLINE, fut)
        .await
        .expect("HTTP within deadline")
}
