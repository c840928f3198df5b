//! Consumer against a real broker: load balancing, fan-out, requeue with backoff, max_attempts,
//! the stream API, graceful stop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::common::{Seen, client_config, numbered, start, wait_until};
use ferry_client::{Consumer, Error, Producer, handler_fn};
use tokio::sync::Notify;

fn recording_consumer(topic: &str, channel: &str, max_in_flight: u64) -> (Consumer, Seen) {
    crate::common::recording_consumer(topic, channel, client_config().max_in_flight(max_in_flight))
}

async fn publish_numbered(addr: &str, topic: &str, prefix: &str, n: usize) {
    let producer = Producer::connect(addr, client_config()).await.unwrap();
    for chunk in numbered(prefix, n).chunks(50) {
        producer.multi_publish(topic, chunk.to_vec()).await.unwrap();
    }
    producer.stop().await;
}

#[tokio::test]
async fn two_consumers_on_one_channel_share_the_messages() {
    let broker = start().await;
    let (a, seen_a) = recording_consumer("lb", "workers", 1);
    let (b, seen_b) = recording_consumer("lb", "workers", 1);
    a.connect_to_broker(broker.addr()).await.unwrap();
    b.connect_to_broker(broker.addr()).await.unwrap();
    publish_numbered(&broker.addr(), "lb", "m", 300).await;
    wait_until("300 messages in total", || {
        seen_a.len() + seen_b.len() >= 300
    })
    .await;
    broker
        .wait_channel("lb", "workers", "all finished", |c| {
            c.in_flight_count == 0 && c.depth == 0
        })
        .await;
    let mut all = seen_a.bodies();
    all.extend(seen_b.bodies());
    all.sort();
    assert_eq!(all, numbered("m", 300), "each message exactly once");
    assert!(
        seen_a.len() > 0 && seen_b.len() > 0,
        "both consumers got messages: {} / {}",
        seen_a.len(),
        seen_b.len()
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn every_channel_gets_every_message() {
    let broker = start().await;
    let (a, seen_a) = recording_consumer("fan", "one", 20);
    let (b, seen_b) = recording_consumer("fan", "two", 20);
    a.connect_to_broker(broker.addr()).await.unwrap();
    b.connect_to_broker(broker.addr()).await.unwrap();
    publish_numbered(&broker.addr(), "fan", "f", 200).await;
    wait_until("200 messages on each channel", || {
        seen_a.len() >= 200 && seen_b.len() >= 200
    })
    .await;
    assert_eq!(seen_a.sorted(), numbered("f", 200));
    assert_eq!(seen_b.sorted(), numbered("f", 200));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn failures_are_requeued_with_growing_attempts_then_succeed() {
    let broker = start().await;
    let attempts: Arc<Mutex<HashMap<String, Vec<u16>>>> = Arc::default();
    let seen = attempts.clone();
    let consumer = Consumer::new(
        "flaky",
        "c",
        client_config().max_in_flight(10).max_attempts(5),
        handler_fn(move |msg| {
            let seen = seen.clone();
            async move {
                let body = String::from_utf8_lossy(msg.body()).into_owned();
                seen.lock()
                    .unwrap()
                    .entry(body)
                    .or_default()
                    .push(msg.attempts());
                if msg.attempts() <= 2 {
                    Err("not yet")
                } else {
                    Ok(())
                }
            }
        }),
    )
    .unwrap();
    consumer.connect_to_broker(broker.addr()).await.unwrap();
    publish_numbered(&broker.addr(), "flaky", "r", 20).await;
    // Every failure also triggers RDY backoff; all messages still get through.
    let channel = broker
        .wait_channel("flaky", "c", "every message finished", |c| {
            c.depth == 0 && c.in_flight_count == 0 && c.deferred_count == 0 && c.requeue_count == 40
        })
        .await;
    assert_eq!(channel.timeout_count, 0);
    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 20);
    for (body, seen) in attempts.iter() {
        assert_eq!(seen, &[1, 2, 3], "{body}");
    }
    let stats = consumer.stats();
    assert_eq!(stats.messages_finished, 20);
    assert_eq!(stats.messages_requeued, 40);
    consumer.stop().await;
}

#[tokio::test]
async fn messages_failing_max_attempts_times_are_given_up_and_finished() {
    let broker = start().await;
    let given_up: Arc<Mutex<Vec<(String, u16)>>> = Arc::default();
    let handled = Arc::new(AtomicUsize::new(0));
    let (g, h) = (given_up.clone(), handled.clone());
    let consumer = Consumer::new(
        "doomed",
        "c",
        client_config().max_in_flight(5).max_attempts(3),
        handler_fn(move |_msg| {
            h.fetch_add(1, Ordering::Relaxed);
            async { Err::<(), _>("always fails") }
        })
        .on_give_up(move |msg| {
            let body = String::from_utf8_lossy(msg.body()).into_owned();
            g.lock().unwrap().push((body, msg.attempts()));
        }),
    )
    .unwrap();
    consumer.connect_to_broker(broker.addr()).await.unwrap();
    publish_numbered(&broker.addr(), "doomed", "d", 5).await;
    wait_until("5 messages given up", || {
        given_up.lock().unwrap().len() >= 5
    })
    .await;
    let channel = broker
        .wait_channel("doomed", "c", "nothing left", |c| {
            c.depth == 0 && c.in_flight_count == 0 && c.deferred_count == 0
        })
        .await;
    assert_eq!(channel.requeue_count, 10, "two requeues per message");
    let mut given_up = given_up.lock().unwrap().clone();
    given_up.sort();
    let want: Vec<(String, u16)> = numbered("d", 5).into_iter().map(|b| (b, 3)).collect();
    assert_eq!(given_up, want, "once per message, at attempt max_attempts");
    assert_eq!(handled.load(Ordering::Relaxed), 15);
    consumer.stop().await;
}

#[tokio::test]
async fn stream_consumers_answer_messages_themselves() {
    let broker = start().await;
    let (consumer, mut messages) =
        Consumer::stream("streamed", "c", client_config().max_in_flight(4)).unwrap();
    consumer.connect_to_broker(broker.addr()).await.unwrap();
    let producer = Producer::connect(broker.addr(), client_config())
        .await
        .unwrap();
    producer.publish("streamed", "hello").await.unwrap();

    let first = tokio::time::timeout(crate::common::DEADLINE, messages.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.body().as_ref(), b"hello");
    assert_eq!(first.attempts(), 1);
    first.touch().await.unwrap();
    first
        .requeue_without_backoff(Some(std::time::Duration::ZERO))
        .await
        .unwrap();
    let again = tokio::time::timeout(crate::common::DEADLINE, messages.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.attempts(), 2);
    // Dropped unanswered: requeued at once, not after msg_timeout.
    drop(again);
    let third = tokio::time::timeout(crate::common::DEADLINE, messages.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.attempts(), 3);
    third.finish().await.unwrap();
    broker
        .wait_channel("streamed", "c", "finished", |c| {
            c.in_flight_count == 0 && c.depth == 0 && c.requeue_count == 2
        })
        .await;
    let stop = tokio::spawn(async move { consumer.stop().await });
    // The stream ends once the consumer has stopped.
    assert!(
        tokio::time::timeout(crate::common::DEADLINE, messages.recv())
            .await
            .unwrap()
            .is_none()
    );
    stop.await.unwrap();
}

#[tokio::test]
async fn stop_waits_for_in_flight_handlers() {
    let broker = start().await;
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (s, r) = (started.clone(), release.clone());
    let consumer = Consumer::new(
        "slow",
        "c",
        client_config().max_in_flight(1),
        handler_fn(move |_msg| {
            let (s, r) = (s.clone(), r.clone());
            async move {
                s.notify_one();
                r.notified().await;
                Ok::<_, Error>(())
            }
        }),
    )
    .unwrap();
    consumer.connect_to_broker(broker.addr()).await.unwrap();
    let producer = Producer::connect(broker.addr(), client_config())
        .await
        .unwrap();
    producer.publish("slow", "work").await.unwrap();
    tokio::time::timeout(crate::common::DEADLINE, started.notified())
        .await
        .unwrap();
    let consumer = Arc::new(consumer);
    let stopping = {
        let consumer = consumer.clone();
        tokio::spawn(async move { consumer.stop().await })
    };
    // CLS reached the broker (client state 4 = closing) while the handler still runs.
    broker
        .wait_channel("slow", "c", "client closing", |c| {
            c.clients.first().is_some_and(|cl| cl.state == 4) && c.in_flight_count == 1
        })
        .await;
    assert!(!stopping.is_finished());
    release.notify_one();
    tokio::time::timeout(crate::common::DEADLINE, stopping)
        .await
        .unwrap()
        .unwrap();
    // The message was finished, not requeued by a disconnect.
    let channel = broker
        .wait_channel("slow", "c", "no client", |c| c.client_count == 0)
        .await;
    assert_eq!(channel.depth, 0);
    assert_eq!(channel.in_flight_count, 0);
    assert_eq!(channel.requeue_count, 0);
    assert_eq!(consumer.stats().messages_finished, 1);
}
