//! AUTH against an nsqd-compatible auth server (`--auth-http-address`).
//!
//! The broker asks `GET http://<addr>/auth?remote_ip=&tls=&secret=&common_name=` and caches the
//! answer for its `ttl`; when it expires the next SUB/PUB asks again. The servers are tried in
//! random order until one answers. Permission checks follow nsqd: SUB needs `subscribe`, a topic
//! regex match and a channel regex match; PUB/MPUB/DPUB need `publish`, a topic match and a channel
//! regex matching the empty channel name. Regexes are unanchored, as Go's `MatchString`.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rand::seq::SliceRandom as _;
use regex::Regex;
use serde::Deserialize;

/// What the auth server granted one connection.
#[derive(Debug, Clone)]
pub struct AuthState {
    /// Who the secret belongs to (shown in `/stats`).
    pub identity: String,
    /// A link about that identity.
    pub identity_url: String,
    authorizations: Vec<Authorization>,
    expires: Instant,
}

#[derive(Debug, Clone)]
struct Authorization {
    topic: Regex,
    channels: Vec<Regex>,
    subscribe: bool,
    publish: bool,
}

/// The auth server's reply.
#[derive(Debug, Deserialize)]
struct Reply {
    #[serde(default)]
    ttl: u64,
    #[serde(default)]
    identity: String,
    #[serde(default)]
    identity_url: String,
    #[serde(default)]
    authorizations: Vec<ReplyAuthorization>,
}

#[derive(Debug, Deserialize)]
struct ReplyAuthorization {
    topic: String,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    permissions: Vec<String>,
}

/// Who is asking, as the auth server is told.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The client's IP address.
    pub remote_ip: String,
    /// The connection upgraded to TLS.
    pub tls: bool,
    /// The secret sent with AUTH.
    pub secret: String,
    /// Common name of the client's TLS certificate, if any.
    pub common_name: String,
}

impl AuthState {
    /// Number of authorizations granted (AUTH's reply reports it).
    pub fn permission_count(&self) -> usize {
        self.authorizations.len()
    }

    /// True once the ttl has passed (ask the server again).
    pub fn expired(&self) -> bool {
        Instant::now() >= self.expires
    }

    /// Whether `topic` (and `channel`, or `""` for publishing) is allowed.
    pub fn allows(&self, topic: &str, channel: &str) -> bool {
        self.authorizations.iter().any(|a| {
            let permitted = if channel.is_empty() {
                a.publish
            } else {
                a.subscribe
            };
            permitted && a.topic.is_match(topic) && a.channels.iter().any(|c| c.is_match(channel))
        })
    }
}

/// Asks the auth servers (in random order, until one answers) what `creds` may do.
pub async fn query(
    client: &reqwest::Client,
    servers: &[String],
    creds: &Credentials,
) -> anyhow::Result<AuthState> {
    let mut order: Vec<&String> = servers.iter().collect();
    order.shuffle(&mut rand::rng());
    let mut last = None;
    for server in order {
        match query_one(client, server, creds).await {
            Ok(state) => return Ok(state),
            Err(e) => {
                tracing::warn!(auth_server = %server, error = %format!("{e:#}"), "auth query failed");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no auth server configured")))
}

async fn query_one(
    client: &reqwest::Client,
    server: &str,
    creds: &Credentials,
) -> anyhow::Result<AuthState> {
    let base = if server.starts_with("http://") || server.starts_with("https://") {
        server.trim_end_matches('/').to_owned()
    } else {
        format!("http://{}", server.trim_end_matches('/'))
    };
    let tls = if creds.tls { "true" } else { "false" };
    let mut url = reqwest::Url::parse(&format!("{base}/auth")).context("auth server address")?;
    url.query_pairs_mut()
        .append_pair("remote_ip", &creds.remote_ip)
        .append_pair("tls", tls)
        .append_pair("secret", &creds.secret)
        .append_pair("common_name", &creds.common_name);
    let resp = client.get(url).send().await.context("request")?;
    if !resp.status().is_success() {
        bail!("auth server answered {}", resp.status());
    }
    let reply: Reply = resp.json().await.context("reply is not auth JSON")?;
    let mut authorizations = Vec::with_capacity(reply.authorizations.len());
    for a in reply.authorizations {
        let topic =
            Regex::new(&a.topic).with_context(|| format!("bad topic regex {:?}", a.topic))?;
        let channels = a
            .channels
            .iter()
            .map(|c| Regex::new(c).with_context(|| format!("bad channel regex {c:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        authorizations.push(Authorization {
            topic,
            channels,
            subscribe: a.permissions.iter().any(|p| p == "subscribe"),
            publish: a.permissions.iter().any(|p| p == "publish"),
        });
    }
    Ok(AuthState {
        identity: reply.identity,
        identity_url: reply.identity_url,
        authorizations,
        expires: Instant::now() + Duration::from_secs(reply.ttl),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(topic: &str, channels: &[&str], perms: &[&str]) -> AuthState {
        AuthState {
            identity: "id".into(),
            identity_url: String::new(),
            authorizations: vec![Authorization {
                topic: Regex::new(topic).unwrap(),
                channels: channels.iter().map(|c| Regex::new(c).unwrap()).collect(),
                subscribe: perms.contains(&"subscribe"),
                publish: perms.contains(&"publish"),
            }],
            expires: Instant::now() + Duration::from_secs(60),
        }
    }

    #[test]
    fn permissions_topics_and_channels_as_nsqd_checks_them() {
        let s = state("^orders", &["^billing$"], &["subscribe"]);
        assert!(s.allows("orders.eu", "billing"));
        assert!(!s.allows("orders.eu", "audit"));
        assert!(!s.allows("refunds", "billing"));
        assert!(!s.allows("orders", ""), "no publish permission");
        let s = state(".*", &[".*"], &["publish"]);
        assert!(s.allows("anything", ""));
        assert!(!s.allows("anything", "ch"), "no subscribe permission");
        // Publishing needs a channel regex that matches "" (as in nsqd).
        let s = state(".*", &["^x$"], &["publish"]);
        assert!(!s.allows("t", ""));
    }
}
