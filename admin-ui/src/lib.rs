//! `admin-ui`: Ferry's operator dashboard as a library, so that `main`, the tests and
//! `ferry dev` all start it the same way. It shows what nsqadmin shows (topics, channels,
//! clients, nodes, lookupd registrations, with pause/unpause/empty/delete/create actions) and
//! what nsqadmin does not: pages that update live and charts of each topic's and channel's
//! rate and depth over the last hour, from samples kept in memory; and, with Ferry's brokers,
//! topic retention, channel max age / max attempts / dead-letter topic, rewinding a channel to
//! a time, and peeking at the messages a channel would deliver next.
//!
//! ```text
//! lookupds ── /nodes /topics /lookup ──┐
//!                                     ├─▶ Cluster::snapshot (cached) ─▶ views ─▶ pages, /api, /events
//! brokers ─── /stats?format=json ─────┘          ▲
//!                                     sampler task (every --sample-interval) ─▶ History, Alerts ─▶ webhooks
//! ```
//!
//! # Layout
//! - [`config`]: flags (nsqadmin's names where it has them).
//! - [`nsq`]: the upstream JSON documents, parsed leniently (nsqd 1.x, nsqlookupd, brokerd).
//! - [`upstream`]: the HTTP client for brokers and lookupds (timeouts, limits, errors).
//! - [`cluster`]: discovery and the cached [`cluster::Snapshot`].
//! - [`history`]: the sampled series for charts, and the sampler task.
//! - [`alerts`]: the built-in alert rules, evaluated at every sample, and webhook
//!   notifications.
//! - [`replication`]: replicated topics: which copy counts towards totals, each group's
//!   members.
//! - [`views`], [`lookup`]: what each page shows, as plain data.
//! - [`actions`]: pause/unpause/empty/delete/create, retention and channel settings, and
//!   rewind, across brokers and lookupds.
//! - [`peek`]: the next messages of a channel, from every broker holding it.
//! - [`settings`]: retention and channel settings as the pages show them.
//! - [`http`]: routes, templates, server-sent events, static files.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! let mut config = ferry_admin_ui::config::Config::for_tests();
//! config.lookupd_http_addresses.push("127.0.0.1:4161".into());
//! let server = ferry_admin_ui::Server::bind(config).await?;
//! println!("dashboard on http://{}", server.http_addr());
//! server.run(tokio_util::sync::CancellationToken::new()).await
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod actions;
pub mod alerts;
pub mod cluster;
pub mod config;
pub mod history;
pub mod http;
pub mod lookup;
pub mod metrics;
pub mod nsq;
pub mod peek;
pub mod replication;
pub mod settings;
pub mod upstream;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::alerts::Alerts;
use crate::alerts::webhook::{self, Delivery};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::history::History;

/// The dashboard with its listener bound, ready to [`run`](Server::run).
#[derive(Debug)]
pub struct Server {
    config: Config,
    http: TcpListener,
    cluster: Arc<Cluster>,
    history: Arc<History>,
    alerts: Arc<Alerts>,
    deliveries: Vec<Delivery>,
}

impl Server {
    /// Checks the configuration and binds the HTTP listener.
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        config.validate().map_err(anyhow::Error::msg)?;
        let http = TcpListener::bind(config.http_address)
            .await
            .with_context(|| format!("cannot listen on HTTP {}", config.http_address))?;
        let cluster = Arc::new(Cluster::new(&config)?);
        let history = Arc::new(History::new(
            config.history_len(),
            config.max_history_series,
            config.history,
        ));
        let (webhooks, deliveries) = webhook::channels(&config)?;
        let alerts = Arc::new(Alerts::new(&config, webhooks));
        Ok(Server {
            config,
            http,
            cluster,
            history,
            alerts,
            deliveries,
        })
    }

    /// Bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The sampled history (for tests and embedding).
    pub fn history(&self) -> Arc<History> {
        self.history.clone()
    }

    /// The alerts (for tests and embedding).
    pub fn alerts(&self) -> Arc<Alerts> {
        self.alerts.clone()
    }

    /// Serves until `shutdown` is cancelled; then ends the live streams and the sampler and
    /// returns when the HTTP server has stopped (webhook deliveries still queued are abandoned).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Server {
            config,
            http,
            cluster,
            history,
            alerts,
            deliveries,
        } = self;
        info!("HTTP: listening on {}", http.local_addr()?);
        if config.lookupd_http_addresses.is_empty() && config.broker_http_addresses.is_empty() {
            tracing::warn!(
                "no --lookupd-http-address or --broker-http-address given: nothing to show"
            );
        }
        let stop = shutdown.child_token();
        let tasks = tokio_util::task::TaskTracker::new();
        for d in deliveries {
            tasks.spawn(d.run(stop.clone()));
        }
        let sampler = tokio::spawn(history::run_sampler(
            cluster.clone(),
            history.clone(),
            alerts.clone(),
            config.sample_interval,
            stop.clone(),
        ));
        let state = Arc::new(http::AppState::new(
            &config,
            cluster,
            history,
            alerts,
            stop.clone(),
        ));
        let app = http::router(state);
        let http_stop = stop.clone();
        let served = axum::serve(http, app)
            .with_graceful_shutdown(async move { http_stop.cancelled().await })
            .await;
        stop.cancel();
        if let Err(e) = sampler.await {
            tracing::warn!(error = %e, "sampler task failed");
        }
        tasks.close();
        tasks.wait().await;
        served.context("HTTP server error")?;
        info!("stopped");
        Ok(())
    }
}

/// Binds and serves until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    Server::bind(config).await?.run(shutdown).await
}
