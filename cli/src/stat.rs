//! `ferry stat --topic T [--channel C]`: a live table of a topic's or channel's numbers summed
//! across every broker that holds it (like nsq_stat), one row per interval.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use ferry_proto::stats::Stats;
use tokio_util::sync::CancellationToken;

use crate::admin::{parse_channel, parse_topic};
use crate::args::parse_positive_duration;
use crate::nodes::{self, NodeArgs, base_url, q};

/// Flags of `ferry stat`.
#[derive(Debug, Clone, Args)]
pub struct StatArgs {
    /// Topic to watch.
    #[arg(long, value_parser = parse_topic)]
    pub topic: String,

    /// Channel to watch (default: all channels of the topic, summed).
    #[arg(long, value_parser = parse_channel)]
    pub channel: Option<String>,

    /// Time between rows.
    #[arg(long, default_value = "2s", value_parser = parse_positive_duration)]
    pub interval: Duration,

    /// Stop after this many rows (default: until Ctrl-C).
    #[arg(long, short = 'n')]
    pub count: Option<u64>,

    /// Where the brokers are (default: the local broker at 127.0.0.1:4151).
    #[command(flatten)]
    pub nodes: NodeArgs,
}

/// Numbers of one sample, summed over brokers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Waiting messages.
    pub depth: u64,
    /// In flight.
    pub in_flight: u64,
    /// Deferred.
    pub deferred: u64,
    /// Requeued (REQ) since start.
    pub requeued: u64,
    /// Timed out since start.
    pub timed_out: u64,
    /// Messages (published to the topic, or delivered by the channel) since start.
    pub messages: u64,
    /// Connected consumers.
    pub clients: u64,
    /// Brokers that answered.
    pub brokers: u64,
}

impl Sample {
    /// Adds one broker's `/stats` JSON (already filtered to the topic).
    pub fn add_stats(&mut self, stats: &Stats, topic: &str, channel: Option<&str>) {
        let Some(t) = stats.topic(topic) else {
            return;
        };
        if channel.is_some_and(|name| t.channel(name).is_none()) {
            // The topic is here but not the channel: this broker does not count.
            return;
        }
        self.brokers += 1;
        if channel.is_none() {
            self.depth += t.depth;
            self.messages += t.message_count;
        }
        for c in t
            .channels
            .iter()
            .filter(|c| channel.is_none_or(|name| c.channel_name == name))
        {
            self.depth += c.depth;
            self.in_flight += c.in_flight_count;
            self.deferred += c.deferred_count;
            self.requeued += c.requeue_count;
            self.timed_out += c.timeout_count;
            self.clients += c.client_count;
            if channel.is_some() {
                self.messages += c.message_count;
            }
        }
    }
}

/// Header line of the table.
pub fn header() -> String {
    format!(
        "{:>10} {:>9} {:>9} {:>9} {:>9} {:>12} {:>10} {:>7} {:>7}",
        "depth",
        "in-flight",
        "deferred",
        "requeued",
        "timed-out",
        "messages",
        "msgs/s",
        "clients",
        "brokers"
    )
}

/// One row; `rate` is None for the first sample.
pub fn row(s: &Sample, rate: Option<f64>) -> String {
    let rate = rate.map_or_else(|| "-".to_owned(), |r| format!("{r:.0}"));
    format!(
        "{:>10} {:>9} {:>9} {:>9} {:>9} {:>12} {:>10} {:>7} {:>7}",
        s.depth,
        s.in_flight,
        s.deferred,
        s.requeued,
        s.timed_out,
        s.messages,
        rate,
        s.clients,
        s.brokers
    )
}

/// Takes one sample across the brokers holding the topic.
pub async fn sample(
    client: &reqwest::Client,
    nodes: &NodeArgs,
    topic: &str,
    channel: Option<&str>,
) -> anyhow::Result<Sample> {
    let brokers = nodes::brokers_for_topic(client, nodes, topic).await?;
    let mut s = Sample::default();
    let mut errors = Vec::new();
    for b in &brokers {
        let mut url = format!(
            "{}/stats?format=json&include_clients=false&topic={}",
            base_url(b),
            q(topic)
        );
        if let Some(c) = channel {
            url.push_str(&format!("&channel={}", q(c)));
        }
        let result = async {
            let resp = client.get(&url).send().await?.error_for_status()?;
            resp.json::<Stats>().await
        }
        .await;
        match result {
            Ok(v) => s.add_stats(&v, topic, channel),
            Err(e) => errors.push(format!("{b}: {}", nodes::describe(&e))),
        }
    }
    if s.brokers == 0 {
        if errors.is_empty() {
            match channel {
                Some(c) => anyhow::bail!(
                    "channel {c:?} of topic {topic:?} not found on {}",
                    brokers.join(", ")
                ),
                None => anyhow::bail!("topic {topic:?} not found on {}", brokers.join(", ")),
            }
        }
        anyhow::bail!("no broker answered: {}", errors.join("; "));
    }
    Ok(s)
}

/// Prints rows until `count` rows or `cancel`.
pub async fn run(args: &StatArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let client = nodes::http_client()?;
    let node_args = args.nodes.or_local();
    let mut previous: Option<(Sample, Instant)> = None;
    let mut rows = 0u64;
    loop {
        let s = sample(&client, &node_args, &args.topic, args.channel.as_deref())
            .await
            .context("cannot read stats")?;
        let now = Instant::now();
        let rate = previous.map(|(p, at)| {
            let secs = now.duration_since(at).as_secs_f64().max(1e-3);
            s.messages.saturating_sub(p.messages) as f64 / secs
        });
        if rows.is_multiple_of(25) {
            println!("{}", header());
        }
        println!("{}", row(&s, rate));
        rows += 1;
        previous = Some((s, now));
        if args.count.is_some_and(|n| rows >= n) {
            return Ok(());
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(args.interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> Stats {
        serde_json::from_value(
            serde_json::json!({"topics": [{"topic_name": "t", "depth": 1, "message_count": 10,
            "channels": [
                {"channel_name": "a", "depth": 2, "in_flight_count": 3, "deferred_count": 4,
                 "requeue_count": 5, "timeout_count": 6, "message_count": 7, "client_count": 1},
                {"channel_name": "b", "depth": 20, "in_flight_count": 30, "deferred_count": 40,
                 "requeue_count": 50, "timeout_count": 60, "message_count": 70, "client_count": 2}
            ]}]}),
        )
        .unwrap()
    }

    #[test]
    fn sums_one_channel_across_brokers() {
        let mut s = Sample::default();
        s.add_stats(&stats(), "t", Some("a"));
        s.add_stats(&stats(), "t", Some("a"));
        assert_eq!(
            s,
            Sample {
                depth: 4,
                in_flight: 6,
                deferred: 8,
                requeued: 10,
                timed_out: 12,
                messages: 14,
                clients: 2,
                brokers: 2
            }
        );
    }

    #[test]
    fn topic_totals_include_every_channel() {
        let mut s = Sample::default();
        s.add_stats(&stats(), "t", None);
        assert_eq!(s.depth, 1 + 2 + 20);
        assert_eq!(s.messages, 10);
        assert_eq!(s.in_flight, 33);
        s.add_stats(&stats(), "missing", None);
        assert_eq!(s.brokers, 1);
    }

    #[test]
    fn row_formats_rate() {
        assert!(
            row(&Sample::default(), None)
                .trim_end()
                .ends_with("-       0       0")
        );
        assert!(row(&Sample::default(), Some(12.4)).contains(" 12 "));
    }
}
