//! The gRPC API with the generated tonic client against an in-process broker: publish and
//! consume, sharing a channel with a TCP consumer, REQ/TOUCH/timeouts, disconnects, credit,
//! errors, deferred publish, Stats and shutdown.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::DEADLINE;
use ferry_brokerd::grpc::pb;
use ferry_brokerd::grpc::pb::broker_client::BrokerClient;
use ferry_brokerd::grpc::pb::subscribe_request::Command as Cmd;
use ferry_brokerd::grpc::pb::subscribe_response::Event;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

async fn client(addr: SocketAddr) -> BrokerClient<Channel> {
    tokio::time::timeout(DEADLINE, BrokerClient::connect(format!("http://{addr}")))
        .await
        .expect("connect in time")
        .expect("connect")
}

async fn publish(
    c: &mut BrokerClient<Channel>,
    topic: &str,
    bodies: &[&[u8]],
    defer_ms: u64,
) -> Result<pb::PublishResponse, Status> {
    c.publish(pb::PublishRequest {
        topic: topic.into(),
        bodies: bodies.iter().map(|b| b.to_vec().into()).collect(),
        defer_ms,
    })
    .await
    .map(tonic::Response::into_inner)
}

fn open(topic: &str, channel: &str, credit: u32, msg_timeout_ms: u32) -> Cmd {
    Cmd::Open(pb::Open {
        topic: topic.into(),
        channel: channel.into(),
        max_in_flight: credit,
        msg_timeout_ms,
        ..Default::default()
    })
}

/// One Subscribe stream.
struct Sub {
    tx: mpsc::Sender<pb::SubscribeRequest>,
    rx: Streaming<pb::SubscribeResponse>,
    queued: std::collections::VecDeque<pb::Message>,
}

impl Sub {
    /// Opens the stream with `first` without waiting for an answer.
    async fn start(addr: SocketAddr, first: Cmd) -> Result<Sub, Status> {
        let (tx, rx) = mpsc::channel(64);
        tx.send(pb::SubscribeRequest {
            command: Some(first),
        })
        .await
        .unwrap();
        let mut c = client(addr).await;
        let rx = tokio::time::timeout(DEADLINE, c.subscribe(ReceiverStream::new(rx)))
            .await
            .expect("subscribe answered in time")?
            .into_inner();
        Ok(Sub {
            tx,
            rx,
            queued: Default::default(),
        })
    }

    /// Opens and waits for `subscribed`.
    async fn open(addr: SocketAddr, topic: &str, channel: &str, credit: u32) -> Sub {
        Sub::open_with(addr, open(topic, channel, credit, 0)).await
    }

    async fn open_with(addr: SocketAddr, first: Cmd) -> Sub {
        let mut s = Sub::start(addr, first).await.expect("subscribe");
        match s.event().await.expect("stream open") {
            Event::Subscribed(_) => s,
            e => panic!("expected subscribed, got {e:?}"),
        }
    }

    async fn send(&self, cmd: Cmd) {
        self.tx
            .send(pb::SubscribeRequest { command: Some(cmd) })
            .await
            .expect("stream open");
    }

    async fn fin(&self, id: &str) {
        self.send(Cmd::Fin(pb::Finish { id: id.into() })).await;
    }

    async fn credit(&self, n: u32) {
        self.send(Cmd::Credit(pb::Credit { max_in_flight: n }))
            .await;
    }

    /// Next event; `Err` is the stream's final status, `Ok(None)`-like ends panic.
    async fn event(&mut self) -> Result<Event, Status> {
        let next = tokio::time::timeout(DEADLINE, self.rx.message())
            .await
            .expect("event within deadline")?;
        Ok(next.expect("stream still open").event.expect("event set"))
    }

