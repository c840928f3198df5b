//! `ferry bench` against a real brokerd on loopback: what the writer publishes the reader
//! receives, counted exactly. (Throughput is measured by running the tool, not asserted here.)

use clap::Parser;
use ferry_cli::bench::{self, BenchCommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: BenchCommand,
}

fn parse(args: &[&str]) -> BenchCommand {
    Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
        .unwrap()
        .cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_then_reader_against_brokerd() {
    let dir = tempfile::tempdir().unwrap();
    let server = ferry_brokerd::Server::bind(ferry_brokerd::config::Config::for_tests(dir.path()))
        .await
        .unwrap();
    let addr = server.tcp_addr().to_string();
    // The reader's channel must exist before publishing so that it gets every message.
    server
        .broker()
        .get_or_create_topic("b")
        .await
        .unwrap()
        .get_or_create_channel("ch")
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(server.run(stop.clone()));

    let reader_cmd = |expect: u64| {
        parse(&[
            "reader",
            "--tcp-address",
            &addr,
            "--topic",
            "b",
            "--channel",
            "ch",
            "-c",
            "2",
            "--rdy",
            "500",
            "--runfor",
            "30s",
            "--expect",
            &expect.to_string(),
        ])
    };
    let writer = parse(&[
        "writer",
        "--tcp-address",
        &addr,
        "--topic",
        "b",
        "-c",
        "2",
        "--size",
        "100",
        "--batch-size",
        "50",
        "--runfor",
        "300ms",
    ]);
    let w = bench::run(&writer, CancellationToken::new()).await.unwrap();
    assert!(w.msgs > 0 && w.msgs % 50 == 0, "{}", w.msgs);
    assert_eq!(w.bytes, w.msgs * 100);

    let r = bench::run(&reader_cmd(w.msgs), CancellationToken::new())
        .await
        .unwrap();
    assert!(r.msgs >= w.msgs, "reader got {} of {}", r.msgs, w.msgs);

    stop.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_mode_against_brokerd() {
    let dir = tempfile::tempdir().unwrap();
    let server = ferry_brokerd::Server::bind(ferry_brokerd::config::Config::for_tests(dir.path()))
        .await
        .unwrap();
    let addr = server.tcp_addr().to_string();
    let stop = CancellationToken::new();
    let running = tokio::spawn(server.run(stop.clone()));

    let latency = parse(&[
        "latency",
        "--tcp-address",
        &addr,
        "--topic",
        "lat",
        "--rate",
        "200",
        "--size",
        "64",
        "--runfor",
        "1s",
        "--rdy",
        "100",
    ]);
    let report = bench::run(&latency, CancellationToken::new())
        .await
        .unwrap();
    let lat = report.latency.as_ref().expect("a latency report");
    // 200 msgs/s for 1 s: exactly 200 scheduled, each published and delivered once.
    assert_eq!(lat.scheduled, 200);
    assert_eq!(lat.published, 200);
    assert_eq!(lat.received, 200);
    assert_eq!(report.msgs, 200);
    assert_eq!(report.bytes, 200 * 64);
    assert_eq!(report.shortfall(), None);
    let keys: Vec<_> = lat.rows.iter().map(|r| r.key).collect();
    assert_eq!(
        keys,
        [
            "send_lateness",
            "publish_ack",
            "broker_to_delivery",
            "scheduled_to_delivery"
        ]
    );
    for row in &lat.rows {
        assert_eq!(row.count, 200, "{}", row.key);
        assert!(
            row.p50_ns <= row.p90_ns && row.p90_ns <= row.p99_ns,
            "{row:?}"
        );
        assert!(
            row.p99_ns <= row.p999_ns && row.p999_ns <= row.max_ns,
            "{row:?}"
        );
    }
    let text = report.render(false);
    for needle in [
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "publish → OK",
        "200 received",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["received"], 200);
    for key in ["p50_us", "p90_us", "p99_us", "p99_9_us", "max_us"] {
        assert!(json["latency"]["publish_ack"][key].is_number(), "{key}");
    }

    stop.cancel();
    running.await.unwrap().unwrap();
}

#[test]
fn latency_mode_refuses_a_zero_rate_or_size_in_one_line() {
    for (flag, value) in [("--rate", "0"), ("--size", "0")] {
        let mut args = vec!["bench", "latency", "--rate", "10", "--runfor", "1s"];
        args.extend([flag, value]);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error:") && first.contains(flag),
            "{stderr}"
        );
    }
}
