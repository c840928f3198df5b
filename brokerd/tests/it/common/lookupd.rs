//! An in-process lookupd (ferry-testkit's) for the tests that need one.

use std::net::SocketAddr;

pub use ferry_testkit::lookupd::wait_knows_lookupd;

/// A lookupd running in this process.
pub type Lookupd = ferry_testkit::TestLookupd;

/// Starts a lookupd on `tcp` and `http` (port 0: any free port).
pub async fn start_lookupd(tcp: SocketAddr, http: SocketAddr) -> Lookupd {
    ferry_testkit::lookupd::start(|cfg| {
        cfg.tcp_address = tcp;
        cfg.http_address = http;
    })
    .await
}

/// `GET path`: (status, the body as JSON or `Null`).
pub async fn get_json(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let reply = ferry_testkit::http::get(addr, path).await;
    (reply.status, reply.json_or_null())
}