    /// Next message (events of other kinds panic).
    async fn message(&mut self) -> pb::Message {
        loop {
            if let Some(m) = self.queued.pop_front() {
                return m;
            }
            match self.event().await.expect("stream open") {
                Event::Messages(b) => {
                    assert!(!b.messages.is_empty());
                    self.queued.extend(b.messages);
                }
                e => panic!("expected messages, got {e:?}"),
            }
        }
    }

    /// Next message within `wait`, if any.
    async fn message_within(&mut self, wait: Duration) -> Option<pb::Message> {
        if let Some(m) = self.queued.pop_front() {
            return Some(m);
        }
        match tokio::time::timeout(wait, self.rx.message()).await {
            Err(_) => None,
            Ok(r) => match r.expect("stream ok").expect("stream open").event {
                Some(Event::Messages(b)) => {
                    self.queued.extend(b.messages);
                    self.queued.pop_front()
                }
                e => panic!("expected messages, got {e:?}"),
            },
        }
    }

    /// Asserts that nothing arrives within `wait` (a bounded wait for an absence).
    async fn expect_no_message(&mut self, wait: Duration) {
        if let Some(m) = self.message_within(wait).await {
            panic!("expected nothing, got {m:?}");
        }
    }
}

fn assert_status(r: Result<impl std::fmt::Debug, Status>, code: Code, prefix: &str) {
    match r {
        Ok(v) => panic!("expected {code:?} {prefix}, got {v:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "{s:?}");
            assert!(s.message().starts_with(prefix), "expected {prefix}: {s:?}");
        }
    }
}

