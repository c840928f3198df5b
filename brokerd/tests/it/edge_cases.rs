//! The messaging edge cases NSQ cannot handle, end to end over real sockets: retention and
//! replay (`/channel/rewind`), expiry (`max_age`), dead letters (`max_attempts`), peek, and all
//! of their state after a SIGKILL and restart.

use std::path::PathBuf;
use std::process::Command as ProcCommand;
use std::time::{Duration, SystemTime};

use crate::common::{TestBroker, TestConn, get_stats};
use ferry_proto::stats::{ChannelStats, Stats, TopicStats};
use ferry_proto::v2::{Command, Message};
use serde_json::Value;

/// An HTTP request whose answer is JSON.
async fn call(b: &TestBroker, method: &str, path: &str) -> (u16, Value) {
    let (code, body) = b.http(method, path, b"").await;
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (code, v)
}

/// An HTTP request that must answer 200 with JSON.
async fn ok(b: &TestBroker, method: &str, path: &str) -> Value {
    let (code, v) = call(b, method, path).await;
    assert_eq!(code, 200, "{method} {path}: {v}");
    v
}

async fn mpub(b: &TestBroker, topic: &str, bodies: &[String]) {
    let body = bodies.join("\n");
    let (code, text) = b
        .http("POST", &format!("/mpub?topic={topic}"), body.as_bytes())
        .await;
    assert_eq!(code, 200, "{text}");
}

fn bodies(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:04}")).collect()
}

/// Receives `n` messages, FINing each; returns them.
async fn take_and_fin(c: &mut TestConn, n: usize) -> Vec<Message> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let m = c.message().await;
        c.fin(&m.id).await;
        out.push(m);
    }
    out
}

fn seq(m: &Message) -> u64 {
    m.id.to_seq().expect("a Ferry message id")
}

fn topic_stat<'a>(stats: &'a Stats, topic: &str) -> &'a TopicStats {
    stats
        .topic(topic)
        .unwrap_or_else(|| panic!("no topic {topic} in {stats:?}"))
}

