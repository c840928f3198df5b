//! Importing an nsqd 1.x data directory: the test writes nsqd's files itself (go-diskqueue
//! format, several files per queue, consumed records before the read position), starts a broker
//! on the directory, and checks every channel's messages, paused flags, attempts and
//! timestamps over TCP and `/stats`; then that a restart imports nothing again and that nsqd's
//! files were never changed.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::TestBroker;
use crate::common::nsqd::{Queued, Rng, nsqd_files, write_nsqd_dat, write_queue};
use serde_json::json;

/// What each channel must deliver (topic `lonely` has none: its backlog waits for the first).
struct Dataset {
    channels: BTreeMap<(&'static str, &'static str), Vec<Queued>>,
    lonely: Vec<Queued>,
}

fn write_dataset(dir: &Path) -> Dataset {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    write_nsqd_dat(
        dir,
        &json!({
            "version": "1.3.0",
            "topics": [
                {"name": "orders", "paused": false, "channels": [
                    {"name": "billing", "paused": false},
                    {"name": "audit", "paused": true},
                    {"name": "bad channel!", "paused": false},
                ]},
                {"name": "events", "paused": true, "channels": [
                    {"name": "archive", "paused": false},
                ]},
                {"name": "lonely", "paused": false, "channels": []},
                {"name": "not a topic?", "paused": false, "channels": []},
            ]
        }),
    );
    let orders = write_queue(dir, "orders", 300, 1200, false, true, &mut rng);
    let billing = write_queue(dir, "orders:billing", 250, 900, true, false, &mut rng);
    let audit = write_queue(dir, "orders:audit", 40, 400, true, true, &mut rng);
    let events = write_queue(dir, "events", 0, 600, false, false, &mut rng);
    let archive = write_queue(dir, "events:archive", 200, 500, true, true, &mut rng);
    let lonely = write_queue(dir, "lonely", 100, 300, false, false, &mut rng);
    // A queue of a channel nsqd.dat does not list is not imported (nsqd would not load it).
    write_queue(dir, "orders:gone", 0, 200, false, false, &mut rng);
    let join = |own: &[Queued], topic: &[Queued]| {
        let mut v = [own, topic].concat();
        v.sort();
        v
    };
    Dataset {
        channels: BTreeMap::from([
            (("orders", "billing"), join(&billing, &orders)),
            (("orders", "audit"), join(&audit, &orders)),
            (("events", "archive"), join(&archive, &events)),
        ]),
        lonely,
    }
}

/// Consumes `topic/channel` until `want.len()` messages came (FINing each), then checks the
/// channel is empty; returns what came as nsqd saw it (attempts before this delivery).
async fn drain(b: &TestBroker, topic: &str, channel: &str, want: &[Queued]) {
    let mut c = b.consumer(topic, channel, 250).await;
    let mut got = Vec::with_capacity(want.len());
    while got.len() < want.len() {
        let m = c.message().await;
        assert!(m.attempts >= 1);
        got.push(Queued {
            body: m.body.to_vec(),
            attempts: m.attempts - 1,
            timestamp_ns: m.timestamp_ns,
        });
        c.fin(&m.id).await;
    }
    got.sort();
    assert!(
        got == want,
        "{topic}/{channel}: delivered messages differ from nsqd's queues"
    );
    b.wait_channel(topic, channel, "channel drained", |s| {
        s.depth == 0 && s.in_flight_count == 0 && s.deferred_count == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_nsqd_data_once_and_leaves_its_files_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = write_dataset(dir);
    let before = nsqd_files(dir);
    assert!(before.len() > 30, "several data files per queue");

    let b = crate::common::start_in(dir, |_| {}).await;
    let stats = b.stats().await;
    let mut topics: Vec<&str> = stats.topics.iter().map(|t| t.topic_name.as_str()).collect();
    topics.sort();
    assert_eq!(topics, ["events", "lonely", "orders"]);
    for ((topic, channel), want) in &data.channels {
        let ch = stats.channel(topic, channel).unwrap();
        assert_eq!(ch.depth, want.len() as u64, "{topic}/{channel} depth");
        assert_eq!(ch.in_flight_count, 0);
    }
    let orders = stats.topic("orders").unwrap();
    assert_eq!(orders.channels.len(), 2);
    assert!(!orders.paused);
    assert!(stats.topic("events").unwrap().paused);
    assert!(stats.channel("orders", "audit").unwrap().paused);
    assert!(!stats.channel("orders", "billing").unwrap().paused);
    assert!(!stats.channel("events", "archive").unwrap().paused);
    let lonely = stats.topic("lonely").unwrap();
    assert_eq!(lonely.depth, 300);
    assert!(lonely.channels.is_empty());

    // Every channel delivers exactly its own backlog plus the topic's, with nsqd's attempts
    // (+1 for this delivery) and timestamps.
    drain(
        &b,
        "orders",
        "billing",
        &data.channels[&("orders", "billing")],
    )
    .await;
    assert_eq!(
        b.http("POST", "/channel/unpause?topic=orders&channel=audit", b"")
            .await
            .0,
        200
    );
    drain(&b, "orders", "audit", &data.channels[&("orders", "audit")]).await;
    assert_eq!(
        b.http("POST", "/topic/unpause?topic=events", b"").await.0,
        200
    );
    drain(
        &b,
        "events",
        "archive",
        &data.channels[&("events", "archive")],
    )
    .await;
    // A topic without channels keeps its backlog for its first channel, as in nsqd.
    let mut lonely = data.lonely.clone();
    lonely.sort();
    drain(&b, "lonely", "first", &lonely).await;
    b.stop().await;

    assert!(nsqd_files(dir) == before, "nsqd's files are untouched");
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("nsqd-import.json")).unwrap()).unwrap();
    assert_eq!(marker["state"], "done");
    assert_eq!(marker["messages"], 1200 + 900 + 400 + 600 + 500 + 300);
    assert!(!dir.join("nsqd-import.staging").exists());

    // A restart loads Ferry's topics and imports nothing again.
    let b = crate::common::start_in(dir, |_| {}).await;
    let stats = b.stats().await;
    assert_eq!(stats.topics.len(), 3);
    for (topic, channel) in [
        ("orders", "billing"),
        ("orders", "audit"),
        ("events", "archive"),
        ("lonely", "first"),
    ] {
        let ch = stats.channel(topic, channel).unwrap();
        assert_eq!(ch.depth, 0, "{topic}/{channel} after restart: {ch:?}");
        assert_eq!(ch.in_flight_count, 0);
    }
    assert_eq!(stats.topic("lonely").unwrap().depth, 0);
    b.stop().await;
    assert!(nsqd_files(dir) == before, "nsqd's files are untouched");
}

