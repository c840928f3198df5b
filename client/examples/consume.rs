//! Prints the messages of a topic's channel, from brokers or through lookupd.
//!
//! ```text
//! cargo run -p ferry-client --example consume -- --broker 127.0.0.1:4150 --topic greetings
//! cargo run -p ferry-client --example consume -- --lookupd 127.0.0.1:4161 --topic greetings --channel tail#ephemeral -n 10
//! ```

use ferry_client::{Config, Consumer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut brokers, mut lookupds) = (Vec::new(), Vec::new());
    let mut topic = "test".to_owned();
    let mut channel = "tail#ephemeral".to_owned();
    let mut limit = u64::MAX;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--broker" => brokers.push(value()?),
            "--lookupd" => lookupds.push(value()?),
            "--topic" => topic = value()?,
            "--channel" => channel = value()?,
            "-n" => limit = value()?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if brokers.is_empty() && lookupds.is_empty() {
        brokers.push("127.0.0.1:4150".to_owned());
    }

    let (consumer, mut messages) =
        Consumer::stream(&topic, &channel, Config::new().max_in_flight(200))?;
    consumer.connect_to_brokers(brokers).await?;
    consumer.connect_to_lookupds(lookupds).await?;

    let mut received = 0;
    while received < limit {
        let msg = tokio::select! {
            msg = messages.recv() => match msg { Some(msg) => msg, None => break },
            _ = tokio::signal::ctrl_c() => break,
        };
        println!("{}", String::from_utf8_lossy(msg.body()));
        msg.finish().await?;
        received += 1;
    }
    // Keep answering while stopping: late deliveries are requeued, not lost.
    let stopping = tokio::spawn(async move { consumer.stop().await });
    while let Some(msg) = messages.recv().await {
        msg.requeue_without_backoff(Some(std::time::Duration::ZERO))
            .await?;
    }
    stopping.await?;
    Ok(())
}
