//! Scale benchmark for the shape of real deployments (issue 15): many topics, many channels.
//!
//! ```text
//! cargo run --release -p ferry-brokerd --example scale_topics -- [TOPICS] [CHANNELS] [SECONDS]
//! ```
//!
//! Starts a broker in this process (data in a temp dir under `$TMPDIR`) and reports:
//! 1. time to create TOPICS topics (default 10,000) over HTTP from 8 concurrent clients, and the
//!    disk they use (as `du` counts it);
//! 2. the latency of single PUBs to a hot topic (one at a time, one connection) while the broker
//!    is idle and while those topics are created: p50/p99/max;
//! 3. the memory (RSS) CHANNELS idle channels (default 1,000) cost, per channel;
//! 4. publish throughput (MPUB of 100 × 200 B, 4 pipelined publishers on one connection, SECONDS
//!    seconds, default 5) to a topic with CHANNELS channels of which 10 have a consumer, beside
//!    the same on a topic with just those 10 channels.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use ferry_client::{Config as ClientConfig, Consumer, Producer};
use hdrhistogram::Histogram;

const CONSUMED: usize = 10;
const CREATORS: usize = 8;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: usize| -> anyhow::Result<usize> {
        args.get(i).map_or(Ok(default), |a| {
            a.parse()
                .context("arguments: [TOPICS] [CHANNELS] [SECONDS]")
        })
    };
    let (topics, channels, seconds) = (arg(0, 10_000)?, arg(1, 1_000)?, arg(2, 5)?);

    let dir = tempfile::tempdir()?;
    let cfg = ferry_brokerd::config::Config::for_tests(dir.path());
    let server = ferry_brokerd::Server::bind(cfg).await?;
    let (tcp, http) = (server.tcp_addr().to_string(), server.http_addr());
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(server.run(stop.clone()));
    let client = reqwest::Client::new();
    let base = format!("http://{http}");

    // 1 + 2: topic creation, with a hot topic's publish latency beside it.
    let hot = Producer::connect(tcp.clone(), ClientConfig::new()).await?;
    hot.publish("hot", "warm-up").await?;
    let idle = publish_latency(&hot, None, Duration::from_secs(2)).await?;
    let creating = Arc::new(AtomicBool::new(true));
    let started = Instant::now();
    let create = async {
        let created = create_topics(&client, &base, topics).await;
        creating.store(false, Ordering::Release);
        created
    };
    let during = publish_latency(&hot, Some(creating.clone()), Duration::ZERO);
    let (created, during) = tokio::join!(create, during);
    let (created, during) = (created?, during?);
    let took = started.elapsed();
    let used = disk_usage(&dir.path().join("topics"));
    println!(
        "created {created} topics over HTTP in {:.2} s ({:.0}/s); disk used {} MiB ({} KiB per topic)",
        took.as_secs_f64(),
        created as f64 / took.as_secs_f64(),
        used >> 20,
        used / 1024 / created.max(1) as u64
    );
    println!("hot-topic PUB latency, idle broker:    {}", summary(&idle));
    println!(
        "hot-topic PUB latency, while creating: {}",
        summary(&during)
    );

    // 3: idle channels.
    let rss_before = rss_bytes();
    for c in 0..channels {
        post(
            &client,
            &format!("{base}/channel/create?topic=fan&channel=c{c}"),
        )
        .await?;
    }
    let per_channel = rss_bytes().saturating_sub(rss_before) / channels.max(1) as u64;
    println!("{channels} idle channels: {per_channel} bytes of RSS each");
    for c in 0..CONSUMED {
        post(
            &client,
            &format!("{base}/channel/create?topic=few&channel=c{c}"),
        )
        .await?;
    }

    // 4: throughput with many idle channels beside 10 consumed ones.
    for topic in ["fan", "few", "fan", "few"] {
        let rate = fan_throughput(&tcp, topic, Duration::from_secs(seconds as u64)).await?;
        let n = if topic == "fan" { channels } else { CONSUMED };
        println!("publish to a topic with {n} channels ({CONSUMED} consumed): {rate:.0} msg/s");
    }

    stop.cancel();
    running.await??;
    Ok(())
}

/// Creates `n` topics with `CREATORS` concurrent HTTP clients.
async fn create_topics(client: &reqwest::Client, base: &str, n: usize) -> anyhow::Result<usize> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CREATORS {
        let (client, base, next) = (client.clone(), base.to_owned(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n as u64 {
                    return anyhow::Ok(());
                }
                post(&client, &format!("{base}/topic/create?topic=scale{i:05}")).await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(n)
}

async fn post(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let resp = client.post(url).send().await?;
    anyhow::ensure!(resp.status().is_success(), "{url}: {}", resp.status());
    Ok(())
}

/// Latency of single PUBs, one at a time, for `at_least` and while `until` is set.
async fn publish_latency(
    p: &Producer,
    until: Option<Arc<AtomicBool>>,
    at_least: Duration,
) -> anyhow::Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new(3)?;
    let started = Instant::now();
    let body = Bytes::from(vec![b'h'; 200]);
    loop {
        let going = until.as_ref().is_some_and(|u| u.load(Ordering::Acquire));
        if !going && started.elapsed() >= at_least {
            return Ok(h);
        }
        let t = Instant::now();
        p.publish("hot", body.clone()).await?;
        h.record(t.elapsed().as_micros() as u64)?;
    }
}

fn summary(h: &Histogram<u64>) -> String {
    format!(
        "{} PUBs, p50 {} µs, p99 {} µs, max {} µs",
        h.len(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max()
    )
}

/// Messages per second published to `topic` (whose channels c0..c9 get a consumer each) in
/// `run`, MPUB of 100 from 4 pipelined publishers; consumers FIN everything.
async fn fan_throughput(tcp: &str, topic: &str, run: Duration) -> anyhow::Result<f64> {
    let mut consumers = Vec::new();
    let received = Arc::new(AtomicU64::new(0));
    for c in 0..CONSUMED {
        let cfg = ClientConfig::new().max_in_flight(500);
        let (consumer, mut messages) = Consumer::stream(topic, &format!("c{c}"), cfg)?;
        consumer.connect_to_broker(tcp.to_owned()).await?;
        let received = received.clone();
        let task = tokio::spawn(async move {
            while let Some(m) = messages.recv().await {
                received.fetch_add(1, Ordering::Relaxed);
                let _ = m.finish().await;
            }
        });
        consumers.push((consumer, task));
    }
    let producer = Producer::connect(tcp.to_owned(), ClientConfig::new()).await?;
    let batch: Vec<Bytes> = (0..100).map(|_| Bytes::from(vec![b'f'; 200])).collect();
    let published = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut pubs = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (producer, batch, published, topic) = (
            producer.clone(),
            batch.clone(),
            published.clone(),
            topic.to_owned(),
        );
        pubs.spawn(async move {
            while started.elapsed() < run {
                producer.multi_publish(&topic, batch.clone()).await?;
                published.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = pubs.join_next().await {
        done??;
    }
    let rate = published.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    producer.stop().await;
    for (consumer, task) in consumers {
        consumer.stop().await;
        task.abort();
    }
    Ok(rate)
}

/// Bytes allocated under `dir`, as `du` counts them.
fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}

/// This process's resident set size.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}