/// Replay after consumption: retention keeps what every channel finished, a rewind to
/// `earliest` redelivers all of it in sequence order, a rewind to a time between two publishes
/// exactly the later ones, and a rewind past what retention kept answers with the oldest
/// retained message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewind_replays_finished_messages_from_earliest_a_time_and_the_oldest_retained() {
    let b = crate::common::start(|c| {
        c.retention = Duration::from_secs(3600);
        // Small segments, so consumed ones could be deleted, and quick syncs that would do it.
        c.max_bytes_per_file = 4096;
        c.sync_timeout = Duration::from_millis(50);
    })
    .await;
    // A control topic without retention: the same workload loses its consumed segments.
    ok(&b, "POST", "/topic/create?topic=norelay").await;
    let cfg = ok(&b, "POST", "/topic/config?topic=norelay&retention=0").await;
    assert_eq!(cfg["retention_ms"], 0, "{cfg}");

    let mut c = b.consumer("replay", "c", 1000).await;
    let mut control = b.consumer("norelay", "c", 1000).await;
    let first_bodies = bodies("m", 1000);
    for chunk in first_bodies.chunks(100) {
        mpub(&b, "replay", chunk).await;
        mpub(&b, "norelay", chunk).await;
    }
    let first = take_and_fin(&mut c, 1000).await;
    let control_first = take_and_fin(&mut control, 1000).await;
    let got: Vec<String> = first
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    assert_eq!(got, first_bodies);
    // The control topic's consumed segments go; the retained topic keeps its first message.
    let stats =
        crate::common::eventually("the control topic deletes consumed segments", || async {
            let s = b.stats().await;
            (topic_stat(&s, "norelay").oldest_sequence > seq(&control_first[0])).then_some(s)
        })
        .await;
    assert_eq!(topic_stat(&stats, "replay").oldest_sequence, seq(&first[0]));
    assert_eq!(topic_stat(&stats, "replay").retention_ms, 3_600_000);
    b.wait_channel("replay", "c", "all finished", |ch| {
        ch.depth == 0 && ch.in_flight_count == 0
    })
    .await;

    // Rewind to earliest: all 1,000 again, in sequence order.
    let r = ok(
        &b,
        "POST",
        "/channel/rewind?topic=replay&channel=c&to=earliest",
    )
    .await;
    assert_eq!(r["owed"], 1000, "{r}");
    assert_eq!(r["first_sequence"], seq(&first[0]), "{r}");
    assert_eq!(r["clamped"], false, "{r}");
    let again = take_and_fin(&mut c, 1000).await;
    let again_seqs: Vec<u64> = again.iter().map(seq).collect();
    let first_seqs: Vec<u64> = first.iter().map(seq).collect();
    assert_eq!(again_seqs, first_seqs);
    assert!(again.iter().all(|m| m.attempts == 1));

    // A time between two publishes: exactly the later messages.
    let between = chrono::DateTime::<chrono::Utc>::from(SystemTime::now())
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let late = bodies("late", 7);
    mpub(&b, "replay", &late).await;
    take_and_fin(&mut c, 7).await;
    b.wait_channel("replay", "c", "late ones finished", |ch| {
        ch.depth == 0 && ch.in_flight_count == 0
    })
    .await;
    let r = ok(
        &b,
        "POST",
        &format!("/channel/rewind?topic=replay&channel=c&to={between}"),
    )
    .await;
    assert_eq!(r["owed"], 7, "{r}");
    let replayed = take_and_fin(&mut c, 7).await;
    let got: Vec<String> = replayed
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    assert_eq!(got, late);
    b.wait_channel("replay", "c", "nothing else owed", |ch| {
        ch.depth == 0 && ch.in_flight_count == 0
    })
    .await;

    // Retention now bounded to 1 byte: the consumed segments go, and a rewind to before the
    // first publish answers with the oldest message still retained.
    ok(&b, "POST", "/topic/config?topic=replay&retention_bytes=1").await;
    let oldest = crate::common::eventually("retention_bytes deletes segments", || async {
        let s = b.stats().await;
        let oldest = topic_stat(&s, "replay").oldest_sequence;
        (oldest > seq(&first[0])).then_some(oldest)
    })
    .await;
    let r = ok(&b, "POST", "/channel/rewind?topic=replay&channel=c&to=-1h").await;
    assert_eq!(r["clamped"], true, "{r}");
    assert_eq!(r["first_sequence"], oldest, "{r}");
    let last = seq(replayed.last().unwrap());
    let retained = (last - oldest + 1) as usize;
    assert_eq!(r["owed"], retained as u64, "{r}");
    assert!(retained < 1007, "segments were deleted");
    let tail = take_and_fin(&mut c, retained).await;
    assert_eq!(seq(&tail[0]), oldest);
    assert_eq!(seq(tail.last().unwrap()), last);

    // Bad input: the reason is given.
    let (code, v) = call(
        &b,
        "POST",
        "/channel/rewind?topic=replay&channel=c&to=yesterday",
    )
    .await;
    assert_eq!(
        (code, v["message"].as_str()),
        (400, Some("INVALID_TO")),
        "{v}"
    );
    assert!(v["reason"].as_str().unwrap().contains("yesterday"), "{v}");
    let (code, v) = call(
        &b,
        "POST",
        "/channel/rewind?topic=replay&channel=nope&to=earliest",
    )
    .await;
    assert_eq!(
        (code, v["message"].as_str()),
        (404, Some("CHANNEL_NOT_FOUND"))
    );
    let (code, v) = call(
        &b,
        "POST",
        "/channel/rewind?topic=nope&channel=c&to=earliest",
    )
    .await;
    assert_eq!(
        (code, v["message"].as_str()),
        (404, Some("TOPIC_NOT_FOUND"))
    );
    let (code, v) = call(&b, "POST", "/topic/config?topic=replay&retention=forever").await;
    assert_eq!(
        (code, v["message"].as_str()),
        (400, Some("INVALID_RETENTION")),
        "{v}"
    );
    let (code, v) = call(
        &b,
        "POST",
        "/topic/config?topic=replay&retention_bytes=10 parsecs",
    )
    .await;
    assert_eq!(code, 400, "{v}");
    b.stop().await;
}

