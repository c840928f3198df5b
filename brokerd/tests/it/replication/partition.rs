//! A follower, then the leader, cut off from the other two by proxies the test controls.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{Cluster, PyReader, wait_all_delivered};
use crate::common::eventually;

/// The test's cut-off switch for one broker's Raft traffic: a TCP proxy in front of its HTTP
/// port (the port it registers, `--broadcast-http-port`, so the others reach it only through
/// here) and an HTTP forward proxy its own Raft requests go through (`FERRY_TEST_RAFT_PROXY`).
/// While cut, both drop every connection, open or new.
struct Cut {
    inbound: SocketAddr,
    outbound: SocketAddr,
    cut: watch::Sender<bool>,
}

impl Cut {
    /// Proxies in front of a broker whose HTTP port is not known yet (`target` fills it in).
    async fn new(target: Arc<OnceLock<SocketAddr>>) -> Cut {
        let (cut, _) = watch::channel(false);
        let inbound = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let outbound = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addrs = (
            inbound.local_addr().unwrap(),
            outbound.local_addr().unwrap(),
        );
        let watch = cut.subscribe();
        tokio::spawn(async move {
            while let Ok((client, _)) = inbound.accept().await {
                let Some(&to) = target.get() else { continue };
                let watch = watch.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(to).await {
                        pipe(client, server, watch).await;
                    }
                });
            }
        });
        let watch = cut.subscribe();
        tokio::spawn(async move {
            while let Ok((client, _)) = outbound.accept().await {
                tokio::spawn(forward(client, watch.clone()));
            }
        });
        Cut {
            inbound: addrs.0,
            outbound: addrs.1,
            cut,
        }
    }

    fn set(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// Copies both ways until either side closes or the switch is cut.
async fn pipe(mut a: TcpStream, mut b: TcpStream, mut cut: watch::Receiver<bool>) {
    if *cut.borrow_and_update() {
        return;
    }
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
        _ = cut.wait_for(|&c| c) => {}
    }
}

/// One proxied HTTP request: `METHOD http://host:port/path HTTP/1.1` is sent to host:port as
/// `METHOD /path HTTP/1.1` with `Connection: close`, and the answer copied back.
async fn forward(mut client: TcpStream, cut: watch::Receiver<bool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        let Ok(n) = client.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let request = lines.next().unwrap_or_default();
    let mut parts = request.split(' ');
    let (Some(method), Some(uri), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let Some(rest) = uri.strip_prefix("http://") else {
        return;
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut out = format!("{method} {path} {version}\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if name != "connection" && name != "proxy-connection" {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("connection: close\r\n\r\n");
    if *cut.borrow() {
        return;
    }
    let Ok(mut server) = TcpStream::connect(authority).await else {
        return;
    };
    if server.write_all(out.as_bytes()).await.is_err()
        || server.write_all(&head[end..]).await.is_err()
    {
        return;
    }
    pipe(client, server, cut).await;
}

/// A follower, then the leader, is cut off from the others under load: nothing acknowledged is
/// lost, the cut-off leader stops delivering before another is elected (never two delivering
/// at once for as long as an election timeout), and each one rejoins once the cut heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_replica_loses_nothing_and_never_makes_two_leaders() {
    const TOPIC: &str = "audit";
    let targets: Vec<Arc<OnceLock<SocketAddr>>> = (0..3).map(|_| Arc::default()).collect();
    let mut cuts = Vec::new();
    for t in &targets {
        cuts.push(Cut::new(t.clone()).await);
    }
    let cluster = Cluster::start_with(|i| {
        let flags = vec![format!("--broadcast-http-port={}", cuts[i].inbound.port())];
        let env = vec![(
            "FERRY_TEST_RAFT_PROXY",
            format!("http://{}", cuts[i].outbound),
        )];
        (flags, env)
    })
    .await;
    for (target, &http) in targets.iter().zip(&cluster.http) {
        target.set(http).unwrap();
    }
    cluster.create(TOPIC, 0).await;
    let (leader, _) = cluster.wait_leader(TOPIC, &[0, 1, 2]).await;
    cluster.create_channel(TOPIC, "c", leader).await;
    cluster.wait_listed(TOPIC).await;
    let reader = PyReader::start(cluster.lookupd.http, TOPIC, "c");
    let stop = tokio_util::sync::CancellationToken::new();
    let (acked, publishers) = cluster.publish_everywhere(TOPIC, "q", true, &stop);
    // Watches how many brokers deliver at once, and for how long two or more did.
    let overlap = Arc::new(Mutex::new(Duration::ZERO));
    let watch_overlap = async {
        let mut since: Option<Instant> = None;
        let mut sample = tokio::time::interval(Duration::from_millis(20));
        while !stop.is_cancelled() {
            sample.tick().await;
            let mut delivering = 0;
            for i in 0..3 {
                let r = cluster.replication(i, TOPIC).await;
                delivering += usize::from(r.is_some_and(|r| r.delivering));
            }
            if delivering > 1 {
                let start = *since.get_or_insert_with(Instant::now);
                let mut worst = overlap.lock().unwrap();
                *worst = (*worst).max(start.elapsed());
            } else {
                since = None;
            }
        }
    };
    let acked_count = || acked.lock().unwrap().len();
    let faults = async {
        // First a follower, then the leader of the moment.
        for victim_is_leader in [false, true] {
            let before = acked_count();
            eventually("100 more acknowledged", || async {
                (acked_count() >= before + 100).then_some(())
            })
            .await;
            let (leader, _) = cluster.wait_leader(TOPIC, &[0, 1, 2]).await;
            let victim = if victim_is_leader {
                leader
            } else {
                (leader + 1) % 3
            };
            let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
            cuts[victim].set(true);
            let cut_at = Instant::now();
            if victim_is_leader {
                eventually("the cut-off leader stops delivering", async || {
                    let r = cluster.replication(victim, TOPIC).await?;
                    (!r.delivering).then_some(())
                })
                .await;
                eprintln!(
                    "the cut-off leader stopped delivering after {:?}",
                    cut_at.elapsed()
                );
            }
            let during = acked_count();
            eventually("publishes go on through the two others", || async {
                (acked_count() >= during + 200).then_some(())
            })
            .await;
            let (lead, stats) = cluster.wait_leader(TOPIC, &others).await;
            eprintln!(
                "cut {victim} (leader: {victim_is_leader}); {lead} delivers after {:?}",
                cut_at.elapsed()
            );
            cuts[victim].set(false);
            cluster
                .wait_rejoined(victim, TOPIC, stats.commit_index)
                .await;
            eprintln!("{victim} rejoined {:?} after the cut", cut_at.elapsed());
        }
        stop.cancel();
    };
    tokio::join!(watch_overlap, faults);
    for p in publishers {
        p.await.unwrap();
    }
    let all = wait_all_delivered(&acked, &[&reader]).await;
    let worst = *overlap.lock().unwrap();
    eprintln!(
        "{all} acknowledged, all delivered; two brokers delivering at once for at most {worst:?}"
    );
    assert!(
        worst < ferry_replica::ELECTION_TIMEOUT,
        "two leaders delivered for {worst:?}"
    );
}
