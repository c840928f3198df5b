//! Test harness: real brokers (ferry-testkit's in-process brokerd) on 127.0.0.1 in temp dirs,
//! restartable on the same port and data directory, condition waits with deadlines, and
//! consumers that record what they receive.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_client::{Config, Consumer, Error, Message, handler_fn};

pub use ferry_testkit::{DEADLINE, TestBroker, wait_until};

/// A client config for tests: fast reconnects and backoff.
pub fn client_config() -> Config {
    Config::new()
        .client_id("test")
        .reconnect_delay(Duration::from_millis(20))
        .max_reconnect_delay(Duration::from_millis(200))
        .backoff_multiplier(Duration::from_millis(5))
        .max_backoff_duration(Duration::from_millis(50))
        .default_requeue_delay(Duration::from_millis(10))
        .max_requeue_delay(Duration::from_millis(100))
        .dial_timeout(Duration::from_secs(2))
        .write_timeout(Duration::from_secs(5))
        .shutdown_timeout(Duration::from_secs(5))
}

/// Starts a broker in a fresh temp dir.
pub async fn start() -> TestBroker {
    ferry_testkit::broker::start(|_| {}).await
}

/// Bodies seen by a handler, shared with the test.
#[derive(Clone, Default)]
pub struct Seen(pub Arc<Mutex<Vec<String>>>);

impl Seen {
    pub fn push(&self, msg: &Message) {
        let body = String::from_utf8_lossy(msg.body()).into_owned();
        self.0.lock().unwrap().push(body);
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn bodies(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn sorted(&self) -> Vec<String> {
        let mut v = self.bodies();
        v.sort();
        v
    }
}

/// A consumer of `topic`/`channel` (not yet connected) that records every body it finishes.
pub fn recording_consumer(topic: &str, channel: &str, config: Config) -> (Consumer, Seen) {
    let seen = Seen::default();
    let s = seen.clone();
    let consumer = Consumer::new(
        topic,
        channel,
        config,
        handler_fn(move |msg| {
            let s = s.clone();
            async move {
                s.push(&msg);
                Ok::<_, Error>(())
            }
        }),
    )
    .unwrap();
    (consumer, seen)
}

/// `prefix-0000` ... as strings, sorted.
pub fn numbered(prefix: &str, n: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:05}")).collect();
    v.sort();
    v
}
