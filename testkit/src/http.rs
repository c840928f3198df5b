//! One HTTP request at a time, answered as a [`Reply`]: status, headers and body, the body
//! parsed as JSON on demand.
//!
//! Each request uses a fresh client without a connection pool (each `#[tokio::test]` has its
//! own runtime, which a pooled connection must not outlive), bounded by [`DEADLINE`].

use std::net::SocketAddr;

use ferry_proto::stats::Stats;
use reqwest::Method;
use serde_json::Value;

use crate::DEADLINE;

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Header lines as sent, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The first header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The header block as `name: value` lines.
    pub fn header_block(&self) -> String {
        self.headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect()
    }

    /// The body as JSON; panics (with the body) if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: body {:?}", self.body))
    }

    /// The body as brokerd's (or nsqd's) `/stats?format=json`, typed; panics (with the body) if
    /// it is not one.
    pub fn stats(&self) -> Stats {
        assert_eq!(self.status, 200, "{}", self.body);
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: body {:?}", self.body))
    }

    /// The body as JSON, `Value::Null` if it is not.
    pub fn json_or_null(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
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

    /// Panics unless the status is 2xx.
    pub fn assert_success(&self, what: &str) -> &Reply {
        assert!(
            (200..300).contains(&self.status),
            "{what}: {} {}",
            self.status,
            self.body
        );
        self
    }
}

/// A client for one request: no pool, [`DEADLINE`] timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(DEADLINE)
        .pool_max_idle_per_host(0)
        .build()
        .expect("HTTP client")
}

/// Sends `method url` with `body` and `headers`.
pub async fn send_url(
    method: Method,
    url: &str,
    body: impl Into<reqwest::Body>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = client().request(method.clone(), url).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp
        .text()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: body: {e}"));
    Reply {
        status,
        headers,
        body,
    }
}

/// Sends `method http://addr{path}` with `body`.
pub async fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Reply {
    let method = Method::from_bytes(method.as_bytes()).expect("HTTP method");
    send_url(method, &format!("http://{addr}{path}"), body.to_vec(), &[]).await
}

/// `GET http://addr{path}`.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, b"").await
}

/// `POST http://addr{path}` with `body`.
pub async fn post(addr: SocketAddr, path: &str, body: &[u8]) -> Reply {
    request(addr, "POST", path, body).await
}

/// `GET url`, which must answer 2xx with JSON.
pub async fn get_json(url: &str) -> Value {
    let reply = send_url(Method::GET, url, Vec::new(), &[]).await;
    reply.assert_success(&format!("GET {url}"));
    reply.json()
}

/// `GET /stats?format=json` of the broker whose HTTP interface is `addr`, typed.
pub async fn get_stats(addr: SocketAddr) -> Stats {
    get(addr, "/stats?format=json").await.stats()
}
