//! Discovery: which brokers have the consumer's topic, according to its lookupds.
//!
//! ```text
//! every lookupd_poll_interval × (1 − jitter × U[0,1)), or, while no lookupd lists a broker
//! for the topic, every second for the first minute and then twice as long each time up to
//! that interval (a consumer started before the topic's first publish connects within about a
//! second of it):
//!   GET http://<lookupd>/lookup?topic=T   (each lookupd; 404 = no broker has it)
//!     {"channels":[..],"producers":[{"broadcast_address":"10.0.0.5","tcp_port":4150,..}]}
//!   union of every answer → brokers "10.0.0.5:4150", ...
//!   new address        → supervise it (connect, reconnect while listed)
//!   discovered address missing from {MISSING_POLLS} polls in a row, every lookupd answering
//!                      → close it gracefully
//! ```
//!
//! Lookupd daemons never talk to each other, so a broker counts as listed if any lookupd lists
//! it; a lookupd that fails to answer makes the poll incomplete, and nothing is dropped on an
//! incomplete poll. Brokers given directly to `connect_to_broker` are never dropped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use tokio::sync::Mutex;
use tracing::{debug, warn};

use super::Shared;
use crate::config::Config;
use crate::error::Error;

/// Complete polls in a row that must miss a discovered broker before it is dropped (one missing
/// answer may just be a broker re-registering after a lookupd restart).
const MISSING_POLLS: u32 = 2;

/// How often lookupd is asked while it lists no broker for the topic, for [`FAST_FOR`].
const FAST_POLL: Duration = Duration::from_secs(1);

/// How long the fast polls go on before they back off (doubling) to the configured interval.
const FAST_FOR: Duration = Duration::from_secs(60);

/// The consumer's lookupd state.
#[derive(Debug)]
pub(crate) struct Lookup {
    client: reqwest::Client,
    /// A tokio mutex, held for a whole poll (across its HTTP queries) so polls never overlap.
    state: Mutex<State>,
    /// Whether the periodic poller runs.
    started: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    lookupds: Vec<String>,
    /// Discovered brokers missing from the last complete polls, and how many.
    missing: HashMap<String, u32>,
    /// The last poll found a broker for the topic.
    found: bool,
    /// Warned that the topic is not known yet (logged once until it is).
    told_waiting: bool,
    /// Lookupds whose last query failed, with why.
    failing: HashMap<String, String>,
}

/// What discovery knows, for a program that tells its user what it waits for
/// ([`crate::Consumer::discovery`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// Lookupds asked.
    pub lookupds: Vec<String>,
    /// The last poll found at least one broker with the topic.
    pub found: bool,
    /// Lookupds whose last query failed, with the reason, sorted (they are asked again).
    pub failing: Vec<(String, String)>,
}

/// The consumer's discovery state.
pub(crate) async fn discovery(shared: &Shared) -> Discovery {
    let state = shared.lookup.state.lock().await;
    let mut failing: Vec<(String, String)> = state
        .failing
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    failing.sort();
    Discovery {
        lookupds: state.lookupds.clone(),
        found: state.found,
        failing,
    }
}

/// Why one lookupd query failed (logged, never returned: the next poll retries).
#[derive(Debug, thiserror::Error)]
enum QueryError {
    #[error("HTTP request failed")]
    Http(#[from] reqwest::Error),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("invalid JSON")]
    Json(#[from] serde_json::Error),
}

impl Lookup {
    pub(crate) fn new(config: &Config) -> Result<Lookup, Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.dial_timeout)
            .timeout(config.lookupd_poll_timeout)
            .user_agent(config.user_agent.clone())
            .build()
            .map_err(|err| Error::InvalidConfig {
                reason: format!("cannot build the lookupd HTTP client: {err}"),
            })?;
        Ok(Lookup {
            client,
            state: Mutex::new(State::default()),
            started: AtomicBool::new(false),
        })
    }
}

/// Adds a lookupd, polls every lookupd once, and starts the periodic poller if needed.
pub(crate) async fn add(shared: &Arc<Shared>, addr: String) -> Result<(), Error> {
    if shared.stop.is_cancelled() {
        return Err(Error::Closed);
    }
    lookup_url(&addr, &shared.topic)?;
    {
        let mut state = shared.lookup.state.lock().await;
        if state.lookupds.contains(&addr) {
            return Err(Error::AlreadyConnected { addr });
        }
        state.lookupds.push(addr);
    }
    poll(shared).await;
    if !shared.lookup.started.swap(true, Ordering::AcqRel) {
        shared.tasks.spawn(poll_loop(shared.clone()));
    }
    Ok(())
}

/// Polls every jittered interval until the consumer stops; faster while the topic is unknown.
async fn poll_loop(shared: Arc<Shared>) {
    let interval = shared.config.lookupd_poll_interval;
    let jitter = shared.config.lookupd_poll_jitter;
    let mut unknown_since: Option<tokio::time::Instant> = None;
    let mut backoff = FAST_POLL;
    loop {
        let found = shared.lookup.state.lock().await.found;
        let wait = if found {
            unknown_since = None;
            backoff = FAST_POLL;
            interval.mul_f64(1.0 - jitter * rand::random::<f64>())
        } else {
            let since = *unknown_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() >= FAST_FOR {
                backoff = backoff.saturating_mul(2);
            }
            backoff.min(interval)
        };
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = poll(&shared) => {}
        }
    }
}

