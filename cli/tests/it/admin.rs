//! `ferry pause|unpause|empty|delete|stat` run as processes against real brokers on loopback,
//! and their answers to bad input.

use crate::common::{args, broker, ferry, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_unpause_empty_delete_on_every_broker() {
    let (a, b) = (broker().await, broker().await);
    for br in [&a, &b] {
        br.post("/channel/create?topic=t&channel=c", "").await;
        br.post("/mpub?topic=t", "1\n2\n3").await;
    }
    let nodes = [
        "--broker-http-address",
        &a.http,
        "--broker-http-address",
        &b.http,
    ];
    let mut pause = args(&["pause", "--topic", "t"]);
    pause.extend(args(&nodes));
    let out = ferry(pause).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    for br in [&a, &b] {
        assert!(br.stats().await.topics[0].paused);
    }

    let mut chan_pause = args(&["pause", "--topic", "t", "--channel", "c"]);
    chan_pause.extend(args(&nodes));
    assert!(ferry(chan_pause).await.status.success());
    for br in [&a, &b] {
        assert!(br.stats().await.topics[0].channels[0].paused);
    }
    let mut unpause = args(&["unpause", "--topic", "t"]);
    unpause.extend(args(&nodes));
    assert!(ferry(unpause).await.status.success());
    assert!(!a.stats().await.topics[0].paused);

    // stat sums both brokers: 3 + 3 waiting messages on channel c.
    let mut stat = args(&["stat", "--topic", "t", "--channel", "c", "-n", "1"]);
    stat.extend(args(&nodes));
    let out = ferry(stat).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let row: Vec<&str> = stdout.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[0], "6", "depth column: {stdout}");
    assert_eq!(row[row.len() - 1], "2", "brokers column: {stdout}");
    // An unknown channel is an error, not a row of zeros.
    let mut stat = args(&["stat", "--topic", "t", "--channel", "nope", "-n", "1"]);
    stat.extend(args(&nodes));
    let out = ferry(stat).await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains("channel \"nope\" of topic \"t\" not found"),
        "{stderr}"
    );

    let mut empty = args(&["empty", "--topic", "t", "--channel", "c"]);
    empty.extend(args(&nodes));
    assert!(ferry(empty).await.status.success());
    assert_eq!(a.stats().await.topics[0].channels[0].depth, 0);

    let mut delete = args(&["delete", "--topic", "t"]);
    delete.extend(args(&nodes));
    assert!(ferry(delete).await.status.success());
    for br in [&a, &b] {
        assert!(br.stats().await.topics.is_empty());
    }
    // Acting on a topic a broker does not have: a line saying so and a non-zero exit.
    let mut again = args(&["pause", "--topic", "t"]);
    again.extend(args(&nodes));
    let out = ferry(again).await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stdout.contains("TOPIC_NOT_FOUND"), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gives_one_clear_line_and_non_zero_exit() {
    // A port nothing listens on: bind and drop.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // A port in use, for `ferry dev` to fail on.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_dir = tempfile::tempdir().unwrap();
    let cases: Vec<Vec<String>> = vec![
        args(&["pause", "--topic", "bad name"]),
        args(&["pause", "--topic", "t", "--channel", "a/b"]),
        args(&["pause", "--topic", "t", "--no-such-flag"]),
        args(&[
            "pause",
            "--topic",
            "t",
            "--broker-http-address",
            &dead.to_string(),
        ]),
        args(&[
            "stat",
            "--topic",
            "t",
            "-n",
            "1",
            "--broker-http-address",
            &dead.to_string(),
        ]),
        args(&["stat", "--topic", "t", "--interval", "0s"]),
        args(&["frobnicate"]),
        args(&["tail", "--topic", "bad name"]),
        args(&["tail", "--topic", "t", "--format", "xml"]),
        args(&[
            "tail",
            "--topic",
            "t",
            "--broker-tcp-address",
            &dead.to_string(),
        ]),
        args(&["tail", "--topic", "t", "-n", "many"]),
        args(&["pub", "--topic", "t", "--no-such-flag", "x"]),
        args(&["pub", "--topic", "t#bad", "x"]),
        args(&["pub", "--topic", "t", "--defer", "10", "x"]),
        args(&[
            "pub",
            "--topic",
            "t",
            "--broker-tcp-address",
            &dead.to_string(),
            "x",
        ]),
        args(&["dev", "--broker-tcp-address", "not-an-address"]),
        args(&[
            "dev",
            "--data-path",
            &dead_dir.path().join("data").to_string_lossy(),
            "--lookupd-tcp-address",
            &busy.local_addr().unwrap().to_string(),
            "--lookupd-http-address",
            "127.0.0.1:0",
        ]),
    ];
    for case in cases {
        let out = ferry(case.clone()).await;
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{case:?} succeeded: {stdout}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{case:?}: {stderr}"
        );
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error") || first.starts_with("ferry: error"),
            "{case:?}: {stderr}"
        );
    }
}
