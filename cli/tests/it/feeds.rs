//! `ferry to-file`, `ferry to-http` and `ferry to-broker` run as processes against real
//! brokers on loopback: nothing lost across SIGTERM, failing endpoints and a destination that
//! goes away.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use ferry_proto::stats::Stats;
use tokio_util::sync::CancellationToken;

/// How long a feed may take to move everything (the to-http and to-broker tests back off).
const FEED_DEADLINE: Duration = Duration::from_secs(90);

/// go-nsq options that make requeues and backoff quick enough for a test.
const FAST_RETRIES: [&str; 8] = [
    "--consumer-opt",
    "default_requeue_delay,20ms",
    "--consumer-opt",
    "max_requeue_delay,200ms",
    "--consumer-opt",
    "backoff_multiplier,5ms",
    "--consumer-opt",
    "max_backoff_duration,50ms",
];

/// A `ferry` process whose stderr goes to a file (shown when the test fails).
struct Feed {
    child: Child,
    stderr: std::path::PathBuf,
}

fn spawn_feed(args: &[&str], stderr: &Path) -> Feed {
    let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .unwrap();
    Feed {
        child,
        stderr: stderr.to_owned(),
    }
}

impl Feed {
    /// SIGTERM, then the exit must be clean (0) within the deadline. Returns stderr.
    async fn terminate(mut self) -> String {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let status = tokio::task::spawn_blocking(move || {
            let end = std::time::Instant::now() + FEED_DEADLINE;
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    return Some(status);
                }
                if std::time::Instant::now() > end {
                    let _ = self.child.kill();
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap();
        let stderr = std::fs::read_to_string(&self.stderr).unwrap();
        let status = status.unwrap_or_else(|| panic!("no exit after SIGTERM:\n{stderr}"));
        assert!(status.success(), "{status}:\n{stderr}");
        stderr
    }
}

/// (depth, in flight, deferred) of `topic`/`channel`, if the broker has it.
fn channel_counts(stats: &Stats, topic: &str, channel: &str) -> Option<[u64; 3]> {
    let ch = stats.channel(topic, channel)?;
    Some([ch.depth, ch.in_flight_count, ch.deferred_count])
}

/// Polls `check` until it holds, failing with `what` after [`FEED_DEADLINE`].
async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + FEED_DEADLINE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `topic`/`channel` on the broker at `http` has nothing queued, deferred or in
/// flight.
async fn wait_drained(http: &str, topic: &str, channel: &str) {
    let url = format!("http://{http}/stats?format=json");
    wait_for(&format!("{topic}/{channel} drained"), || async {
        let stats: Stats = reqwest::get(&url).await.unwrap().json().await.unwrap();
        channel_counts(&stats, topic, channel) == Some([0, 0, 0])
    })
    .await;
}

/// Publishes `bodies` to `topic` with MPUBs of 500.
async fn publish(b: &Broker, topic: &str, bodies: &[String]) {
    for chunk in bodies.chunks(500) {
        b.post(&format!("/mpub?topic={topic}"), &chunk.join("\n"))
            .await;
    }
}

fn bodies(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("message-{i:05}")).collect()
}

/// A broker whose `topic` holds `bodies` for `channel`.
async fn broker_with_backlog(topic: &str, channel: &str, bodies: &[String]) -> Broker {
    let b = broker().await;
    b.post(
        &format!("/channel/create?topic={topic}&channel={channel}"),
        "",
    )
    .await;
    publish(&b, topic, bodies).await;
    b
}

/// Runs `ferry to-http` on `b`'s `topic` with `flags` (and quick retries) until its channel
/// is drained, then stops it; returns its stderr.
async fn to_http_until_drained(b: &Broker, topic: &str, flags: &[&str]) -> String {
    let logs = tempfile::tempdir().unwrap();
    let mut args = vec!["to-http", "--nsqd-tcp-address", &b.tcp, "--topic", topic];
    args.extend(flags);
    args.extend(FAST_RETRIES);
    let feed = spawn_feed(&args, &logs.path().join("stderr"));
    wait_drained(&b.http, topic, "nsq_to_http").await;
    feed.terminate().await
}

/// Every line of every file in `dir`, decompressed (a file is a multi-member gzip stream).
fn read_gzip_lines(dir: &Path) -> (Vec<String>, usize) {
    let mut lines = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "stderr" {
            continue;
        }
        assert!(name.ends_with(".log.gz"), "unexpected file {name}");
        files += 1;
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(std::fs::File::open(&path).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        lines.extend(text.lines().map(str::to_owned));
    }
    (lines, files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_file_writes_every_message_exactly_once_across_a_restart() {
    let all = bodies(0..10_000);
    let b = broker_with_backlog("archive", "nsq_to_file", &all[..5_000]).await;
    let out = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let out_dir = out.path().to_str().unwrap().to_owned();
    let args = [
        "to-file",
        "--nsqd-tcp-address",
        &b.tcp,
        "--topic",
        "archive",
        "--output-dir",
        &out_dir,
        "--gzip",
        "--rotate-size",
        "15000",
        "--sync-interval",
        "200ms",
        "--max-in-flight",
        "100",
    ];

    let feed = spawn_feed(&args, &logs.path().join("1"));
    // Stop it as soon as a first file was rotated, in the middle of the stream.
    wait_for("a first rotated file", || async {
        std::fs::read_dir(out.path())
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".gz"))
    })
    .await;
    let stderr = feed.terminate().await;
    assert!(stderr.contains("files written"), "{stderr}");
    let leftovers: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let (first_run, _) = read_gzip_lines(out.path());

    publish(&b, "archive", &all[5_000..]).await;
    let feed = spawn_feed(&args, &logs.path().join("2"));
    wait_drained(&b.http, "archive", "nsq_to_file").await;
    feed.terminate().await;

    let (lines, files) = read_gzip_lines(out.path());
    assert!(files >= 5, "{files} files: rotation");
    assert!(!first_run.is_empty() && first_run.len() < lines.len());
    let mut seen = BTreeMap::<&str, usize>::new();
    for line in &lines {
        *seen.entry(line).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "written more than once: {twice:?}");
    let expected: BTreeSet<&str> = all.iter().map(String::as_str).collect();
    let got: BTreeSet<&str> = seen.keys().copied().collect();
    assert_eq!(got, expected, "{} lines", lines.len());
    assert_eq!(lines.len(), 10_000);
    let stats = b.stats().await;
    assert_eq!(
        channel_counts(&stats, "archive", "nsq_to_file"),
        Some([0, 0, 0])
    );
    b.stop().await;
}

/// An HTTP endpoint that answers 500 to every fifth request and records the others' bodies.
async fn flaky_endpoint() -> (String, Arc<Mutex<Vec<String>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let app = axum::Router::new().route(
        "/push",
        axum::routing::post({
            let received = received.clone();
            move |body: String| async move {
                let n = requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n % 5 == 4 {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                received.lock().unwrap().push(body);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/push"), received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_http_delivers_every_message_despite_failures() {
    let (url, received) = flaky_endpoint().await;
    let all = bodies(0..1_000);
    let b = broker_with_backlog("events", "nsq_to_http", &all).await;
    let flags = ["--post", &url, "--n", "8", "--mode", "round-robin"];
    let stderr = to_http_until_drained(&b, "events", &flags).await;
    let summary = stderr.lines().last().unwrap_or_default();
    assert!(
        !summary.contains(" 0 requeued"),
        "failures were requeued: {stderr}"
    );

    let got: BTreeSet<String> = received.lock().unwrap().iter().cloned().collect();
    let expected: BTreeSet<String> = all.into_iter().collect();
    assert_eq!(got, expected);
    let stats = b.stats().await;
    assert_eq!(
        channel_counts(&stats, "events", "nsq_to_http"),
        Some([0, 0, 0])
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_http_get_hostpool_skips_a_dead_endpoint() {
    let received = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new().route(
        "/hit",
        axum::routing::get({
            let received = received.clone();
            move |q: axum::extract::Query<BTreeMap<String, String>>| async move {
                received.lock().unwrap().push(q.0["body"].clone());
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let live = format!("http://{}/hit?body=%s", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    // A port nobody listens on any more.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hit?body=%s", l.local_addr().unwrap())
    };
    let all: Vec<String> = (0..200).map(|i| format!("a b&c={i}")).collect();
    let b = broker_with_backlog("hits", "nsq_to_http", &all).await;
    let flags = ["--get", &dead, "--get", &live, "--mode", "hostpool"];
    to_http_until_drained(&b, "hits", &flags).await;
    let got: BTreeSet<String> = received.lock().unwrap().iter().cloned().collect();
    assert_eq!(got, all.into_iter().collect::<BTreeSet<_>>());
    b.stop().await;
}

/// A broker on a data directory and ports of its own choosing, so it can be restarted in
/// place.
struct PlacedBroker {
    tcp: std::net::SocketAddr,
    http: std::net::SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn placed_broker(
    data: &Path,
    at: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
) -> PlacedBroker {
    let mut config = ferry_brokerd::config::Config::for_tests(data);
    if let Some((tcp, http)) = at {
        config.tcp_address = tcp;
        config.http_address = http;
    }
    let server = ferry_brokerd::Server::bind(config).await.unwrap();
    let (tcp, http) = (server.tcp_addr(), server.http_addr());
    let stop = CancellationToken::new();
    let task = tokio::spawn(server.run(stop.clone()));
    PlacedBroker {
        tcp,
        http,
        stop,
        task,
    }
}

impl PlacedBroker {
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_broker_loses_nothing_while_the_destination_is_down() {
    let source = broker().await;
    source
        .post("/channel/create?topic=orders&channel=nsq_to_nsq", "")
        .await;
    let dest_dir = tempfile::tempdir().unwrap();
    let dest = placed_broker(dest_dir.path(), None).await;
    let dest_http = dest.http.to_string();
    let r = reqwest::Client::new()
        .post(format!(
            "http://{dest_http}/channel/create?topic=copy&channel=check"
        ))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    let logs = tempfile::tempdir().unwrap();
    let dest_tcp = dest.tcp.to_string();
    let mut args = vec![
        "to-broker",
        "--nsqd-tcp-address",
        &source.tcp,
        "--topic",
        "orders",
        "--destination-nsqd-tcp-address",
        &dest_tcp,
        "--destination-topic",
        "copy",
        "--mode",
        "round-robin",
    ];
    args.extend(FAST_RETRIES);
    let feed = spawn_feed(&args, &logs.path().join("stderr"));
    let all = bodies(0..2_000);
    publish(&source, "orders", &all[..1_000]).await;
    wait_drained(&source.http, "orders", "nsq_to_nsq").await;

    // The destination goes away; the source keeps receiving.
    let (tcp, http) = (dest.tcp, dest.http);
    dest.stop().await;
    publish(&source, "orders", &all[1_000..]).await;
    let url = format!("http://{}/stats?format=json", source.http);
    wait_for("requeues while the destination is down", || async {
        let stats: Stats = reqwest::get(&url).await.unwrap().json().await.unwrap();
        let requeued = stats
            .topics
            .first()
            .and_then(|t| t.channels.first())
            .map_or(0, |c| c.requeue_count);
        requeued >= 3
    })
    .await;

    // Back on the same data and ports: everything gets there.
    let dest = placed_broker(dest_dir.path(), Some((tcp, http))).await;
    wait_drained(&source.http, "orders", "nsq_to_nsq").await;
    let stderr = feed.terminate().await;
    let summary = stderr.lines().last().unwrap_or_default();
    assert!(
        !summary.contains(" 0 requeued"),
        "failures were requeued: {stderr}"
    );

    let (consumer, mut messages) = ferry_client::Consumer::stream(
        "copy",
        "check",
        ferry_client::Config::new().max_in_flight(100),
    )
    .unwrap();
    consumer
        .connect_to_broker(dest.tcp.to_string())
        .await
        .unwrap();
    let mut got = BTreeSet::new();
    let expected: BTreeSet<String> = all.into_iter().collect();
    let end = tokio::time::Instant::now() + FEED_DEADLINE;
    while got != expected {
        let msg = tokio::time::timeout_at(end, messages.recv())
            .await
            .unwrap_or_else(|_| panic!("{} of {} copied", got.len(), expected.len()))
            .unwrap();
        got.insert(String::from_utf8(msg.body().to_vec()).unwrap());
        msg.finish().await.unwrap();
    }
    consumer.stop().await;
    dest.stop().await;
    source.stop().await;
}
