//! `ferry rewind|peek|config|redrive` (issue #17's broker API) run as processes against real
//! brokers and a lookupd on loopback, with ferry-client consumers to see what gets delivered.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::*;
use ferry_client::{Consumer, Message, Messages};
use ferry_proto::stats::ChannelStats;

/// A number of a channel in a broker's `/stats` (0 when the channel is not there).
async fn channel_stat(
    broker: &Broker,
    topic: &str,
    channel: &str,
    key: fn(&ChannelStats) -> u64,
) -> u64 {
    broker.stats().await.channel(topic, channel).map_or(0, key)
}

/// Waits until `topic`/`channel` on `broker` has `depth` ready messages and none in flight.
async fn wait_depth(broker: &Broker, topic: &str, channel: &str, depth: u64) {
    eventually(&format!("{topic}/{channel} at depth {depth}"), || async {
        let ready = channel_stat(broker, topic, channel, |c| c.depth).await;
        let in_flight = channel_stat(broker, topic, channel, |c| c.in_flight_count).await;
        (ready == depth && in_flight == 0).then_some(())
    })
    .await;
}

/// A consumer of `topic`/`channel` on `broker`, and its messages.
async fn consumer(broker: &Broker, topic: &str, channel: &str) -> (Consumer, Messages) {
    let config = ferry_client::Config::new().max_in_flight(100);
    let (consumer, messages) = Consumer::stream(topic, channel, config).unwrap();
    consumer
        .connect_to_broker(broker.tcp.clone())
        .await
        .unwrap();
    (consumer, messages)
}

/// The next `n` messages, each within [`DEADLINE`].
async fn receive(messages: &mut Messages, n: usize) -> Vec<Message> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let msg = tokio::time::timeout(DEADLINE, messages.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out after {} of {n} messages", out.len()))
            .expect("the stream ended");
        out.push(msg);
    }
    out
}

fn bodies(msgs: &[Message]) -> BTreeSet<String> {
    msgs.iter()
        .map(|m| String::from_utf8_lossy(m.body()).into_owned())
        .collect()
}

/// A JSON answer of a successful GET.
async fn get_json(url: &str) -> serde_json::Value {
    let r = reqwest::get(url).await.unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.json().await.unwrap()
}

/// Runs `ferry` with `list` followed by `--broker-http-address broker`.
fn ferry_on(broker: &Broker, list: &[&str]) -> impl Future<Output = std::process::Output> + use<> {
    let mut a = args(list);
    a.extend(args(&["--broker-http-address", &broker.http]));
    ferry(a)
}

/// Consumes `n` messages of `topic`/`channel`, finishes them, waits until the channel has
/// nothing left and stops; the bodies.
async fn consume_all(broker: &Broker, topic: &str, channel: &str, n: usize) -> BTreeSet<String> {
    let (c, mut msgs) = consumer(broker, topic, channel).await;
    let got = receive(&mut msgs, n).await;
    let seen = bodies(&got);
    for m in got {
        m.finish().await.unwrap();
    }
    wait_depth(broker, topic, channel, 0).await;
    c.stop().await;
    seen
}

