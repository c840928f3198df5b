//! `ferry tail`, `ferry pub` and `ferry dev` run as processes against real daemons on loopback.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use crate::common::*;
use ferry_proto::stats::Stats;

/// Waits until `topic` on `broker` has a `tail…#ephemeral` channel (the tail subscribed).
async fn wait_tail_subscribed(broker: &Broker, topic: &str) -> String {
    eventually(&format!("a tail channel on {topic}"), || async {
        channel_names(&broker.stats().await, topic)
            .into_iter()
            .find(|c| c.starts_with("tail") && c.ends_with("#ephemeral"))
    })
    .await
}

/// Waits until `topic` on `broker` has no channel left (a tail's ephemeral one went with it).
async fn wait_no_channels(broker: &Broker, topic: &str) {
    eventually(&format!("no channel left on {topic}"), || async {
        channel_names(&broker.stats().await, topic)
            .is_empty()
            .then_some(())
    })
    .await;
}

fn lines(stdout: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_exactly_what_was_published_and_leaves_no_channel() {
    let b = broker().await;
    b.post("/topic/create?topic=orders", "").await;
    let tail = spawn_ferry(
        &[
            "tail",
            "--broker-tcp-address",
            &b.tcp,
            "--topic",
            "orders",
            "-n",
            "50",
            "--format",
            "json",
        ],
        Stdio::null(),
    );
    wait_tail_subscribed(&b, "orders").await;
    let body: Vec<String> = (0..50).map(|i| format!("order-{i}")).collect();
    b.post("/mpub?topic=orders", &body.join("\n")).await;

    let out = wait_output(tail).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let got = lines(&out.stdout);
    assert_eq!(got.len(), 50, "{stdout}");
    let mut ids = BTreeSet::new();
    for (i, line) in got.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["topic"], "orders");
        assert_eq!(v["body"], format!("order-{i}"));
        assert_eq!(v["attempts"], 1);
        assert!(v["timestamp"].as_i64().unwrap() > 0);
        let id = v["id"].as_str().unwrap().to_owned();
        assert_eq!(id.len(), 16);
        ids.insert(id);
    }
    assert_eq!(ids.len(), 50, "distinct IDs");
    // Its ephemeral channel went with it; the topic itself stays.
    wait_no_channels(&b, "orders").await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_takes_nsq_tails_command_line() {
    let b = broker().await;
    b.post("/topic/create?topic=legacy", "").await;
    // nsq_tail's flags as its users type them: single dashes, Go bools, go-nsq consumer options.
    let tail = spawn_ferry(
        &[
            "tail",
            &format!("-nsqd-tcp-address={}", b.tcp),
            "-topic=legacy",
            "-n",
            "20",
            "-print-topic",
            "-max-in-flight=5",
            "-consumer-opt=max_attempts,5",
            "-consumer-opt=heartbeat_interval,5s",
            "-consumer-opt=tls_insecure_skip_verify,true",
        ],
        Stdio::null(),
    );
    wait_tail_subscribed(&b, "legacy").await;
    let body: Vec<String> = (0..20).map(|i| format!("line-{i}")).collect();
    b.post("/mpub?topic=legacy", &body.join("\n")).await;
    let out = wait_output(tail).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let want: Vec<String> = body.iter().map(|l| format!("legacy | {l}")).collect();
    assert_eq!(lines(&out.stdout), want);
    assert!(
        stderr.contains("tls_insecure_skip_verify is ignored"),
        "{stderr}"
    );

    let bad = spawn_ferry(
        &["tail", "-topic=legacy", "-consumer-opt=no_such_option,1"],
        Stdio::null(),
    );
    let out = wait_output(bad).await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("unknown option \"no_such_option\""),
        "{stderr}"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follows_several_topics_found_through_lookupd() {
    let l = lookupd().await;
    let b = broker_registered_with(&l.tcp).await;
    for t in ["alpha", "beta"] {
        b.post(&format!("/topic/create?topic={t}"), "").await;
        let lookup = format!("http://{}/lookup?topic={t}", l.http);
        eventually(&format!("lookupd to know {t}"), || async {
            let r = reqwest::get(&lookup).await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
    }
    let tail = spawn_ferry(
        &[
            "tail",
            "--lookupd-http-address",
            &l.http,
            "--topic",
            "alpha",
            "--topic",
            "beta",
            "-n",
            "4",
            "--print-topic",
        ],
        Stdio::null(),
    );
    wait_tail_subscribed(&b, "alpha").await;
    wait_tail_subscribed(&b, "beta").await;
    b.post("/mpub?topic=alpha", "a0\na1").await;
    b.post("/mpub?topic=beta", "b0\nb1").await;
    let out = wait_output(tail).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let got: BTreeSet<String> = lines(&out.stdout).into_iter().collect();
    let want: BTreeSet<String> = ["alpha | a0", "alpha | a1", "beta | b0", "beta | b1"]
        .map(String::from)
        .into();
    assert_eq!(got, want);
    b.stop().await;
    l.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_exits_cleanly_on_ctrl_c() {
    let b = broker().await;
    b.post("/topic/create?topic=events", "").await;
    let tail = spawn_ferry(
        &["tail", "--broker-tcp-address", &b.tcp, "--topic", "events"],
        Stdio::null(),
    );
    let channel = wait_tail_subscribed(&b, "events").await;
    b.post("/mpub?topic=events", "e1\ne2\ne3").await;
    // Wait until all three were printed and finished.
    eventually("three messages finished", || async {
        let stats = b.stats().await;
        let c = stats.topics.first()?.channel(&channel)?;
        (c.message_count == 3 && c.in_flight_count == 0 && c.depth == 0).then_some(())
    })
    .await;
    let pid = tail.id().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = wait_output(tail).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(lines(&out.stdout), ["e1", "e2", "e3"]);
    wait_no_channels(&b, "events").await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_from_stdin_delivers_every_line_once_in_order() {
    const N: usize = 100_000;
    let b = broker().await;
    b.post("/channel/create?topic=big&channel=check", "").await;
    let mut publisher = spawn_ferry(
        &["pub", "--broker-tcp-address", &b.tcp, "--topic", "big"],
        Stdio::piped(),
    );
    let mut stdin = publisher.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let mut w = std::io::BufWriter::new(&mut stdin);
        for i in 0..N {
            writeln!(w, "line-{i}").unwrap();
        }
        w.flush().unwrap();
    });
    let out = wait_output(publisher).await;
    writer.join().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), format!("published {N} messages to big"));
    let stats = b.stats().await;
    assert_eq!(stats.topics[0].message_count, N as u64);
    assert_eq!(stats.topics[0].channels[0].depth, N as u64);

    // Read them back through the channel: every line, once, in order.
    let out = ferry(args(&[
        "tail",
        "--broker-tcp-address",
        &b.tcp,
        "--topic",
        "big",
        "--channel",
        "check",
        "-n",
        &N.to_string(),
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out).1);
    let got = lines(&out.stdout);
    assert_eq!(got.len(), N);
    for (i, line) in got.iter().enumerate() {
        assert_eq!(line, &format!("line-{i}"));
    }
    let stats = b.stats().await;
    assert_eq!(stats.topics[0].channels[0].depth, 0);
    assert_eq!(stats.topics[0].channels[0].in_flight_count, 0);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_arguments_and_deferred_messages() {
    let b = broker().await;
    b.post("/channel/create?topic=later&channel=c", "").await;
    let out = ferry(args(&[
        "pub",
        "--broker-tcp-address",
        &b.tcp,
        "--topic",
        "later",
        "--defer",
        "1h",
        "x",
        "y",
    ]))
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "published 2 messages to later");
    let out = ferry(args(&[
        "pub",
        "--broker-tcp-address",
        &b.tcp,
        "--topic",
        "later",
        "now",
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out).1);
    let stats = b.stats().await;
    let c = &stats.topics[0].channels[0];
    assert_eq!(c.deferred_count, 2, "{c:?}");
    assert_eq!(c.depth, 1, "{c:?}");
    b.stop().await;
}

/// A `ferry dev` process on free ports, with the addresses its banner printed.
struct Dev {
    child: std::process::Child,
    broker_tcp: String,
    broker_http: String,
    lookupd_http: String,
    admin_http: String,
}

/// Starts `ferry dev` in `cwd` on free ports and reads its banner.
async fn start_dev(cwd: &std::path::Path) -> Dev {
    let mut child = dev_command(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let banner = tokio::task::spawn_blocking(move || {
        let mut banner = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.starts_with("Ctrl-C");
            banner.push(line);
            if done {
                break;
            }
        }
        banner
    });
    let banner = tokio::time::timeout(DEADLINE, banner)
        .await
        .expect("banner in time")
        .unwrap();
    let field = |daemon: &str, i: usize| -> String {
        let line = banner
            .iter()
            .find(|l| l.trim_start().starts_with(daemon))
            .unwrap_or_else(|| panic!("no {daemon} line in {banner:?}"));
        let f: Vec<&str> = line.split_whitespace().collect();
        f[i].trim_start_matches("http://").to_owned()
    };
    Dev {
        broker_tcp: field("brokerd", 2),
        broker_http: field("brokerd", 4),
        lookupd_http: field("lookupd", 4),
        admin_http: field("admin-ui", 2),
        child,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_runs_lookupd_and_a_broker_until_sigterm() {
    let cwd = tempfile::tempdir().unwrap();
    let Dev {
        child: dev,
        broker_tcp,
        broker_http,
        lookupd_http,
        admin_http,
    } = start_dev(cwd.path()).await;

    let out = ferry(args(&[
        "pub",
        "--broker-tcp-address",
        &broker_tcp,
        "--topic",
        "hello",
        "hi",
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out).1);
    // The broker registered the new topic with the dev lookupd.
    let lookup = format!("http://{lookupd_http}/lookup?topic=hello");
    let producers = eventually("hello in lookupd", || async {
        let v: serde_json::Value = reqwest::get(&lookup).await.ok()?.json().await.ok()?;
        let p = v["producers"].as_array()?.clone();
        (!p.is_empty()).then_some(p)
    })
    .await;
    assert_eq!(
        producers[0]["tcp_port"].to_string(),
        broker_tcp.rsplit(':').next().unwrap()
    );
    let stats: Stats = reqwest::get(format!("http://{broker_http}/stats?format=json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.topics[0].message_count, 1);
    // The dashboard finds the topic through the dev lookupd.
    let topics = format!("http://{admin_http}/api/topics");
    eventually("hello on the dashboard", || async {
        let v: serde_json::Value = reqwest::get(&topics).await.ok()?.json().await.ok()?;
        v.to_string().contains("\"hello\"").then_some(())
    })
    .await;

    let kill = std::process::Command::new("kill")
        .args(["-TERM", &dev.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = wait_output(dev).await;
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(cwd.path().join("ferry-data/topics/hello.topic").is_dir());
}

/// Writes a CA and a certificate for 127.0.0.1 it signed into `dir`: (ca, cert, key).
fn pki(dir: &std::path::Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, &ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let write = |name: &str, pem: String| {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p.to_string_lossy().into_owned()
    };
    (
        write("ca.pem", ca_cert.pem()),
        write("cert.pem", cert.pem()),
        write("key.pem", key.serialize_pem()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_and_pub_over_tls_with_compression() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(certs.path());
    let b = broker_with(|c| {
        c.tls_cert = Some(cert.clone().into());
        c.tls_key = Some(key.clone().into());
        // TCP must upgrade; plain HTTP stays open (for the stats this test reads).
        c.tls_required = "tcp-https".into();
    })
    .await;
    let tail = spawn_ferry(
        &[
            "tail",
            "--broker-tcp-address",
            &b.tcp,
            "--topic",
            "sec",
            "-n",
            "3",
            "--tls-root-ca-file",
            &ca,
            "--deflate",
        ],
        Stdio::null(),
    );
    eventually("the tail to subscribe", || async {
        (!channel_names(&b.stats().await, "sec").is_empty()).then_some(())
    })
    .await;
    let out = ferry(args(&[
        "pub",
        "--broker-tcp-address",
        &b.tcp,
        "--topic",
        "sec",
        "--tls-root-ca-file",
        &ca,
        "--snappy",
        "a",
        "b",
        "c",
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out).1);
    let out = wait_output(tail).await;
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(lines(&out.stdout), ["a", "b", "c"]);
    // Without TLS the broker refuses: one clear line, non-zero exit.
    let out = ferry(args(&[
        "pub",
        "--broker-tcp-address",
        &b.tcp,
        "--topic",
        "sec",
        "x",
    ]))
    .await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("TLS required"), "{stderr}");
    b.stop().await;
}

/// The README's "Try it" block, in the order written, against `ferry dev` on free ports: the
/// tail started before the topic exists says what it waits for and prints the published
/// messages within 5 s; stat, pause and NSQ's HTTP API answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_try_it_works_in_the_order_written() {
    let cwd = tempfile::tempdir().unwrap();
    let dev = start_dev(cwd.path()).await;
    // ferry tail --lookupd-http-address 127.0.0.1:4161 --topic greetings &
    let mut tail = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["tail", "--lookupd-http-address", &dev.lookupd_http])
        .args(["--topic", "greetings"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for stream in [
        Box::new(tail.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(tail.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let mut seen: Vec<String> = Vec::new();
    let mut until = async |want: &str, seen: &mut Vec<String>| {
        let end = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while !seen.iter().any(|l| l.contains(want)) {
            match tokio::time::timeout_at(end, rx.recv()).await {
                Ok(Some(line)) => seen.push(line),
                _ => panic!("no {want:?} from ferry tail within 5 s; it printed {seen:?}"),
            }
        }
    };
    until("no broker has topic greetings yet", &mut seen).await;

    // ferry pub --topic greetings 'hello' 'hello again'
    let published = tokio::time::Instant::now();
    let out = ferry(args(&[
        "pub",
        "--broker-tcp-address",
        &dev.broker_tcp,
        "--topic",
        "greetings",
        "hello",
        "hello again",
    ]))
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "published 2 messages to greetings");
    until("hello again", &mut seen).await;
    assert!(seen.iter().any(|l| l == "hello"), "{seen:?}");
    assert!(published.elapsed() < std::time::Duration::from_secs(5));

    // ferry stat --topic greetings; ferry pause --topic greetings
    for cmd in [
        &["stat", "--topic", "greetings", "-n", "1"][..],
        &["pause", "--topic", "greetings"][..],
        &["unpause", "--topic", "greetings"][..],
    ] {
        let mut a = args(cmd);
        a.extend(args(&["--broker-http-address", &dev.broker_http]));
        let out = ferry(a).await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{cmd:?}: {stdout}{stderr}");
    }
    // curl -d 'hello' 'http://127.0.0.1:4151/pub?topic=greetings'
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("http://{}/pub?topic=greetings", dev.broker_http))
        .body("hello from curl")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "OK");
    until("hello from curl", &mut seen).await;
    // curl 'http://127.0.0.1:4151/stats?format=json'
    let stats: Stats = client
        .get(format!("http://{}/stats?format=json", dev.broker_http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.topics[0].message_count, 3, "{stats:?}");

    let _ = tail.kill();
    let _ = tail.wait();
    let mut dev = dev.child;
    let _ = dev.kill();
    let _ = dev.wait();
}
