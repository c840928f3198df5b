//! Producer against a real broker: PUB, MPUB, DPUB round trips, pipelining from many tasks,
//! typed errors, reconnection after a fatal error, stop.

use std::time::{Duration, Instant};

use crate::common::{Seen, client_config, numbered, start, wait_until};
use ferry_client::{Consumer, Error, ErrorCode, Producer};

/// A consumer of `topic`/`channel` that records every body it finishes.
async fn recorder(
    broker: &crate::common::TestBroker,
    topic: &str,
    channel: &str,
) -> (Consumer, Seen) {
    let (consumer, seen) =
        crate::common::recording_consumer(topic, channel, client_config().max_in_flight(100));
    consumer.connect_to_broker(broker.addr()).await.unwrap();
    (consumer, seen)
}

#[tokio::test]
async fn publish_and_multi_publish_round_trip() {
    let broker = start().await;
    let (consumer, seen) = recorder(&broker, "rt", "c").await;
    let producer = Producer::connect(broker.addr(), client_config())
        .await
        .unwrap();
    producer.publish("rt", "one").await.unwrap();
    producer
        .multi_publish("rt", vec!["two", "three", "four"])
        .await
        .unwrap();
    wait_until("4 messages", || seen.len() == 4).await;
    assert_eq!(seen.bodies()[0], "one");
    assert_eq!(seen.sorted(), ["four", "one", "three", "two"]);
    let channel = broker
        .wait_channel("rt", "c", "all finished", |c| c.in_flight_count == 0)
        .await;
    assert_eq!(channel.depth, 0);
    assert_eq!(channel.message_count, 4);
    consumer.stop().await;
    producer.stop().await;
    assert!(matches!(
        producer.publish("rt", "x").await,
        Err(Error::Closed)
    ));
}

#[tokio::test]
async fn deferred_publish_is_delivered_after_its_delay() {
    let broker = start().await;
    let (consumer, seen) = recorder(&broker, "later", "c").await;
    let producer = Producer::connect(broker.addr(), client_config())
        .await
        .unwrap();
    let delay = Duration::from_millis(400);
    let sent = Instant::now();
    producer
        .deferred_publish("later", delay, "deferred")
        .await
        .unwrap();
    producer.publish("later", "now").await.unwrap();
    wait_until("both messages", || seen.len() == 2).await;
    let elapsed = sent.elapsed();
    assert_eq!(seen.bodies(), ["now", "deferred"]);
    assert!(
        elapsed >= delay,
        "deferred message arrived after {elapsed:?}"
    );
    consumer.stop().await;
}

#[tokio::test]
async fn many_tasks_pipeline_on_one_connection() {
    let broker = start().await;
    let (consumer, seen) = recorder(&broker, "pipe", "c").await;
    // Lazy: the first publish connects, once, whoever calls first.
    let producer = Producer::new(broker.addr(), client_config()).unwrap();
    let mut tasks = Vec::new();
    for t in 0..20 {
        let producer = producer.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let n = t * 100 + i * 2;
                producer.publish("pipe", format!("p-{n:05}")).await.unwrap();
                producer
                    .multi_publish("pipe", [format!("p-{:05}", n + 1)])
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    wait_until("2000 messages", || seen.len() == 2000).await;
    assert_eq!(seen.sorted(), numbered("p", 2000));
    let stats = broker.stats().await;
    let producers = &stats.producers;
    assert_eq!(producers.len(), 1, "one shared connection: {producers:?}");
    consumer.stop().await;
}

#[tokio::test]
async fn errors_are_typed_and_a_fatal_error_only_costs_a_reconnect() {
    let broker = start().await;
    let producer = Producer::connect(broker.addr(), client_config())
        .await
        .unwrap();
    // Refused before sending, with the broker's code: the connection stays up.
    let err = producer.publish("bad topic", "x").await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Protocol {
                code: ErrorCode::BadTopic,
                ..
            }
        ),
        "{err:?}"
    );
    let err = producer.publish("t", "").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadMessage));
    let err = producer
        .multi_publish("t", Vec::<String>::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadBody));
    // Refused by the broker (defer above --max-req-timeout): fatal, the broker closes.
    let err = producer
        .deferred_publish("t", Duration::from_secs(7200), "x")
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Protocol {
                code: ErrorCode::Invalid,
                ..
            }
        ),
        "{err:?}"
    );
    // The next call reconnects.
    producer.publish("t", "after").await.unwrap();
    // Nothing listens here.
    let dead = broker.stop().await;
    let err = Producer::connect("127.0.0.1:1", client_config())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(err.is_retryable());
    drop(dead);
}
