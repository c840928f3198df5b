//! Feeds: `ferry to-file`, `ferry to-http` and `ferry to-broker`, Ferry's nsq_to_file,
//! nsq_to_http and nsq_to_nsq. Each consumes one channel of one or more topics and hands every
//! message to a sink that answers it: FIN once the message is safely elsewhere (a synced file,
//! a 2xx answer, the destination broker's `OK`), REQ with backoff otherwise.
//!
//! # Layout
//!
//! - this module: the flags every feed shares ([`FeedArgs`], the NSQ tools' names), the
//!   subscription ([`Subscription`]: one consumer per topic, their messages merged into one
//!   queue) and the progress line on stderr ([`Progress`]);
//! - [`to_file`]: files per topic, rotated, optionally gzipped ([`file_name`]: the name tokens);
//! - [`to_http`], [`to_broker`]: one request or publish per message, spread over destinations
//!   by [`hosts`] (round-robin or hostpool).
//!
//! # Shutdown
//!
//! On SIGINT/SIGTERM a feed stops taking messages, finishes what it holds (answering each
//! message), then stops its consumers gracefully (`CLS`, every FIN written before the
//! connection closes) while requeueing whatever was still on its way. Messages are never given
//! up after `max_attempts`: a feed requeues until the message is delivered.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{parse_channel, parse_topic};

pub mod file_name;
pub mod hosts;
mod subscription;
pub mod to_broker;
pub mod to_file;
pub mod to_http;

pub use subscription::{ConsumerArgs, Subscription};

/// How often the progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The consumer flags every feed takes, named as in NSQ's tools.
#[derive(Debug, Clone, Args)]
pub struct FeedArgs {
    /// Topic to consume; repeatable.
    #[arg(long, required = true, value_parser = parse_topic)]
    pub topic: Vec<String>,

    /// Channel to consume from (default: the NSQ tool's name, e.g. `nsq_to_file`).
    #[arg(long, value_parser = parse_channel)]
    pub channel: Option<String>,

    /// A lookupd's HTTP address (host:port) to discover the brokers holding each topic;
    /// repeatable.
    #[arg(long = "lookupd-http-address", value_name = "ADDR")]
    pub lookupd_http_addresses: Vec<String>,

    /// A broker's TCP address (host:port); repeatable. Default, when no lookupd is given
    /// either: 127.0.0.1:4150.
    #[arg(
        long = "nsqd-tcp-address",
        visible_alias = "broker-tcp-address",
        value_name = "ADDR"
    )]
    pub nsqd_tcp_addresses: Vec<String>,

    /// RDY, go-nsq options, TLS, compression and AUTH.
    #[command(flatten)]
    pub consumer: ConsumerArgs,
}

/// Counters a feed shows on stderr every few seconds and once at the end.
#[derive(Debug)]
pub struct Progress {
    tool: &'static str,
    started: Instant,
    /// Messages delivered (FINed).
    pub done: AtomicU64,
    /// Messages requeued after a failure.
    pub failed: AtomicU64,
    /// Files completed (to-file).
    pub files: AtomicU64,
    /// The latest failure, shown once on the next progress line. A `std` mutex: held only to
    /// swap the text.
    last_error: Mutex<Option<String>>,
}

impl Progress {
    /// Counters for `tool`, and a task printing them every few seconds until `stop`.
    pub fn start(tool: &'static str, stop: CancellationToken) -> Arc<Progress> {
        let progress = Arc::new(Progress {
            tool,
            started: Instant::now(),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            files: AtomicU64::new(0),
            last_error: Mutex::new(None),
        });
        let p = progress.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            tick.tick().await;
            let mut last = (Instant::now(), 0);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let done = p.done.load(Ordering::Relaxed);
                let rate = (done - last.1) as f64 / last.0.elapsed().as_secs_f64();
                eprintln!("{} ({rate:.1}/s)", p.line());
                if let Some(err) = p.take_error() {
                    eprintln!("ferry {}: last failure: {err}", p.tool);
                }
                last = (Instant::now(), done);
            }
        });
        progress
    }

    /// `ferry to-x: N delivered, M requeued[, F files written]`.
    pub fn line(&self) -> String {
        let mut line = format!(
            "ferry {}: {} delivered, {} requeued",
            self.tool,
            self.done.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed)
        );
        let files = self.files.load(Ordering::Relaxed);
        if files > 0 {
            line.push_str(&format!(", {files} files written"));
        }
        line
    }

    /// Counts a failed delivery (the message was requeued) and remembers why.
    pub fn failed(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(why);
    }

    fn take_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The final line, with the average rate.
    pub fn summary(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        let done = self.done.load(Ordering::Relaxed) as f64;
        format!("{} in {secs:.1}s ({:.1}/s)", self.line(), done / secs)
    }
}

/// Sends each message with `send` (given the topic's index and the body), at most
/// `concurrency` at once, until `shutdown`: FIN once `send` succeeded, REQ with backoff (the
/// consumer's delay and RDY backoff) when it failed. Then waits for the sends under way and
/// stops the subscription.
pub async fn dispatch<F, Fut>(
    mut sub: Subscription,
    concurrency: usize,
    progress: &Arc<Progress>,
    shutdown: &CancellationToken,
    send: F,
) where
    F: Fn(usize, Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let tasks = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let (i, msg) = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = sub.messages.recv() => match next {
                Some(next) => next,
                None => break,
            },
        };
        let send = send.clone();
        let progress = progress.clone();
        tasks.spawn(async move {
            let _permit = permit;
            match send(i, msg.body().clone()).await {
                Ok(()) => {
                    // A lost connection means the broker delivers it again (at least once).
                    let _ = msg.finish().await;
                    progress.done.fetch_add(1, Ordering::Relaxed);
                }
                Err(why) => {
                    let _ = msg.requeue(None).await;
                    progress.failed(why);
                }
            }
        });
    }
    tasks.close();
    tasks.wait().await;
    sub.stop().await;
}