/// Queries every lookupd and joins or drops brokers accordingly.
async fn poll(shared: &Arc<Shared>) {
    let mut state = shared.lookup.state.lock().await;
    let mut listed = HashSet::new();
    let mut complete = true;
    let mut failing = HashMap::new();
    for lookupd in &state.lookupds {
        let result = match lookup_url(lookupd, &shared.topic) {
            Ok(url) => query(&shared.lookup.client, url).await,
            Err(_invalid) => continue, // checked when added
        };
        match result {
            Ok(brokers) => {
                debug!(%lookupd, ?brokers, "lookup");
                listed.extend(brokers);
            }
            Err(err) => {
                complete = false;
                warn!(%lookupd, error = %err, "lookupd query failed");
                failing.insert(lookupd.clone(), error_chain(&err));
            }
        }
    }
    if shared.stop.is_cancelled() {
        return;
    }
    state.failing = failing;
    state.found = !listed.is_empty();
    if state.found {
        state.told_waiting = false;
    } else if complete && !state.told_waiting {
        state.told_waiting = true;
        tracing::info!(topic = %shared.topic, lookupds = ?state.lookupds, "no broker has the topic yet; asking lookupd every second");
    }
    for broker in &listed {
        state.missing.remove(broker);
        if !shared.has_broker(broker) {
            shared.join_discovered(broker);
        }
    }
    if complete {
        for broker in shared.discovered_brokers() {
            if listed.contains(&broker) {
                continue;
            }
            let missed = state.missing.entry(broker.clone()).or_insert(0);
            *missed += 1;
            if *missed >= MISSING_POLLS {
                state.missing.remove(&broker);
                shared.drop_discovered(&broker);
            }
        }
    }
}

/// An error with its sources (`reqwest` hides the useful part, e.g. "Connection refused").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// One `GET /lookup?topic=`: the brokers' TCP addresses.
async fn query(client: &reqwest::Client, url: Url) -> Result<Vec<String>, QueryError> {
    let resp = client
        .get(url)
        .header("Accept", "application/vnd.nsq; version=1.0")
        .send()
        .await?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        // TOPIC_NOT_FOUND: no broker has it (yet).
        return Ok(Vec::new());
    }
    if !status.is_success() {
        return Err(QueryError::Status(status.as_u16()));
    }
    let body = resp.bytes().await?;
    Ok(parse_producers(&body)?)
}

/// The URL of `lookupd`'s `/lookup` for `topic`; `lookupd` is `host:port` or an `http://` URL.
pub(crate) fn lookup_url(lookupd: &str, topic: &str) -> Result<Url, Error> {
    let base = if lookupd.contains("://") {
        lookupd.to_owned()
    } else {
        format!("http://{lookupd}")
    };
    let mut url = Url::parse(&base).map_err(|err| Error::InvalidConfig {
        reason: format!("invalid lookupd address {lookupd:?}: {err}"),
    })?;
    url.set_path("/lookup");
    url.query_pairs_mut().clear().append_pair("topic", topic);
    Ok(url)
}

#[derive(Debug, Deserialize)]
struct LookupBody {
    #[serde(default)]
    producers: Vec<Producer>,
    /// nsqlookupd before 1.0 wrapped its answer: `{"status_code":200,"data":{...}}`.
    #[serde(default)]
    data: Option<Box<LookupBody>>,
}

#[derive(Debug, Deserialize)]
struct Producer {
    broadcast_address: String,
    tcp_port: u16,
}

/// The brokers' `host:port` in a `/lookup` answer.
fn parse_producers(body: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    let mut parsed: LookupBody = serde_json::from_slice(body)?;
    if parsed.producers.is_empty()
        && let Some(data) = parsed.data.take()
    {
        parsed = *data;
    }
    Ok(parsed
        .producers
        .iter()
        .map(|p| join_host_port(&p.broadcast_address, p.tcp_port))
        .collect())
}

/// `host:port`, bracketing IPv6 literals.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lookup_answers() {
        let body = br#"{"channels":["c"],"producers":[
            {"remote_address":"127.0.0.1:5000","hostname":"h","broadcast_address":"10.0.0.5",
             "tcp_port":4150,"http_port":4151,"version":"1.3.0"},
            {"broadcast_address":"::1","tcp_port":4152}]}"#;
        assert_eq!(
            parse_producers(body).unwrap(),
            ["10.0.0.5:4150", "[::1]:4152"]
        );
        let old = br#"{"status_code":200,"status_txt":"OK","data":{"producers":[
            {"broadcast_address":"b","tcp_port":1}]}}"#;
        assert_eq!(parse_producers(old).unwrap(), ["b:1"]);
        assert!(
            parse_producers(br#"{"channels":[],"producers":[]}"#)
                .unwrap()
                .is_empty()
        );
        assert!(parse_producers(b"not json").is_err());
    }

    #[test]
    fn lookup_urls_encode_the_topic() {
        let url = lookup_url("127.0.0.1:4161", "t#ephemeral").unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:4161/lookup?topic=t%23ephemeral"
        );
        let url = lookup_url("http://lookupd.example:4161/", "t").unwrap();
        assert_eq!(url.as_str(), "http://lookupd.example:4161/lookup?topic=t");
        assert!(lookup_url("http://[bad", "t").is_err());
    }
}
