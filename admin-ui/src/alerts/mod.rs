//! Alerts: the built-in [`rules`] evaluated at every sample, the alerts they raise, and the
//! [`webhook`] notifications.
//!
//! ```text
//! sampler ─ Snapshot ─▶ Alerts::observe ─▶ Rules::evaluate ─▶ findings
//!                            │ a finding with no active alert: fire (since = now)
//!                            │ an active alert with no finding: resolve (into the bounded ring)
//!                            └─▶ Webhooks::send (try_send into each URL's bounded queue)
//! ```
//!
//! An alert is identified by its rule and subject (a channel, a broker, or a replicated
//! topic's member): one of each at a
//! time. Active alerts are shown by `/alerts`, `/api/alerts`, the navigation badge and the
//! rows of the topics they concern; at most `--alert-max-resolved` resolved ones are kept.

mod replica;
pub mod rules;
pub mod webhook;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

use crate::cluster::Snapshot;
use crate::config::Config;
use crate::settings;
use rules::{Finding, Rule, Rules, Subject, Thresholds};
use webhook::Webhooks;

/// Whether an alert still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The rule holds.
    Firing,
    /// The rule stopped holding.
    Resolved,
}

/// One alert, as the API returns it and webhooks receive it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Alert {
    /// Rule name (`depth_rising`, `broker_down`...).
    pub rule: Rule,
    /// `firing` or `resolved`.
    pub state: AlertState,
    /// Topic, for channel and replica rules.
    pub topic: Option<String>,
    /// Channel, for channel rules.
    pub channel: Option<String>,
    /// Broker HTTP address, for broker rules; the lost member's, for `replica_lost`.
    pub broker: Option<String>,
    /// The value that made the rule hold (latest while firing).
    pub value: Value,
    /// One line for people.
    pub summary: String,
    /// When it fired (RFC 3339).
    pub since: String,
    /// When it fired (Unix ms).
    pub since_ms: u64,
    /// When it resolved (RFC 3339).
    pub resolved: Option<String>,
    /// When it resolved (Unix ms).
    pub resolved_ms: Option<u64>,
    /// The dashboard page of its subject.
    pub link: String,
}

impl Alert {
    fn new(rule: Rule, subject: &Subject, finding: Finding, now: SystemTime) -> Alert {
        let (topic, channel, broker, link) = match subject {
            Subject::Channel { topic, channel } => (
                Some(topic.clone()),
                Some(channel.clone()),
                None,
                format!("/topics/{}/{}", encode(topic), encode(channel)),
            ),
            Subject::Broker(addr) => (None, None, Some(addr.clone()), "/nodes".to_owned()),
            Subject::Replica { topic, address } => (
                Some(topic.clone()),
                None,
                address.clone(),
                format!("/topics/{}", encode(topic)),
            ),
        };
        Alert {
            rule,
            state: AlertState::Firing,
            topic,
            channel,
            broker,
            value: finding.value,
            summary: finding.summary,
            since: rfc3339(now),
            since_ms: unix_ms(now),
            resolved: None,
            resolved_ms: None,
            link,
        }
    }

    /// "2026-12-05 10:00:00 UTC (3m 5s ago)".
    pub fn since_display(&self) -> String {
        format!(
            "{} ({})",
            settings::time_ms(self.since_ms),
            settings::relative_ms(self.since_ms)
        )
    }

    /// When it resolved, as [`since_display`](Alert::since_display), or "–".
    pub fn resolved_display(&self) -> String {
        match self.resolved_ms {
            Some(ms) => format!("{} ({})", settings::time_ms(ms), settings::relative_ms(ms)),
            None => "–".into(),
        }
    }

    /// What it is about: "topic/channel", the broker's address, or for a replicated topic
    /// "topic@member address" (just "topic" when the group has no leader).
    pub fn subject(&self) -> String {
        match (&self.topic, &self.channel, &self.broker) {
            (Some(t), Some(c), _) => format!("{t}/{c}"),
            (Some(t), None, Some(b)) => format!("{t}@{b}"),
            (Some(t), None, None) => t.clone(),
            (None, _, Some(b)) => b.clone(),
            _ => String::new(),
        }
    }

    /// The rule's name.
    pub fn rule_name(&self) -> &'static str {
        self.rule.name()
    }

    /// Slack-style one-liner: "[FIRING] depth_rising orders/ch1: ...".
    pub fn text(&self) -> String {
        let state = match self.state {
            AlertState::Firing => "FIRING",
            AlertState::Resolved => "RESOLVED",
        };
        format!(
            "[{state}] {} {}: {}",
            self.rule.name(),
            self.subject(),
            self.summary
        )
    }
}

