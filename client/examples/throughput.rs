//! Client throughput: publishes N messages with `multi_publish` over several producers, then
//! consumes them all with one consumer, and prints msgs/s for each phase.
//!
//! ```text
//! # against an in-process broker (temp dir):
//! cargo run --release -p ferry-client --example throughput
//! # against a running broker:
//! cargo run --release -p ferry-client --example throughput -- --broker 127.0.0.1:4150
//! ```
//!
//! Flags: `--messages N` (1000000), `--size BYTES` (200), `--batch N` (200), `--producers N` (2),
//! `--pipeline N` concurrent batches per producer (4), `--max-in-flight N` (2500),
//! `--handlers N` concurrent handlers (1), `--stream` (consume with the stream API instead),
//! `--snappy`, `--deflate LEVEL`, `--tls-ca FILE` (TLS, trusting the broker's CA).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_client::{Config, Consumer, Producer, handler_fn};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
struct Args {
    broker: Option<String>,
    messages: u64,
    size: usize,
    batch: u64,
    producers: usize,
    pipeline: usize,
    max_in_flight: u64,
    handlers: usize,
    stream: bool,
    snappy: bool,
    deflate: Option<u32>,
    tls_ca: Option<String>,
}

fn parse_args() -> Result<Args, Box<dyn std::error::Error>> {
    let mut a = Args {
        broker: None,
        messages: 1_000_000,
        size: 200,
        batch: 200,
        producers: 2,
        pipeline: 4,
        max_in_flight: 2500,
        handlers: 1,
        stream: false,
        snappy: false,
        deflate: None,
        tls_ca: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--stream" || flag == "--snappy" {
            a.stream |= flag == "--stream";
            a.snappy |= flag == "--snappy";
            continue;
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--broker" => a.broker = Some(value),
            "--messages" => a.messages = value.parse()?,
            "--size" => a.size = value.parse()?,
            "--batch" => a.batch = value.parse()?,
            "--producers" => a.producers = value.parse()?,
            "--pipeline" => a.pipeline = value.parse()?,
            "--max-in-flight" => a.max_in_flight = value.parse()?,
            "--handlers" => a.handlers = value.parse()?,
            "--deflate" => a.deflate = Some(value.parse()?),
            "--tls-ca" => a.tls_ca = Some(value),
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    Ok(a)
}

/// `--snappy`, `--deflate LEVEL` and `--tls-ca FILE` (the broker's CA) applied to `config`.
fn with_options(args: &Args, mut config: Config) -> Result<Config, Box<dyn std::error::Error>> {
    if args.snappy {
        config = config.snappy(true);
    }
    if let Some(level) = args.deflate {
        config = config.deflate(level);
    }
    if let Some(ca) = &args.tls_ca {
        config = config.tls(ferry_client::tls::client_config(Some(ca.as_ref()), None)?);
    }
    Ok(config)
}

fn report(what: &str, n: u64, size: usize, took: Duration) {
    let secs = took.as_secs_f64();
    println!(
        "{what}: {n} msgs in {secs:.2}s = {:.0} msgs/s ({:.1} MB/s)",
        n as f64 / secs,
        (n as f64 * size as f64) / secs / 1e6
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let shutdown = CancellationToken::new();
    let mut _data_dir = None;
    let mut broker_task = None;
    let broker = match &args.broker {
        Some(addr) => addr.clone(),
        None => {
            let dir = tempfile::tempdir()?;
            let server =
                ferry_brokerd::Server::bind(ferry_brokerd::config::Config::for_tests(dir.path()))
                    .await
                    .map_err(|e| e.to_string())?;
            let addr = server.tcp_addr().to_string();
            broker_task = Some(tokio::spawn(server.run(shutdown.clone())));
            _data_dir = Some(dir);
            println!("in-process broker on {addr}");
            addr
        }
    };
    let topic = format!("throughput-{}", std::process::id());
    let batches = args.messages.div_ceil(args.batch);
    let total = batches * args.batch;
    println!("{args:?}");

    // Publish: `producers` connections, `pipeline` batches in flight on each.
    let body = Bytes::from(vec![b'x'; args.size]);
    let next_batch = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..args.producers {
        let producer = Producer::connect(
            &broker,
            with_options(&args, Config::new().client_id(format!("writer-{p}")))?,
        )
        .await?;
        for _ in 0..args.pipeline {
            let (producer, next_batch, body, topic) = (
                producer.clone(),
                next_batch.clone(),
                body.clone(),
                topic.clone(),
            );
            let batch = args.batch as usize;
            tasks.push(tokio::spawn(async move {
                while next_batch.fetch_add(1, Ordering::Relaxed) < batches {
                    let bodies = vec![body.clone(); batch];
                    producer.multi_publish(&topic, bodies).await?;
                }
                Ok::<_, ferry_client::Error>(())
            }));
        }
    }
    for task in tasks {
        task.await??;
    }
    report("publish", total, args.size, start.elapsed());

    // Consume everything.
    let config = with_options(
        &args,
        Config::new()
            .client_id("reader")
            .max_in_flight(args.max_in_flight)
            .concurrent_handlers(args.handlers)
            .output_buffer_size(64 * 1024),
    )?;
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let start = Instant::now();
    let consumer = if args.stream {
        let (consumer, mut messages) = Consumer::stream(&topic, "bench", config)?;
        let (received, done) = (received.clone(), done.clone());
        tokio::spawn(async move {
            while let Some(msg) = messages.recv().await {
                let _ = msg.finish().await;
                if received.fetch_add(1, Ordering::Relaxed) + 1 == total {
                    done.notify_one();
                }
            }
        });
        consumer
    } else {
        let (received, done) = (received.clone(), done.clone());
        Consumer::new(
            &topic,
            "bench",
            config,
            handler_fn(move |_msg| {
                if received.fetch_add(1, Ordering::Relaxed) + 1 == total {
                    done.notify_one();
                }
                std::future::ready(Ok::<_, std::convert::Infallible>(()))
            }),
        )?
    };
    consumer.connect_to_broker(&broker).await?;
    done.notified().await;
    report("consume", total, args.size, start.elapsed());
    consumer.stop().await;

    shutdown.cancel();
    if let Some(task) = broker_task {
        task.await?.map_err(|e| e.to_string())?;
    }
    Ok(())
}
