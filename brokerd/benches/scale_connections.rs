//! Memory and descriptors of many idle V2 connections (a scale benchmark, not a timed test).
//!
//! Runs the `brokerd` binary as a child process (so the figures are the broker's alone, read
//! from `/proc/<pid>/status` and `/proc/<pid>/fd`), opens idle connections to it and reports
//! its RSS and open descriptors: at baseline, during and after 3 rounds of 10,000 connections,
//! and with 50,000. Each connection sends the magic and, by `--kind`:
//! - `bare`: nothing more;
//! - `identify`: IDENTIFY;
//! - `sub` (default): IDENTIFY, SUB to one of 10 channels of one topic, RDY 1.
//!
//! ```text
//! cargo bench -p ferry-brokerd --bench scale_connections -- [--kind sub|identify|bare]
//!     [--round 10000] [--rounds 3] [--big 50000]
//! ```
//!
//! It raises its own open-file limit (soft and hard, which needs root for the hard one; the
//! child inherits it) and binds its client sockets to several loopback source addresses
//! (127.0.0.x), at most 10,000 connections each and fresh ones for every phase, because bind()
//! gets only about half of one address's ~28,000 ephemeral ports and closed connections keep
//! theirs in TIME_WAIT for a minute. Only loopback addresses are used. Where the hard
//! open-file limit cannot be raised (no CAP_SYS_RESOURCE), `--big` is capped to fit it.

#[path = "../tests/it/common/mod.rs"]
#[allow(dead_code, unused_imports)] // the bench uses part of the tests' shared module
mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ferry_proto::v2::{self, Command, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Connections per source address: bind() with port 0 gets about half of the ~28k ephemeral
/// ports of one address (connect() has the other half).
const PER_SOURCE: usize = 10_000;
/// Connection handshakes in progress at once.
const CONCURRENCY: usize = 256;
/// Channels the `sub` connections spread over.
const CHANNELS: usize = 10;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Bare,
    Identify,
    Sub,
}

struct Args {
    kind: Kind,
    round: usize,
    rounds: usize,
    big: usize,
}

fn parse_args() -> Option<Args> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    // `cargo test --benches` runs bench targets without `--bench`: do nothing then.
    if !argv.iter().any(|a| a == "--bench") {
        println!("scale_connections: run with `cargo bench` (skipped)");
        return None;
    }
    let get = |name: &str| {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1))
            .cloned()
    };
    let num = |name: &str, default: usize| get(name).map_or(default, |v| v.parse().expect(name));
    let kind = match get("--kind").as_deref() {
        None | Some("sub") => Kind::Sub,
        Some("identify") => Kind::Identify,
        Some("bare") => Kind::Bare,
        Some(k) => panic!("unknown --kind {k}"),
    };
    Some(Args {
        kind,
        round: num("--round", 10_000),
        rounds: num("--rounds", 3),
        big: num("--big", 50_000),
    })
}

/// Raises this process's open-file limit, soft and hard, as far as the kernel allows.
fn raise_nofile() -> u64 {
    let max = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    let lim = libc::rlimit {
        rlim_cur: max,
        rlim_max: max,
    };
    // SAFETY: setrlimit only reads the struct we pass, which lives across the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        eprintln!(
            "cannot raise the open-file limit to {max}: {}",
            std::io::Error::last_os_error()
        );
    }
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass, which lives across the call.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) };
    now.rlim_cur
}

/// The soft open-file limit of process `pid`.
fn nofile_of(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(usize::MAX)
}

/// RSS (bytes) and open descriptors of process `pid`.
fn usage(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("broker status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("broker fds")
        .count();
    (kb * 1024, fds)
}

/// Waits (until `end`) for the broker's deferred memory work (the `malloc_trim` it runs 1 s
/// after connections close) to be done: RSS has not fallen for 1.5 s (three reads).
fn settle_rss(pid: u32, end: Instant) -> (u64, usize) {
    let mut last = usage(pid);
    let mut stable = 0;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = usage(pid);
        stable = if now.0 >= last.0 { stable + 1 } else { 0 };
        if stable >= 3 || Instant::now() >= end {
            return now;
        }
        last = now;
    }
}

