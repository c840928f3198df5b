//! Which brokers hold a topic: asked of lookupd (`/lookup?topic=`) and/or given directly with
//! `--broker-http-address`. Used by the admin commands and `stat`.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;

/// The broker used when no address is given.
pub const LOCAL_BROKER: &str = "127.0.0.1:4151";

/// How long one HTTP request may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where to find brokers.
#[derive(Debug, Clone, Default, Args)]
pub struct NodeArgs {
    /// A broker's HTTP address (host:port); repeat for several.
    #[arg(
        long = "broker-http-address",
        visible_alias = "nsqd-http-address",
        value_name = "ADDR"
    )]
    pub broker_http_addresses: Vec<String>,

    /// A lookupd's HTTP address (host:port) to find every broker holding the topic; repeatable.
    #[arg(long = "lookupd-http-address", value_name = "ADDR")]
    pub lookupd_http_addresses: Vec<String>,
}

impl NodeArgs {
    /// True when neither brokers nor lookupds were given.
    pub fn is_empty(&self) -> bool {
        self.broker_http_addresses.is_empty() && self.lookupd_http_addresses.is_empty()
    }

    /// These addresses, or the local broker (127.0.0.1:4151) when none were given.
    pub fn or_local(&self) -> NodeArgs {
        let mut n = self.clone();
        if n.is_empty() {
            n.broker_http_addresses.push(LOCAL_BROKER.to_owned());
        }
        n
    }
}

/// A shared HTTP client with the tool's timeout.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot create an HTTP client")
}

/// A reqwest error as a person wants to read it: its deepest cause ("Connection refused ...")
/// rather than "error sending request".
pub fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("timed out after {}s", HTTP_TIMEOUT.as_secs());
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// `http://` + address, unless it already has a scheme.
pub fn base_url(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.trim_end_matches('/').to_owned()
    } else {
        format!("http://{}", addr.trim_end_matches('/'))
    }
}

/// Percent-encodes the one character of a valid topic/channel name that needs it (`#`).
pub fn q(name: &str) -> String {
    name.replace('#', "%23")
}

/// HTTP addresses of every broker holding `topic`: the ones given, plus the producers each
/// lookupd lists. Unreachable lookupds are an error only if nothing else answered.
pub async fn brokers_for_topic(
    client: &reqwest::Client,
    nodes: &NodeArgs,
    topic: &str,
) -> anyhow::Result<Vec<String>> {
    let mut out: BTreeSet<String> = nodes.broker_http_addresses.iter().cloned().collect();
    let mut errors = Vec::new();
    let mut lookupd_answered = false;
    for lookupd in &nodes.lookupd_http_addresses {
        let url = format!("{}/lookup?topic={}", base_url(lookupd), q(topic));
        let resp = match client.get(&url).send().await {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("lookupd {lookupd}: {}", describe(&e)));
                continue;
            }
        };
        lookupd_answered = true;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            continue;
        }
        if !resp.status().is_success() {
            errors.push(format!("lookupd {lookupd}: HTTP {}", resp.status()));
            continue;
        }
        let v: serde_json::Value = resp
            .json()
            .await
            .with_context(|| format!("lookupd {lookupd}: reply is not JSON"))?;
        for p in v["producers"].as_array().into_iter().flatten() {
            let host = p["broadcast_address"].as_str().unwrap_or_default();
            let port = p["http_port"].as_u64().unwrap_or_default();
            if !host.is_empty() && port > 0 {
                out.insert(format!("{host}:{port}"));
            }
        }
    }
    if out.is_empty() {
        if !errors.is_empty() && !lookupd_answered {
            bail!("{}", errors.join("; "));
        }
        bail!("no broker holds topic {topic:?}");
    }
    Ok(out.into_iter().collect())
}

/// HTTP addresses of every broker given or registered with a lookupd (its `/nodes`), whether
/// or not it holds a topic: where a new topic can go. An error when none is found.
pub async fn registered_brokers(
    client: &reqwest::Client,
    nodes: &NodeArgs,
) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = nodes.broker_http_addresses.clone();
    let mut errors = Vec::new();
    for lookupd in &nodes.lookupd_http_addresses {
        let url = format!("{}/nodes", base_url(lookupd));
        let v: serde_json::Value = match client.get(&url).send().await {
            Ok(resp) if resp.status().is_success() => resp
                .json()
                .await
                .with_context(|| format!("lookupd {lookupd}: reply is not JSON"))?,
            Ok(resp) => {
                errors.push(format!("lookupd {lookupd}: HTTP {}", resp.status()));
                continue;
            }
            Err(e) => {
                errors.push(format!("lookupd {lookupd}: {}", describe(&e)));
                continue;
            }
        };
        for p in v["producers"].as_array().into_iter().flatten() {
            let host = p["broadcast_address"].as_str().unwrap_or_default();
            let port = p["http_port"].as_u64().unwrap_or_default();
            let addr = format!("{host}:{port}");
            if !host.is_empty() && port > 0 && !out.contains(&addr) {
                out.push(addr);
            }
        }
    }
    if out.is_empty() {
        if !errors.is_empty() {
            bail!("{}", errors.join("; "));
        }
        bail!("no broker is registered with lookupd");
    }
    Ok(out)
}
