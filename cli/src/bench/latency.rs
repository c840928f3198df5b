//! `ferry bench latency`: publishes at a fixed rate while a consumer reads the same topic, and
//! reports latency percentiles.
//!
//! ```text
//!  pacer thread ── PUB k at start + k/rate ──▶ broker ──▶ consumer thread: RDY n, FIN each
//!  ack thread   ◀── OK (k-th OK answers PUB k) ──┘              (body = k, frame = broker's timestamp)
//! ```
//!
//! Coordinated omission: message `k` is *scheduled* at `start + k/rate` whatever happened
//! before, and every latency that involves the publisher is measured from that scheduled
//! time. A stall (in the broker or in this tool) that delays sending therefore shows up in
//! the latencies of every message it delayed, instead of quietly lowering the offered load.
//! When the pacer wakes up late it sends everything that is due in one write.
//!
//! Plain threads with blocking sockets rather than tokio tasks: tokio's timer has a 1 ms
//! resolution, which would add up to a millisecond to latencies that should be tens of
//! microseconds; `thread::sleep` wakes within the kernel's timer slack (about 50 µs).
//!
//! The body carries `k` (8 bytes, little-endian, then filler), so the consumer knows each
//! message's scheduled time. Messages left in the channel by an earlier run (timestamped
//! before this run started) are finished and not counted; a message delivered twice is
//! counted once.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use clap::Args;
use ferry_proto::v2::{Command, Frame, HEARTBEAT, MAGIC, Message, OK, decode_frame};
use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;

use super::conn::{CONNECT_TIMEOUT, describe_response};
use super::reader::check_identify_response;
use super::report::{Report, Role, thousands};
use super::{BenchError, BrokerArg, identify_body, parse_channel, parse_topic};
use crate::args::parse_positive_duration;

/// Smallest `--size`: the body carries the message's sequence number.
pub const MIN_SIZE: u32 = 8;

/// Most PUBs in one write (when the publisher is behind its schedule).
const MAX_WRITE: u64 = 1024;

/// How often blocked reads give up, so that threads notice a stop.
const POLL: Duration = Duration::from_millis(20);

/// How long after `--runfor` the publisher may go on catching up with its schedule and
/// waiting for `OK`s (a broker that cannot keep up with `--rate`): then the run ends, and what
/// was not sent or not acknowledged by then is reported as such.
const CATCH_UP: Duration = Duration::from_secs(10);

/// How long, after the last `OK`, to wait for messages still to be delivered.
const DELIVERY_GRACE: Duration = Duration::from_secs(5);

/// Largest frame accepted from the broker.
const MAX_FRAME_SIZE: usize = 64 << 20;

/// Highest latency the histograms hold (longer ones are recorded as this): one hour.
const MAX_NS: u64 = 3_600_000_000_000;

/// Flags of `ferry bench latency`.
#[derive(Debug, Clone, Args)]
pub struct LatencyArgs {
    /// The broker's address.
    #[command(flatten)]
    pub broker: BrokerArg,

    /// Topic to publish to and consume from.
    #[arg(long, default_value = "sub_bench_latency", value_parser = parse_topic)]
    pub topic: String,

    /// Channel the consumer subscribes to.
    #[arg(long, default_value = "ch", value_parser = parse_channel)]
    pub channel: String,

    /// Messages per second to publish, on a fixed schedule (one PUB each).
    #[arg(long, value_parser = parse_rate, value_name = "MSGS_PER_SEC")]
    pub rate: u32,

    /// Size of each message body, in bytes (at least 8).
    #[arg(long, default_value_t = 200, value_parser = parse_size, value_name = "BYTES")]
    pub size: u32,

    /// How long to publish (Go-style duration: 10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub runfor: Duration,

    /// RDY count of the consumer: how many unfinished messages the broker may send it.
    #[arg(
        long,
        visible_alias = "max-in-flight",
        default_value_t = 2500,
        value_parser = clap::value_parser!(u64).range(1..),
        value_name = "N"
    )]
    pub rdy: u64,

    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_rate(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) => Err("--rate must be at least 1 message per second".to_owned()),
        Ok(rate) => Ok(rate),
        Err(_) => Err(format!(
            "invalid rate {s:?}: a whole number of messages per second"
        )),
    }
}

fn parse_size(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(size) if size < MIN_SIZE => Err(format!(
            "--size must be at least {MIN_SIZE} bytes (the body carries the message's number)"
        )),
        Ok(size) => Ok(size),
        Err(_) => Err(format!("invalid size {s:?}: a whole number of bytes")),
    }
}

