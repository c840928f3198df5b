//! The HTML pages and their live updates.
//!
//! Every page is a full server-rendered document (it reads fine without JavaScript), whose
//! changing parts are fragments the page shares with the event stream: `/events` sends, every
//! `--refresh-interval`, the `live` fragment (tables), the `toolbar` fragment (actions that
//! depend on state, e.g. Pause vs Unpause), on topic and channel pages `history` (chart
//! data as JSON), and on every page `alerts-badge` (the navigation's count of active alerts). htmx's SSE extension swaps the fragments in; `app.js` feeds the charts. A
//! stream sends an event only when its content changed, and ends on shutdown.

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures_util::stream;
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;

use super::AppState;
use crate::alerts::AlertsView;
use crate::history::{Chart, SeriesKey};
use crate::lookup::{self, LookupView};
use crate::views::{self, ChannelView, NodesView, TopicView, TopicsView};

type AppStateRef = State<Arc<AppState>>;

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(topics_page))
        .route("/topics", get(topics_page))
        .route("/topics/{topic}", get(topic_page))
        .route("/topics/{topic}/{channel}", get(channel_page))
        .route("/nodes", get(nodes_page))
        .route("/lookup", get(lookup_page))
        .route("/alerts", get(alerts_page))
        .route("/events", get(events))
}

/// Version for cache-busting static links.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What every page's frame needs.
struct Frame {
    title: String,
    nav: &'static str,
    admin: bool,
    live_url: String,
    version: &'static str,
    /// Active alerts, for the navigation badge.
    alerts: usize,
}

impl Frame {
    fn new(
        s: &AppState,
        title: String,
        nav: &'static str,
        headers: &HeaderMap,
        live_url: String,
    ) -> Frame {
        Frame {
            title,
            nav,
            admin: s.is_admin(headers),
            live_url,
            version: VERSION,
            alerts: s.alerts.active_count(),
        }
    }
}

/// Chart settings rendered into the page for `app.js`.
struct ChartInfo {
    /// Initial data (JSON: numbers and nulls only).
    json: String,
    sample_secs: f64,
    window: String,
    /// A channel's charts (first deliveries; its own depth), else a topic's (published; the
    /// total of its channels' depths).
    channel: bool,
}

impl ChartInfo {
    fn new(state: &AppState, chart: &Chart, channel: bool) -> ChartInfo {
        ChartInfo {
            channel,
            json: serde_json::to_string(chart).unwrap_or_else(|_| "{}".into()),
            sample_secs: state.sample_interval.as_secs_f64(),
            window: humantime::format_duration(state.history_window).to_string(),
        }
    }
}

#[derive(Template)]
#[template(path = "topics.html")]
struct TopicsPage<'a> {
    f: Frame,
    v: &'a TopicsView,
}

#[derive(Template)]
#[template(path = "topics_live.html")]
struct TopicsLive<'a> {
    v: &'a TopicsView,
}

#[derive(Template)]
#[template(path = "topic.html")]
struct TopicPage<'a> {
    f: Frame,
    admin: bool,
    v: &'a TopicView,
    chart: ChartInfo,
}

#[derive(Template)]
#[template(path = "topic_live.html")]
struct TopicLive<'a> {
    v: &'a TopicView,
}

#[derive(Template)]
#[template(path = "topic_toolbar.html")]
struct TopicToolbar<'a> {
    v: &'a TopicView,
    admin: bool,
}

#[derive(Template)]
#[template(path = "channel.html")]
struct ChannelPage<'a> {
    f: Frame,
    admin: bool,
    v: &'a ChannelView,
    chart: ChartInfo,
}

#[derive(Template)]
#[template(path = "channel_live.html")]
struct ChannelLive<'a> {
    v: &'a ChannelView,
}

#[derive(Template)]
#[template(path = "channel_toolbar.html")]
struct ChannelToolbar<'a> {
    v: &'a ChannelView,
    admin: bool,
}

#[derive(Template)]
#[template(path = "nodes.html")]
struct NodesPage<'a> {
    f: Frame,
    v: &'a NodesView,
}

#[derive(Template)]
#[template(path = "nodes_live.html")]
struct NodesLive<'a> {
    v: &'a NodesView,
}

