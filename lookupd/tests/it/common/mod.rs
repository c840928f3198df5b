//! Test harness: real lookup daemons (ferry-testkit) on 127.0.0.1 with port 0, a raw lookup
//! protocol V1 peer built on ferry-proto, and HTTP through the testkit.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use ferry_proto::lookup::{self, LookupCommand};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use ferry_testkit::lookupd::start;
pub use ferry_testkit::{DEADLINE, Reply, TestLookupd};

/// What a test does with a lookupd over its TCP interface.
#[allow(async_fn_in_trait)] // used only here, on one runtime
pub trait LookupdPeers {
    /// A raw connection that has sent the magic.
    async fn peer(&self) -> Peer;
    /// A peer that has IDENTIFYed as broker `broadcast_address` with the given ports.
    async fn broker(&self, broadcast_address: &str, tcp_port: u16, http_port: u16) -> Peer;
}

impl LookupdPeers for TestLookupd {
    async fn peer(&self) -> Peer {
        Peer::connect(self.tcp).await
    }

    async fn broker(&self, broadcast_address: &str, tcp_port: u16, http_port: u16) -> Peer {
        let mut peer = self.peer().await;
        peer.identify(broker_info(broadcast_address, tcp_port, http_port))
            .await;
        peer
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

/// [`ferry_testkit::eventually`] for a condition that is true or false.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    ferry_testkit::eventually(what, async || check().await.then_some(())).await
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

/// One HTTP/1.1 request without a body.
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> Reply {
    ferry_testkit::http::request(addr, method, path, b"").await
}
