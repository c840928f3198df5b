//! Registration with lookupd (protocol "  V1"): for each `--lookupd-tcp-address` one task keeps a
//! connection open, IDENTIFYs, REGISTERs every topic and channel, follows creations and deletions
//! with REGISTER/UNREGISTER, PINGs every 15 s, and reconnects with backoff (re-registering
//! everything) when the connection breaks or lookupd restarts.
//!
//! A topic created here first asks the lookupds which channels they know for it
//! ([`channels_known`]) and is created with those (starting at its first message) before anyone
//! can publish to it, so consumers that subscribed elsewhere miss nothing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::{Bytes, BytesMut};
use ferry_proto::lookup::{self, LookupCommand, PeerInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, info, warn};

use crate::broker::{Broker, VERSION};

/// How often a registered broker PINGs each lookupd.
const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Longest wait for a connect or a reply.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// Largest reply accepted from lookupd.
const MAX_REPLY: usize = 1 << 20;

/// A topic or channel appeared or went away: a `REGISTER` or `UNREGISTER` for the lookupds.
pub type RegistryEvent = LookupCommand;

/// HTTP addresses of the lookupds this broker is registered with (learned from IDENTIFY).
#[derive(Debug, Default)]
pub struct LookupPeers {
    http: Mutex<HashMap<String, String>>,
    /// Configured lookupds whose first connection attempt has ended (identified or failed).
    tried: Mutex<HashSet<String>>,
    tried_changed: Notify,
}

impl LookupPeers {
    fn mark_tried(&self, tcp: &str) {
        let new = self
            .tried
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tcp.to_owned());
        if new {
            self.tried_changed.notify_waiters();
        }
    }

    /// Resolves once the first connection attempt to each of `configured` has ended, so that
    /// the HTTP address of every reachable one is known (just after start it is not yet).
    async fn first_attempts(&self, configured: &HashSet<&String>) {
        loop {
            let changed = self.tried_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let all = {
                let tried = self.tried.lock().unwrap_or_else(PoisonError::into_inner);
                configured.iter().all(|a| tried.contains(*a))
            };
            if all {
                return;
            }
            changed.await;
        }
    }

    fn set_http(&self, tcp: &str, http: String) {
        self.http
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tcp.to_owned(), http);
    }

    /// `host:port` of every known lookupd HTTP interface.
    pub fn http_addresses(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .http
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        v.sort();
        v
    }
}

/// Starts one registration task per configured lookupd.
pub(crate) fn start(broker: &Arc<Broker>) {
    for addr in broker.config.lookupd_tcp_addresses.clone() {
        let b = broker.clone();
        broker
            .tracker
            .spawn(async move { peer_loop(b, addr).await });
    }
}

async fn peer_loop(broker: Arc<Broker>, addr: String) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let outcome = tokio::select! {
            _ = broker.cancel.cancelled() => return,
            r = session(&broker, &addr, &mut backoff) => r,
        };
        broker.lookup_peers().mark_tried(&addr);
        match outcome {
            Ok(()) => return,
            Err(e) => {
                warn!(lookupd = %addr, error = %format!("{e:#}"), "lookupd connection lost; reconnecting")
            }
        }
        tokio::select! {
            _ = broker.cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection: identify, register everything, then follow events and ping.
async fn session(broker: &Arc<Broker>, addr: &str, backoff: &mut Duration) -> anyhow::Result<()> {
    let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
        .await
        .context("connect timed out")?
        .with_context(|| format!("cannot connect to {addr}"))?;
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        buf: BytesMut::new(),
    };
    conn.stream.write_all(&lookup::MAGIC).await?;
    // Subscribe before the full registration so nothing created meanwhile is missed.
    let mut events = broker.subscribe_events();
    let ports = broker.broadcast_ports();
    let me = PeerInfo {
        tcp_port: ports.tcp,
        http_port: ports.http,
        version: VERSION.to_owned(),
        hostname: gethostname::gethostname().to_string_lossy().into_owned(),
        broadcast_address: broker.config.broadcast_address(),
    };
    let reply = conn
        .call(&LookupCommand::Identify(Bytes::from(me.to_json())))
        .await?;
    let theirs: serde_json::Value =
        serde_json::from_slice(&reply).context("lookupd IDENTIFY reply is not JSON")?;
    if let Some(http_port) = theirs["http_port"].as_u64() {
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        broker
            .lookup_peers()
            .set_http(addr, format!("{host}:{http_port}"));
    }
    broker.lookup_peers().mark_tried(addr);
    let mut count = 0usize;
    for topic in broker.topics() {
        conn.expect_ok(&register(topic.name(), None)).await?;
        count += 1;
        for ch in topic.channels() {
            conn.expect_ok(&register(topic.name(), Some(ch.name())))
                .await?;
            count += 1;
        }
    }
    info!(lookupd = %addr, registrations = count, "registered with lookupd");
    *backoff = BACKOFF_MIN;
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    loop {
        tokio::select! {
            _ = broker.cancel.cancelled() => return Ok(()),
            _ = ping.tick() => conn.expect_ok(&LookupCommand::Ping).await?,
            // lookupd only ever answers; reading while idle notices at once that it went away
            // (restart, crash) instead of at the next PING.
            n = conn.stream.read_buf(&mut conn.buf) => match n? {
                0 => bail!("lookupd closed the connection"),
                _ => bail!("lookupd sent {} unsolicited bytes", conn.buf.len()),
            },
            ev = events.recv() => match ev {
                Ok(cmd) => conn.expect_ok(&cmd).await?,
                Err(RecvError::Lagged(n)) => bail!("missed {n} registry events; re-registering"),
                Err(RecvError::Closed) => return Ok(()),
            },
        }
    }
}

