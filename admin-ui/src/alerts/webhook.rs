//! Webhook notifications (`--alert-webhook-url`, repeatable): a JSON POST when an alert fires
//! and when it resolves, with a Slack-compatible `text` and the alert's fields.
//!
//! Each URL has one task that owns its bounded queue (`--alert-webhook-max-queue`) and
//! delivers in order. [`Webhooks::send`] only `try_send`s, so the sampler and the pages never
//! wait for a webhook: when a queue is full the notification is dropped and logged. A failed
//! POST (transport error or non-2xx) is tried again after 250ms, 500ms, 1s... (at most 30s
//! apart), `--alert-webhook-attempts` times in all, then logged and dropped. The tasks end on
//! shutdown, abandoning what is queued.

use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Alert;
use crate::config::Config;

/// The body POSTed.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    /// Slack's field: one line saying what happened.
    pub text: String,
    /// The alert's fields (`rule`, `state`, `topic`, `channel`, `broker`, `value`, `since`...).
    #[serde(flatten)]
    pub alert: Alert,
}

/// The sending side: one bounded queue per URL.
#[derive(Debug, Clone, Default)]
pub struct Webhooks {
    queues: Vec<(String, mpsc::Sender<Notification>)>,
}

/// The delivering side of one URL, run by [`Delivery::run`].
#[derive(Debug)]
pub struct Delivery {
    url: String,
    queue: mpsc::Receiver<Notification>,
    client: reqwest::Client,
    attempts: u32,
}

/// The queues and their deliveries for `config`'s webhook URLs.
pub fn channels(config: &Config) -> anyhow::Result<(Webhooks, Vec<Delivery>)> {
    let client = reqwest::Client::builder()
        .connect_timeout(config.http_client_connect_timeout)
        .timeout(config.http_client_request_timeout)
        .user_agent(concat!("ferry-admin-ui/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let mut hooks = Webhooks::default();
    let mut deliveries = Vec::new();
    for url in &config.alert_webhook_urls {
        let (tx, rx) = mpsc::channel(config.alert_webhook_max_queue);
        hooks.queues.push((url.clone(), tx));
        deliveries.push(Delivery {
            url: url.clone(),
            queue: rx,
            client: client.clone(),
            attempts: config.alert_webhook_attempts,
        });
    }
    Ok((hooks, deliveries))
}

impl Webhooks {
    /// Queues `alert` for every URL, never waiting.
    pub fn send(&self, alert: &Alert) {
        for (url, queue) in &self.queues {
            let n = Notification {
                text: alert.text(),
                alert: alert.clone(),
            };
            if let Err(e) = queue.try_send(n) {
                tracing::warn!(%url, error = %e, rule = alert.rule.name(), "alert notification dropped");
            }
        }
    }
}

/// Delay before try `attempt` (1-based; the first try has none).
fn backoff(attempt: u32) -> Duration {
    let ms = 250u64.saturating_mul(1 << (attempt.saturating_sub(2)).min(16));
    Duration::from_millis(ms).min(Duration::from_secs(30))
}

impl Delivery {
    /// Delivers queued notifications in order until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let n = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = self.queue.recv() => match n {
                    Some(n) => n,
                    None => return,
                },
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.deliver(&n) => {}
            }
        }
    }

    async fn deliver(&self, n: &Notification) {
        for attempt in 1..=self.attempts {
            if attempt > 1 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            let sent = self.client.post(&self.url).json(n).send().await;
            let failure = match sent {
                Ok(resp) if resp.status().is_success() => return,
                Ok(resp) => format!("HTTP {}", resp.status()),
                Err(e) => e.to_string(),
            };
            tracing::warn!(
                url = %self.url, attempt, of = self.attempts, error = %failure,
                rule = n.alert.rule.name(), "alert notification failed"
            );
        }
        tracing::error!(url = %self.url, rule = n.alert.rule.name(), text = %n.text, "alert notification given up");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_instead_of_waiting() {
        let mut config = Config::for_tests();
        config.alert_webhook_urls =
            vec!["http://127.0.0.1:9/a".into(), "http://127.0.0.1:9/b".into()];
        config.alert_webhook_max_queue = 2;
        let (hooks, mut deliveries) = channels(&config).unwrap();
        assert_eq!(deliveries.len(), 2);
        let alert = Alert {
            rule: crate::alerts::rules::Rule::BrokerDown,
            state: crate::alerts::AlertState::Firing,
            topic: None,
            channel: None,
            broker: Some("b:1".into()),
            value: "unreachable".into(),
            summary: "broker b:1 is unreachable".into(),
            since: "2026-12-05T06:00:00Z".into(),
            since_ms: 0,
            resolved: None,
            resolved_ms: None,
            link: "/nodes".into(),
        };
        for _ in 0..5 {
            hooks.send(&alert);
        }
        for d in &mut deliveries {
            let mut queued = Vec::new();
            while let Ok(n) = d.queue.try_recv() {
                queued.push(n);
            }
            assert_eq!(queued.len(), 2, "bounded, per URL");
            let body = serde_json::to_value(&queued[0]).unwrap();
            assert_eq!(
                body["text"],
                "[FIRING] broker_down b:1: broker b:1 is unreachable"
            );
            assert_eq!(body["rule"], "broker_down");
            assert_eq!(body["state"], "firing");
            assert_eq!(body["broker"], "b:1");
        }
    }

    #[test]
    fn backoff_doubles_and_is_bounded() {
        assert_eq!(backoff(2), Duration::from_millis(250));
        assert_eq!(backoff(3), Duration::from_millis(500));
        assert_eq!(backoff(4), Duration::from_secs(1));
        assert_eq!(backoff(40), Duration::from_secs(30));
    }
}
