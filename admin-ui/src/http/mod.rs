//! admin-ui's HTTP side: HTML pages with live updates (`pages`), the JSON API and actions
//! (`api`), and the static files (htmx, its SSE extension, uPlot, our CSS and JS), which are
//! compiled into the binary so the dashboard works with no network beyond the cluster.
//!
//! ```text
//! GET  /  /topics  /topics/{t}  /topics/{t}/{c}  /nodes  /lookup  /alerts   HTML pages
//! GET  /events?view=topics|topic|channel|nodes|lookup|alerts&topic=&channel=  server-sent events
//! GET  /api/topics  /api/topics/{t}  /api/topics/{t}/{c}  /api/nodes  /api/lookup
//! GET  /api/alerts                                                   active + resolved (#18)
//! GET  /api/history/{t}  /api/history/{t}/{c}                        chart data
//! POST /api/topics                 {"topic","channel"?,"replicas"?}  create (lookupds; replicas > 1: one broker)
//! POST /api/topics/{t}[/{c}]       {"action":"pause|unpause|empty"}  on every holder
//! POST /api/topics/{t}             {"action":"config","retention"?,"retention_bytes"?}
//! POST /api/topics/{t}/{c}         {"action":"config","max_age"?,"max_attempts"?,"dead_letter_topic"?}
//! POST /api/topics/{t}/{c}         {"action":"rewind","to"}          on every holder (#17)
//! DELETE /api/topics/{t}[/{c}]                                       brokers + lookupds
//! GET  /api/peek/{t}/{c}?n=10                                        next messages (#17)
//! ```
//! Actions accept JSON or a form body; they answer JSON, or an HTML fragment when htmx asks
//! (`HX-Request`). With `--admin-user` set, an action or a peek needs `--acl-http-header` to
//! name one. Every request but GET/HEAD/OPTIONS passes the cross-site guard first (`csrf`):
//! a POST needs a JSON body or `X-Ferry-Action`, and an `Origin`, when sent, must be this host.

mod api;
mod csrf;
mod pages;

pub use csrf::ACTION_HEADER;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::alerts::Alerts;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::history::History;

/// Everything a handler needs.
#[derive(Debug)]
pub struct AppState {
    /// The cluster and its cached snapshot.
    pub cluster: Arc<Cluster>,
    /// Sampled history.
    pub history: Arc<History>,
    /// Alerts.
    pub alerts: Arc<Alerts>,
    /// Users allowed to act (empty: everyone).
    pub admin_users: Vec<String>,
    /// Header naming the user.
    pub acl_http_header: String,
    /// How often live pages are refreshed.
    pub refresh_interval: Duration,
    /// How often history is sampled (shown on the charts).
    pub sample_interval: Duration,
    /// History window (shown on the charts).
    pub history_window: Duration,
    /// One permit per live event stream.
    pub live_clients: Arc<Semaphore>,
    /// Fires on shutdown, ending event streams so that the server can stop.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// State for `config`.
    pub fn new(
        config: &Config,
        cluster: Arc<Cluster>,
        history: Arc<History>,
        alerts: Arc<Alerts>,
        shutdown: CancellationToken,
    ) -> AppState {
        AppState {
            cluster,
            history,
            alerts,
            admin_users: config.admin_users.clone(),
            acl_http_header: config.acl_http_header.clone(),
            refresh_interval: config.refresh_interval,
            sample_interval: config.sample_interval,
            history_window: config.history,
            live_clients: Arc::new(Semaphore::new(config.max_live_clients)),
            shutdown,
        }
    }

    /// nsqadmin's rule: with no admin users everyone may act; otherwise the ACL header must
    /// name one of them.
    pub fn is_admin(&self, headers: &HeaderMap) -> bool {
        if self.admin_users.is_empty() {
            return true;
        }
        headers
            .get(self.acl_http_header.as_str())
            .and_then(|v| v.to_str().ok())
            .is_some_and(|user| self.admin_users.iter().any(|a| a == user))
    }

    /// How fresh a snapshot a page or stream asks for: half the refresh interval.
    fn max_age(&self) -> Duration {
        self.refresh_interval / 2
    }
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ping", get(|| async { "OK" }))
        .route("/static/{file}", get(static_file))
        .merge(pages::routes())
        .merge(api::routes())
        .layer(axum::middleware::from_fn(csrf::guard))
        .with_state(state)
}

/// Files served under `/static/`, compiled in.
const STATIC: &[(&str, &str, &[u8])] = &[
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/htmx.min.js"),
    ),
    (
        "htmx-ext-sse.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/htmx-ext-sse.min.js"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../static/uPlot.min.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../static/app.css"),
    ),
    (
        "THIRD-PARTY-LICENSES.md",
        "text/plain; charset=utf-8",
        include_bytes!("../../static/THIRD-PARTY-LICENSES.md"),
    ),
];

async fn static_file(Path(file): Path<String>) -> Response {
    match STATIC.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                // Links carry ?v=<version>, so a new binary's files are fetched anew.
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

/// Whether htmx made the request (it then wants an HTML fragment).
fn is_htmx(headers: &HeaderMap) -> bool {
    headers.contains_key("hx-request")
}