#[derive(Template)]
#[template(path = "lookup.html")]
struct LookupPage<'a> {
    f: Frame,
    v: &'a LookupView,
}

#[derive(Template)]
#[template(path = "lookup_live.html")]
struct LookupLive<'a> {
    v: &'a LookupView,
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage<'a> {
    f: Frame,
    v: &'a AlertsView,
}

#[derive(Template)]
#[template(path = "alerts_live.html")]
struct AlertsLive<'a> {
    v: &'a AlertsView,
}

/// The navigation's count of active alerts, on every page.
#[derive(Template)]
#[template(path = "alerts_badge.html")]
struct AlertsBadge {
    n: usize,
}

/// Renders a template, or a 500 naming the failure (a bug, not a cluster problem).
fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("rendering failed: {e}"),
            )
                .into_response()
        }
    }
}

fn events_url(view: &str, topic: Option<&str>, channel: Option<&str>) -> String {
    let mut pairs = vec![("view", view)];
    if let Some(t) = topic {
        pairs.push(("topic", t));
    }
    if let Some(c) = channel {
        pairs.push(("channel", c));
    }
    format!("/events{}", crate::upstream::query(&pairs))
}

async fn topics_page(State(s): AppStateRef, headers: HeaderMap) -> Response {
    let snap = s.cluster.snapshot(s.max_age()).await;
    let v = views::topics(&snap, &s.history).with_alerts(&s.alerts.counts());
    let f = Frame::new(
        &s,
        "Topics".into(),
        "topics",
        &headers,
        events_url("topics", None, None),
    );
    render(&TopicsPage { f, v: &v })
}

async fn topic_page(
    State(s): AppStateRef,
    Path(topic): Path<String>,
    headers: HeaderMap,
) -> Response {
    let snap = s.cluster.snapshot(s.max_age()).await;
    let v = views::topic(&snap, &s.history, &topic).with_alerts(&s.alerts.counts());
    let chart = ChartInfo::new(&s, &s.history.chart(&SeriesKey::topic(&topic)), false);
    let f = Frame::new(
        &s,
        format!("Topic {topic}"),
        "topics",
        &headers,
        events_url("topic", Some(&topic), None),
    );
    render(&TopicPage {
        admin: f.admin,
        f,
        v: &v,
        chart,
    })
}

async fn channel_page(
    State(s): AppStateRef,
    Path((topic, channel)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let snap = s.cluster.snapshot(s.max_age()).await;
    let v = views::channel(&snap, &s.history, &topic, &channel);
    let key = SeriesKey::channel(&topic, &channel);
    let chart = ChartInfo::new(&s, &s.history.chart(&key), true);
    let f = Frame::new(
        &s,
        format!("Channel {topic}/{channel}"),
        "topics",
        &headers,
        events_url("channel", Some(&topic), Some(&channel)),
    );
    render(&ChannelPage {
        admin: f.admin,
        f,
        v: &v,
        chart,
    })
}

async fn nodes_page(State(s): AppStateRef, headers: HeaderMap) -> Response {
    let snap = s.cluster.snapshot(s.max_age()).await;
    let v = views::nodes(&snap);
    let f = Frame::new(
        &s,
        "Nodes".into(),
        "nodes",
        &headers,
        events_url("nodes", None, None),
    );
    render(&NodesPage { f, v: &v })
}

async fn lookup_page(State(s): AppStateRef, headers: HeaderMap) -> Response {
    let snap = s.cluster.snapshot(s.max_age()).await;
    let v = lookup::view(&s.cluster, &snap).await;
    let f = Frame::new(
        &s,
        "Lookup".into(),
        "lookup",
        &headers,
        events_url("lookup", None, None),
    );
    render(&LookupPage { f, v: &v })
}

async fn alerts_page(State(s): AppStateRef, headers: HeaderMap) -> Response {
    let v = s.alerts.view();
    let f = Frame::new(
        &s,
        "Alerts".into(),
        "alerts",
        &headers,
        events_url("alerts", None, None),
    );
    render(&AlertsPage { f, v: &v })
}

/// Which page a stream feeds.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct EventsQuery {
    view: String,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    channel: String,
}

