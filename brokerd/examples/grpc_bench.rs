//! Throughput of the gRPC API, with the generated tonic client: the counterpart of
//! `ferry bench writer` / `ferry bench reader` for `--grpc-address`.
//!
//! ```text
//! cargo run --release --bin brokerd -- --data-path /tmp/grpcbench --grpc-address 127.0.0.1:4453 ...
//! cargo run --release -p ferry-brokerd --example grpc_bench -- pub --addr 127.0.0.1:4453 --runfor 10s
//! cargo run --release -p ferry-brokerd --example grpc_bench -- sub --addr 127.0.0.1:4453 --expect N
//! ```
//!
//! `pub`: `--streams` tasks, each with its own connection, publish batches of `--batch`
//! messages of `--size` bytes, one Publish call after the other, for `--runfor`. The topic has
//! no channel yet, so the broker keeps everything for the first channel.
//! `sub`: `--streams` Subscribe streams on one channel, each with `--credit`, FIN every message,
//! until `--expect` messages (or `--runfor`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use ferry_brokerd::grpc::pb;
use ferry_brokerd::grpc::pb::broker_client::BrokerClient;
use ferry_brokerd::grpc::pb::subscribe_request::Command as Cmd;
use ferry_brokerd::grpc::pb::subscribe_response::Event;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Publish batches for a fixed time.
    Pub {
        #[command(flatten)]
        common: Common,
        /// Messages per Publish call.
        #[arg(long, default_value_t = 200)]
        batch: usize,
        /// Body size in bytes.
        #[arg(long, default_value_t = 200)]
        size: usize,
    },
    /// Consume (and FIN) until --expect messages or --runfor.
    Sub {
        #[command(flatten)]
        common: Common,
        /// Channel to consume.
        #[arg(long, default_value = "ch")]
        channel: String,
        /// Credit (max in flight) per stream.
        #[arg(long, default_value_t = 2500)]
        credit: u32,
        /// Stop once this many messages arrived (all streams together).
        #[arg(long)]
        expect: Option<u64>,
    },
}

#[derive(Debug, clap::Args)]
struct Common {
    /// The broker's gRPC address.
    #[arg(long, default_value = "127.0.0.1:4153")]
    addr: String,
    /// Topic.
    #[arg(long, default_value = "grpc_bench")]
    topic: String,
    /// Concurrent streams (each with its own connection).
    #[arg(long, default_value_t = 2)]
    streams: usize,
    /// Time limit.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    runfor: Duration,
}

type Client = BrokerClient<tonic::transport::Channel>;

async fn connect(addr: &str) -> anyhow::Result<Client> {
    Ok(BrokerClient::connect(format!("http://{addr}")).await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().mode {
        Mode::Pub {
            common,
            batch,
            size,
        } => publish(common, batch, size).await,
        Mode::Sub {
            common,
            channel,
            credit,
            expect,
        } => subscribe(common, channel, credit, expect).await,
    }
}

async fn publish(c: Common, batch: usize, size: usize) -> anyhow::Result<()> {
    let body = Bytes::from(vec![b'x'; size]);
    let bodies: Vec<Bytes> = (0..batch).map(|_| body.clone()).collect();
    let mut clients = Vec::new();
    for _ in 0..c.streams {
        clients.push(connect(&c.addr).await?);
    }
    let start = Instant::now();
    let end = start + c.runfor;
    let mut tasks = tokio::task::JoinSet::new();
    for mut client in clients {
        let (topic, bodies) = (c.topic.clone(), bodies.clone());
        tasks.spawn(async move {
            let mut sent = 0u64;
            while Instant::now() < end {
                let req = pb::PublishRequest {
                    topic: topic.clone(),
                    bodies: bodies.clone(),
                    defer_ms: 0,
                };
                client.publish(req).await?;
                sent += bodies.len() as u64;
            }
            anyhow::Ok(sent)
        });
    }
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        total += r??;
    }
    report("publish", total, size, start.elapsed(), &c);
    Ok(())
}

async fn subscribe(
    c: Common,
    channel: String,
    credit: u32,
    expect: Option<u64>,
) -> anyhow::Result<()> {
    let received = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let limit = expect.unwrap_or(u64::MAX);
    let mut streams = Vec::new();
    for _ in 0..c.streams {
        let mut client = connect(&c.addr).await?;
        let (tx, rx) = mpsc::channel(4096);
        tx.send(pb::SubscribeRequest {
            command: Some(Cmd::Open(pb::Open {
                topic: c.topic.clone(),
                channel: channel.clone(),
                max_in_flight: credit,
                user_agent: "grpc_bench".into(),
                ..Default::default()
            })),
        })
        .await?;
        let mut inbound = client
            .subscribe(ReceiverStream::new(rx))
            .await?
            .into_inner();
        match inbound.message().await? {
            Some(pb::SubscribeResponse {
                event: Some(Event::Subscribed(_)),
            }) => {}
            other => anyhow::bail!("expected subscribed, got {other:?}"),
        }
        streams.push((tx, inbound));
    }
    let start = Instant::now();
    let end = tokio::time::Instant::now() + c.runfor;
    let mut tasks = tokio::task::JoinSet::new();
    for (tx, mut inbound) in streams {
        let (received, bytes) = (received.clone(), bytes.clone());
        tasks.spawn(async move {
            loop {
                if received.load(Ordering::Relaxed) >= limit {
                    return anyhow::Ok(());
                }
                let next = tokio::time::timeout_at(end, inbound.message()).await;
                let Ok(next) = next else { return Ok(()) };
                let Some(resp) = next? else { return Ok(()) };
                let Some(Event::Messages(batch)) = resp.event else {
                    continue;
                };
                let n = batch.messages.len() as u64;
                let mut b = 0;
                for m in batch.messages {
                    b += m.body.len() as u64;
                    tx.send(pb::SubscribeRequest {
                        command: Some(Cmd::Fin(pb::Finish { id: m.id })),
                    })
                    .await?;
                }
                bytes.fetch_add(b, Ordering::Relaxed);
                received.fetch_add(n, Ordering::Relaxed);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    // Streams that stop last may receive what the first ones left in flight (requeued when
    // they disconnect): count no more than asked for.
    let total = received.load(Ordering::Relaxed).min(limit);
    let size = bytes.load(Ordering::Relaxed) / total.max(1);
    report("consume", total, size as usize, start.elapsed(), &c);
    Ok(())
}

fn report(what: &str, total: u64, size: usize, elapsed: Duration, c: &Common) {
    let secs = elapsed.as_secs_f64();
    let rate = total as f64 / secs;
    println!(
        "gRPC {what}: {total} messages of {size} B in {secs:.2}s over {} streams: {rate:.0} msgs/s, {:.1} MB/s",
        c.streams,
        rate * size as f64 / 1e6
    );
}
