//! Publishing speed of ONE V2 connection that keeps a fixed number of PUBs (or MPUBs) in
//! flight: `ferry bench writer` only sends MPUBs (and at most 1,024 outstanding), this sends
//! plain PUBs.
//!
//! ```text
//! brokerd --data-path /work/bench --tcp-address 127.0.0.1:4150 [--sync-every=1]
//! cargo run --release -p ferry-brokerd --example pub_pipeline -- \
//!     --addr 127.0.0.1:4150 --size 200 --batch 1 --in-flight 1000 --runfor 10s
//! ```
//!
//! One task: it sends `--in-flight` commands, then for every answer it reads sends one more.
//! `--batch 1` sends `PUB`, larger values `MPUB` of that many messages. The first second is a
//! warm-up, not counted. Prints acknowledged messages per second; any error frame ends the run.

use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:4150")]
    addr: String,
    #[arg(long, default_value = "pipeline")]
    topic: String,
    /// Bytes per message.
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// Messages per command: 1 = PUB, more = MPUB.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Commands awaiting their answer.
    #[arg(long, default_value_t = 1000)]
    in_flight: usize,
    /// Measured time (after a 1 s warm-up), e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_secs)]
    runfor: Duration,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let n: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|e| format!("{s}: {e}"))?;
    Ok(Duration::from_secs_f64(n))
}

fn command(args: &Args) -> Vec<u8> {
    let body = vec![b'x'; args.size];
    let mut cmd = Vec::new();
    if args.batch == 1 {
        cmd.extend_from_slice(format!("PUB {}\n", args.topic).as_bytes());
        cmd.extend_from_slice(&(body.len() as u32).to_be_bytes());
        cmd.extend_from_slice(&body);
    } else {
        cmd.extend_from_slice(format!("MPUB {}\n", args.topic).as_bytes());
        let total = 4 + args.batch * (4 + body.len());
        cmd.extend_from_slice(&(total as u32).to_be_bytes());
        cmd.extend_from_slice(&(args.batch as u32).to_be_bytes());
        for _ in 0..args.batch {
            cmd.extend_from_slice(&(body.len() as u32).to_be_bytes());
            cmd.extend_from_slice(&body);
        }
    }
    cmd
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let cmd = command(&args);
    let burst: Vec<u8> = cmd.repeat(args.in_flight);
    let mut conn = TcpStream::connect(&args.addr).await?;
    conn.set_nodelay(true)?;
    conn.write_all(b"  V2").await?;
    conn.write_all(&burst).await?;
    let mut buf = Vec::with_capacity(1 << 16);
    let mut chunk = vec![0u8; 1 << 16];
    let start = Instant::now();
    let warmup = Duration::from_secs(1);
    let mut measured_from = None;
    let mut acked = 0u64;
    loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err("broker closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        let mut answers = 0;
        while buf.len() - at >= 8 {
            let size = u32::from_be_bytes(buf[at..at + 4].try_into()?) as usize;
            if buf.len() - at < 4 + size {
                break;
            }
            let kind = u32::from_be_bytes(buf[at + 4..at + 8].try_into()?);
            let data = &buf[at + 8..at + 4 + size];
            if kind != 0 || data != b"OK" {
                return Err(format!("unexpected answer: {}", String::from_utf8_lossy(data)).into());
            }
            at += 4 + size;
            answers += 1;
        }
        buf.drain(..at);
        let now = Instant::now();
        match measured_from {
            None if now - start >= warmup => measured_from = Some(now),
            None => {}
            Some(from) => {
                acked += answers as u64 * args.batch as u64;
                if now - from >= args.runfor {
                    let secs = (now - from).as_secs_f64();
                    println!(
                        "{} msgs in {secs:.2} s: {:.0} msg/s ({} B messages, {} per command, {} commands in flight, 1 connection)",
                        acked,
                        acked as f64 / secs,
                        args.size,
                        args.batch,
                        args.in_flight
                    );
                    return Ok(());
                }
            }
        }
        conn.write_all(&burst[..answers * cmd.len()]).await?;
    }
}
