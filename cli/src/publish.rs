//! `ferry pub --topic T [MESSAGE...]`: publish the arguments, or every line of stdin.
//!
//! Lines are batched into `MPUB`s (at most `--batch-size` messages and `--batch-bytes` bytes
//! each) with several batches in flight on one pipelined connection per broker; with several
//! brokers, batches go round-robin (each message is published once). With `--defer`, every
//! message is a `DPUB` (NSQ has no deferred MPUB). Empty lines are skipped, as a message may
//! not be empty.

use std::io::{BufRead, IsTerminal};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Args;
use ferry_client::{Config, Producer};
use futures_util::StreamExt as _;
use futures_util::stream::FuturesOrdered;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::admin::parse_topic;
use crate::args::parse_duration;
use crate::security::SecurityArgs;
use crate::tail::LOCAL_BROKER_TCP;

/// Flags of `ferry pub`.
#[derive(Debug, Clone, Args)]
pub struct PubArgs {
    /// Topic to publish to.
    #[arg(long, value_parser = parse_topic)]
    pub topic: String,

    /// Messages to publish, one per argument. Without any, each line of stdin is a message.
    #[arg(value_name = "MESSAGE")]
    pub messages: Vec<String>,

    /// Deliver each message only after this delay (e.g. 30s, 5m); uses DPUB.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub defer: Option<Duration>,

    /// A broker's TCP address (host:port); repeat to spread batches over several brokers.
    #[arg(
        long = "broker-tcp-address",
        visible_alias = "nsqd-tcp-address",
        value_name = "ADDR",
        default_value = LOCAL_BROKER_TCP
    )]
    pub broker_tcp_addresses: Vec<String>,

    /// TLS, compression and AUTH.
    #[command(flatten)]
    pub security: SecurityArgs,

    /// Most messages in one MPUB.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch_size: u64,

    /// Most bytes of message bodies in one MPUB (keep it under the broker's --max-body-size,
    /// 5 MiB by default).
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_bytes: u64,

    /// Batches (or deferred messages) in flight at once per broker.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub in_flight: u64,
}

/// What a run published.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PubReport {
    /// Messages the brokers acknowledged.
    pub published: u64,
    /// Empty lines skipped.
    pub skipped_empty: u64,
}

/// A batch of messages, with the number of the line its first message came from.
#[derive(Debug)]
struct Batch {
    first_line: u64,
    bodies: Vec<Bytes>,
}

/// Publishes the messages of `args`, or the lines `input` yields when there are none.
/// `progress` shows a live count on stderr (only drawn on a terminal).
pub async fn run(
    args: &PubArgs,
    input: Box<dyn BufRead + Send>,
    progress: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<PubReport> {
    let config = args
        .security
        .apply(Config::new().user_agent(concat!("ferry-pub/", env!("CARGO_PKG_VERSION"))))?;
    let mut producers = Vec::new();
    for addr in &args.broker_tcp_addresses {
        let producer = Producer::connect(addr.clone(), config.clone()).await?;
        producers.push(producer);
    }

    let (tx, mut rx) = mpsc::channel::<Batch>(4);
    let limits = (args.batch_size, args.batch_bytes);
    let messages = args.messages.clone();
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        if messages.is_empty() {
            read_batches(input, limits, &tx)
        } else {
            let bodies = messages.into_iter().map(Bytes::from);
            send_batches(bodies.map(|b| (0, b)), limits, &tx);
            Ok(0)
        }
    });

    let bar = progress_bar(progress);
    let mut report = PubReport::default();
    // Requests are sent in the order the futures are first polled, which FuturesOrdered does
    // in push order: messages reach a broker in input order, with many batches in flight.
    let mut in_flight = FuturesOrdered::new();
    let limit = args.in_flight as usize * producers.len();
    let mut next = 0usize;
    let mut failure = None;
    loop {
        // Keep at most `limit` requests out; collect results as they come.
        while in_flight.len() >= limit {
            collect(in_flight.next().await, &mut report, &mut failure, &bar);
        }
        if failure.is_some() {
            break;
        }
        let batch = tokio::select! {
            _ = shutdown.cancelled() => {
                failure = Some(anyhow::anyhow!("interrupted"));
                break;
            }
            // Results keep being collected while waiting for input.
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                collect(Some(done), &mut report, &mut failure, &bar);
                continue;
            }
            batch = rx.recv() => batch,
        };
        let Some(batch) = batch else { break };
        let producer = &producers[next % producers.len()];
        next += 1;
        in_flight.push_back(publish(producer, &args.topic, args.defer, batch));
    }
    while let Some(done) = in_flight.next().await {
        collect(Some(done), &mut report, &mut failure, &bar);
    }
    drop(rx);
    bar.finish_and_clear();
    for p in &producers {
        p.stop().await;
    }
    let skipped = reader.await.context("stdin reader failed")?;
    if let Some(err) = failure {
        return Err(err.context(format!(
            "published {} messages before the failure",
            report.published
        )));
    }
    report.skipped_empty = skipped?;
    Ok(report)
}

fn collect(
    done: Option<anyhow::Result<u64>>,
    report: &mut PubReport,
    failure: &mut Option<anyhow::Error>,
    bar: &ProgressBar,
) {
    match done {
        Some(Ok(n)) => {
            report.published += n;
            bar.inc(n);
        }
        Some(Err(e)) => {
            failure.get_or_insert(e);
        }
        None => {}
    }
}