/// The alerts page and `/api/alerts`.
#[derive(Debug, Clone, Serialize)]
pub struct AlertsView {
    /// Active alerts, oldest first.
    pub active: Vec<Alert>,
    /// Recently resolved ones, newest first.
    pub resolved: Vec<Alert>,
}

#[derive(Debug)]
struct State {
    rules: Rules,
    active: BTreeMap<(Rule, Subject), Alert>,
    resolved: VecDeque<Alert>,
}

/// The alerts, behind one lock.
#[derive(Debug)]
pub struct Alerts {
    // Held to evaluate one snapshot or to copy the alerts out: never across an await.
    state: Mutex<State>,
    max_resolved: usize,
    webhooks: Webhooks,
}

impl Alerts {
    /// Alerts for `config`'s rules, notifying through `webhooks`.
    pub fn new(config: &Config, webhooks: Webhooks) -> Alerts {
        Alerts {
            state: Mutex::new(State {
                rules: Rules::new(Thresholds::new(config)),
                active: BTreeMap::new(),
                resolved: VecDeque::new(),
            }),
            max_resolved: config.alert_max_resolved,
            webhooks,
        }
    }

    /// Evaluates the rules at `snapshot`: fires and resolves alerts, and queues their
    /// notifications (never waiting for them).
    pub fn observe(&self, snapshot: &Snapshot) {
        let now = snapshot.taken;
        let mut changed = Vec::new();
        {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let findings = st.rules.evaluate(snapshot);
            let ended: Vec<(Rule, Subject)> = st
                .active
                .keys()
                .filter(|k| !findings.contains_key(k))
                .cloned()
                .collect();
            for key in ended {
                let Some(mut alert) = st.active.remove(&key) else {
                    continue;
                };
                alert.state = AlertState::Resolved;
                alert.resolved = Some(rfc3339(now));
                alert.resolved_ms = Some(unix_ms(now));
                changed.push(alert.clone());
                st.resolved.push_front(alert);
                st.resolved.truncate(self.max_resolved);
            }
            for (key, finding) in findings {
                match st.active.get_mut(&key) {
                    Some(alert) => {
                        alert.value = finding.value;
                        alert.summary = finding.summary;
                    }
                    None => {
                        let alert = Alert::new(key.0, &key.1, finding, now);
                        changed.push(alert.clone());
                        st.active.insert(key, alert);
                    }
                }
            }
        }
        for alert in changed {
            tracing::info!(rule = alert.rule.name(), subject = %alert.subject(), state = ?alert.state, "{}", alert.summary);
            self.webhooks.send(&alert);
        }
    }

    /// Active and recently resolved alerts.
    pub fn view(&self) -> AlertsView {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut active: Vec<Alert> = st.active.values().cloned().collect();
        active.sort_by_key(|a| a.since_ms);
        AlertsView {
            active,
            resolved: st.resolved.iter().cloned().collect(),
        }
    }

    /// Number of active alerts.
    pub fn active_count(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .active
            .len()
    }

    /// Active alerts per topic, and per (topic, channel).
    pub fn counts(&self) -> AlertCounts {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut counts = AlertCounts::default();
        for (_, subject) in st.active.keys() {
            match subject {
                Subject::Channel { topic, channel } => {
                    *counts.topics.entry(topic.clone()).or_default() += 1;
                    *counts
                        .channels
                        .entry((topic.clone(), channel.clone()))
                        .or_default() += 1;
                }
                Subject::Replica { topic, .. } => {
                    *counts.topics.entry(topic.clone()).or_default() += 1;
                }
                Subject::Broker(_) => {}
            }
        }
        counts
    }
}

/// Active alerts per topic and per channel, for the badges on rows.
#[derive(Debug, Clone, Default)]
pub struct AlertCounts {
    topics: BTreeMap<String, usize>,
    channels: BTreeMap<(String, String), usize>,
}

impl AlertCounts {
    /// Active alerts on `topic`'s channels and replicas.
    pub fn topic(&self, topic: &str) -> usize {
        self.topics.get(topic).copied().unwrap_or(0)
    }

    /// Active alerts on one channel.
    pub fn channel(&self, topic: &str, channel: &str) -> usize {
        self.channels
            .get(&(topic.to_owned(), channel.to_owned()))
            .copied()
            .unwrap_or(0)
    }
}

fn encode(s: &str) -> String {
    crate::upstream::query(&[("", s)])
        .trim_start_matches("?=")
        .to_owned()
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests;
