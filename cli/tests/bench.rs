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
