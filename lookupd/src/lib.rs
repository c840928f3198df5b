//! `lookupd`: Ferry's lookup daemon as a library, so that `main`, the tests and `ferry dev` all
//! start it the same way. Wire-compatible with nsqlookupd 1.3: brokers (Ferry's or nsqd)
//! register over TCP, consumers (go-nsq, pynsq, Ferry's client) and nsqadmin ask over HTTP.
//!
//! ```text
//! brokers ──"  V1" TCP :4160──▶ tcp (one task per broker) ──┐
//!                                                          ├─▶ Shared { Mutex<RegistrationDb> }
//! clients ────── HTTP :4161──▶ http (axum handlers) ───────┘
//! ```
//!
//! # Layout
//! - [`config`]: flags and config file (nsqlookupd's names and defaults).
//! - [`db`]: the registration database (plain data, time passed in).
//! - [`shared`]: the database behind its lock, and this daemon's identity.
//! - `tcp`: the protocol V1 listener and one task per broker connection.
//! - [`http`]: nsqlookupd's HTTP API.
//! - `prom`: `/metrics` in Prometheus text format, built from live state at each scrape.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! let config = ferry_lookupd::config::Config::for_tests();
//! let server = ferry_lookupd::Server::bind(config).await?;
//! println!("TCP on {}, HTTP on {}", server.tcp_addr(), server.http_addr());
//! server.run(tokio_util::sync::CancellationToken::new()).await
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod config;
pub mod db;
pub mod http;
mod prom;
pub mod shared;
mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Config;
use crate::shared::Shared;

/// Version reported in `/info` and the IDENTIFY reply.
pub const VERSION: &str = concat!("ferry-", env!("CARGO_PKG_VERSION"));

/// A lookup daemon with its listeners bound, ready to [`run`](Server::run).
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    tcp: TcpListener,
    http: TcpListener,
    max_connections: usize,
}

impl Server {
    /// Binds the TCP and HTTP listeners.
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        let tcp = TcpListener::bind(config.tcp_address)
            .await
            .with_context(|| format!("cannot listen on TCP {}", config.tcp_address))?;
        let http = TcpListener::bind(config.http_address)
            .await
            .with_context(|| format!("cannot listen on HTTP {}", config.http_address))?;
        let shared = Arc::new(Shared::new(
            &config,
            tcp.local_addr()?.port(),
            http.local_addr()?.port(),
        ));
        Ok(Server {
            shared,
            tcp,
            http,
            max_connections: config.max_connections,
        })
    }

    /// Bound TCP address.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The daemon's shared state (the registration database).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, closes every broker
    /// connection and returns when their tasks and the HTTP server are done.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Server {
            shared,
            tcp,
            http,
            max_connections,
        } = self;
        info!("TCP: listening on {}", tcp.local_addr()?);
        info!("HTTP: listening on {}", http.local_addr()?);
        let stop = shared.cancel.clone();
        let tcp_task = tokio::spawn(tcp::serve(tcp, shared.clone(), max_connections));
        let app = http::router(shared.clone());
        let http_stop = stop.clone();
        let http_task = tokio::spawn(async move {
            axum::serve(http, app)
                .with_graceful_shutdown(async move { http_stop.cancelled().await })
                .await
        });
        shutdown.cancelled().await;
        info!("shutting down");
        stop.cancel();
        if let Err(e) = tcp_task.await {
            tracing::warn!(error = %e, "TCP task failed");
        }
        match http_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server error"),
            Err(e) => tracing::warn!(error = %e, "HTTP task failed"),
        }
        shared.tracker.close();
        shared.tracker.wait().await;
        info!("stopped");
        Ok(())
    }
}

/// Binds and serves until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    Server::bind(config).await?.run(shutdown).await
}