/// `start=` places a new channel in the topic's history; without it, nsqd's behaviour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_create_with_start() {
    let b = crate::common::start(|c| c.retention = Duration::from_secs(3600)).await;
    let mut first = b.consumer("s", "first", 10).await;
    mpub(&b, "s", &bodies("a", 3)).await;
    take_and_fin(&mut first, 3).await;
    ok(&b, "POST", "/channel/create?topic=s&channel=late").await;
    ok(
        &b,
        "POST",
        "/channel/create?topic=s&channel=all&start=earliest",
    )
    .await;
    let (code, v) = call(&b, "POST", "/channel/create?topic=s&channel=x&start=soon").await;
    assert_eq!(
        (code, v["message"].as_str()),
        (400, Some("INVALID_START")),
        "{v}"
    );
    let s = b.stats().await;
    assert_eq!(s.channel("s", "late").unwrap().depth, 0);
    assert_eq!(s.channel("s", "all").unwrap().depth, 3);
    assert!(s.channel("s", "x").is_none(), "a bad start creates nothing");
    b.stop().await;
}

/// Expiry: messages older than `max_age` when they would be delivered are dropped and counted;
/// fresh ones still flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_past_max_age_are_dropped_and_counted() {
    let b = crate::common::start(|_| {}).await;
    ok(&b, "POST", "/channel/create?topic=exp&channel=c").await;
    let cfg = ok(&b, "POST", "/channel/config?topic=exp&channel=c&max_age=1s").await;
    assert_eq!(cfg["max_age_ms"], 1000, "{cfg}");
    ok(&b, "POST", "/channel/pause?topic=exp&channel=c").await;
    mpub(&b, "exp", &bodies("stale", 20)).await;
    let published = tokio::time::Instant::now();
    let mut c = b.consumer("exp", "c", 100).await;
    // The messages must be older than max_age when the channel resumes.
    tokio::time::sleep_until(published + Duration::from_secs(2)).await;
    ok(&b, "POST", "/channel/unpause?topic=exp&channel=c").await;
    let fresh = bodies("fresh", 5);
    mpub(&b, "exp", &fresh).await;
    // Delivery is in log order: a stale message would come first.
    let got = take_and_fin(&mut c, 5).await;
    let got: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    assert_eq!(got, fresh);
    let ch = b
        .wait_channel("exp", "c", "finished", |ch| ch.in_flight_count == 0)
        .await;
    assert_eq!(ch.expired_count, 20, "{ch:?}");
    assert_eq!(ch.message_count, 5, "{ch:?}");
    assert_eq!(ch.depth, 0, "{ch:?}");
    let (scrape, _) = crate::common::scrape(b.http).await;
    let labels = [("topic", "exp"), ("channel", "c")];
    assert_eq!(
        crate::common::metric(&scrape, "ferry_channel_messages_expired_total", &labels),
        20.0
    );
    let (code, v) = call(
        &b,
        "POST",
        "/channel/config?topic=exp&channel=c&max_age=old",
    )
    .await;
    assert_eq!(
        (code, v["message"].as_str()),
        (400, Some("INVALID_MAX_AGE")),
        "{v}"
    );
    b.stop().await;
}

/// Runs `tests/python/direct_reader.py`: a pynsq Reader that reads `n` messages of
/// `topic/channel` from the broker; returns the bodies.
async fn pynsq_read(b: &TestBroker, topic: &str, channel: &str, n: usize) -> Vec<String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/python/direct_reader.py");
    let args = [
        b.tcp.to_string(),
        topic.to_owned(),
        channel.to_owned(),
        n.to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        ProcCommand::new(crate::common::python())
            .arg(script)
            .args(args)
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pynsq reader failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = stdout.lines().map(str::to_owned).collect();
    assert_eq!(lines.pop().as_deref(), Some(&*format!("received {n} OK")));
    lines
}

