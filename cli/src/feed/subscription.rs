//! One consumer per topic of a channel, their messages merged into one queue: what the feeds
//! and `ferry tail` consume from.

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use ferry_client::{Config, Consumer, Message};
use tokio::sync::mpsc;

use super::FeedArgs;
use crate::consumer_opt;
use crate::security::SecurityArgs;

/// One consumer per topic; their messages come out of one queue, tagged with the topic's index.
#[derive(Debug)]
pub struct Subscription {
    /// One consumer per topic, in the order of the topics.
    pub consumers: Vec<Consumer>,
    /// The topics' messages, merged: (index of the topic, message).
    pub messages: mpsc::Receiver<(usize, Message)>,
}

impl Subscription {
    /// Subscribes a feed to every topic of `args` on `args.channel` (or `default_channel`).
    pub async fn start(
        args: &FeedArgs,
        default_channel: &str,
        tool: &str,
    ) -> anyhow::Result<Subscription> {
        let base = Config::new()
            .max_in_flight(args.consumer.max_in_flight)
            .user_agent(format!("ferry-{tool}/{}", env!("CARGO_PKG_VERSION")))
            .shutdown_timeout(Duration::from_secs(10));
        let config = args.consumer.config(base, tool)?;
        let channel = args.channel.as_deref().unwrap_or(default_channel);
        Subscription::connect(
            &args.topic,
            channel,
            &args.nsqd_tcp_addresses,
            &args.lookupd_http_addresses,
            config,
        )
        .await
    }

    /// Subscribes to each of `topics` on `channel`, through the given brokers and lookupds
    /// (neither: the local broker, 127.0.0.1:4150).
    pub async fn connect(
        topics: &[String],
        channel: &str,
        brokers: &[String],
        lookupds: &[String],
        config: Config,
    ) -> anyhow::Result<Subscription> {
        let mut brokers = brokers.to_vec();
        if brokers.is_empty() && lookupds.is_empty() {
            brokers.push(crate::tail::LOCAL_BROKER_TCP.to_owned());
        }
        // Bounded by RDY: the brokers never have more than max_in_flight per topic out.
        let (tx, messages) = mpsc::channel(1024);
        let mut consumers = Vec::with_capacity(topics.len());
        for (i, topic) in topics.iter().enumerate() {
            let what = || format!("cannot subscribe to {topic}/{channel}");
            let (consumer, mut incoming) =
                Consumer::stream(topic, channel, config.clone()).with_context(what)?;
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(msg) = incoming.recv().await {
                    if let Err(mpsc::error::SendError((_, msg))) = tx.send((i, msg)).await {
                        let _ = msg.requeue_without_backoff(Some(Duration::ZERO)).await;
                    }
                }
            });
            if !brokers.is_empty() {
                consumer
                    .connect_to_brokers(brokers.iter().cloned())
                    .await
                    .with_context(what)?;
            }
            if !lookupds.is_empty() {
                consumer
                    .connect_to_lookupds(lookupds.iter().cloned())
                    .await
                    .with_context(|| format!("cannot look up {topic}"))?;
            }
            consumers.push(consumer);
        }
        Ok(Subscription {
            consumers,
            messages,
        })
    }

    /// Stops every consumer gracefully (each connection's FINs and REQs are written before it
    /// closes), requeueing what still arrives meanwhile for immediate redelivery (to whichever
    /// consumer is left, or this feed's next run). Call after every message
    /// taken so far was answered.
    pub async fn stop(mut self) {
        let consumers = std::mem::take(&mut self.consumers);
        let stop = async {
            futures_util::future::join_all(consumers.iter().map(Consumer::stop)).await;
        };
        let drain = async {
            while let Some((_, msg)) = self.messages.recv().await {
                let _ = msg.requeue_without_backoff(Some(Duration::ZERO)).await;
            }
        };
        tokio::join!(stop, drain);
    }
}

/// The consumer flags of `ferry tail` and the feeds, named as in NSQ's tools.
#[derive(Debug, Clone, Args)]
pub struct ConsumerArgs {
    /// Most messages in flight per topic (RDY, shared across brokers).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_in_flight: u64,

    /// A go-nsq consumer option as `KEY,VALUE` (`max_attempts,5`, `tls_v1,true`; a bare KEY
    /// means true), as NSQ's tools pass them through; repeatable.
    #[arg(
        long = "consumer-opt",
        visible_alias = "reader-opt",
        value_name = "KEY,VALUE"
    )]
    pub consumer_opts: Vec<String>,

    /// TLS, compression and AUTH.
    #[command(flatten)]
    pub security: SecurityArgs,
}

impl ConsumerArgs {
    /// `base` with `--consumer-opt` options and the TLS, compression and AUTH flags applied;
    /// options without effect are reported on stderr, prefixed with `ferry <tool>:`.
    pub fn config(&self, base: Config, tool: &str) -> anyhow::Result<Config> {
        let mut security = self.security.clone();
        let (config, warnings) = consumer_opt::apply(&self.consumer_opts, base, &mut security)?;
        for warning in warnings {
            eprintln!("ferry {tool}: {warning}");
        }
        security.apply(config)
    }
}
