//! The classic microservice pipeline, all three services in one process:
//!
//! ```text
//! sensor ──PUB readings──▶ [readings/squarer] ──▶ worker 1 ┐
//!                                             └─▶ worker 2 ┴─PUB squares──▶ [squares/log] ──▶ app
//! ```
//!
//! The two workers share channel `squarer`, so each reading goes to one of them (load
//! balancing); the app logs every result from channel `log`.
//!
//! ```text
//! cargo run -p ferry-brokerd --bin brokerd -- --data-path /tmp/ferry --tcp-address 127.0.0.1:4150 --http-address 127.0.0.1:4151
//! cargo run -p ferry-client --example pipeline -- --broker 127.0.0.1:4150 [--count 20] [--interval-ms 100]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferry_client::{Config, Consumer, Producer, handler_fn};
use tokio::sync::Notify;

struct Args {
    broker: String,
    count: u64,
    interval: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        broker: "127.0.0.1:4150".into(),
        count: 20,
        interval: Duration::from_millis(100),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--broker" => args.broker = value()?,
            "--count" => args.count = value()?.parse().map_err(|e| format!("--count: {e}"))?,
            "--interval-ms" => {
                let ms = value()?
                    .parse()
                    .map_err(|e| format!("--interval-ms: {e}"))?;
                args.interval = Duration::from_millis(ms);
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

/// A worker: squares each reading and publishes the result.
async fn worker(name: &'static str, broker: &str) -> Result<Consumer, ferry_client::Error> {
    let producer = Producer::connect(broker, Config::new().client_id(name)).await?;
    let consumer = Consumer::new(
        "readings",
        "squarer",
        Config::new().client_id(name).max_in_flight(4),
        handler_fn(move |msg| {
            let producer = producer.clone();
            async move {
                let text = std::str::from_utf8(msg.body()).map_err(|e| e.to_string())?;
                let n: i64 = text.trim().parse().map_err(|e| format!("{text:?}: {e}"))?;
                let square = n * n;
                println!("{name}: {n} → {square}");
                producer
                    .publish("squares", format!("{n}² = {square}"))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(())
            }
        }),
    )?;
    consumer.connect_to_broker(broker).await?;
    Ok(consumer)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = parse_args()?;

    // The app: logs every square, and says when it has seen them all.
    let logged = Arc::new(AtomicU64::new(0));
    let all_logged = Arc::new(Notify::new());
    let (seen, done, count) = (logged.clone(), all_logged.clone(), args.count);
    let app = Consumer::new(
        "squares",
        "log",
        Config::new().client_id("app").max_in_flight(16),
        handler_fn(move |msg| {
            let (seen, done) = (seen.clone(), done.clone());
            async move {
                println!("app: {}", String::from_utf8_lossy(msg.body()));
                if seen.fetch_add(1, Ordering::AcqRel) + 1 >= count {
                    done.notify_one();
                }
                Ok::<_, std::convert::Infallible>(())
            }
        }),
    )?;
    app.connect_to_broker(&args.broker).await?;

    // Two workers on the same channel: each reading goes to one of them.
    let workers = [
        worker("worker-1", &args.broker).await?,
        worker("worker-2", &args.broker).await?,
    ];

    // The sensor.
    let sensor = Producer::connect(&args.broker, Config::new().client_id("sensor")).await?;
    for reading in 1..=args.count {
        sensor.publish("readings", reading.to_string()).await?;
        println!("sensor: {reading}");
        tokio::time::sleep(args.interval).await;
    }

    tokio::select! {
        _ = all_logged.notified() => println!("all {} squares logged", args.count),
        _ = tokio::signal::ctrl_c() => println!("interrupted"),
    }
    sensor.stop().await;
    for worker in &workers {
        worker.stop().await;
    }
    app.stop().await;
    Ok(())
}