/// The stream's final status (skipping nothing: any event before it panics).
async fn final_status(s: &mut Sub) -> Status {
    match s.event().await {
        Err(status) => status,
        Ok(e) => panic!("expected the stream to end, got {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_consume_round_trip() {
    let b = crate::common::start(|_| {}).await;
    let mut c = client(b.grpc).await;
    let mut sub = Sub::open(b.grpc, "orders", "ship", 10).await;
    let r = publish(&mut c, "orders", &[b"one"], 0).await.unwrap();
    assert_eq!(r.count, 1);
    assert_eq!(r.first_id.len(), 16);
    let r = publish(&mut c, "orders", &[b"two", b"three", b"four"], 0)
        .await
        .unwrap();
    assert_eq!(r.count, 3);
    let mut ids = HashSet::new();
    for want in ["one", "two", "three", "four"] {
        let m = sub.message().await;
        assert_eq!(&m.body[..], want.as_bytes());
        assert_eq!(m.attempts, 1);
        assert_eq!(m.id.len(), 16);
        assert!(m.id.bytes().all(|b| b.is_ascii_hexdigit()), "{}", m.id);
        assert!(m.timestamp_ns > 0);
        assert!(ids.insert(m.id.clone()));
        sub.fin(&m.id).await;
    }
    let ch = b
        .wait_channel("orders", "ship", "all FINed", |c| {
            c.in_flight_count == 0 && c.depth == 0 && c.message_count == 4
        })
        .await;
    // The gRPC subscriber is a client of the channel like a TCP one, with tonic's user agent.
    let clients = &ch.clients;
    assert_eq!(clients.len(), 1, "{ch:?}");
    assert_eq!(clients[0].finish_count, 4);
    assert_eq!(clients[0].ready_count, 10);
    assert_eq!(clients[0].state, 3);
    let ua = &clients[0].user_agent;
    assert!(ua.contains("tonic"), "{ua}");
    // Messages published over gRPC are ordinary messages: a TCP consumer of another channel
    // created before them would see them too, and HTTP's /stats counts them.
    let s = b.stats().await;
    assert_eq!(s.topic("orders").unwrap().message_count, 4);
    drop(sub);
    b.wait_channel("orders", "ship", "subscriber gone", |c| c.client_count == 0)
        .await;
    b.stop().await;
}

/// Consumes with FIN until `total` messages were received by all consumers together.
/// Returns the stream too: dropping it cancels the call, and FINs still queued in the client
/// would never reach the broker (their messages would be redelivered, as at-least-once allows).
async fn drain_grpc(mut sub: Sub, seen: Arc<AtomicUsize>, total: usize) -> (Vec<Vec<u8>>, Sub) {
    let end = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    while seen.load(Ordering::SeqCst) < total {
        assert!(Instant::now() < end, "gRPC consumer: timed out");
        if let Some(m) = sub.message_within(Duration::from_millis(50)).await {
            seen.fetch_add(1, Ordering::SeqCst);
            sub.fin(&m.id).await;
            got.push(m.body.to_vec());
        }
    }
    (got, sub)
}

async fn drain_tcp(
    mut conn: crate::common::TestConn,
    seen: Arc<AtomicUsize>,
    total: usize,
) -> Vec<Vec<u8>> {
    use ferry_proto::v2::Frame;
    let end = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    while seen.load(Ordering::SeqCst) < total {
        assert!(Instant::now() < end, "TCP consumer: timed out");
        match conn.frame_within(Duration::from_millis(50)).await {
            Err(()) => {}
            Ok(Some(Frame::Message(m))) => {
                seen.fetch_add(1, Ordering::SeqCst);
                conn.fin(&m.id).await;
                got.push(m.body.to_vec());
            }
            Ok(Some(Frame::Response(r))) if &r[..] == ferry_proto::v2::HEARTBEAT => {
                conn.send(&ferry_proto::v2::Command::Nop).await
            }
            Ok(f) => panic!("unexpected frame {f:?}"),
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_tcp_subscribers_share_a_channel() {
    let b = crate::common::start(|_| {}).await;
    let tcp = b.consumer("shared", "work", 5).await;
    let grpc = Sub::open(b.grpc, "shared", "work", 5).await;
    b.wait_channel("shared", "work", "two subscribers", |c| c.client_count == 2)
        .await;
    const N: usize = 400;
    let seen = Arc::new(AtomicUsize::new(0));
    let g = tokio::spawn(drain_grpc(grpc, seen.clone(), N));
    let t = tokio::spawn(drain_tcp(tcp, seen.clone(), N));
    let mut c = client(b.grpc).await;
    for chunk in 0..(N / 100) {
        let bodies: Vec<Vec<u8>> = (0..100)
            .map(|i| format!("m{}", chunk * 100 + i).into_bytes())
            .collect();
        let refs: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
        publish(&mut c, "shared", &refs, 0).await.unwrap();
    }
    let ((g, _grpc), t) = (g.await.unwrap(), t.await.unwrap());
    assert!(!g.is_empty(), "the gRPC subscriber got none");
    assert!(!t.is_empty(), "the TCP subscriber got none");
    let mut all: Vec<Vec<u8>> = g.iter().chain(t.iter()).cloned().collect();
    assert_eq!(all.len(), N, "grpc {} + tcp {}", g.len(), t.len());
    all.sort();
    all.dedup();
    assert_eq!(all.len(), N, "a message was delivered twice");
    b.wait_channel("shared", "work", "all FINed", |c| {
        c.in_flight_count == 0 && c.depth == 0 && c.requeue_count == 0
    })
    .await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn req_touch_and_timeout_redelivery() {
    let b = crate::common::start(|_| {}).await;
    let mut c = client(b.grpc).await;
    let mut sub = Sub::open_with(b.grpc, open("retry", "ch", 1, 1000)).await;
    publish(&mut c, "retry", &[b"job"], 0).await.unwrap();

    // REQ with a delay: deferred, then delivered again with attempts 2.
    let m = sub.message().await;
    assert_eq!(m.attempts, 1);
    let requeued = Instant::now();
    sub.send(Cmd::Req(pb::Requeue {
        id: m.id.clone(),
        delay_ms: 300,
    }))
    .await;
    let m2 = sub.message().await;
    assert!(
        requeued.elapsed() >= Duration::from_millis(250),
        "REQ delay not honoured"
    );
    assert_eq!((m2.id.as_str(), m2.attempts), (m.id.as_str(), 2));
    let ch = b.channel_stats("retry", "ch").await;
    assert_eq!(ch.requeue_count, 1, "{ch:?}");

    // TOUCH keeps it in flight past its 1 s timeout.
    let touched_until = Instant::now() + Duration::from_millis(1800);
    while Instant::now() < touched_until {
        sub.send(Cmd::Touch(pb::Touch { id: m.id.clone() })).await;
        sub.expect_no_message(Duration::from_millis(300)).await;
    }
    assert_eq!(b.channel_stats("retry", "ch").await.timeout_count, 0);

    // Without TOUCH it times out and comes back with attempts 3.
    let m3 = sub.message().await;
    assert_eq!((m3.id.as_str(), m3.attempts), (m.id.as_str(), 3));
    let ch = b.channel_stats("retry", "ch").await;
    assert_eq!(ch.timeout_count, 1, "{ch:?}");

    // FIN of a message no longer in flight is refused without ending the stream ...
    sub.fin("0000000000000001").await;
    match sub.event().await.unwrap() {
        Event::OperationFailed(f) => {
            assert_eq!(f.id, "0000000000000001");
            assert!(
                f.error
                    .starts_with("E_FIN_FAILED FIN 0000000000000001 failed"),
                "{f:?}"
            );
        }
        e => panic!("expected operation_failed, got {e:?}"),
    }
    sub.fin(&m3.id).await;
    b.wait_channel("retry", "ch", "FINed", |c| c.in_flight_count == 0)
        .await;
    // ... but an ID that is not 16 characters is fatal, as in V2.
    sub.fin("xyz").await;
    let s = final_status(&mut sub).await;
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(s.message(), "E_INVALID Invalid Message ID");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_requeues_in_flight_at_once() {
    // The default msg timeout is 60 s: anything back within the test's deadline came back
    // because the subscriber left.
    let b = crate::common::start(|_| {}).await;
    let mut c = client(b.grpc).await;
    let mut sub = Sub::open(b.grpc, "gone", "ch", 10).await;
    publish(&mut c, "gone", &[b"a", b"b", b"c"], 0)
        .await
        .unwrap();
    for _ in 0..3 {
        sub.message().await;
    }
    b.wait_channel("gone", "ch", "3 in flight", |c| c.in_flight_count == 3)
        .await;
    drop(sub);
    b.wait_channel("gone", "ch", "requeued", |c| {
        c.in_flight_count == 0 && c.depth == 3 && c.client_count == 0
    })
    .await;
    let mut tcp = b.consumer("gone", "ch", 10).await;
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let m = tcp.message().await;
        assert_eq!(m.attempts, 2);
        bodies.push(m.body.to_vec());
    }
    bodies.sort();
    assert_eq!(bodies, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_is_respected() {
    let b = crate::common::start(|_| {}).await;
    let mut c = client(b.grpc).await;
    let mut sub = Sub::open(b.grpc, "flow", "ch", 2).await;
    let bodies: Vec<Vec<u8>> = (0..10).map(|i| vec![b'a' + i as u8]).collect();
    let refs: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
    publish(&mut c, "flow", &refs, 0).await.unwrap();

    let mut held = vec![sub.message().await, sub.message().await];
    sub.expect_no_message(Duration::from_millis(300)).await;
    let ch = b.channel_stats("flow", "ch").await;
    assert_eq!(ch.in_flight_count, 2, "{ch:?}");
    assert_eq!(ch.depth, 8, "{ch:?}");

    // One FIN frees one slot.
    sub.fin(&held.remove(0).id).await;
    held.push(sub.message().await);
    sub.expect_no_message(Duration::from_millis(300)).await;

    // More credit: up to 5 in flight, no more.
    sub.credit(5).await;
    for _ in 0..3 {
        held.push(sub.message().await);
    }
    sub.expect_no_message(Duration::from_millis(300)).await;
    let ch = b.channel_stats("flow", "ch").await;
    assert_eq!(ch.in_flight_count, 5, "{ch:?}");
    assert_eq!(ch.clients[0].ready_count, 5);

    // Credit 0 pauses delivery; FINs still count.
    sub.credit(0).await;
    for m in held.drain(..) {
        sub.fin(&m.id).await;
    }
    b.wait_channel("flow", "ch", "all FINed", |c| c.in_flight_count == 0)
        .await;
    sub.expect_no_message(Duration::from_millis(300)).await;
    assert_eq!(b.channel_stats("flow", "ch").await.depth, 4);

    // Credit above --max-rdy-count is fatal.
    sub.credit(2501).await;
    let s = final_status(&mut sub).await;
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(s.message(), "E_INVALID RDY count 2501 out of range 0-2500");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_get_nsq_codes() {
    let b = crate::common::start(|c| {
        c.max_msg_size = 1024;
        c.max_body_size = 4096;
        c.max_channel_consumers = 1;
    })
    .await;
    let mut c = client(b.grpc).await;
    let big = vec![b'x'; 1025];
    let ok = vec![b'x'; 1000];

    assert_status(
        publish(&mut c, "a b", &[b"x"], 0).await,
        Code::InvalidArgument,
        "E_BAD_TOPIC PUB topic name \"a b\" is not valid",
    );
    assert_status(
        publish(&mut c, "t", &[&big], 0).await,
        Code::InvalidArgument,
        "E_BAD_MESSAGE PUB message too big 1025 > 1024",
    );
    assert_status(
        publish(&mut c, "t", &[b"ok", &big], 0).await,
        Code::InvalidArgument,
        "E_BAD_MESSAGE MPUB message too big 1025 > 1024",
    );
    assert_status(
        publish(&mut c, "t", &[&ok, &ok, &ok, &ok, &ok], 0).await,
        Code::InvalidArgument,
        "E_BAD_BODY MPUB body too big 5024 > 4096",
    );
    assert_status(
        publish(&mut c, "t", &[b""], 0).await,
        Code::InvalidArgument,
        "E_BAD_MESSAGE PUB invalid message body size 0",
    );
    assert_status(
        publish(&mut c, "t", &[], 0).await,
        Code::InvalidArgument,
        "E_BAD_BODY MPUB invalid message count 0",
    );
    assert_status(
        publish(&mut c, "t", &[b"x"], 3_600_001).await,
        Code::InvalidArgument,
        "E_INVALID DPUB timeout 3600001 out of range 0-3600000",
    );
    // Far beyond --max-body-size: refused by the transport, and the broker carries on.
    let huge = vec![b'x'; 200 * 1024];
    let r = publish(&mut c, "t", &[&huge], 0).await;
    assert_eq!(r.unwrap_err().code(), Code::OutOfRange);
    // Nothing was queued by any of them: the topic was never even created.
    assert!(b.stats().await.topic("t").is_none());
    publish(&mut c, "t", &[&ok, &ok], 0).await.unwrap();

    // Subscribe refusals end the stream with a status.
    let mut s = Sub::start(b.grpc, open("t", "bad/channel", 1, 0))
        .await
        .unwrap();
    let st = final_status(&mut s).await;
    assert_eq!(st.code(), Code::InvalidArgument);
    assert!(
        st.message().starts_with("E_BAD_CHANNEL SUB channel name"),
        "{st:?}"
    );
    let mut s = Sub::start(b.grpc, open("t", "ch", 1, 999)).await.unwrap();
    let st = final_status(&mut s).await;
    assert!(
        st.message().starts_with("E_BAD_BODY SUB msg timeout (999)"),
        "{st:?}"
    );
    let mut s = Sub::start(b.grpc, Cmd::Credit(pb::Credit { max_in_flight: 1 }))
        .await
        .unwrap();
    let st = final_status(&mut s).await;
    assert_eq!(st.message(), "E_INVALID first request must be open");
    let first = Sub::open(b.grpc, "t", "full", 0).await;
    let mut s = Sub::start(b.grpc, open("t", "full", 1, 0)).await.unwrap();
    let st = final_status(&mut s).await;
    assert_eq!(st.code(), Code::ResourceExhausted);
    assert_eq!(
        st.message(),
        "E_TOO_MANY_CHANNEL_CONSUMERS channel consumers for t:full exceeds limit of 1"
    );
    drop(first);
    let mut s = Sub::open(b.grpc, "t", "ch", 0).await;
    s.send(open("t", "ch", 1, 0)).await;
    let st = final_status(&mut s).await;
    assert_eq!(st.message(), "E_INVALID cannot SUB in current state");
    b.wait_channel("t", "ch", "refused subscribers gone", |c| {
        c.client_count == 0
    })
    .await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_publish() {
    let b = crate::common::start(|_| {}).await;
    let mut c = client(b.grpc).await;
    let mut sub = Sub::open(b.grpc, "later", "ch", 10).await;
    let published = Instant::now();
    publish(&mut c, "later", &[b"soon"], 400).await.unwrap();
    let ch = b.channel_stats("later", "ch").await;
    assert_eq!(ch.deferred_count, 1, "{ch:?}");
    let m = sub.message().await;
    assert!(
        published.elapsed() >= Duration::from_millis(350),
        "delivered after {:?}",
        published.elapsed()
    );
    assert_eq!(&m.body[..], b"soon");
    assert_eq!(m.attempts, 1);
    sub.fin(&m.id).await;
    // A deferred batch too.
    publish(&mut c, "later", &[b"x", b"y"], 200).await.unwrap();
    let (m1, m2) = (sub.message().await, sub.message().await);
    assert_eq!((&m1.body[..], &m2.body[..]), (&b"x"[..], &b"y"[..]));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_rpc_matches_http_stats() {
    let b = crate::common::start(|_| {}).await;
    let mut c = client(b.grpc).await;
    let _sub = Sub::open_with(
        b.grpc,
        Cmd::Open(pb::Open {
            topic: "st".into(),
            channel: "ch".into(),
            max_in_flight: 0,
            user_agent: "stats-test/1.0".into(),
            client_id: "me".into(),
            ..Default::default()
        }),
    )
    .await;
    publish(&mut c, "st", &[b"a", b"b"], 0).await.unwrap();
    let s = c
        .stats(pb::StatsRequest {
            topic: "st".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.health, "OK");
    assert_eq!(s.topics.len(), 1);
    let t = &s.topics[0];
    assert_eq!((t.topic_name.as_str(), t.message_count), ("st", 2));
    let ch = &t.channels[0];
    assert_eq!(
        (ch.channel_name.as_str(), ch.depth, ch.client_count),
        ("ch", 2, 1)
    );
    let cl = &ch.clients[0];
    assert_eq!(
        (cl.client_id.as_str(), cl.user_agent.as_str()),
        ("me", "stats-test/1.0")
    );
    assert_eq!(cl.state, 3);
    let http = b.channel_stats("st", "ch").await;
    assert_eq!(http.depth, ch.depth);
    assert_eq!(http.clients[0].user_agent, "stats-test/1.0");
    let s = c
        .stats(pb::StatsRequest {
            include_clients: Some(false),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(s.topics[0].channels[0].clients.is_empty());
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_subscriptions() {
    let b = crate::common::start(|_| {}).await;
    let mut c = client(b.grpc).await;
    let mut sub = Sub::open(b.grpc, "bye", "ch", 10).await;
    publish(&mut c, "bye", &[b"x"], 0).await.unwrap();
    sub.message().await;
    let stop = tokio::spawn(b.stop());
    let st = final_status(&mut sub).await;
    assert_eq!(st.code(), Code::Unavailable, "{st:?}");
    stop.await.unwrap();
}
