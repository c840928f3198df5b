//! `brokerd`: Ferry's broker as a library, so that `main`, the tests and `ferry dev` all start it
//! the same way.
//!
//! # Layout
//! - [`config`]: flags and config file (NSQ's names and defaults).
//! - [`broker`]: shared state: topics, clients, data directory.
//! - [`topic`], [`channel`]: the queue semantics over `ferry-store`'s log.
//! - `tcp`: the protocol V2 listener and one task per connection.
//! - [`http`]: nsqd's HTTP API.
//! - [`grpc`]: the gRPC API (`proto/ferry/v1/broker.proto`); [`grpc::pb`] has its generated
//!   client.
//! - [`stats`]: `/stats` in JSON and text.
//! - `prom`: `/metrics` in Prometheus text format, built from live state at each scrape.
//! - [`histogram`], [`latency`]: latency histograms for `/metrics` and the end-to-end latency
//!   window for `/stats`.
//! - [`limits`]: `--max-connections` per listener; connections over it are refused with a
//!   reason (`E_TOO_MANY_CONNECTIONS`, HTTP 503, gRPC `RESOURCE_EXHAUSTED`), never left hanging.
//! - `memory`: `malloc_trim` after many connections closed, so RSS goes back down.
//! - `rlimit`: raises the open-file limit at start and warns when it is too low.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! let config = ferry_brokerd::config::Config::for_tests("/tmp/ferry-data");
//! let server = ferry_brokerd::Server::bind(config).await?;
//! println!("TCP on {}", server.tcp_addr());
//! server.run(tokio_util::sync::CancellationToken::new()).await
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod auth;
pub mod broker;
pub mod channel;
pub mod client;
pub mod clock;
pub mod config;
pub mod creation;
pub mod dead_letter;
pub mod grpc;
pub mod histogram;
pub mod http;
pub mod latency;
pub mod limits;
pub mod lookup;
mod memory;
pub mod nsqd_import;
mod prom;
pub mod replication;
mod rlimit;
pub mod settings;
pub mod stats;
mod tcp;
pub mod tls;
pub mod topic;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::broker::Broker;
use crate::config::Config;
use crate::http::Ports;

/// A broker with its listeners bound, ready to [`run`](Server::run).
#[derive(Debug)]
pub struct Server {
    broker: Arc<Broker>,
    tcp: TcpListener,
    http: TcpListener,
    grpc: TcpListener,
    /// HTTPS, when TLS is configured.
    https: Option<TcpListener>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Server {
    /// Opens the data directory (recovering every topic) and binds the TCP, HTTP and gRPC
    /// listeners.
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        // Our own TLS configs name their provider; tonic's gRPC TLS takes the process default,
        // which rustls cannot pick by itself when more than one provider is compiled in.
        let _already_set = rustls::crypto::ring::default_provider().install_default();
        rlimit::raise_nofile(config.max_connections);
        let tls = tls::server_config(&config)?;
        let https = match &tls {
            Some(_) => Some(
                TcpListener::bind(config.https_address)
                    .await
                    .with_context(|| format!("cannot listen on HTTPS {}", config.https_address))?,
            ),
            None => None,
        };
        let tcp = TcpListener::bind(config.tcp_address)
            .await
            .with_context(|| format!("cannot listen on TCP {}", config.tcp_address))?;
        let http = TcpListener::bind(config.http_address)
            .await
            .with_context(|| format!("cannot listen on HTTP {}", config.http_address))?;
        let grpc = TcpListener::bind(config.grpc_address)
            .await
            .with_context(|| format!("cannot listen on gRPC {}", config.grpc_address))?;
        let broker =
            tokio::task::spawn_blocking(move || Broker::open(config, CancellationToken::new()))
                .await
                .context("broker start-up task failed")??;
        broker.set_ports(Ports {
            tcp: tcp.local_addr()?.port(),
            http: http.local_addr()?.port(),
        });
        // Replicated topics' nodes run before anything is served (their address is the HTTP
        // port, known now).
        broker.start_replicas().await?;
        Ok(Server {
            broker,
            tcp,
            http,
            grpc,
            https,
            tls,
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

    /// Bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Bound HTTPS address, when TLS is configured.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The broker's shared state.
    pub fn broker(&self) -> Arc<Broker> {
        self.broker.clone()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, closes connections (their
    /// in-flight messages go back to their channels), syncs every log and saves every channel's
    /// state. Returns when all of that is done.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Server {
            broker,
            tcp,
            http,
            grpc,
            https,
            tls,
        } = self;
        info!("TCP: listening on {}", tcp.local_addr()?);
        info!("HTTP: listening on {}", http.local_addr()?);
        info!("gRPC: listening on {}", grpc.local_addr()?);
        let tls = tls.map(tokio_rustls::TlsAcceptor::from);
        let stop = broker.cancel.clone();
        let tcp_task = tokio::spawn(tcp::serve(tcp, broker.clone(), stop.clone(), tls.clone()));
        let grpc_task = tokio::spawn(grpc::serve(grpc, broker.clone(), stop.clone()));
        lookup::start(&broker);
        dead_letter::start(&broker);
        let app = http::router(broker.clone());
        let https_task = match (https, tls) {
            (Some(listener), Some(acceptor)) => {
                info!("HTTPS: listening on {}", listener.local_addr()?);
                let listener = tcp::https::TlsListener::start(
                    listener,
                    acceptor,
                    broker.clone(),
                    stop.clone(),
                )?;
                let (app, https_stop) = (app.clone(), stop.clone());
                Some(tokio::spawn(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async move { https_stop.cancelled().await })
                        .await
                }))
            }
            _ => None,
        };
        let app = if broker.config.tls_required_http() {
            http::require_tls(app)
        } else {
            app
        };
        let http_stop = stop.clone();
        let http = tcp::http::HttpListener::new(http, broker.clone());
        let http_task = tokio::spawn(async move {
            axum::serve(http, app)
                .with_graceful_shutdown(async move { http_stop.cancelled().await })
                .await
        });
        shutdown.cancelled().await;
        info!("shutting down");
        broker.replication().shutdown_all().await;
        stop.cancel();
        let _ = tcp_task.await;
        for task in std::iter::once(http_task).chain(https_task) {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server error"),
                Err(e) => tracing::warn!(error = %e, "HTTP task failed"),
            }
        }
        match grpc_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server error"),
            Err(e) => tracing::warn!(error = %e, "gRPC task failed"),
        }
        broker.tracker.close();
        broker.tracker.wait().await;
        let b = broker.clone();
        tokio::task::spawn_blocking(move || b.sync_all())
            .await
            .context("final sync task failed")?;
        info!("stopped");
        Ok(())
    }
}

/// Binds and serves until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    Server::bind(config).await?.run(shutdown).await
}
