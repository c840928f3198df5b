//! Replicated topics from the command line: `ferry create --replicas N` against three brokers
//! registered with a lookupd (in process, on loopback), its answers to bad counts, `ferry
//! delete` of a replicated topic (gone from every replica), and `ferry dev --replicas 3` on free
//! ports: a created topic gets a leader and two followers, and `stop N` on its stdin makes
//! another broker lead.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::process::Stdio;

use ferry_proto::stats::{ReplicationStats, Stats};

use crate::common::*;

/// The `replication` object of `topic` on the broker at `http`, once it has one.
async fn replication(http: &str, topic: &str) -> Option<ReplicationStats> {
    // Not the testkit's request, which fails the test on a refused connection: a stopped
    // broker is expected here.
    let url = format!("http://{http}/stats?format=json");
    let stats: Stats = reqwest::get(&url).await.ok()?.json().await.ok()?;
    stats.topic(topic)?.replication.clone()
}

/// Waits until exactly one of `brokers` leads `topic`, the others follow it and every one
/// has applied at least `applied` entries; the leader's index.
async fn wait_one_leader(brokers: &[String], topic: &str, applied: u64) -> usize {
    eventually("one leader and followers that agree", async || {
        let mut roles = Vec::new();
        for b in brokers {
            roles.push(replication(b, topic).await?);
        }
        let leaders: Vec<usize> = (0..roles.len())
            .filter(|&i| roles[i].role == "leader")
            .collect();
        let [leader] = leaders[..] else { return None };
        let id = roles[leader].node_id;
        roles
            .iter()
            .all(|r| {
                r.leader == Some(id)
                    && r.replicas.len() == 3
                    && r.last_applied >= applied
                    && (r.role == "leader" || r.role == "follower")
            })
            .then_some(leader)
    })
    .await
}

