//! Publishes the given messages (or one per line of stdin) to a topic.
//!
//! ```text
//! cargo run -p ferry-client --example publish -- --broker 127.0.0.1:4150 --topic greetings hello world
//! seq 1 1000 | cargo run -p ferry-client --example publish -- --topic numbers
//! ```

use std::io::BufRead;

use ferry_client::{Config, Producer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut broker = "127.0.0.1:4150".to_owned();
    let mut topic = "test".to_owned();
    let mut bodies = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--broker" => broker = args.next().ok_or("--broker needs a value")?,
            "--topic" => topic = args.next().ok_or("--topic needs a value")?,
            _ => bodies.push(arg),
        }
    }
    if bodies.is_empty() {
        for line in std::io::stdin().lock().lines() {
            let line = line?;
            if !line.is_empty() {
                bodies.push(line);
            }
        }
    }
    let producer = Producer::connect(&broker, Config::new()).await?;
    match bodies.len() {
        0 => return Err("nothing to publish".into()),
        1 => producer.publish(&topic, bodies.remove(0)).await?,
        n => {
            // Batches of up to 500 messages, each published atomically.
            for chunk in bodies.chunks(500) {
                producer.multi_publish(&topic, chunk.to_vec()).await?;
            }
            eprintln!("published {n} messages to {topic}");
        }
    }
    producer.stop().await;
    Ok(())
}