#[tokio::test]
async fn a_restart_before_consuming_keeps_the_imported_backlog() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = write_dataset(dir);
    let b = crate::common::start_in(dir, |_| {}).await;
    b.stop().await;
    let b = crate::common::start_in(dir, |_| {}).await;
    let stats = b.stats().await;
    for ((topic, channel), want) in &data.channels {
        let ch = stats.channel(topic, channel).unwrap();
        assert_eq!(
            ch.depth,
            want.len() as u64,
            "{topic}/{channel} depth after restart"
        );
    }
    assert!(stats.channel("orders", "audit").unwrap().paused);
    assert!(stats.topic("events").unwrap().paused);
    assert_eq!(stats.topic("lonely").unwrap().depth, 300);
    drain(
        &b,
        "orders",
        "billing",
        &data.channels[&("orders", "billing")],
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn corrupt_nsqd_data_stops_the_broker_with_the_file_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut rng = Rng(7);
    write_nsqd_dat(
        dir,
        &json!({"version": "1.3.0", "topics": [{"name": "t", "paused": false, "channels": [{"name": "c", "paused": false}]}]}),
    );
    write_queue(dir, "t", 0, 100, false, false, &mut rng);
    write_queue(dir, "t:c", 10, 100, true, false, &mut rng);
    // An impossible record size in the middle of the channel's second file.
    let path = dir.join("t:c.diskqueue.000001.dat");
    let mut bytes = std::fs::read(&path).unwrap();
    let size = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
    bytes[4 + size..8 + size].copy_from_slice(&3u32.to_be_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let before = nsqd_files(dir);

    let err = ferry_brokerd::Server::bind(ferry_brokerd::config::Config::for_tests(dir))
        .await
        .expect_err("a corrupt queue stops the start");
    let text = format!("{err:#}");
    assert!(text.contains("t:c.diskqueue.000001.dat"), "{text}");
    assert!(text.contains("invalid message size 3"), "{text}");
    assert!(!dir.join("nsqd-import.json").exists());
    assert!(!dir.join("nsqd-import.staging").exists());
    assert!(!dir.join("topics/t.topic").exists());
    assert!(nsqd_files(dir) == before);

    // Unparsable nsqd.dat.
    std::fs::write(
        dir.join("nsqd.dat"),
        b"{\"version\":\"1.3.0\",\"topics\":[{",
    )
    .unwrap();
    let err = ferry_brokerd::Server::bind(ferry_brokerd::config::Config::for_tests(dir))
        .await
        .expect_err("bad JSON stops the start");
    let text = format!("{err:#}");
    assert!(text.contains("nsqd.dat"), "{text}");

    // Without nsqd.dat the broker starts (nsqd's queue files are ignored).
    std::fs::remove_file(dir.join("nsqd.dat")).unwrap();
    let b = crate::common::start_in(dir, |_| {}).await;
    assert!(b.stats().await.topics.is_empty());
    b.stop().await;
}

#[test]
fn logs_one_line_per_topic_and_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    write_dataset(tmp.path());
    let p = crate::common::spawn_brokerd(tmp.path(), &[]);
    let log = p.log.lock().unwrap().join("\n");
    for topic in ["orders", "events", "lonely"] {
        let line = log
            .lines()
            .find(|l| l.contains("imported nsqd topic") && l.contains(&format!("topic={topic}")))
            .unwrap_or_else(|| panic!("no import line for {topic} in:\n{log}"));
        if topic == "orders" {
            assert!(line.contains("topic_backlog=1200"), "{line}");
            assert!(
                line.contains("channels=billing=900,audit=400(paused)"),
                "{line}"
            );
        }
    }
    assert!(log.contains("nsqd data imported"), "{log}");
    assert!(log.contains("messages=3900"), "{log}");
    assert!(log.contains("skipping invalid topic name"), "{log}");
    p.sigterm();
    let p = crate::common::spawn_brokerd(tmp.path(), &[]);
    let log = p.log.lock().unwrap().join("\n");
    assert!(log.contains("nsqd data was imported before"), "{log}");
    assert!(!log.contains("imported nsqd topic"), "{log}");
    p.sigterm();
}