fn register(topic: &str, channel: Option<&str>) -> LookupCommand {
    LookupCommand::Register {
        topic: topic.to_owned(),
        channel: channel.map(str::to_owned),
    }
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    async fn call(&mut self, cmd: &LookupCommand) -> anyhow::Result<Bytes> {
        let mut out = BytesMut::new();
        cmd.encode(&mut out);
        self.stream.write_all(&out).await?;
        let fut = async {
            loop {
                if let Some(reply) = lookup::decode_response(&mut self.buf, MAX_REPLY)? {
                    return anyhow::Ok(reply);
                }
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    bail!("lookupd closed the connection");
                }
            }
        };
        tokio::time::timeout(IO_TIMEOUT, fut)
            .await
            .context("lookupd did not reply in time")?
    }

    async fn expect_ok(&mut self, cmd: &LookupCommand) -> anyhow::Result<()> {
        let reply = self.call(cmd).await?;
        if &reply[..] != b"OK" {
            bail!("lookupd answered {:?}", String::from_utf8_lossy(&reply));
        }
        debug!(?cmd, "lookupd OK");
        Ok(())
    }
}

/// The (non-ephemeral) channels the lookupds know for `topic`, asked of every lookupd at once
/// when a topic is created here. Bounded by the HTTP client's timeouts: a lookupd that does not
/// answer in time is skipped with a warning and the topic is created without its channels.
pub(crate) async fn channels_known(broker: &Arc<Broker>, topic: &str) -> Vec<String> {
    let limit =
        broker.config.http_client_connect_timeout + broker.config.http_client_request_timeout;
    let deadline = tokio::time::Instant::now() + limit;
    // Just after start a lookupd may not have answered IDENTIFY yet (its HTTP port comes with
    // the answer): wait for each one's first connection attempt, within the same bound.
    let configured: HashSet<&String> = broker.config.lookupd_tcp_addresses.iter().collect();
    if tokio::time::timeout_at(deadline, broker.lookup_peers().first_attempts(&configured))
        .await
        .is_err()
    {
        warn!(
            topic,
            "lookupd not reached in time; creating the topic without its channels"
        );
        return Vec::new();
    }
    let mut asks = tokio::task::JoinSet::new();
    for http in broker.lookup_peers().http_addresses() {
        // Topic names are URL-safe but for the '#' of "#ephemeral".
        let url = format!("http://{http}/channels?topic={}", topic.replace('#', "%23"));
        let client = broker.http_client().clone();
        asks.spawn(async move {
            let names = ask_channels(&client, &url).await;
            (http, names)
        });
    }
    let mut names: Vec<String> = Vec::new();
    let collect = async {
        while let Some(done) = asks.join_next().await {
            match done {
                Ok((_, Ok(found))) => names.extend(found),
                Ok((http, Err(e))) => warn!(
                    lookupd = %http, topic, error = %e,
                    "cannot ask lookupd for the topic's channels; creating the topic without them"
                ),
                Err(e) => warn!(error = %e, "lookupd channels query failed"),
            }
        }
    };
    if tokio::time::timeout_at(deadline, collect).await.is_err() {
        warn!(
            topic,
            "lookupd did not say the topic's channels in time; creating the topic without them"
        );
    }
    names.retain(|n| {
        ferry_proto::names::is_valid_channel_name(n) && !ferry_proto::names::is_ephemeral(n)
    });
    names.sort();
    names.dedup();
    names
}

/// One lookupd's `/channels` answer; a lookupd that does not know the topic answers none.
async fn ask_channels(client: &reqwest::Client, url: &str) -> anyhow::Result<Vec<String>> {
    let resp = client.get(url).send().await?;
    if !resp.status().is_success() {
        debug!(url, status = %resp.status(), "no channels from lookupd");
        return Ok(Vec::new());
    }
    let v: serde_json::Value = resp.json().await.context("bad /channels reply")?;
    Ok(v["channels"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}
