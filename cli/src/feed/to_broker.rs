//! `ferry to-broker`: copy topics to other brokers, as nsq_to_nsq.
//!
//! Each message is published to one destination (`--mode`) and FINed only once that
//! destination answered `OK`; a failed publish (destination down, refused) requeues it with
//! backoff, so it comes back and is tried again until it is delivered: nothing is lost, and a
//! publish whose answer was lost may arrive twice (at least once).

use std::sync::Arc;

use clap::Args;
use ferry_client::{Config, Producer};
use tokio_util::sync::CancellationToken;

use super::hosts::{Hosts, Mode};
use super::{FeedArgs, Progress, Subscription, dispatch};
use crate::admin::parse_topic;

/// Flags of `ferry to-broker`.
#[derive(Debug, Clone, Args)]
pub struct ToBrokerArgs {
    /// Topics, channel and brokers to consume.
    #[command(flatten)]
    pub feed: FeedArgs,

    /// A destination broker's TCP address (host:port); repeatable.
    #[arg(
        long = "destination-nsqd-tcp-address",
        required = true,
        value_name = "ADDR"
    )]
    pub destinations: Vec<String>,

    /// Topic to publish to (default: the message's own topic).
    #[arg(long, value_parser = parse_topic)]
    pub destination_topic: Option<String>,

    /// How messages are spread over the destinations.
    #[arg(long, value_enum, default_value_t = Mode::Hostpool)]
    pub mode: Mode,
}

/// Runs `ferry to-broker` until `shutdown`, then waits for the publishes under way.
pub async fn run(args: &ToBrokerArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = Config::new().user_agent(concat!("ferry-to-broker/", env!("CARGO_PKG_VERSION")));
    let producers = args
        .destinations
        .iter()
        .map(|addr| Producer::new(addr.clone(), config.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let producers = Arc::new(producers);
    let hosts = Arc::new(Hosts::new(args.mode, producers.len()));
    let topics: Arc<Vec<String>> = Arc::new(match &args.destination_topic {
        Some(t) => vec![t.clone(); args.feed.topic.len()],
        None => args.feed.topic.clone(),
    });
    let progress_stop = CancellationToken::new();
    let progress = Progress::start("to-broker", progress_stop.clone());
    let sub = Subscription::start(&args.feed, "nsq_to_nsq", "to-broker").await?;
    let concurrency = usize::try_from(args.feed.consumer.max_in_flight)
        .unwrap_or(usize::MAX)
        .saturating_mul(args.feed.topic.len());
    let send = {
        let producers = producers.clone();
        move |i: usize, body| {
            let producers = producers.clone();
            let hosts = hosts.clone();
            let topics = topics.clone();
            async move {
                let d = hosts.pick();
                let result = producers[d].publish(&topics[i], body).await;
                hosts.report(d, result.is_ok());
                result.map_err(|err| format!("{}: {err}", producers[d].addr()))
            }
        }
    };
    dispatch(sub, concurrency, &progress, &shutdown, send).await;
    for p in producers.iter() {
        p.stop().await;
    }
    progress_stop.cancel();
    eprintln!("{}", progress.summary());
    Ok(())
}
