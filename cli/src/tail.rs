//! `ferry tail --topic T`: print a topic's messages as they arrive.
//!
//! By default tail subscribes on a fresh `tail<random>#ephemeral` channel: it gets its own copy
//! of every message (taking none from real consumers) and the broker drops the channel when
//! tail disconnects. With `--channel` it joins a real channel and competes for its messages.
//! Only printed messages are finished; anything received beyond `-n` is requeued.

use std::io::Write;

use anyhow::bail;
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use bytes::Bytes;
use clap::{Args, ValueEnum};
use ferry_client::{Config, Message};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::admin::{parse_channel, parse_topic};
use crate::feed::{ConsumerArgs, Subscription};

/// The broker used when no address is given.
pub const LOCAL_BROKER_TCP: &str = "127.0.0.1:4150";

/// How a message is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The body as it is, then a newline.
    Raw,
    /// One JSON object per line: topic, id, timestamp (ns), attempts, body.
    Json,
}

/// Flags of `ferry tail`.
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// Topic to print; repeat to tail several topics at once.
    #[arg(long, required = true, value_parser = parse_topic)]
    pub topic: Vec<String>,

    /// Channel to consume from. Default: a new `tail<random>#ephemeral` channel, which sees
    /// every message without taking any from other consumers and disappears when tail exits.
    #[arg(long, value_parser = parse_channel)]
    pub channel: Option<String>,

    /// Stop after printing this many messages (over all topics); 0 means no limit, as in
    /// nsq_tail.
    #[arg(short = 'n', long = "count", value_name = "N")]
    pub count: Option<u64>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Raw)]
    pub format: Format,

    /// In raw format, put `TOPIC | ` before each message (`--print-topic=false` as Go flags
    /// allow).
    #[arg(long, value_name = "BOOL", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub print_topic: bool,

    /// A broker's TCP address (host:port); repeatable. Default, when no lookupd is given
    /// either: 127.0.0.1:4150.
    #[arg(
        long = "broker-tcp-address",
        visible_alias = "nsqd-tcp-address",
        value_name = "ADDR"
    )]
    pub broker_tcp_addresses: Vec<String>,

    /// A lookupd's HTTP address (host:port) to discover every broker holding the topic;
    /// repeatable. Brokers that appear later are joined as they register.
    #[arg(long = "lookupd-http-address", value_name = "ADDR")]
    pub lookupd_http_addresses: Vec<String>,

    /// RDY, go-nsq options (as nsq_tail passes them through), TLS, compression and AUTH.
    #[command(flatten)]
    pub consumer: ConsumerArgs,
}

impl TailArgs {
    /// How many messages to print before exiting; `None` = until stopped (`-n 0` as well).
    pub fn limit(&self) -> Option<u64> {
        self.count.filter(|&n| n > 0)
    }
}

/// Random name of an ephemeral channel for one tail session, as nsq_tail names them.
pub fn ephemeral_channel() -> String {
    format!("tail{:06}#ephemeral", rand::random_range(0..1_000_000u32))
}

/// One line of output for `msg` of `topic`.
pub fn render(format: Format, print_topic: bool, topic: &str, msg: &Message, out: &mut Vec<u8>) {
    match format {
        Format::Raw => {
            if print_topic {
                out.extend_from_slice(topic.as_bytes());
                out.extend_from_slice(b" | ");
            }
            out.extend_from_slice(msg.body());
        }
        Format::Json => {
            let line = json_line(
                topic,
                &msg.id().to_string(),
                msg.timestamp_ns(),
                msg.attempts(),
                msg.body(),
            );
            out.extend_from_slice(line.as_bytes());
        }
    }
    out.push(b'\n');
}

/// The JSON object printed for a message. A body that is not UTF-8 is given as
/// `body_base64` instead of `body`.
pub fn json_line(topic: &str, id: &str, timestamp_ns: i64, attempts: u16, body: &Bytes) -> String {
    let mut v = serde_json::json!({
        "topic": topic,
        "id": id,
        "timestamp": timestamp_ns,
        "attempts": attempts,
    });
    match std::str::from_utf8(body) {
        Ok(text) => v["body"] = text.into(),
        Err(_) => v["body_base64"] = BASE64_STANDARD.encode(body).into(),
    }
    v.to_string()
}