/// Dead letters: a consumer that always REQs; after `max_attempts` deliveries each message is
/// in `<topic>.dead` (read there by pynsq, its origin shown by peek) and gone from the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeued_past_max_attempts_goes_to_the_dead_letter_topic() {
    let b = crate::common::start(|_| {}).await;
    ok(&b, "POST", "/channel/create?topic=dl&channel=c").await;
    let cfg = ok(
        &b,
        "POST",
        "/channel/config?topic=dl&channel=c&max_attempts=3",
    )
    .await;
    assert_eq!(cfg["dead_letter_topic"], "dl.dead", "{cfg}");
    // Channels of the dead-letter topic: one that a pynsq reader drains, one to peek at.
    ok(&b, "POST", "/channel/create?topic=dl.dead&channel=reader").await;
    ok(&b, "POST", "/channel/create?topic=dl.dead&channel=inspect").await;
    let poison = bodies("poison", 4);
    mpub(&b, "dl", &poison).await;
    let mut c = b.consumer("dl", "c", 10).await;
    let mut max_attempts = 0;
    for _ in 0..12 {
        let m = c.message().await;
        max_attempts = max_attempts.max(m.attempts);
        c.send(&Command::Req {
            id: m.id,
            timeout_ms: 0,
        })
        .await;
    }
    assert_eq!(max_attempts, 3);
    let ch = b
        .wait_channel("dl", "c", "every message dead-lettered", |ch| {
            ch.dead_lettered_count == 4
        })
        .await;
    assert_eq!(
        (ch.depth, ch.in_flight_count, ch.deferred_count),
        (0, 0, 0),
        "{ch:?}"
    );
    assert_eq!(ch.requeue_count, 12, "{ch:?}");
    c.expect_no_message(Duration::from_millis(200)).await;

    // Peek at the dead-letter topic: same bodies, where they came from.
    let peek = ok(
        &b,
        "GET",
        "/channel/peek?topic=dl.dead&channel=inspect&n=10",
    )
    .await;
    let msgs = peek["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 4, "{peek}");
    for (m, body) in msgs.iter().zip(&poison) {
        assert_eq!(m["body"], body.as_str(), "{m}");
        assert_eq!(m["origin"]["topic"], "dl", "{m}");
        assert_eq!(m["origin"]["channel"], "c", "{m}");
        assert_eq!(m["origin"]["attempts"], 3, "{m}");
    }
    // A real NSQ client reads them.
    let mut read = pynsq_read(&b, "dl.dead", "reader", 4).await;
    read.sort();
    assert_eq!(read, poison);
    let (scrape, _) = crate::common::scrape(b.http).await;
    let labels = [("topic", "dl"), ("channel", "c")];
    assert_eq!(
        crate::common::metric(
            &scrape,
            "ferry_channel_messages_dead_lettered_total",
            &labels
        ),
        4.0
    );

    // Redrive moves them back to the original topic.
    let moved = ok(
        &b,
        "POST",
        "/channel/redrive?topic=dl.dead&channel=inspect&to_topic=dl",
    )
    .await;
    assert_eq!(moved["moved"], 4, "{moved}");
    b.wait_channel("dl", "c", "redriven messages owed again", |ch| {
        ch.depth == 4 || ch.in_flight_count == 4
    })
    .await;
    let (code, v) = call(
        &b,
        "POST",
        "/channel/redrive?topic=dl.dead&channel=inspect&to_topic=bad/name",
    )
    .await;
    assert_eq!(
        (code, v["message"].as_str()),
        (400, Some("INVALID_TO_TOPIC")),
        "{v}"
    );
    let (code, v) = call(
        &b,
        "POST",
        "/channel/config?topic=dl&channel=c&max_attempts=many",
    )
    .await;
    assert_eq!(
        (code, v["message"].as_str()),
        (400, Some("INVALID_MAX_ATTEMPTS")),
        "{v}"
    );
    let (code, v) = call(
        &b,
        "POST",
        "/channel/config?topic=dl&channel=c&dead_letter_topic=dl",
    )
    .await;
    assert_eq!(
        (code, v["message"].as_str()),
        (400, Some("INVALID_DEAD_LETTER_TOPIC")),
        "{v}"
    );
    b.stop().await;
}

/// Dead letters by timeout, to a named topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_past_max_attempts_goes_to_the_named_dead_letter_topic() {
    let b = crate::common::start(|c| c.msg_timeout = Duration::from_millis(300)).await;
    ok(&b, "POST", "/channel/create?topic=to&channel=c").await;
    ok(
        &b,
        "POST",
        "/channel/config?topic=to&channel=c&max_attempts=2&dead_letter_topic=to.dlq",
    )
    .await;
    ok(&b, "POST", "/channel/create?topic=to.dlq&channel=r").await;
    mpub(&b, "to", &["slow".to_owned()]).await;
    let mut c = b.consumer("to", "c", 10).await;
    // Never answered: delivered twice, then dead-lettered at the second timeout.
    assert_eq!(c.message().await.attempts, 1);
    assert_eq!(c.message().await.attempts, 2);
    let ch = b
        .wait_channel("to", "c", "dead-lettered after its timeouts", |ch| {
            ch.dead_lettered_count == 1
        })
        .await;
    assert_eq!(ch.timeout_count, 2, "{ch:?}");
    assert_eq!(ch.depth, 0, "{ch:?}");
    let dlq = b.channel_stats("to.dlq", "r").await;
    assert_eq!(dlq.depth, 1, "{dlq:?}");
    c.expect_no_message(Duration::from_millis(500)).await;
    b.stop().await;
}

