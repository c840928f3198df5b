//! Power loss, simulated: the broker runs with `FERRY_TEST_SYNC_LOG`, so every completed sync
//! records which bytes of which file it made durable. The test SIGKILLs the broker under load,
//! then "cuts the power" on its data directory: of every log and journal file it keeps only
//! what a completed sync covered (plus, with `torn`, a random part of what followed, cut
//! anywhere, as a disk that had written some of it would leave it), and removes files no
//! completed sync covered. The restarted broker must deliver every acknowledged message
//! (`--sync-every=1`), or lose only an unsynced tail, never a record in the middle and never
//! a corrupt one (the default policy).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{
    BrokerProcess, TestConn, eventually, get_stats, http, metric, scrape, spawn_brokerd,
    spawn_brokerd_env,
};
use ferry_proto::v2::{Command, Frame};
use rand::Rng;

const TOPIC: &str = "power";
const CHANNEL: &str = "c";

/// What the publishers sent and which of it was acknowledged, per publisher in send order.
#[derive(Default)]
struct Sent {
    /// Every body sent (acknowledged or not): nothing else may ever be delivered.
    all: HashSet<Vec<u8>>,
    /// Per publisher, the bodies acknowledged, in order.
    acked: HashMap<usize, Vec<Vec<u8>>>,
}

/// Publishers until `stop`: the last one over HTTP `/pub`, the others over TCP (PUB on even
/// ones, MPUB batches of 10 on odd ones).
async fn load(
    p: &BrokerProcess,
    publishers: usize,
    sent: Arc<Mutex<Sent>>,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..publishers)
        .map(|id| {
            let (sent, stop, addr) = (sent.clone(), stop.clone(), p.tcp);
            let http_addr = p.http;
            tokio::spawn(async move {
                if id == publishers - 1 {
                    return http_publisher(id, http_addr, sent, stop).await;
                }
                let mut c = TestConn::connect(addr).await;
                for n in 0u64.. {
                    let bodies: Vec<Vec<u8>> = if id % 2 == 0 {
                        vec![format!("p{id}-{n}").into_bytes()]
                    } else {
                        (0..10)
                            .map(|k| format!("p{id}-{n}-{k}-{}", "x".repeat(150)).into_bytes())
                            .collect()
                    };
                    sent.lock().unwrap().all.extend(bodies.iter().cloned());
                    let cmd = if bodies.len() == 1 {
                        Command::Pub {
                            topic: TOPIC.into(),
                            body: bodies[0].clone().into(),
                        }
                    } else {
                        Command::Mpub {
                            topic: TOPIC.into(),
                            bodies: bodies.iter().map(|b| b.clone().into()).collect(),
                        }
                    };
                    c.send(&cmd).await;
                    // The broker may die at any moment: no answer means not acknowledged.
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        f = c.frame_within(Duration::from_secs(30)) => match f {
                            Ok(Some(Frame::Response(r))) if &r[..] == b"OK" => {
                                sent.lock().unwrap().acked.entry(id).or_default().extend(bodies);
                            }
                            _ => return,
                        },
                    }
                }
            })
        })
        .collect()
}

async fn http_publisher(
    id: usize,
    addr: std::net::SocketAddr,
    sent: Arc<Mutex<Sent>>,
    stop: tokio_util::sync::CancellationToken,
) {
    for n in 0u64.. {
        let body = format!("h{id}-{n}").into_bytes();
        sent.lock().unwrap().all.insert(body.clone());
        let path = format!("/pub?topic={TOPIC}");
        tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(Duration::from_secs(30), try_post(addr, &path, &body)) => match r {
                Ok(Ok(200)) => sent.lock().unwrap().acked.entry(id).or_default().push(body),
                _ => return,
            },
        }
    }
}

