//! The HTTP client admin-ui uses to talk to brokers and lookup daemons: timeouts, a cap on
//! concurrent requests and on reply size, NSQ's `Accept` header, and errors that say which
//! node failed and why (they are shown to the operator as they are).

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::nsq;

/// What went wrong asking a node.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connection refused, timeout, reset...
    #[error("{url}: {}", chain(.source))]
    Request {
        /// The URL asked.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// A non-2xx status.
    #[error("{url}: HTTP {status}{}", if .body.is_empty() { String::new() } else { format!(" {}", .body) })]
    Status {
        /// The URL asked.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the body (NSQ puts `{"message":"CODE"}` there).
        body: String,
    },
    /// The reply exceeded `--max-response-bytes`.
    #[error("{url}: reply larger than {limit} bytes")]
    TooBig {
        /// The URL asked.
        url: String,
        /// The limit.
        limit: usize,
    },
    /// Not the JSON expected.
    #[error("{url}: invalid JSON reply: {source}")]
    Decode {
        /// The URL asked.
        url: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
}

impl UpstreamError {
    /// The HTTP status the node answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            UpstreamError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The NSQ error code the node answered with (`{"message":"TOO_FEW_BROKERS"}`, or a
    /// plain-text body that is one word), if it answered with an error status.
    pub fn code(&self) -> Option<String> {
        let UpstreamError::Status { body, .. } = self else {
            return None;
        };
        let code = match serde_json::from_str::<serde_json::Value>(body) {
            Ok(v) => v.get("message")?.as_str()?.to_owned(),
            Err(_) => body.clone(),
        };
        let is_code = !code.is_empty()
            && code
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        is_code.then_some(code)
    }
}

/// An error and its causes on one line ("error sending request: connection refused").
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// A shared client for brokers and lookupds.
#[derive(Clone)]
pub struct Upstream {
    client: reqwest::Client,
    limit: Arc<Semaphore>,
    max_response_bytes: usize,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("max_response_bytes", &self.max_response_bytes)
            .finish_non_exhaustive()
    }
}

/// The TLS configuration for `https://` brokers and lookupds when a CA or a client certificate
/// is configured (otherwise reqwest's default: the system's roots).
fn tls_config(config: &Config) -> anyhow::Result<Option<rustls::ClientConfig>> {
    use anyhow::Context as _;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let Some(ca) = &config.http_client_tls_root_ca_file else {
        if config.http_client_tls_cert.is_some() {
            anyhow::bail!("--http-client-tls-cert needs --http-client-tls-root-ca-file");
        }
        return Ok(None);
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("cannot read {}", ca.display()))?
    {
        roots.add(cert.with_context(|| format!("bad certificate in {}", ca.display()))?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let tls = match (&config.http_client_tls_cert, &config.http_client_tls_key) {
        (Some(cert), Some(key)) => builder.with_client_auth_cert(
            CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?,
            PrivateKeyDer::from_pem_file(key)?,
        )?,
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(tls))
}

impl Upstream {
    /// A client with the configured timeouts and limits.
    pub fn new(config: &Config) -> anyhow::Result<Upstream> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.http_client_connect_timeout)
            .timeout(config.http_client_request_timeout)
            .user_agent(concat!("ferry-admin-ui/", env!("CARGO_PKG_VERSION")));
        if let Some(tls) = tls_config(config)? {
            builder = builder.use_preconfigured_tls(tls);
        }
        let client = builder.build()?;
        Ok(Upstream {
            client,
            limit: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            max_response_bytes: config.max_response_bytes,
        })
    }

    /// `GET http://{addr}{path}` decoded as NSQ JSON.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
    ) -> Result<T, UpstreamError> {
        let url = url(addr, path);
        let body = self.send(reqwest::Method::GET, &url).await?;
        nsq::parse(&body).map_err(|source| UpstreamError::Decode { url, source })
    }

    /// `GET http://{addr}{path}`: the body as text (lossy UTF-8), e.g. Prometheus' `/metrics`.
    pub async fn get_text(&self, addr: &str, path: &str) -> Result<String, UpstreamError> {
        let body = self.send(reqwest::Method::GET, &url(addr, path)).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// `POST http://{addr}{path}` with an empty body; the reply body is returned.
    pub async fn post(&self, addr: &str, path: &str) -> Result<Vec<u8>, UpstreamError> {
        let url = url(addr, path);
        self.send(reqwest::Method::POST, &url).await
    }

    async fn send(&self, method: reqwest::Method, url: &str) -> Result<Vec<u8>, UpstreamError> {
        // The semaphore is never closed, so acquire only fails if it were; then go unthrottled.
        let _permit = self.limit.acquire().await.ok();
        let request_error = |source| UpstreamError::Request {
            url: url.to_owned(),
            source,
        };
        let mut resp = self
            .client
            .request(method, url)
            .header("Accept", "application/vnd.nsq; version=1.0")
            .send()
            .await
            .map_err(request_error)?;
        let status = resp.status();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(request_error)? {
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(UpstreamError::TooBig {
                    url: url.to_owned(),
                    limit: self.max_response_bytes,
                });
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            let text: String = text.trim().chars().take(200).collect();
            return Err(UpstreamError::Status {
                url: url.to_owned(),
                status: status.as_u16(),
                body: text,
            });
        }
        Ok(body)
    }
}

/// `http://addr/path` unless `addr` already has a scheme.
fn url(addr: &str, path: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        format!("{}{path}", addr.trim_end_matches('/'))
    } else {
        format!("http://{addr}{path}")
    }
}

/// A query string (`?a=1&b=2`) with every value percent-encoded (`#ephemeral` needs it).
pub fn query(pairs: &[(&str, &str)]) -> String {
    match serde_urlencoded::to_string(pairs) {
        Ok(q) if !q.is_empty() => format!("?{q}"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_queries() {
        assert_eq!(url("h:1", "/stats"), "http://h:1/stats");
        assert_eq!(url("http://h:1/", "/stats"), "http://h:1/stats");
        assert_eq!(
            query(&[("topic", "a#ephemeral"), ("channel", "c")]),
            "?topic=a%23ephemeral&channel=c"
        );
    }

    #[test]
    fn nsq_error_codes_are_read_from_refusals() {
        let status = |body: &str| UpstreamError::Status {
            url: "http://b:1/topic/create".into(),
            status: 503,
            body: body.into(),
        };
        let code = |body: &str| status(body).code();
        assert_eq!(
            code(r#"{"message":"TOO_FEW_BROKERS"}"#).as_deref(),
            Some("TOO_FEW_BROKERS")
        );
        assert_eq!(
            code("INVALID_REPLICAS").as_deref(),
            Some("INVALID_REPLICAS")
        );
        assert_eq!(code("<html>bad gateway</html>"), None);
        assert_eq!(code(r#"{"message":"not a code"}"#), None);
        assert_eq!(code(""), None);
    }
}