/// When message `k` is due, in ns after the start.
fn scheduled_ns(k: u64, rate: u32) -> u64 {
    (u128::from(k) * 1_000_000_000 / u128::from(rate)) as u64
}

/// How many messages are due within `runfor`: those with `scheduled_ns(k) < runfor`.
fn message_count(runfor: Duration, rate: u32) -> u64 {
    let ns = runfor.as_nanos();
    // ceil(ns * rate / 1e9)
    u64::try_from((ns * u128::from(rate)).div_ceil(1_000_000_000)).unwrap_or(u64::MAX)
}

/// One line of the latency table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyRow {
    /// Key in the JSON output (`"publish_ack"`).
    pub key: &'static str,
    /// What is measured, for the table.
    pub what: &'static str,
    /// Samples.
    pub count: u64,
    /// Percentiles 50, 90, 99, 99.9, and the maximum, in ns.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest sample.
    pub max_ns: u64,
}

impl LatencyRow {
    fn from_histogram(key: &'static str, what: &'static str, h: &Histogram<u64>) -> LatencyRow {
        LatencyRow {
            key,
            what,
            count: h.len(),
            p50_ns: h.value_at_quantile(0.5),
            p90_ns: h.value_at_quantile(0.9),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
        }
    }

    fn values(&self) -> [u64; 5] {
        [
            self.p50_ns,
            self.p90_ns,
            self.p99_ns,
            self.p999_ns,
            self.max_ns,
        ]
    }
}

/// What `ferry bench latency` measured (in [`Report::latency`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyReport {
    /// `--rate`.
    pub rate: u32,
    /// `--size`.
    pub size: u32,
    /// Messages the schedule had for `--runfor`.
    pub scheduled: u64,
    /// Messages sent and acknowledged with `OK`.
    pub published: u64,
    /// Scheduled messages not sent by the end (`--runfor` + 10 s): the broker fell behind.
    pub unsent: u64,
    /// Messages sent but not acknowledged by the end.
    pub unacked: u64,
    /// Distinct messages of this run delivered to the consumer.
    pub received: u64,
    /// Deliveries of a message already received (requeued or timed out), finished, not counted.
    pub redelivered: u64,
    /// Messages left by an earlier run, finished and not counted.
    pub stale: u64,
    /// The table: scheduled → sent, publish → OK, broker timestamp → delivered,
    /// scheduled → delivered.
    pub rows: Vec<LatencyRow>,
}

