//! `ferry config --topic T [--channel C] [settings]`: a topic's retention and a channel's
//! limits (max age, max attempts, dead-letter topic) on every broker holding the topic.
//! Without a setting it shows them (`GET /topic/config`, and `/channel/config` with
//! `--channel`); with settings it changes them (`POST`, only the parameters given) and shows
//! what each broker has now.

use clap::Args;
use ferry_admin_ui::settings;
use reqwest::Method;
use serde_json::Value;

use crate::admin::{parse_channel, parse_topic};
use crate::api::{self, Answer};
use crate::args::{parse_duration, parse_size};
use crate::nodes::NodeArgs;

/// Flags of `ferry config`.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Topic.
    #[arg(long, value_parser = parse_topic)]
    pub topic: String,

    /// Channel whose settings to show or change.
    #[arg(long, value_parser = parse_channel)]
    pub channel: Option<String>,

    /// How long the topic keeps messages (24h, 7d; 0 = no time limit).
    #[arg(long, value_name = "DURATION", value_parser = duration_text)]
    pub retention: Option<String>,

    /// How many bytes the topic keeps at most (10GB, 512MiB, 1024; 0 = no size limit).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub retention_bytes: Option<u64>,

    /// Messages older than this are dropped by the channel instead of delivered (10m; 0 = off).
    /// Needs --channel.
    #[arg(long, value_name = "DURATION", value_parser = duration_text, requires = "channel")]
    pub max_age: Option<String>,

    /// Deliveries of a message before the channel gives up on it and moves it to the
    /// dead-letter topic (0 = unlimited). Needs --channel.
    #[arg(long, value_name = "N", requires = "channel")]
    pub max_attempts: Option<u16>,

    /// Where the channel's messages go after --max-attempts deliveries. Needs --channel.
    #[arg(long, value_name = "TOPIC", value_parser = parse_topic, requires = "channel")]
    pub dead_letter_topic: Option<String>,

    /// Where the brokers are (default: the local broker at 127.0.0.1:4151).
    #[command(flatten)]
    pub nodes: NodeArgs,
}

/// A duration checked as `args::parse_duration` does, kept as typed (the broker reads it).
fn duration_text(s: &str) -> Result<String, String> {
    parse_duration(s).map(|_| s.trim().to_owned())
}

impl ConfigArgs {
    /// The topic settings given, as query parameters (after `topic`).
    fn topic_settings(&self) -> Vec<(&'static str, String)> {
        given([
            ("retention", self.retention.clone()),
            (
                "retention_bytes",
                self.retention_bytes.map(|b| b.to_string()),
            ),
        ])
    }

    /// The channel settings given, as query parameters (after `topic` and `channel`).
    fn channel_settings(&self) -> Vec<(&'static str, String)> {
        given([
            ("max_age", self.max_age.clone()),
            ("max_attempts", self.max_attempts.map(|n| n.to_string())),
            ("dead_letter_topic", self.dead_letter_topic.clone()),
        ])
    }

    /// True when only showing.
    pub fn shows(&self) -> bool {
        self.topic_settings().is_empty() && self.channel_settings().is_empty()
    }
}