/// Runs `ferry tail` until `-n` messages were printed, `shutdown` is cancelled (Ctrl-C) or
/// stdout is closed; `out` receives the output. Returns how many messages were printed.
pub async fn run<W: Write>(
    args: &TailArgs,
    out: &mut W,
    shutdown: CancellationToken,
) -> anyhow::Result<u64> {
    let channel = args.channel.clone().unwrap_or_else(ephemeral_channel);
    let max_in_flight = match args.limit() {
        Some(n) => args.consumer.max_in_flight.min(n),
        None => args.consumer.max_in_flight,
    };
    let base = Config::new()
        .max_in_flight(max_in_flight)
        .user_agent(concat!("ferry-tail/", env!("CARGO_PKG_VERSION")))
        .shutdown_timeout(std::time::Duration::from_secs(5));
    let config = args.consumer.config(base, "tail")?;
    let mut subscription = Subscription::connect(
        &args.topic,
        &channel,
        &args.broker_tcp_addresses,
        &args.lookupd_http_addresses,
        config,
    )
    .await?;
    let result = tokio::select! {
        r = print_loop(args, &mut subscription.messages, out, &shutdown) => r,
        never = report_discovery(args, &subscription.consumers) => match never {},
    };
    // Stop consumers while still answering what arrives: extra messages are requeued.
    subscription.stop().await;
    result
}

/// Says on stderr what tail waits for while a topic has no broker connected: that no lookupd
/// lists a broker with it yet, and which lookupds cannot be reached (and when they answer
/// again). Runs until dropped.
async fn report_discovery(
    args: &TailArgs,
    consumers: &[ferry_client::Consumer],
) -> std::convert::Infallible {
    if args.lookupd_http_addresses.is_empty() {
        return std::future::pending().await;
    }
    let mut told_waiting = vec![false; consumers.len()];
    let mut failing: std::collections::HashMap<String, String> = Default::default();
    loop {
        let mut now_failing = std::collections::HashMap::new();
        for (i, consumer) in consumers.iter().enumerate() {
            let d = consumer.discovery().await;
            now_failing.extend(d.failing);
            let topic = &args.topic[i];
            let connected = consumer.stats().connections;
            if connected == 0 && !d.found && !told_waiting[i] {
                told_waiting[i] = true;
                eprintln!(
                    "ferry tail: no broker has topic {topic} yet; waiting for one (asking {} every second)",
                    d.lookupds.join(", ")
                );
            } else if connected > 0 && told_waiting[i] {
                told_waiting[i] = false;
                eprintln!("ferry tail: connected to {connected} broker(s) for topic {topic}");
            }
        }
        for (lookupd, why) in &now_failing {
            if failing.get(lookupd) != Some(why) {
                eprintln!("ferry tail: lookupd {lookupd} cannot be reached ({why}); retrying");
            }
        }
        for lookupd in failing.keys() {
            if !now_failing.contains_key(lookupd) {
                eprintln!("ferry tail: lookupd {lookupd} answers again");
            }
        }
        failing = now_failing;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

async fn print_loop<W: Write>(
    args: &TailArgs,
    rx: &mut mpsc::Receiver<(usize, Message)>,
    out: &mut W,
    shutdown: &CancellationToken,
) -> anyhow::Result<u64> {
    let mut printed = 0u64;
    let mut line = Vec::new();
    loop {
        if args.limit().is_some_and(|n| printed >= n) {
            return Ok(printed);
        }
        let (i, msg) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(printed),
            next = rx.recv() => match next {
                Some(next) => next,
                None => bail!("every connection closed"),
            },
        };
        line.clear();
        render(
            args.format,
            args.print_topic,
            &args.topic[i],
            &msg,
            &mut line,
        );
        let written = out.write_all(&line).and_then(|()| {
            // Flush when nothing else is waiting, so output appears as messages arrive.
            if rx.is_empty() { out.flush() } else { Ok(()) }
        });
        match written {
            Ok(()) => {
                printed += 1;
                let _ = msg.finish().await;
            }
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                // `ferry tail | head`: the reader is gone; that is a normal end.
                let _ = msg.requeue_without_backoff(None).await;
                return Ok(printed);
            }
            Err(e) => {
                let _ = msg.requeue_without_backoff(None).await;
                return Err(anyhow::Error::new(e).context("cannot write to stdout"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ephemeral_channel_names_are_valid() {
        for _ in 0..100 {
            let name = ephemeral_channel();
            assert!(ferry_proto::names::is_valid_channel_name(&name), "{name}");
            assert!(name.starts_with("tail") && name.ends_with("#ephemeral"));
        }
    }

    #[test]
    fn json_lines_carry_the_metadata() {
        let line = json_line(
            "orders",
            "0123456789abcdef",
            42,
            3,
            &Bytes::from_static(b"hi"),
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["topic"], "orders");
        assert_eq!(v["id"], "0123456789abcdef");
        assert_eq!(v["timestamp"], 42);
        assert_eq!(v["attempts"], 3);
        assert_eq!(v["body"], "hi");
        let line = json_line("t", "x", 0, 1, &Bytes::from_static(&[0xff, 0, 1]));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["body_base64"], "/wAB");
        assert!(v.get("body").is_none());
    }
}