/// Waits until the broker's descriptor count is `pred`-true and stable for a moment, then
/// returns its usage.
fn settle(pid: u32, what: &str, pred: impl Fn(usize) -> bool) -> (u64, usize) {
    let end = Instant::now() + Duration::from_secs(120);
    let mut last = usize::MAX;
    loop {
        let (_, fds) = usage(pid);
        if pred(fds) && fds == last {
            return settle_rss(pid, end);
        }
        assert!(
            Instant::now() < end,
            "broker did not settle ({what}): {fds} fds"
        );
        last = fds;
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Opens one idle connection from `source` and completes its handshake.
async fn open(
    server: SocketAddr,
    source: Ipv4Addr,
    kind: Kind,
    i: usize,
) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::from((source, 0)))?;
    let mut s = sock.connect(server).await?;
    let mut out = BytesMut::new();
    out.extend_from_slice(&v2::MAGIC);
    let mut replies = 0;
    if kind != Kind::Bare {
        let identify = serde_json::json!({
            "client_id": format!("scale-{i}"),
            "feature_negotiation": true,
            "heartbeat_interval": 600_000,
        });
        Command::Identify(serde_json::to_vec(&identify).unwrap().into()).encode(&mut out);
        replies += 1;
    }
    if kind == Kind::Sub {
        Command::Sub {
            topic: "scale".into(),
            channel: format!("c{}", i % CHANNELS),
        }
        .encode(&mut out);
        Command::Rdy(1).encode(&mut out);
        replies += 1;
    }
    s.write_all(&out).await?;
    let mut buf = BytesMut::new();
    while replies > 0 {
        match v2::decode_frame(&mut buf, 1 << 20).map_err(std::io::Error::other)? {
            Some(Frame::Response(_)) => replies -= 1,
            Some(f) => return Err(std::io::Error::other(format!("connection {i}: got {f:?}"))),
            None => {
                if s.read_buf(&mut buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
    }
    Ok(s)
}

/// Opens `n` connections, from source addresses starting at `127.0.0.<next_source>`.
async fn open_many(
    server: SocketAddr,
    n: usize,
    kind: Kind,
    next_source: &mut u8,
) -> Vec<TcpStream> {
    let first = *next_source;
    *next_source += n.div_ceil(PER_SOURCE) as u8;
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let source = Ipv4Addr::new(127, 0, 0, first + (i / PER_SOURCE) as u8);
        let permit = sem.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let s = tokio::time::timeout(Duration::from_secs(10), open(server, source, kind, i))
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
            drop(permit);
            s
        }));
    }
    let mut conns = Vec::with_capacity(n);
    let mut first_error = None;
    for t in tasks {
        match t.await.expect("connection task") {
            Ok(s) => conns.push(s),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        panic!(
            "{} of {n} connections failed; first error: {e}",
            n - conns.len()
        );
    }
    conns
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn per_conn(after: u64, before: u64, n: usize) -> String {
    format!("{:.0} B/conn", (after as f64 - before as f64) / n as f64)
}

fn main() {
    let Some(args) = parse_args() else { return };
    let limit = raise_nofile();
    let dir = tempfile::tempdir().expect("temp dir");
    let max = args.round.max(args.big) + 100;
    let broker = common::spawn_brokerd(
        dir.path(),
        &[
            &format!("--max-connections={max}"),
            "--max-heartbeat-interval=10m",
        ],
    );
    let pid = broker.child.id();
    // A failure anywhere (also in a client task) ends the run and its broker at once.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        // SAFETY: kill(2) on the broker we spawned (still our unreaped child).
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        std::process::exit(1);
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "scale_connections: kind {:?}, open-file limit {limit}, broker pid {pid}",
        args.kind
    );
    // Both ends need a descriptor per connection.
    let budget = (limit as usize).min(nofile_of(pid)).saturating_sub(1000);
    let big = if args.big > budget {
        println!(
            "note: --big {} capped to {budget} by the open-file limits (this process {limit}, \
             broker {}); raising a hard limit needs CAP_SYS_RESOURCE",
            args.big,
            nofile_of(pid)
        );
        budget
    } else {
        args.big
    };
    assert!(
        args.round <= budget,
        "--round {} exceeds the open-file limit",
        args.round
    );
    let (base_rss, base_fds) = settle(pid, "baseline", |_| true);
    println!(
        "baseline:               RSS {:>10}  fds {base_fds}",
        mib(base_rss)
    );
    // Source addresses of earlier runs may still have their ports in TIME_WAIT: start
    // somewhere else each run (up to 10 addresses per run).
    let mut next_source = 2 + (std::process::id() % 24) as u8 * 10;
    for round in 1..=args.rounds {
        let t = Instant::now();
        let conns = rt.block_on(open_many(
            broker.tcp,
            args.round,
            args.kind,
            &mut next_source,
        ));
        let opened = t.elapsed();
        let (rss, fds) = settle(pid, "open", |f| f >= base_fds + args.round);
        println!(
            "round {round}: {} open:     RSS {:>10}  fds {fds}  ({} over baseline; opened in {:.1?})",
            args.round,
            mib(rss),
            per_conn(rss, base_rss, args.round),
            opened
        );
        drop(conns);
        let (rss, fds) = settle(pid, "closed", |f| f <= base_fds + 2);
        println!(
            "round {round}: closed:         RSS {:>10}  fds {fds}",
            mib(rss)
        );
    }
    if big > 0 {
        let (before, _) = usage(pid);
        let conns = rt.block_on(open_many(broker.tcp, big, args.kind, &mut next_source));
        let (rss, fds) = settle(pid, "open", |f| f >= base_fds + big);
        println!(
            "{} open:            RSS {:>10}  fds {fds}  ({} over the RSS before)",
            big,
            mib(rss),
            per_conn(rss, before, big)
        );
        drop(conns);
        let (rss, fds) = settle(pid, "closed", |f| f <= base_fds + 2);
        println!("{} closed:          RSS {:>10}  fds {fds}", big, mib(rss));
    }
    broker.sigterm();
}
