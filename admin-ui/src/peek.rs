//! Peeking at a channel (Ferry #17): every broker holding the channel (the same brokers an
//! action goes to, [`actions::holders`]) is asked `GET /channel/peek` at once; each answers
//! what it would deliver next, what is in flight and what is deferred. Peeking changes nothing
//! on the brokers.
//!
//! Bodies can be sensitive, so the HTTP side only lets admin users peek. They are shown as
//! text, always escaped by the template (never marked safe).

use futures_util::future::join_all;
use serde::Serialize;

use crate::actions::{self, Target};
use crate::cluster::Cluster;
use crate::nsq::{self, PeekMessage};
use crate::settings::{relative_ms, time_ms};
use crate::views::Num;

/// Most messages of each kind asked of a broker.
pub const MAX_N: usize = 100;

/// Every broker's answer.
#[derive(Debug, Clone, Serialize)]
pub struct PeekReport {
    /// The channel.
    pub target: Target,
    /// Messages of each kind asked for, per broker.
    pub n: usize,
    /// One per broker asked, in address order.
    pub brokers: Vec<BrokerPeek>,
}

/// One broker's answer.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerPeek {
    /// Its HTTP address.
    pub node: String,
    /// What it answered.
    pub peek: Option<nsq::Peek>,
    /// Why it could not be asked.
    pub error: Option<String>,
}

/// One message as the peek panel shows it.
#[derive(Debug, Clone)]
pub struct PeekRow<'a> {
    /// The message.
    pub m: &'a PeekMessage,
    /// Published at.
    pub time: String,
    /// "due in 5s" (deferred), "deadline in 50s" (in flight), or empty.
    pub when: String,
    /// "base64", "first 4,096 of 10,000 bytes"... or empty.
    pub note: String,
    /// "t/c after 5 attempts, 000000000000007b of 2026-12-05 10:00:00 UTC" for a dead letter.
    pub origin: String,
}

impl BrokerPeek {
    /// Ready, then in-flight, then deferred messages.
    pub fn rows(&self) -> Vec<PeekRow<'_>> {
        let Some(p) = &self.peek else {
            return Vec::new();
        };
        p.messages
            .iter()
            .chain(&p.in_flight)
            .chain(&p.deferred)
            .map(row)
            .collect()
    }
}

fn row(m: &PeekMessage) -> PeekRow<'_> {
    let when = match (m.due_ms, m.deadline_ms) {
        (Some(due), _) => format!("due {}", relative_ms(due)),
        (_, Some(deadline)) => format!("deadline {}", relative_ms(deadline)),
        _ => String::new(),
    };
    let mut notes = Vec::new();
    if m.body_encoding == "base64" {
        notes.push("base64".to_owned());
    }
    if m.truncated {
        notes.push(format!(
            "first {} of {} bytes",
            Num(m.body.len() as u64),
            Num(m.body_bytes)
        ));
    }
    let origin = m.origin.as_ref().map_or(String::new(), |o| {
        format!(
            "{}/{} after {} attempts, {} of {}",
            o.topic,
            o.channel,
            o.attempts,
            o.id,
            time_ms(o.timestamp_ms)
        )
    });
    PeekRow {
        m,
        time: time_ms(m.timestamp_ms),
        when,
        note: notes.join(", "),
        origin,
    }
}

/// Asks every broker holding `target` (a channel) for its next `n` messages of each kind.
pub async fn peek(cluster: &Cluster, target: &Target, n: usize) -> PeekReport {
    let path = target.endpoint("peek", &[("n", &n.to_string())]);
    let nodes = actions::holders(cluster, target).await;
    let brokers = join_all(nodes.into_iter().map(|node| {
        let path = &path;
        async move {
            let (peek, error) = match cluster.upstream().get_json::<nsq::Peek>(&node, path).await {
                Ok(p) => (Some(p), None),
                Err(e) => (None, Some(e.to_string())),
            };
            BrokerPeek { node, peek, error }
        }
    }))
    .await;
    PeekReport {
        target: target.clone(),
        n,
        brokers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_in_delivery_order_with_notes() {
        let msg = |id: &str| PeekMessage {
            id: id.into(),
            ..PeekMessage::default()
        };
        let b = BrokerPeek {
            node: "n".into(),
            peek: Some(nsq::Peek {
                messages: vec![PeekMessage {
                    body: "abcd".into(),
                    body_bytes: 5000,
                    truncated: true,
                    body_encoding: "base64".into(),
                    ..msg("r")
                }],
                in_flight: vec![PeekMessage {
                    deadline_ms: Some(1),
                    ..msg("i")
                }],
                deferred: vec![msg("d")],
                ..nsq::Peek::default()
            }),
            error: None,
        };
        let rows = b.rows();
        let ids: Vec<&str> = rows.iter().map(|r| r.m.id.as_str()).collect();
        assert_eq!(ids, ["r", "i", "d"]);
        assert_eq!(rows[0].note, "base64, first 4 of 5,000 bytes");
        assert!(rows[1].when.starts_with("deadline "), "{}", rows[1].when);
        assert_eq!(rows[2].when, "");
    }
}