/// Peek shows ready, in-flight and deferred messages with their state and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peek_shows_states_and_changes_nothing() {
    let b = crate::common::start(|c| c.max_peek_bytes = 16).await;
    ok(&b, "POST", "/channel/create?topic=pk&channel=c").await;
    mpub(&b, "pk", &bodies("m", 5)).await;
    let (code, _) = b.http("POST", "/pub?topic=pk&defer=60000", b"later").await;
    assert_eq!(code, 200);
    let (code, _) = b.http("POST", "/pub?topic=pk", &[0xff, 0x00, 0xfe]).await;
    assert_eq!(code, 200);
    let long = "x".repeat(100);
    b.http("POST", "/pub?topic=pk", long.as_bytes()).await;
    let mut c = b.consumer("pk", "c", 2).await;
    let m0 = c.message().await;
    let m1 = c.message().await;
    c.rdy(0).await;
    c.send(&Command::Req {
        id: m1.id,
        timeout_ms: 30_000,
    })
    .await;
    let before = b
        .wait_channel("pk", "c", "one in flight, one requeued for later", |ch| {
            ch.in_flight_count == 1 && ch.deferred_count == 1
        })
        .await;
    let peek = ok(&b, "GET", "/channel/peek?topic=pk&channel=c&n=10").await;
    let again = ok(&b, "GET", "/channel/peek?topic=pk&channel=c&n=10").await;
    let after = b.channel_stats("pk", "c").await;
    let counts = |c: &ChannelStats| {
        (
            c.depth,
            c.in_flight_count,
            c.deferred_count,
            c.message_count,
            c.requeue_count,
        )
    };
    assert_eq!(counts(&before), counts(&after), "{before:?} vs {after:?}");
    assert_eq!(peek, again, "peek changes nothing");
    let ready = peek["messages"].as_array().unwrap();
    let states: Vec<&str> = ready.iter().map(|m| m["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["ready"; 5], "{peek}");
    assert_eq!(ready[0]["body"], "m0002");
    assert_eq!(ready[0]["attempts"], 0);
    // Not UTF-8: base64. Longer than --max-peek-bytes: cut.
    assert_eq!(ready[3]["body_encoding"], "base64", "{peek}");
    assert_eq!(ready[3]["body"], "/wD+");
    assert_eq!(ready[4]["truncated"], true, "{peek}");
    assert_eq!(ready[4]["body_bytes"], 100);
    assert_eq!(ready[4]["body"].as_str().unwrap().len(), 16);
    let flying = peek["in_flight"].as_array().unwrap();
    assert_eq!(flying.len(), 1, "{peek}");
    assert_eq!(flying[0]["id"], m0.id.to_string());
    assert_eq!(flying[0]["state"], "in_flight");
    assert_eq!(flying[0]["attempts"], 1);
    assert!(flying[0]["deadline_ms"].as_i64().unwrap() > 0);
    let deferred = peek["deferred"].as_array().unwrap();
    let deferred_bodies: Vec<&str> = deferred
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(deferred_bodies, ["m0001", "later"], "{peek}");
    assert!(
        deferred
            .iter()
            .all(|m| m["state"] == "deferred" && m["due_ms"].as_i64().unwrap() > 0)
    );
    assert_eq!(deferred[0]["attempts"], 1);
    // Still delivered as before the peeks: attempts 1 for the next ready message.
    c.fin(&m0.id).await;
    c.rdy(1).await;
    let next = c.message().await;
    assert_eq!((&next.body[..], next.attempts), (&b"m0002"[..], 1));
    let (code, v) = call(&b, "GET", "/channel/peek?topic=pk&channel=c&n=0").await;
    assert_eq!(
        (code, v["message"].as_str()),
        (400, Some("INVALID_N")),
        "{v}"
    );
    let (code, v) = call(&b, "GET", "/channel/peek?topic=pk&channel=none").await;
    assert_eq!(
        (code, v["message"].as_str()),
        (404, Some("CHANNEL_NOT_FOUND")),
        "{v}"
    );
    b.stop().await;
}

async fn get_json(addr: std::net::SocketAddr, path: &str) -> Value {
    let (code, body) = crate::common::http(addr, "GET", path, b"").await;
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn post_json(addr: std::net::SocketAddr, path: &str) -> Value {
    let (code, body) = crate::common::http(addr, "POST", path, b"").await;
    assert_eq!(code, 200, "POST {path}: {body}");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// Settings, a rewind and dead letters with their origins survive SIGKILL + restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_rewind_and_dead_letters_survive_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let p = crate::common::spawn_brokerd(tmp.path(), &["--sync-timeout=50ms"]);
    let http = p.http;
    post_json(http, "/channel/create?topic=k&channel=c").await;
    post_json(http, "/channel/create?topic=k.dead&channel=d").await;
    post_json(
        http,
        "/topic/config?topic=k&retention=2h&retention_bytes=1GB",
    )
    .await;
    post_json(
        http,
        "/channel/config?topic=k&channel=c&max_attempts=1&max_age=1h",
    )
    .await;
    let (code, _) = crate::common::http(
        http,
        "POST",
        "/mpub?topic=k",
        bodies("k", 10).join("\n").as_bytes(),
    )
    .await;
    assert_eq!(code, 200);
    let mut c = TestConn::connect(p.tcp).await;
    c.identify(serde_json::json!({"client_id": "t"})).await;
    c.sub("k", "c").await;
    c.rdy(10).await;
    // Two REQs dead-letter two messages (max_attempts 1); the rest are FINed.
    for i in 0..10 {
        let m = c.message().await;
        if i < 2 {
            c.send(&Command::Req {
                id: m.id,
                timeout_ms: 0,
            })
            .await;
        } else {
            c.fin(&m.id).await;
        }
    }
    crate::common::eventually("two dead letters, the rest finished", || async {
        let s = get_stats(http).await;
        let ch = s.channel("k", "c")?;
        (ch.dead_lettered_count == 2 && ch.in_flight_count == 0 && ch.depth == 0).then_some(())
    })
    .await;
    // The consumer leaves first: with max_attempts 1, a rewound message delivered to it and
    // put back when it disconnects would be dead-lettered again.
    drop(c);
    crate::common::eventually("the consumer gone", || async {
        get_stats(http)
            .await
            .channel("k", "c")?
            .clients
            .is_empty()
            .then_some(())
    })
    .await;
    let r = post_json(http, "/channel/rewind?topic=k&channel=c&to=earliest").await;
    assert_eq!(r["owed"], 10, "{r}");
    p.kill9();

    let p = crate::common::spawn_brokerd(tmp.path(), &["--sync-timeout=50ms"]);
    let http = p.http;
    let t = get_json(http, "/topic/config?topic=k").await;
    assert_eq!(
        (t["retention_ms"].as_u64(), t["retention_bytes"].as_u64()),
        (Some(7_200_000), Some(1_000_000_000)),
        "{t}"
    );
    let ch = get_json(http, "/channel/config?topic=k&channel=c").await;
    assert_eq!(ch["max_attempts"], 1, "{ch}");
    assert_eq!(ch["max_age_ms"], 3_600_000, "{ch}");
    assert_eq!(ch["dead_letter_topic"], "k.dead", "{ch}");
    let s = get_stats(http).await;
    assert_eq!(s.channel("k", "c").unwrap().depth, 10, "rewind kept: {s:?}");
    let peek = get_json(http, "/channel/peek?topic=k.dead&channel=d").await;
    let dead = peek["messages"].as_array().unwrap();
    assert_eq!(dead.len(), 2, "{peek}");
    assert!(
        dead.iter()
            .all(|m| m["origin"]["topic"] == "k" && m["origin"]["attempts"] == 1),
        "{peek}"
    );
    // The rewound channel delivers all ten again, in order.
    let mut c = TestConn::connect(p.tcp).await;
    c.identify(serde_json::json!({"client_id": "t"})).await;
    c.sub("k", "c").await;
    c.rdy(10).await;
    let mut got = Vec::new();
    for _ in 0..10 {
        let m = c.message().await;
        c.fin(&m.id).await;
        got.push(String::from_utf8_lossy(&m.body).into_owned());
    }
    assert_eq!(got, bodies("k", 10));
    drop(c);
    p.sigterm();
}