impl LatencyReport {
    /// The table under the summary line; each line ends in `\n`.
    pub fn table(&self) -> String {
        let mut out = format!(
            "  {:<34}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}\n",
            "latency", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        for row in &self.rows {
            out.push_str(&format!("  {:<34}{:>10}", row.what, thousands(row.count)));
            for v in row.values() {
                out.push_str(&format!("{:>10}", human_ns(v)));
            }
            out.push('\n');
        }
        if self.unsent > 0 || self.unacked > 0 {
            out.push_str(&format!(
                "  the broker fell behind: {} of {} scheduled messages not sent and {} not \
                 acknowledged within --runfor + {}s\n",
                thousands(self.unsent),
                thousands(self.scheduled),
                thousands(self.unacked),
                CATCH_UP.as_secs()
            ));
        }
        if self.redelivered > 0 || self.stale > 0 {
            out.push_str(&format!(
                "  ({} redelivered, {} left from an earlier run: finished, not counted)\n",
                thousands(self.redelivered),
                thousands(self.stale)
            ));
        }
        out
    }

    /// The report as JSON (latencies in microseconds, as floats).
    pub fn to_json(&self, elapsed: Duration) -> serde_json::Value {
        let us = |ns: u64| ns as f64 / 1000.0;
        let mut latency = serde_json::Map::new();
        for row in &self.rows {
            latency.insert(
                row.key.to_owned(),
                serde_json::json!({
                    "count": row.count,
                    "p50_us": us(row.p50_ns),
                    "p90_us": us(row.p90_ns),
                    "p99_us": us(row.p99_ns),
                    "p99_9_us": us(row.p999_ns),
                    "max_us": us(row.max_ns),
                }),
            );
        }
        serde_json::json!({
            "mode": "latency",
            "rate": self.rate,
            "size": self.size,
            "elapsed_s": elapsed.as_secs_f64(),
            "scheduled": self.scheduled,
            "published": self.published,
            "unsent": self.unsent,
            "unacked": self.unacked,
            "received": self.received,
            "redelivered": self.redelivered,
            "stale": self.stale,
            "latency": latency,
        })
    }
}

/// `850ns`, `42µs`, `1.25ms`, `3.10s`.
pub fn human_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{}µs", ns / 1_000),
        1_000_000..1_000_000_000 => format!("{:.2}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("constant histogram bounds are valid")
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Publishes at `--rate` for `--runfor` (or until `shutdown`) while consuming, and reports.
pub async fn run(args: &LatencyArgs, shutdown: CancellationToken) -> Result<Report, BenchError> {
    let args = args.clone();
    tokio::task::spawn_blocking(move || run_blocking(&args, &shutdown)).await?
}

/// A blocking V2 connection (the tool's async [`super::conn::Conn`] rides on tokio's timer).
struct BlockingConn {
    addr: String,
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

impl BlockingConn {
    fn connect(addr: &str) -> Result<BlockingConn, BenchError> {
        let connect_err = |source| BenchError::Connect {
            addr: addr.to_owned(),
            source,
        };
        let mut last = None;
        let mut stream = None;
        for sa in addr.to_socket_addrs().map_err(connect_err)? {
            match TcpStream::connect_timeout(&sa, CONNECT_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = match (stream, last) {
            (Some(s), _) => s,
            (None, Some(e)) if e.kind() == ErrorKind::TimedOut => {
                return Err(BenchError::ConnectTimeout {
                    addr: addr.to_owned(),
                    timeout: CONNECT_TIMEOUT,
                });
            }
            (None, e) => {
                return Err(connect_err(e.unwrap_or_else(|| {
                    std::io::Error::new(ErrorKind::NotFound, "no address")
                })));
            }
        };
        let io = |source| BenchError::Io {
            addr: addr.to_owned(),
            during: "connecting",
            source,
        };
        stream.set_nodelay(true).map_err(io)?;
        stream.set_read_timeout(Some(POLL)).map_err(io)?;
        stream.set_write_timeout(Some(POLL)).map_err(io)?;
        let mut wbuf = BytesMut::with_capacity(64 * 1024);
        wbuf.extend_from_slice(&MAGIC);
        Ok(BlockingConn {
            addr: addr.to_owned(),
            stream,
            rbuf: BytesMut::with_capacity(256 * 1024),
            wbuf,
        })
    }

    fn io_err(&self, during: &'static str, source: std::io::Error) -> BenchError {
        BenchError::Io {
            addr: self.addr.clone(),
            during,
            source,
        }
    }

    fn flush(&mut self, during: &'static str) -> Result<(), BenchError> {
        if self.flush_until(during, None, &|| false)? {
            Ok(())
        } else {
            Err(self.io_err(
                during,
                std::io::Error::new(ErrorKind::TimedOut, "write timed out"),
            ))
        }
    }

    /// Writes everything queued; gives up (`Ok(false)`) once `until` has passed or `stop()`
    /// says so while the broker is not reading.
    fn flush_until(
        &mut self,
        during: &'static str,
        until: Option<Instant>,
        stop: &dyn Fn() -> bool,
    ) -> Result<bool, BenchError> {
        let until = until.unwrap_or_else(|| Instant::now() + CONNECT_TIMEOUT);
        let mut done = 0;
        while done < self.wbuf.len() {
            match self.stream.write(&self.wbuf[done..]) {
                Ok(0) => {
                    return Err(BenchError::Closed {
                        addr: self.addr.clone(),
                        during,
                    });
                }
                Ok(n) => done += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if Instant::now() > until || stop() {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_err(during, e)),
            }
        }
        self.wbuf.clear();
        Ok(true)
    }

    /// Reads what is there; `false` if nothing came within [`POLL`].
    fn read_more(&mut self, during: &'static str) -> Result<bool, BenchError> {
        if self.rbuf.capacity() - self.rbuf.len() < 64 * 1024 {
            self.rbuf.reserve(128 * 1024);
        }
        let len = self.rbuf.len();
        let cap = self.rbuf.capacity();
        self.rbuf.resize(cap, 0);
        let read = self.stream.read(&mut self.rbuf[len..]);
        match read {
            Ok(0) => {
                self.rbuf.truncate(len);
                Err(BenchError::Closed {
                    addr: self.addr.clone(),
                    during,
                })
            }
            Ok(n) => {
                self.rbuf.truncate(len + n);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                self.rbuf.truncate(len);
                Ok(false)
            }
            Err(e) => {
                self.rbuf.truncate(len);
                Err(self.io_err(during, e))
            }
        }
    }

    fn next_frame(&mut self, during: &'static str) -> Result<Option<Frame>, BenchError> {
        decode_frame(&mut self.rbuf, MAX_FRAME_SIZE).map_err(|source| BenchError::Frame {
            addr: self.addr.clone(),
            during,
            source,
        })
    }

    fn broker_error(&self, during: &'static str, data: &[u8]) -> BenchError {
        BenchError::Broker {
            addr: self.addr.clone(),
            during,
            error: String::from_utf8_lossy(data).into_owned(),
        }
    }

    fn unexpected(&self, during: &'static str, what: impl Into<String>) -> BenchError {
        BenchError::Unexpected {
            addr: self.addr.clone(),
            during,
            what: what.into(),
        }
    }

    /// Sends `cmd` and returns the response that answers it (setup only: no messages yet).
    fn request(&mut self, cmd: &Command, during: &'static str) -> Result<Bytes, BenchError> {
        cmd.encode(&mut self.wbuf);
        self.flush(during)?;
        let give_up = Instant::now() + CONNECT_TIMEOUT;
        loop {
            while let Some(frame) = self.next_frame(during)? {
                match frame {
                    Frame::Response(data) if data == HEARTBEAT => {
                        Command::Nop.encode(&mut self.wbuf);
                        self.flush(during)?;
                    }
                    Frame::Response(data) => return Ok(data),
                    Frame::Error(data) => return Err(self.broker_error(during, &data)),
                    Frame::Message(_) => return Err(self.unexpected(during, "message frame")),
                }
            }
            if !self.read_more(during)? && Instant::now() > give_up {
                return Err(self.io_err(
                    during,
                    std::io::Error::new(ErrorKind::TimedOut, "no answer"),
                ));
            }
        }
    }
}

/// The shared state of one run.
struct Run<'a> {
    args: &'a LatencyArgs,
    shutdown: &'a CancellationToken,
    start: Instant,
    /// `start + --runfor + CATCH_UP`: nothing is sent, and no `OK` waited for, after it.
    hard_end: Instant,
    /// `start` on the wall clock, in ns since the epoch (the broker's timestamps).
    start_wall_ns: i64,
    scheduled: u64,
    /// PUBs written so far.
    sent: AtomicU64,
    /// The pacer has written its last PUB.
    sending_done: AtomicBool,
    /// PUBs acknowledged so far.
    acked: AtomicU64,
    /// Every PUB is acknowledged (or the ack thread failed).
    acks_done: AtomicBool,
    /// A heartbeat came on the publishing connection: the pacer owes a NOP.
    nop_owed: AtomicBool,
    /// Something failed: every thread stops.
    failed: AtomicBool,
}

impl Run<'_> {
    /// Stops every thread if `is_err`.
    fn fail_if(&self, is_err: bool) {
        if is_err {
            self.failed.store(true, Ordering::Relaxed);
        }
    }
}

fn run_blocking(args: &LatencyArgs, shutdown: &CancellationToken) -> Result<Report, BenchError> {
    // Setup: the consumer subscribes and is ready before the first message is due.
    let mut consumer = BlockingConn::connect(&args.broker.tcp_address)?;
    let identify = Command::Identify(identify_body(Role::Latency, 0, true));
    let reply = consumer.request(&identify, "identifying")?;
    check_identify_response(&consumer.addr, &reply, args.rdy)?;
    let sub = Command::Sub {
        topic: args.topic.clone(),
        channel: args.channel.clone(),
    };
    let reply = consumer.request(&sub, "subscribing")?;
    if reply != OK {
        return Err(consumer.unexpected("subscribing", describe_response(&reply)));
    }
    Command::Rdy(args.rdy).encode(&mut consumer.wbuf);
    consumer.flush("subscribing")?;

    let mut publisher = BlockingConn::connect(&args.broker.tcp_address)?;
    let identify = Command::Identify(identify_body(Role::Latency, 1, false));
    let reply = publisher.request(&identify, "identifying")?;
    if reply != OK && !reply.starts_with(b"{") {
        return Err(publisher.unexpected("identifying", describe_response(&reply)));
    }
    let ack_stream = publisher
        .stream
        .try_clone()
        .map_err(|e| publisher.io_err("connecting", e))?;
    let acks = BlockingConn {
        addr: publisher.addr.clone(),
        stream: ack_stream,
        rbuf: BytesMut::with_capacity(64 * 1024),
        wbuf: BytesMut::new(),
    };

    let start = Instant::now() + Duration::from_millis(10);
    let start_wall_ns = (SystemTime::now() + Duration::from_millis(10))
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let run = Run {
        args,
        shutdown,
        start,
        hard_end: start + args.runfor + CATCH_UP,
        start_wall_ns,
        scheduled: message_count(args.runfor, args.rate),
        sent: AtomicU64::new(0),
        sending_done: AtomicBool::new(false),
        acked: AtomicU64::new(0),
        acks_done: AtomicBool::new(false),
        nop_owed: AtomicBool::new(false),
        failed: AtomicBool::new(false),
    };

    let run = &run;
    let (paced, acked, consumed) = std::thread::scope(|scope| {
        let pacer = scope.spawn(move || {
            let r = pace(run, publisher);
            run.sending_done.store(true, Ordering::Release);
            run.fail_if(r.is_err());
            r
        });
        let ack = scope.spawn(move || {
            let r = read_acks(run, acks);
            run.acks_done.store(true, Ordering::Release);
            run.fail_if(r.is_err());
            r
        });
        let consume = scope.spawn(move || {
            let r = consume(run, consumer);
            run.fail_if(r.is_err());
            r
        });
        (
            pacer.join().expect("pacer thread panicked"),
            ack.join().expect("ack thread panicked"),
            consume.join().expect("consumer thread panicked"),
        )
    });
    // The first real error, in the order things happen.
    let (send_lateness, written) = paced?;
    let ack_latency = acked?;
    let consumed = consumed?;
    let elapsed = consumed
        .last_at
        .unwrap_or(start)
        .saturating_duration_since(start);

    let published = run.acked.load(Ordering::Acquire);
    let latency = LatencyReport {
        rate: args.rate,
        size: args.size,
        scheduled: run.scheduled,
        published,
        unsent: run.scheduled - written,
        unacked: written.saturating_sub(published),
        received: consumed.received,
        redelivered: consumed.redelivered,
        stale: consumed.stale,
        rows: vec![
            LatencyRow::from_histogram(
                "send_lateness",
                "scheduled → sent (this tool)",
                &send_lateness,
            ),
            LatencyRow::from_histogram("publish_ack", "publish → OK", &ack_latency),
            LatencyRow::from_histogram(
                "broker_to_delivery",
                "broker timestamp → delivered",
                &consumed.from_broker,
            ),
            LatencyRow::from_histogram(
                "scheduled_to_delivery",
                "scheduled → delivered",
                &consumed.from_scheduled,
            ),
        ],
    };
    Ok(Report {
        role: Role::Latency,
        msgs: consumed.received,
        bytes: consumed.received * u64::from(args.size),
        elapsed,
        detail: format!(
            "{}-byte messages at {} msgs/s, channel {}, RDY {}",
            args.size,
            thousands(u64::from(args.rate)),
            args.channel,
            args.rdy
        ),
        // Ctrl-C ends a run early: then only what was published is expected.
        expected: Some(if shutdown.is_cancelled() {
            published
        } else {
            run.scheduled
        }),
        connections: Vec::new(),
        latency: Some(latency),
    })
}

/// The pacer: writes PUB `k` at `start + k/rate`, all that are due in one write. Returns how
/// late each PUB was written.
/// Returns how late each PUB was written, and how many PUBs were written whole.
fn pace(run: &Run<'_>, mut conn: BlockingConn) -> Result<(Histogram<u64>, u64), BenchError> {
    const DURING: &str = "publishing (PUB)";
    let mut lateness = new_histogram();
    let filler: Vec<u8> = (0..run.args.size - MIN_SIZE)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let mut body = BytesMut::with_capacity(run.args.size as usize);
    let mut k = 0u64;
    let stop = || run.shutdown.is_cancelled() || run.failed.load(Ordering::Relaxed);
    while k < run.scheduled && !stop() && Instant::now() < run.hard_end {
        let due = run.start + Duration::from_nanos(scheduled_ns(k, run.args.rate));
        let now = Instant::now();
        if now < due {
            std::thread::sleep(due - now);
            continue;
        }
        // Everything due by now (up to MAX_WRITE messages), in one write.
        let first = k;
        while k < run.scheduled
            && k - first < MAX_WRITE
            && run.start + Duration::from_nanos(scheduled_ns(k, run.args.rate)) <= now
        {
            body.clear();
            body.extend_from_slice(&k.to_le_bytes());
            body.extend_from_slice(&filler);
            Command::Pub {
                topic: run.args.topic.clone(),
                body: body.split().freeze(),
            }
            .encode(&mut conn.wbuf);
            k += 1;
        }
        if run.nop_owed.swap(false, Ordering::Relaxed) {
            Command::Nop.encode(&mut conn.wbuf);
        }
        // `sent` before the write: the ack thread may see an OK as soon as the bytes leave.
        run.sent.store(k, Ordering::Release);
        if !conn.flush_until(DURING, Some(run.hard_end), &stop)? {
            // The broker stopped reading: the last write may be partial, and will not be
            // answered; the ack thread stops at `hard_end`.
            return Ok((lateness, first));
        }
        let written = Instant::now();
        for j in first..k {
            let due = run.start + Duration::from_nanos(scheduled_ns(j, run.args.rate));
            lateness.saturating_record(nanos(written.saturating_duration_since(due)).max(1));
        }
    }
    Ok((lateness, k))
}

/// Reads the `OK`s of the publishing connection: the `k`-th answers PUB `k`.
fn read_acks(run: &Run<'_>, mut conn: BlockingConn) -> Result<Histogram<u64>, BenchError> {
    const DURING: &str = "publishing (PUB)";
    let mut latency = new_histogram();
    let mut acked = 0u64;
    loop {
        let sent = run.sent.load(Ordering::Acquire);
        let all_acked = run.sending_done.load(Ordering::Acquire) && acked == sent;
        if all_acked || Instant::now() > run.hard_end || run.failed.load(Ordering::Relaxed) {
            return Ok(latency);
        }
        if !conn.read_more(DURING)? {
            continue;
        }
        let now = Instant::now();
        while let Some(frame) = conn.next_frame(DURING)? {
            match frame {
                Frame::Response(data) if data == OK => {
                    let due = run.start + Duration::from_nanos(scheduled_ns(acked, run.args.rate));
                    latency.saturating_record(nanos(now.saturating_duration_since(due)).max(1));
                    acked += 1;
                    run.acked.store(acked, Ordering::Release);
                }
                Frame::Response(data) if data == HEARTBEAT => {
                    run.nop_owed.store(true, Ordering::Relaxed);
                }
                Frame::Response(data) => {
                    return Err(conn.unexpected(DURING, describe_response(&data)));
                }
                Frame::Error(data) => return Err(conn.broker_error(DURING, &data)),
                Frame::Message(_) => return Err(conn.unexpected(DURING, "message frame")),
            }
        }
        if acked > run.sent.load(Ordering::Acquire) {
            return Err(conn.unexpected(DURING, "OK with no PUB outstanding"));
        }
    }
}

/// What the consumer saw.
struct Consumed {
    received: u64,
    redelivered: u64,
    stale: u64,
    from_broker: Histogram<u64>,
    from_scheduled: Histogram<u64>,
    last_at: Option<Instant>,
}

/// The consumer: finishes every message; records this run's messages once each.
fn consume(run: &Run<'_>, mut conn: BlockingConn) -> Result<Consumed, BenchError> {
    const DURING: &str = "consuming";
    let mut seen = vec![0u64; usize::try_from(run.scheduled.div_ceil(64)).unwrap_or(0)];
    let mut out = Consumed {
        received: 0,
        redelivered: 0,
        stale: 0,
        from_broker: new_histogram(),
        from_scheduled: new_histogram(),
        last_at: None,
    };
    let mut grace_until: Option<Instant> = None;
    loop {
        if run.failed.load(Ordering::Relaxed) {
            return Ok(out);
        }
        if run.acks_done.load(Ordering::Acquire) {
            let published = run.acked.load(Ordering::Acquire);
            if out.received >= published {
                return Ok(out);
            }
            let until = *grace_until.get_or_insert_with(|| Instant::now() + DELIVERY_GRACE);
            if Instant::now() > until {
                return Ok(out);
            }
        }
        if !conn.read_more(DURING)? {
            continue;
        }
        let now = Instant::now();
        let now_wall_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        while let Some(frame) = conn.next_frame(DURING)? {
            match frame {
                Frame::Message(msg) => {
                    Command::Fin(msg.id).encode(&mut conn.wbuf);
                    record(run, &mut out, &mut seen, &msg, now, now_wall_ns);
                }
                Frame::Response(data) if data == HEARTBEAT => Command::Nop.encode(&mut conn.wbuf),
                Frame::Response(data) => {
                    return Err(conn.unexpected(DURING, describe_response(&data)));
                }
                Frame::Error(data) => {
                    // A FIN that raced a message timeout is harmless; anything else is not.
                    if !data.starts_with(b"E_FIN_FAILED") {
                        return Err(conn.broker_error(DURING, &data));
                    }
                }
            }
        }
        conn.flush(DURING)?;
    }
}

fn record(
    run: &Run<'_>,
    out: &mut Consumed,
    seen: &mut [u64],
    msg: &Message,
    now: Instant,
    now_wall_ns: i64,
) {
    let k = match msg.body.get(..8) {
        Some(b) => u64::from_le_bytes(b.try_into().expect("8 bytes")),
        None => u64::MAX,
    };
    if msg.timestamp_ns < run.start_wall_ns - 1_000_000_000 || k >= run.scheduled {
        // Not this run's (1 s of slack for the 10 ms head start and clock steps).
        out.stale += 1;
        return;
    }
    let (word, bit) = ((k / 64) as usize, 1u64 << (k % 64));
    if seen[word] & bit != 0 {
        out.redelivered += 1;
        return;
    }
    seen[word] |= bit;
    out.received += 1;
    out.last_at = Some(now);
    let from_broker = u64::try_from(now_wall_ns.saturating_sub(msg.timestamp_ns)).unwrap_or(0);
    out.from_broker.saturating_record(from_broker.max(1));
    let due = run.start + Duration::from_nanos(scheduled_ns(k, run.args.rate));
    out.from_scheduled
        .saturating_record(nanos(now.saturating_duration_since(due)).max(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_absolute() {
        assert_eq!(scheduled_ns(0, 10_000), 0);
        assert_eq!(scheduled_ns(1, 10_000), 100_000);
        assert_eq!(scheduled_ns(3, 3), 1_000_000_000);
        assert_eq!(message_count(Duration::from_secs(1), 200), 200);
        assert_eq!(message_count(Duration::from_secs(20), 50_000), 1_000_000);
        assert_eq!(message_count(Duration::from_millis(1500), 1), 2);
        assert_eq!(message_count(Duration::from_millis(1), 1), 1);
    }

    #[test]
    fn bad_rate_and_size_are_refused_in_one_line() {
        for (parse, input) in [
            (parse_rate as fn(&str) -> Result<u32, String>, "0"),
            (parse_rate, "x"),
            (parse_size, "0"),
            (parse_size, "7"),
        ] {
            let err = parse(input).unwrap_err();
            assert!(!err.contains('\n'), "{err}");
        }
        assert!(parse_rate("0").unwrap_err().contains("--rate"));
        assert!(parse_size("0").unwrap_err().contains("--size"));
        assert_eq!(parse_rate("50000"), Ok(50_000));
        assert_eq!(parse_size("8"), Ok(8));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_ns(850), "850ns");
        assert_eq!(human_ns(42_300), "42µs");
        assert_eq!(human_ns(1_250_000), "1.25ms");
        assert_eq!(human_ns(3_100_000_000), "3.10s");
    }

    #[test]
    fn table_and_json_have_every_percentile() {
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let report = LatencyReport {
            rate: 1000,
            size: 200,
            scheduled: 1000,
            published: 1000,
            unsent: 0,
            unacked: 0,
            received: 1000,
            redelivered: 0,
            stale: 0,
            rows: vec![LatencyRow::from_histogram(
                "publish_ack",
                "publish → OK",
                &h,
            )],
        };
        let table = report.table();
        for needle in ["p50", "p90", "p99", "p99.9", "max", "publish → OK", "1,000"] {
            assert!(table.contains(needle), "{needle}:\n{table}");
        }
        let json = report.to_json(Duration::from_secs(1));
        let ack = &json["latency"]["publish_ack"];
        assert_eq!(ack["count"], 1000);
        let p99 = ack["p99_us"].as_f64().unwrap();
        assert!((985.0..=995.0).contains(&p99), "{p99}");
        assert!(ack["max_us"].as_f64().unwrap() >= 1000.0);
    }
}