/// The parameters that have a value.
fn given<const N: usize>(
    params: [(&'static str, Option<String>); N],
) -> Vec<(&'static str, String)> {
    params
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
        .collect()
}

/// Each broker's answers: the topic's settings and/or the channel's (in that order).
#[derive(Debug, Default)]
pub struct Report {
    /// Answers of `/topic/config`, when asked.
    pub topic: Vec<Answer>,
    /// Answers of `/channel/config`, when asked.
    pub channel: Vec<Answer>,
}

impl Report {
    /// Every answer.
    pub fn answers(&self) -> impl Iterator<Item = &Answer> {
        self.topic.iter().chain(&self.channel)
    }
}

/// Shows or changes the settings on every broker holding the topic.
pub async fn run(args: &ConfigArgs) -> anyhow::Result<Report> {
    let (client, brokers) = api::topic_brokers(&args.nodes, &args.topic).await?;
    let shows = args.shows();
    let method = if shows { Method::GET } else { Method::POST };
    let mut report = Report::default();
    let topic_settings = args.topic_settings();
    if shows || !topic_settings.is_empty() {
        let mut params = vec![("topic", args.topic.clone())];
        params.extend(topic_settings);
        report.topic = api::call_each(
            &client,
            brokers.clone(),
            method.clone(),
            "/topic/config",
            &params,
        )
        .await;
    }
    let channel_settings = args.channel_settings();
    if let Some(channel) = args
        .channel
        .as_ref()
        .filter(|_| shows || !channel_settings.is_empty())
    {
        let mut params = vec![("topic", args.topic.clone()), ("channel", channel.clone())];
        params.extend(channel_settings);
        report.channel = api::call_each(&client, brokers, method, "/channel/config", &params).await;
    }
    Ok(report)
}

/// A line per broker and kind of setting, e.g. `a:4151: topic "t": retention 24h, size
/// limit 10GB`.
pub fn render(args: &ConfigArgs, report: &Report) -> String {
    let verb = if args.shows() { "read" } else { "set" };
    let topic = format!("topic {:?}", args.topic);
    let mut s = api::render_lines(
        &report.topic,
        &format!("{verb} the settings of {topic}"),
        |v| format!("{topic}: {}", topic_line(v)),
    );
    if let Some(c) = &args.channel {
        let channel = format!("channel {c:?} of {topic}");
        s.push_str(&api::render_lines(
            &report.channel,
            &format!("{verb} the settings of {channel}"),
            |v| format!("{channel}: {}", channel_line(v)),
        ));
    }
    s
}

fn topic_line(v: &Value) -> String {
    let retention = match v["retention_ms"].as_u64() {
        Some(0) => "no time limit".to_owned(),
        Some(ms) => format!("retention {}", settings::duration_ms(ms)),
        None => "retention ?".to_owned(),
    };
    let bytes = match v["retention_bytes"].as_u64() {
        Some(0) => "no size limit".to_owned(),
        Some(n) => format!("size limit {}", size(n)),
        None => "size limit ?".to_owned(),
    };
    format!("{retention}, {bytes}")
}

fn channel_line(v: &Value) -> String {
    let age = match v["max_age_ms"].as_u64() {
        Some(0) => "no max age".to_owned(),
        Some(ms) => format!("max age {}", settings::duration_ms(ms)),
        None => "max age ?".to_owned(),
    };
    let attempts = match v["max_attempts"].as_u64() {
        Some(0) => "unlimited attempts".to_owned(),
        _ => format!(
            "max attempts {}, then to topic {}",
            v["max_attempts"], v["dead_letter_topic"]
        ),
    };
    format!("{age}, {attempts}")
}

/// Bytes as `10GB`, `512MiB` (the admin UI's form), or `1500 bytes`.
fn size(n: u64) -> String {
    let s = settings::size(n);
    if s.bytes().all(|b| b.is_ascii_digit()) {
        format!("{s} bytes")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(channel: Option<&str>) -> ConfigArgs {
        ConfigArgs {
            topic: "t".into(),
            channel: channel.map(str::to_owned),
            retention: None,
            retention_bytes: None,
            max_age: None,
            max_attempts: None,
            dead_letter_topic: None,
            nodes: NodeArgs::default(),
        }
    }

    #[test]
    fn settings_become_parameters() {
        let mut a = args(Some("c"));
        assert!(a.shows());
        a.retention_bytes = Some(10_000_000_000);
        a.max_attempts = Some(5);
        assert!(!a.shows());
        assert_eq!(
            a.topic_settings(),
            [("retention_bytes", "10000000000".to_owned())]
        );
        assert_eq!(a.channel_settings(), [("max_attempts", "5".to_owned())]);
    }

    #[test]
    fn lines_per_broker() {
        let ok = |v: Value| Answer {
            broker: "a:1".into(),
            result: Ok(v),
        };
        let report = Report {
            topic: vec![ok(serde_json::json!({"topic": "t", "retention": "1day",
                "retention_ms": 86_400_000, "retention_bytes": 10_000_000_000u64}))],
            channel: vec![
                ok(serde_json::json!({"max_age": "10m", "max_age_ms": 600_000,
                    "max_attempts": 5, "dead_letter_topic": "t.dead"})),
                ok(serde_json::json!({"max_age": "0s", "max_age_ms": 0,
                    "max_attempts": 0, "dead_letter_topic": null})),
            ],
        };
        assert_eq!(
            render(&args(Some("c")), &report),
            "a:1: topic \"t\": retention 24h, size limit 10GB\n\
             a:1: channel \"c\" of topic \"t\": max age 10m, max attempts 5, then to topic \"t.dead\"\n\
             a:1: channel \"c\" of topic \"t\": no max age, unlimited attempts\n"
        );
    }

    #[test]
    fn sizes_read_back() {
        assert_eq!(size(10_000_000_000), "10GB");
        assert_eq!(size(512 << 20), "512MiB");
        assert_eq!(size(1500), "1500 bytes");
        assert_eq!(size(1024), "1KiB");
    }
}