/// One POST that may fail (the broker may die meanwhile); the status code.
async fn try_post(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> std::io::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    Ok(text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

/// The durable lengths `FERRY_TEST_SYNC_LOG` recorded, by (topic directory, file name).
fn synced_lengths(record: &Path) -> HashMap<(String, String), u64> {
    let text = std::fs::read_to_string(record).unwrap_or_default();
    let mut out: HashMap<(String, String), u64> = HashMap::new();
    for line in text.lines() {
        let Some((path, len)) = line.split_once('\t') else {
            continue;
        };
        let path = Path::new(path);
        let key = (
            path.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
            path.file_name().unwrap().to_string_lossy().into_owned(),
        );
        let len: u64 = len.parse().unwrap();
        let e = out.entry(key).or_default();
        *e = (*e).max(len);
    }
    out
}

/// Cuts the power on `data` (the broker must be dead): see the module doc.
fn cut_power(data: &Path, record: &Path, torn: bool) -> u64 {
    let synced = synced_lengths(record);
    let mut rng = rand::rng();
    let mut dropped = 0;
    for topic in std::fs::read_dir(data.join("topics")).unwrap() {
        let topic = topic.unwrap().path();
        let tname = topic.file_name().unwrap().to_string_lossy().into_owned();
        for f in std::fs::read_dir(&topic).unwrap() {
            let path = f.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                std::fs::remove_file(&path).unwrap();
                continue;
            }
            if !(name.ends_with(".seg") || name.starts_with("journal")) {
                continue; // meta.dat: replaced atomically, fsynced before the rename
            }
            let Some(&keep) = synced.get(&(tname.clone(), name)) else {
                std::fs::remove_file(&path).unwrap();
                continue;
            };
            let mut bytes = std::fs::read(&path).unwrap();
            let len = bytes.len() as u64;
            if keep < len {
                let from = if torn {
                    rng.random_range(keep..=len)
                } else {
                    keep
                } as usize;
                dropped += bytes[from..].iter().filter(|&&b| b != 0).count() as u64;
                bytes[from..].fill(0);
                std::fs::write(&path, &bytes).unwrap();
            }
        }
    }
    dropped
}

/// Consumes the channel until it is empty; returns every body delivered (FINed).
async fn drain(p: &BrokerProcess) -> Vec<Vec<u8>> {
    let mut c = TestConn::connect(p.tcp).await;
    c.sub(TOPIC, CHANNEL).await;
    c.rdy(1000).await;
    let mut got = Vec::new();
    loop {
        match c.frame_within(Duration::from_secs(2)).await {
            Ok(Some(Frame::Message(m))) => {
                c.fin(&m.id).await;
                got.push(m.body.to_vec());
            }
            Ok(Some(Frame::Response(_))) => c.send(&Command::Nop).await,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(()) => {
                let stats = get_stats(p.http).await;
                let ch = stats.channel(TOPIC, CHANNEL).unwrap();
                if ch.depth == 0 && ch.in_flight_count == 0 {
                    return got;
                }
            }
        }
    }
}

/// Runs the load for a while, SIGKILLs the broker at a random moment, cuts the power,
/// restarts; returns what was sent and what the restarted broker delivered.
async fn crash_under_load(flags: &[&str], torn: bool) -> (Sent, Vec<Vec<u8>>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let record = dir.path().join("synced.log");
    std::fs::create_dir(&data).unwrap();
    let p = spawn_brokerd_env(&data, flags, &[("FERRY_TEST_SYNC_LOG", &record)]);
    let (status, _) = http(
        p.http,
        "POST",
        &format!("/channel/create?topic={TOPIC}&channel={CHANNEL}"),
        b"",
    )
    .await;
    assert_eq!(status, 200);
    let sent = Arc::new(Mutex::new(Sent::default()));
    let stop = tokio_util::sync::CancellationToken::new();
    let tasks = load(&p, 6, sent.clone(), stop.clone()).await;
    // Until enough is acknowledged, then a random moment later.
    eventually("publishers acknowledged", || {
        let n: usize = sent.lock().unwrap().acked.values().map(Vec::len).sum();
        async move { (n >= 2000).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(rand::rng().random_range(0..300))).await;
    p.kill9();
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    let dropped = cut_power(&data, &record, torn);
    let p = spawn_brokerd(&data, &[]);
    let got = drain(&p).await;
    p.kill9();
    let sent = Arc::into_inner(sent).unwrap().into_inner().unwrap();
    (sent, got, dropped)
}

/// Nothing delivered that was never sent, nothing twice, and per publisher the survivors
/// are a prefix of what it had acknowledged (a lost message is never followed by a kept one).
/// Returns how many acknowledged messages were lost.
fn check(sent: &Sent, got: &[Vec<u8>]) -> usize {
    let delivered: HashSet<&Vec<u8>> = got.iter().collect();
    assert_eq!(delivered.len(), got.len(), "a message was delivered twice");
    for body in got {
        assert!(
            sent.all.contains(body),
            "corrupt or unknown message delivered: {body:?}"
        );
    }
    let mut lost = 0;
    for (id, acked) in &sent.acked {
        let kept = acked.iter().take_while(|b| delivered.contains(b)).count();
        assert!(
            acked[kept..].iter().all(|b| !delivered.contains(b)),
            "publisher {id}: message {kept} lost but a later one kept (a hole)"
        );
        lost += acked.len() - kept;
    }
    lost
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_every_one_loses_nothing_acknowledged() {
    for round in 0..2 {
        let (sent, got, dropped) = crash_under_load(
            &["--sync-every=1", "--max-bytes-per-file=1048576"],
            round == 1,
        )
        .await;
        let acked: usize = sent.acked.values().map(Vec::len).sum();
        assert_eq!(
            sent.acked.len(),
            6,
            "every publisher (TCP PUB, MPUB, HTTP) got answers"
        );
        let lost = check(&sent, &got);
        assert_eq!(
            lost, 0,
            "round {round}: {lost} of {acked} acknowledged messages lost ({dropped} unsynced bytes cut)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_loses_only_an_unsynced_tail() {
    let (sent, got, dropped) = crash_under_load(
        &["--sync-timeout=200ms", "--max-bytes-per-file=1048576"],
        true,
    )
    .await;
    let acked: usize = sent.acked.values().map(Vec::len).sum();
    let lost = check(&sent, &got);
    // The default policy syncs after 2,500 messages or the timeout: what was lost is what
    // came after the last completed sync.
    eprintln!("default policy: {lost} of {acked} acknowledged lost, {dropped} unsynced bytes cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_shares_syncs_between_publishers() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn_brokerd(dir.path(), &["--sync-every=1"]);
    const PUBLISHERS: usize = 32;
    const EACH: usize = 50;
    let tasks: Vec<_> = (0..PUBLISHERS)
        .map(|id| {
            let addr = p.tcp;
            tokio::spawn(async move {
                let mut c = TestConn::connect(addr).await;
                for n in 0..EACH {
                    c.publish("gc", format!("{id}-{n}").as_bytes()).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let (s, _) = scrape(p.http).await;
    let syncs = metric(
        &s,
        "ferry_topic_fsync_duration_seconds_count",
        &[("topic", "gc")],
    );
    let publishes = (PUBLISHERS * EACH) as f64;
    eprintln!("{publishes} publishes, {syncs} syncs");
    assert!(syncs >= 1.0, "no sync counted");
    assert!(
        syncs * 3.0 <= publishes,
        "{syncs} syncs for {publishes} publishes: publishers did not share syncs"
    );
    p.kill9();
}