/// Three in-process brokers registered with one lookupd, which lists them all.
async fn three_brokers() -> (Lookupd, Vec<Broker>) {
    let lookupd = lookupd().await;
    let mut brokers = Vec::new();
    for _ in 0..3 {
        brokers.push(broker_registered_with(&lookupd.tcp).await);
    }
    let nodes = format!("http://{}/nodes", lookupd.http);
    eventually("lookupd lists the three brokers", || async {
        let v = ferry_testkit::get_json(&nodes).await;
        (v["producers"].as_array()?.len() == 3).then_some(())
    })
    .await;
    (lookupd, brokers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_forms_a_replicated_topic_through_one_broker() {
    let (lookupd, brokers) = three_brokers().await;
    let out = ferry(args(&[
        "create",
        "--lookupd-http-address",
        &lookupd.http,
        "--topic",
        "orders",
        "--channel",
        "billing",
        "--replicas",
        "3",
    ]))
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(
        lines[0].contains("created topic \"orders\" with 3 replicas on "),
        "{stdout}"
    );
    for b in &brokers {
        assert!(
            lines[0].contains(&b.http),
            "{b_http} not in {stdout}",
            b_http = b.http
        );
        assert!(
            stdout.contains(&format!(
                "{}: created channel \"billing\" of topic \"orders\"",
                b.http
            )),
            "{stdout}"
        );
    }
    let http: Vec<String> = brokers.iter().map(|b| b.http.clone()).collect();
    wait_one_leader(&http, "orders", 1).await;
    for b in &brokers {
        let stats = b.stats().await;
        assert!(stats.channel("orders", "billing").is_some(), "{stats:?}");
    }
    // `ferry delete` asks every replica at once; the first deletes the group everywhere, so
    // the others may find nothing left: still a success.
    let out = ferry(args(&[
        "delete",
        "--lookupd-http-address",
        &lookupd.http,
        "--topic",
        "orders",
    ]))
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    for b in &brokers {
        eventually("the topic gone from every replica", || async {
            b.stats().await.topic("orders").is_none().then_some(())
        })
        .await;
    }
    for b in brokers {
        b.stop().await;
    }
    lookupd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_refusals_are_one_clear_line() {
    let (lookupd, brokers) = three_brokers().await;
    let create = |topic: &str, extra: &[&str]| {
        let mut a = args(&[
            "create",
            "--lookupd-http-address",
            &lookupd.http,
            "--topic",
            topic,
        ]);
        a.extend(args(extra));
        ferry(a)
    };

    // An even count never reaches a broker.
    let out = create("t", &["--replicas", "2"]).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("replicas must be 1 or an odd number up to 9"),
        "{stderr}"
    );

    // More replicas than brokers: the broker's TOO_FEW_BROKERS, said as what it needs.
    let out = create("t", &["--replicas", "5"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("5 replicas need 5 brokers registered with lookupd")
            && stderr.contains("TOO_FEW_BROKERS"),
        "{stderr}"
    );

    // A topic that exists on one broker cannot become replicated.
    brokers[0].post("/topic/create?topic=single", "").await;
    let out = ferry(args(&[
        "create",
        "--broker-http-address",
        &brokers[0].http,
        "--topic",
        "single",
        "--replicas",
        "3",
    ]))
    .await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("already exists on this broker with one replica")
            && stderr.contains("TOPIC_EXISTS_UNREPLICATED"),
        "{stderr}"
    );

    // An ephemeral topic is refused before asking anyone.
    let out = create("e#ephemeral", &["--replicas", "3"]).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot be replicated"), "{stderr}");

    // Without --replicas: every broker lookupd lists creates it, each on its own.
    let out = create("plain", &[]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    for b in &brokers {
        let stats = b.stats().await;
        let topic = stats.topic("plain").expect("plain on every broker");
        assert!(topic.replication.is_none(), "{topic:?}");
    }
    for b in brokers {
        b.stop().await;
    }
    lookupd.stop().await;
}

/// `ferry dev --replicas 3` on free ports: the child (stdin piped for `stop N`) and its
/// brokers' HTTP addresses, broker 1 first, read from its banner.
fn start_dev_replicated(cwd: &std::path::Path) -> (std::process::Child, Vec<String>, String) {
    let mut child = dev_command(cwd)
        .args(["--replicas", "3", "--more-brokers-port", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = Vec::new();
    loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "{banner:?}");
        let done = line.starts_with("Ctrl-C");
        banner.push(line);
        if done {
            break;
        }
    }
    // What `stop N` / `start N` answer, drained so the child never blocks on stdout.
    std::thread::spawn(move || for _ in stdout.lines() {});
    let field = |prefix: &str, i: usize| -> String {
        let line = banner
            .iter()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} line in {banner:?}"));
        let f: Vec<&str> = line.split_whitespace().collect();
        f[i].trim_start_matches("http://").to_owned()
    };
    let brokers = (1..=3)
        .map(|n| field(&format!("brokerd-{n} "), 4))
        .collect();
    let tcp = field("brokerd-1 ", 2);
    (child, brokers, tcp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_with_three_replicas_has_a_leader_and_fails_over() {
    let cwd = tempfile::tempdir().unwrap();
    let path = cwd.path().to_owned();
    let (mut dev, http, tcp) = tokio::time::timeout(
        DEADLINE,
        tokio::task::spawn_blocking(move || start_dev_replicated(&path)),
    )
    .await
    .expect("banner in time")
    .unwrap();

    // No --replicas: the dev brokers' default, 3.
    let out = ferry(args(&[
        "create",
        "--broker-http-address",
        &http[0],
        "--topic",
        "hello",
    ]))
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("with 3 replicas"), "{stdout}");
    let out = ferry(args(&[
        "pub",
        "--broker-tcp-address",
        &tcp,
        "--topic",
        "hello",
        "one",
        "two",
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out).1);
    let leader = wait_one_leader(&http, "hello", 2).await;
    for (i, b) in http.iter().enumerate() {
        eventually("every replica holds both messages", || async {
            let addr: SocketAddr = b.parse().unwrap();
            let stats = ferry_testkit::http::get_stats(addr).await;
            (stats.topic("hello")?.message_count == 2).then_some(())
        })
        .await;
        let r = replication(b, "hello").await.unwrap();
        let want = if i == leader { "leader" } else { "follower" };
        assert_eq!(r.role, want, "broker {}: {r:?}", i + 1);
    }

    // `stop N` on the leader: one of the other two takes over.
    let stdin = dev.stdin.as_mut().unwrap();
    writeln!(stdin, "stop {}", leader + 1).unwrap();
    stdin.flush().unwrap();
    let others: Vec<String> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| http[i].clone())
        .collect();
    eventually("a new leader among the other two", async || {
        let a = replication(&others[0], "hello").await?;
        let b = replication(&others[1], "hello").await?;
        let lead = [&a, &b].into_iter().find(|r| r.role == "leader")?;
        (a.leader == Some(lead.node_id) && b.leader == Some(lead.node_id)).then_some(())
    })
    .await;
    // `start N`: it comes back on its ports and follows.
    writeln!(stdin, "start {}", leader + 1).unwrap();
    stdin.flush().unwrap();
    eventually("the stopped broker back as a follower", async || {
        let r = replication(&http[leader], "hello").await?;
        (r.role == "follower" && r.leader.is_some()).then_some(())
    })
    .await;

    let kill = std::process::Command::new("kill")
        .args(["-TERM", &dev.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::task::spawn_blocking(move || ferry_testkit::process::wait_exit(&mut dev))
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    for n in 1..=3 {
        assert!(
            cwd.path()
                .join(format!("ferry-data/broker-{n}/topics/hello.topic"))
                .is_dir()
        );
    }
}