/// One stream's state between ticks.
struct Stream {
    state: Arc<AppState>,
    query: EventsQuery,
    admin: bool,
    tick: tokio::time::Interval,
    /// Last payload sent per event name, to send only changes.
    sent: Vec<(&'static str, String)>,
    pending: Vec<Event>,
    _permit: OwnedSemaphorePermit,
}

impl Stream {
    /// The fragments for this view, rendered from the current snapshot.
    async fn render(&self) -> Vec<(&'static str, String)> {
        let s = &self.state;
        let snap = s.cluster.snapshot(s.max_age()).await;
        let q = &self.query;
        let out = match q.view.as_str() {
            "topics" => {
                let v = views::topics(&snap, &s.history).with_alerts(&s.alerts.counts());
                vec![("live", TopicsLive { v: &v }.render())]
            }
            "topic" => {
                let v = views::topic(&snap, &s.history, &q.topic).with_alerts(&s.alerts.counts());
                let chart = s.history.chart(&SeriesKey::topic(&q.topic));
                vec![
                    ("live", TopicLive { v: &v }.render()),
                    (
                        "toolbar",
                        TopicToolbar {
                            v: &v,
                            admin: self.admin,
                        }
                        .render(),
                    ),
                    ("history", Ok(json(&chart))),
                ]
            }
            "channel" => {
                let v = views::channel(&snap, &s.history, &q.topic, &q.channel);
                let chart = s.history.chart(&SeriesKey::channel(&q.topic, &q.channel));
                vec![
                    ("live", ChannelLive { v: &v }.render()),
                    (
                        "toolbar",
                        ChannelToolbar {
                            v: &v,
                            admin: self.admin,
                        }
                        .render(),
                    ),
                    ("history", Ok(json(&chart))),
                ]
            }
            "nodes" => {
                let v = views::nodes(&snap);
                vec![("live", NodesLive { v: &v }.render())]
            }
            "lookup" => {
                let v = lookup::view(&s.cluster, &snap).await;
                vec![("live", LookupLive { v: &v }.render())]
            }
            "alerts" => {
                let v = s.alerts.view();
                vec![("live", AlertsLive { v: &v }.render())]
            }
            _ => Vec::new(),
        };
        let badge = AlertsBadge {
            n: s.alerts.active_count(),
        };
        out.into_iter()
            .chain([("alerts-badge", badge.render())])
            .filter_map(|(name, r)| match r {
                Ok(text) => Some((name, text)),
                Err(e) => {
                    tracing::error!(error = %e, "fragment rendering failed");
                    None
                }
            })
            .collect()
    }

    /// Queues an event for every fragment that changed since it was last sent.
    fn queue_changes(&mut self, fragments: Vec<(&'static str, String)>) {
        for (name, text) in fragments {
            match self.sent.iter_mut().find(|(n, _)| *n == name) {
                Some((_, last)) if *last == text => continue,
                Some((_, last)) => *last = text.clone(),
                None => self.sent.push((name, text.clone())),
            }
            self.pending.push(Event::default().event(name).data(text));
        }
    }
}

fn json(chart: &Chart) -> String {
    serde_json::to_string(chart).unwrap_or_else(|_| "{}".into())
}

async fn events(
    State(s): AppStateRef,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Response {
    if !matches!(
        query.view.as_str(),
        "topics" | "topic" | "channel" | "nodes" | "lookup" | "alerts"
    ) {
        return (StatusCode::BAD_REQUEST, "unknown view").into_response();
    }
    let Ok(permit) = s.live_clients.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live pages (--max-live-clients)",
        )
            .into_response();
    };
    let mut tick = tokio::time::interval(s.refresh_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let init = Stream {
        admin: s.is_admin(&headers),
        state: s.clone(),
        query,
        tick,
        sent: Vec::new(),
        pending: Vec::new(),
        _permit: permit,
    };
    let events = stream::unfold(init, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop() {
                return Some((Ok::<_, std::convert::Infallible>(ev), st));
            }
            let shutdown = st.state.shutdown.clone();
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = st.tick.tick() => {}
            }
            let fragments = tokio::select! {
                _ = shutdown.cancelled() => return None,
                f = st.render() => f,
            };
            st.queue_changes(fragments);
            // Sent in the order rendered (pop takes from the end).
            st.pending.reverse();
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