async fn publish(
    producer: &Producer,
    topic: &str,
    defer: Option<Duration>,
    batch: Batch,
) -> anyhow::Result<u64> {
    let n = batch.bodies.len() as u64;
    let what = || match batch.first_line {
        0 => "publishing".to_owned(),
        line => format!("publishing lines {line}..{}", line + n - 1),
    };
    match defer {
        None if n == 1 => producer
            .publish(topic, batch.bodies[0].clone())
            .await
            .with_context(what)?,
        None => producer
            .multi_publish(topic, batch.bodies.iter().cloned())
            .await
            .with_context(what)?,
        Some(delay) => {
            // DPUB one by one, pipelined on the connection, in order.
            let dpubs = batch
                .bodies
                .iter()
                .map(|body| producer.deferred_publish(topic, delay, body.clone()));
            futures_util::future::try_join_all(dpubs)
                .await
                .with_context(what)?;
        }
    }
    Ok(n)
}

/// Reads lines into batches; returns the number of empty lines skipped.
fn read_batches(
    mut input: Box<dyn BufRead + Send>,
    limits: (u64, u64),
    tx: &mpsc::Sender<Batch>,
) -> anyhow::Result<u64> {
    let mut skipped = 0u64;
    let mut number = 0u64;
    let mut error = None;
    let lines = std::iter::from_fn(|| {
        loop {
            let mut line = Vec::new();
            match input.read_until(b'\n', &mut line) {
                Ok(0) => return None,
                Ok(_) => {
                    number += 1;
                    if line.last() == Some(&b'\n') {
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                    }
                    if line.is_empty() {
                        skipped += 1;
                        continue;
                    }
                    return Some((number, Bytes::from(line)));
                }
                Err(e) => {
                    error = Some(e);
                    return None;
                }
            }
        }
    });
    send_batches(lines, limits, tx);
    if let Some(e) = error {
        bail!("cannot read stdin: {e}");
    }
    Ok(skipped)
}

/// Groups `(line number, body)` pairs into batches within `(messages, bytes)` limits and sends
/// them; stops early when the receiver is gone.
fn send_batches(
    items: impl Iterator<Item = (u64, Bytes)>,
    (max_messages, max_bytes): (u64, u64),
    tx: &mpsc::Sender<Batch>,
) {
    let mut batch = Batch {
        first_line: 0,
        bodies: Vec::new(),
    };
    let mut bytes = 0u64;
    for (line, body) in items {
        let len = body.len() as u64;
        let full = batch.bodies.len() as u64 >= max_messages || bytes + len > max_bytes;
        if !batch.bodies.is_empty() && full {
            let ready = std::mem::replace(
                &mut batch,
                Batch {
                    first_line: 0,
                    bodies: Vec::new(),
                },
            );
            if tx.blocking_send(ready).is_err() {
                return;
            }
            bytes = 0;
        }
        if batch.bodies.is_empty() {
            batch.first_line = line;
        }
        bytes += len;
        batch.bodies.push(body);
    }
    if !batch.bodies.is_empty() {
        let _ = tx.blocking_send(batch);
    }
}

/// A live count and rate on stderr, hidden unless stderr is a terminal and `enabled`.
fn progress_bar(enabled: bool) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {human_pos} messages published ({per_sec}) {elapsed}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(lines: &[&str], limits: (u64, u64)) -> Vec<(u64, Vec<String>)> {
        let (tx, mut rx) = mpsc::channel(100);
        let items: Vec<(u64, Bytes)> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u64 + 1, Bytes::from(l.to_string())))
            .collect();
        send_batches(items.into_iter(), limits, &tx);
        drop(tx);
        let mut out = Vec::new();
        while let Ok(b) = rx.try_recv() {
            let bodies = b
                .bodies
                .iter()
                .map(|x| String::from_utf8(x.to_vec()).unwrap())
                .collect();
            out.push((b.first_line, bodies));
        }
        out
    }

    #[test]
    fn batches_respect_both_limits() {
        let got = batches(&["a", "b", "c", "d", "e"], (2, 100));
        assert_eq!(
            got,
            [
                (1, vec!["a".into(), "b".into()]),
                (3, vec!["c".into(), "d".into()]),
                (5, vec!["e".into()])
            ]
        );
        let got = batches(&["aaaa", "bbbb", "cc", "dddddddd"], (100, 6));
        assert_eq!(
            got,
            [
                (1, vec!["aaaa".into()]),
                (2, vec!["bbbb".into(), "cc".into()]),
                (4, vec!["dddddddd".into()]) // bigger than the limit alone: its own batch
            ]
        );
    }

    #[test]
    fn lines_are_split_and_empty_ones_skipped() {
        let input: Box<dyn BufRead + Send> =
            Box::new(std::io::Cursor::new(b"one\r\n\ntwo\nthree".to_vec()));
        let (tx, mut rx) = mpsc::channel(10);
        let skipped = read_batches(input, (10, 100), &tx).unwrap();
        drop(tx);
        assert_eq!(skipped, 1);
        let b = rx.try_recv().unwrap();
        assert_eq!(b.first_line, 1);
        assert_eq!(
            b.bodies,
            ["one", "two", "three"].map(|s| Bytes::from_static(s.as_bytes()))
        );
    }
}