/// Asserts a successful run and returns its stdout.
fn success(out: &std::process::Output) -> String {
    let (stdout, stderr) = text(out);
    assert!(out.status.success(), "{stdout}{stderr}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewind_to_earliest_delivers_everything_again() {
    const N: usize = 20;
    let b = broker().await;
    b.post("/channel/create?topic=t&channel=c", "").await;
    let published: Vec<String> = (0..N).map(|i| format!("m-{i}")).collect();
    b.post("/mpub?topic=t", &published.join("\n")).await;
    let want: BTreeSet<String> = published.iter().cloned().collect();

    assert_eq!(consume_all(&b, "t", "c", N).await, want);
    let rewind = |channel: &str, to: &str| {
        ferry_on(
            &b,
            &["rewind", "--topic", "t", "--channel", channel, "--to", to],
        )
    };

    let stdout = success(&rewind("c", "earliest").await);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains(&format!("owes {N} messages from ")),
        "{stdout}"
    );
    assert_eq!(consume_all(&b, "t", "c", N).await, want);

    // A time with a UTC offset (a `+` in the query) long before the first message: clamped to
    // the oldest one. A negative duration: everything of the last hour.
    for to in ["2000-01-01T00:00:00+01:00", "-1h"] {
        let stdout = success(&rewind("c", to).await);
        assert!(
            stdout.contains(&format!("owes {N} messages")),
            "{to}: {stdout}"
        );
        if to.starts_with("2000") {
            assert!(stdout.contains("the oldest retained"), "{stdout}");
        }
    }

    // Obviously bad values never reach the broker; one clear line and a non-zero exit.
    for (to, why) in [
        ("yesterday", "invalid time"),
        ("1h", "must be negative"),
        ("1764900000", "Unix seconds"),
    ] {
        let out = rewind("c", to).await;
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{to}: {stdout}");
        assert!(stderr.starts_with("error: invalid value"), "{to}: {stderr}");
        assert!(stderr.contains(why), "{to}: {stderr}");
    }
    // A channel the broker does not have: its answer, and a non-zero exit.
    let out = rewind("nope", "earliest").await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("could not rewind"), "{stdout}");
    assert!(stdout.contains("CHANNEL_NOT_FOUND (HTTP 404)"), "{stdout}");
    assert_eq!(stderr.trim(), "ferry: error: failed on 1 of 1 brokers");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peek_shows_bodies_and_json() {
    let b = broker().await;
    b.post("/channel/create?topic=t&channel=c", "").await;
    b.post("/mpub?topic=t", "first\nsecond\nthird").await;

    let out = ferry_on(&b, &["peek", "--topic", "t", "--channel", "c", "-n", "5"]).await;
    let stdout = success(&out);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(
        lines[0].contains("3 ready, 0 in flight, 0 deferred"),
        "{stdout}"
    );
    for (line, body) in lines[1..].iter().zip(["first", "second", "third"]) {
        assert!(
            line.ends_with(&format!("  attempts 0  ready  {body:?}")),
            "{line}"
        );
    }

    let out = ferry_on(
        &b,
        &[
            "peek",
            "--topic",
            "t",
            "--channel",
            "c",
            "-n",
            "2",
            "--json",
        ],
    )
    .await;
    let stdout = success(&out);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v[0]["broker"], b.http.as_str());
    let answer = &v[0]["answer"];
    assert_eq!(answer["depth"], 3);
    let got: Vec<&str> = answer["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["first", "second"]);
    // Never delivered: attempts 0. Peeking changed nothing.
    assert_eq!(channel_stat(&b, "t", "c", |c| c.depth).await, 3);

    // One message deferred for a minute (requeued with a delay), one in flight (held).
    let config = ferry_client::Config::new().max_in_flight(1);
    let (c, mut msgs) = Consumer::stream("t", "c", config).unwrap();
    c.connect_to_broker(b.tcp.clone()).await.unwrap();
    let first = receive(&mut msgs, 1).await.remove(0);
    first
        .requeue_without_backoff(Some(Duration::from_secs(60)))
        .await
        .unwrap();
    let held = receive(&mut msgs, 1).await;
    eventually("one message in flight and one deferred", || async {
        let in_flight = channel_stat(&b, "t", "c", |c| c.in_flight_count).await;
        let deferred = channel_stat(&b, "t", "c", |c| c.deferred_count).await;
        (in_flight == 1 && deferred == 1).then_some(())
    })
    .await;
    let out = ferry_on(&b, &["peek", "--topic", "t", "--channel", "c"]).await;
    let stdout = success(&out);
    assert!(
        stdout.contains("1 ready, 1 in flight, 1 deferred"),
        "{stdout}"
    );
    let line = |body: &str| {
        stdout
            .lines()
            .find(|l| l.ends_with(&format!("{body:?}")))
            .unwrap_or_else(|| panic!("{body}: {stdout}"))
            .to_owned()
    };
    assert!(line("third").contains("attempts 0  ready"), "{stdout}");
    assert!(
        line("second").contains("attempts 1  in flight, deadline in "),
        "{stdout}"
    );
    assert!(line("first").contains("  deferred, due in "), "{stdout}");
    // Answer everything delivered (the third comes once the second is finished), so the
    // consumer has nothing in flight to wait for when it stops.
    for m in held {
        m.finish().await.unwrap();
    }
    receive(&mut msgs, 1)
        .await
        .remove(0)
        .finish()
        .await
        .unwrap();
    c.stop().await;

    let out = ferry_on(&b, &["peek", "--topic", "t", "--channel", "nope"]).await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("could not peek channel \"nope\" of topic \"t\": CHANNEL_NOT_FOUND"),
        "{stdout}"
    );
    assert_eq!(stderr.trim(), "ferry: error: failed on 1 of 1 brokers");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_sets_and_shows_settings_on_every_broker_of_a_lookupd() {
    let l = lookupd().await;
    let (a, b) = (
        broker_registered_with(&l.tcp).await,
        broker_registered_with(&l.tcp).await,
    );
    for br in [&a, &b] {
        br.post("/channel/create?topic=t&channel=c", "").await;
    }
    let client = reqwest::Client::new();
    eventually("lookupd lists both brokers for t", || async {
        let v: serde_json::Value = client
            .get(format!("http://{}/lookup?topic=t", l.http))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v["producers"].as_array()?.len() == 2).then_some(())
    })
    .await;
    // A command line (split at spaces) on every broker the lookupd lists.
    let on_cluster = |line: &str| {
        let mut a: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        a.extend(args(&["--lookupd-http-address", &l.http]));
        ferry(a)
    };

    let out = on_cluster("config --topic t --retention 24h --retention-bytes 10GB").await;
    let stdout = success(&out);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    let out = on_cluster("config --topic t --channel c --max-attempts 5 --max-age 10m").await;
    let stdout = success(&out);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");

    // Shown by the CLI, on both brokers...
    let out = on_cluster("config --topic t --channel c").await;
    let stdout = success(&out);
    for br in [&a, &b] {
        let topic_line = format!("{}: topic \"t\": retention 24h, size limit 10GB", br.http);
        assert!(
            stdout.lines().any(|l| l == topic_line),
            "{topic_line}\n{stdout}"
        );
        let channel_line = format!(
            "{}: channel \"c\" of topic \"t\": max age 10m, max attempts 5",
            br.http
        );
        assert!(
            stdout.lines().any(|l| l.starts_with(&channel_line)),
            "{channel_line}\n{stdout}"
        );
    }
    // ... and as each broker answers.
    for br in [&a, &b] {
        let t = get_json(&format!("http://{}/topic/config?topic=t", br.http)).await;
        assert_eq!(t["retention_ms"], 86_400_000, "{t}");
        assert_eq!(t["retention_bytes"], 10_000_000_000u64, "{t}");
        let c = get_json(&format!(
            "http://{}/channel/config?topic=t&channel=c",
            br.http
        ))
        .await;
        assert_eq!(c["max_attempts"], 5, "{c}");
        assert_eq!(c["max_age_ms"], 600_000, "{c}");
    }

    // A value only the brokers know to be wrong: each broker's line has its code and reason.
    let out = on_cluster("config --topic t --channel c --dead-letter-topic t").await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    let refused = "INVALID_DEAD_LETTER_TOPIC (HTTP 400): the dead-letter topic must differ";
    assert_eq!(stdout.matches(refused).count(), 2, "{stdout}");
    assert_eq!(stderr.trim(), "ferry: error: failed on 2 of 2 brokers");

    // Channel settings need a channel; bad values are refused before any request.
    for (case, why) in [
        ("config --topic t --max-attempts 5", "--channel"),
        ("config --topic t --retention-bytes 10XB", "unknown unit"),
        ("config --topic t --retention 10", "missing unit"),
        ("config --topic t --channel c --max-attempts 70000", "65535"),
    ] {
        let out = on_cluster(case).await;
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{case}: {stdout}");
        assert!(stderr.starts_with("error:"), "{case}: {stderr}");
        assert!(stderr.contains(why), "{case}: {stderr}");
    }
    a.stop().await;
    b.stop().await;
    l.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_moves_dead_letters_back() {
    const N: usize = 3;
    let b = broker().await;
    b.post("/channel/create?topic=t&channel=c", "").await;
    b.post("/channel/create?topic=t.dead&channel=c", "").await;
    let config = "config --topic t --channel c --max-attempts 1 --dead-letter-topic t.dead";
    let out = ferry_on(&b, &config.split(' ').collect::<Vec<_>>()).await;
    let stdout = success(&out);
    assert!(
        stdout.contains("max attempts 1, then to topic \"t.dead\""),
        "{stdout}"
    );
    let published: Vec<String> = (0..N).map(|i| format!("d-{i}")).collect();
    b.post("/mpub?topic=t", &published.join("\n")).await;
    let want: BTreeSet<String> = published.iter().cloned().collect();

    // One delivery each, requeued: with max_attempts = 1 they become dead letters.
    let (c, mut msgs) = consumer(&b, "t", "c").await;
    let got = receive(&mut msgs, N).await;
    assert_eq!(bodies(&got), want);
    for m in got {
        m.requeue_without_backoff(Some(Duration::ZERO))
            .await
            .unwrap();
    }
    wait_depth(&b, "t.dead", "c", N as u64).await;
    c.stop().await;
    wait_depth(&b, "t", "c", 0).await;

    let out = ferry_on(&b, &["peek", "--topic", "t.dead", "--channel", "c"]).await;
    let stdout = success(&out);
    assert_eq!(
        stdout
            .matches("dead letter from channel \"c\" of topic \"t\"")
            .count(),
        N,
        "{stdout}"
    );

    let redrive = |to_topic: &str| {
        ferry_on(
            &b,
            &[
                "redrive",
                "--topic",
                "t.dead",
                "--channel",
                "c",
                "--to-topic",
                to_topic,
            ],
        )
    };
    let stdout = success(&redrive("t").await);
    assert_eq!(
        stdout.trim(),
        format!(
            "{}: moved {N} messages from channel \"c\" of topic \"t.dead\" to topic \"t\"",
            b.http
        )
    );
    wait_depth(&b, "t.dead", "c", 0).await;
    wait_depth(&b, "t", "c", N as u64).await;
    assert_eq!(consume_all(&b, "t", "c", N).await, want);

    // Nothing left: 0 moved. A bad target topic name is refused before any request.
    assert!(success(&redrive("t").await).contains("moved 0 messages"));
    let out = redrive("bad name").await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(stderr.contains("invalid topic name"), "{stderr}");
    // A value only the broker knows to be wrong: its code and reason on the broker's line.
    let out = redrive("t.dead").await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.starts_with(&format!(
            "{}: could not redrive channel \"c\" of topic \"t.dead\": INVALID_TO_TOPIC (HTTP 400): invalid to_topic",
            b.http
        )),
        "{stdout}"
    );
    assert_eq!(stderr.trim(), "ferry: error: failed on 1 of 1 brokers");
    b.stop().await;
}
