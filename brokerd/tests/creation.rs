// Its own test binary, not in tests/it/: it keeps every core busy, starving tests run beside it.
//! Creating topics and channels under contention, with every core kept busy: concurrent SUBs of
//! a new channel end on one channel, and a new topic learns lookupd's channels before its first
//! message or subscription.

#[path = "it/common/mod.rs"]
#[allow(dead_code, unused_imports)] // this binary uses part of it
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use ferry_proto::v2::Command;

/// Keeps every core busy until dropped: the races these tests look for show under load.
struct BusyLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BusyLoad {
    fn start() -> BusyLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                })
            })
            .collect();
        BusyLoad { stop, threads }
    }
}

impl Drop for BusyLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_subs_of_a_new_channel_share_one_channel() {
    let b = start(|_| {}).await;
    let _load = BusyLoad::start();
    const CONSUMERS: usize = 8;
    for round in 0..15 {
        let topic = format!("race{round}");
        let mut producer = b.conn().await;
        let mut subs = tokio::task::JoinSet::new();
        for _ in 0..CONSUMERS {
            let (addr, topic) = (b.tcp, topic.clone());
            subs.spawn(async move {
                let mut c = TestConn::connect(addr).await;
                c.identify(serde_json::json!({"client_id": "race"})).await;
                c.sub(&topic, "shared").await;
                c.rdy(1).await;
                c
            });
        }
        // Publishes race with the SUBs (and with the topic's creation).
        for i in 0..CONSUMERS {
            producer.publish(&topic, format!("m{i}").as_bytes()).await;
        }
        let mut consumers = Vec::new();
        while let Some(c) = subs.join_next().await {
            consumers.push(c.unwrap());
        }
        // Each consumer holds RDY 1 and never FINs, so it gets exactly one message if all of
        // them share the channel the messages went to.
        for c in &mut consumers {
            let m = c.message().await;
            assert!(m.body.starts_with(b"m"), "round {round}");
        }
        let stats = b.stats().await;
        let t = stats.topic(&topic).expect("topic in stats");
        let channels = &t.channels;
        assert_eq!(channels.len(), 1, "round {round}: {t:?}");
        assert_eq!(channels[0].clients.len(), CONSUMERS);
        assert_eq!(channels[0].in_flight_count, CONSUMERS as u64);
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_topic_has_lookupds_channels_before_its_first_message_under_load() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let l = start_lookupd(any, any).await;
    let b = start(|c| c.lookupd_tcp_addresses = vec![l.tcp.to_string()]).await;
    wait_knows_lookupd(b.http, l.http).await;
    let _load = BusyLoad::start();
    for round in 0..10 {
        let topic = format!("fresh{round}");
        // lookupd knows channel "early" (made by an operator, or another broker's consumer).
        l.create_channel(&topic, "early").await;
        // The first thing the broker hears of the topic is a SUB to another channel racing
        // with publishes: "early" must still start at the first message.
        let mut other = b.conn().await;
        other.identify(serde_json::json!({})).await;
        other
            .send(&Command::Sub {
                topic: topic.clone(),
                channel: "other".into(),
            })
            .await;
        let mut producer = b.conn().await;
        for i in 0..3 {
            producer.publish(&topic, format!("m{i}").as_bytes()).await;
        }
        other.expect_ok().await;
        let mut c = b.consumer(&topic, "early", 10).await;
        for i in 0..3 {
            assert_eq!(
                c.message().await.body,
                format!("m{i}").into_bytes(),
                "round {round}"
            );
        }
    }
    b.stop().await;
    l.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_right_after_start_gets_lookupds_channels() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let l = start_lookupd(any, any).await;
    for round in 0..5 {
        let topic = format!("boot{round}");
        l.create_channel(&topic, "early").await;
        // Published at once: the broker may not have heard lookupd's IDENTIFY answer yet.
        let b = start(|c| c.lookupd_tcp_addresses = vec![l.tcp.to_string()]).await;
        b.conn().await.publish(&topic, b"first").await;
        // Another channel first, so that "early", were it made only by the SUB below, would
        // start at the log's end (a topic's backlog goes to its first channel only).
        let (code, _) = b
            .http(
                "POST",
                &format!("/channel/create?topic={topic}&channel=other"),
                b"",
            )
            .await;
        assert_eq!(code, 200);
        let mut c = b.consumer(&topic, "early", 1).await;
        assert_eq!(&c.message().await.body[..], b"first", "round {round}");
        b.stop().await;
    }
    l.stop().await;
}

/// A lookupd that registers brokers but whose HTTP interface (the port it tells them in its
/// IDENTIFY answer) accepts connections and never answers. `registered` is notified at each
/// REGISTER (the broker knows the HTTP address by then).
async fn lookupd_with_silent_http(
    registered: Arc<tokio::sync::Notify>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use bytes::BytesMut;
    use ferry_proto::lookup::{self, LookupCommand};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_port = silent.local_addr().unwrap().port();
    let v1 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = v1.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            tokio::select! {
                Ok((s, _)) = silent.accept() => held.push(s),
                Ok((mut s, _)) = v1.accept() => {
                    let registered = registered.clone();
                    tokio::spawn(async move {
                        let mut buf = BytesMut::new();
                        let mut magic = [0u8; 4];
                        s.read_exact(&mut magic).await?;
                        loop {
                            while let Ok(Some(cmd)) = lookup::decode_command(&mut buf, 1 << 20) {
                                let mut out = BytesMut::new();
                                let reply = match cmd {
                                    LookupCommand::Identify(_) => serde_json::json!({
                                        "tcp_port": addr.port(), "http_port": http_port,
                                        "version": "1.3.0", "hostname": "silent",
                                        "broadcast_address": "127.0.0.1"
                                    })
                                    .to_string()
                                    .into_bytes(),
                                    LookupCommand::Register { .. } => {
                                        registered.notify_one();
                                        b"OK".to_vec()
                                    }
                                    _ => b"OK".to_vec(),
                                };
                                lookup::encode_response(&mut out, &reply);
                                s.write_all(&out).await?;
                            }
                            if s.read_buf(&mut buf).await? == 0 {
                                return std::io::Result::Ok(());
                            }
                        }
                    });
                }
            }
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_waiting_for_lookupd_stalls_no_other_topic() {
    let registered = Arc::new(tokio::sync::Notify::new());
    let (lookupd, fake) = lookupd_with_silent_http(registered.clone()).await;
    let wait = std::time::Duration::from_secs(2);
    let b = start(|c| {
        c.lookupd_tcp_addresses = vec![lookupd.to_string()];
        c.http_client_connect_timeout = wait;
        c.http_client_request_timeout = wait;
    })
    .await;
    let mut producer = b.conn().await;
    producer.publish("existing", b"first").await;
    // Once "existing" is registered there, the broker knows lookupd's (silent) HTTP address.
    tokio::time::timeout(DEADLINE, registered.notified())
        .await
        .expect("the broker registers with the lookupd");
    // While a new topic waits for lookupd (about `wait`), the existing topic is served.
    let creating = {
        let addr = b.tcp;
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            TestConn::connect(addr)
                .await
                .publish("brand_new", b"x")
                .await;
            started.elapsed()
        })
    };
    let started = std::time::Instant::now();
    let mut served = 0;
    while !creating.is_finished() {
        producer.publish("existing", b"during").await;
        served += 1;
    }
    let creation_took = creating.await.unwrap();
    assert!(creation_took >= wait / 2, "the creation waited for lookupd");
    assert!(
        served > 10,
        "only {served} publishes to another topic in {:?} of creation",
        started.elapsed()
    );
    b.stop().await;
    fake.abort();
}
