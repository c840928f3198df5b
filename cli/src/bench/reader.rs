//! `ferry bench reader`: subscribes over several connections and finishes every message.
//!
//! Each connection IDENTIFYs with feature negotiation, SUBs, and once every connection is ready
//! sends `RDY --rdy`. For each read it decodes every complete frame, queues one `FIN` per
//! message (a `NOP` per heartbeat) and writes them all in one write. When the run ends it sends
//! `CLS`, finishes (without counting) what still arrives until the broker's `CLOSE_WAIT`, and
//! closes; whatever is still in flight then is requeued by the broker.
//!
//! Reading and writing share one task without deadlock: the broker sends at most `--rdy`
//! unfinished messages, so the FINs owed at any time (about 20 bytes each) fit in the socket
//! buffers, and a FIN write never waits for the broker to stop writing.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Args;
use ferry_proto::ProtocolError;
use ferry_proto::identify::IdentifyResponse;
use ferry_proto::v2::{CLOSE_WAIT, Command, Frame, HEARTBEAT, OK};
use tokio::task::JoinSet;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::conn::{Conn, describe_response};
use super::report::{ConnectionReport, Report, Role, size_range, thousands};
use super::writer::plural;
use super::{BenchError, CommonArgs, identify_body, join_all, parse_channel};

/// Free read-buffer space per read: big, so one read brings many messages.
const READ_CHUNK: usize = 512 * 1024;

/// How long to wait for `CLOSE_WAIT` after the run.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the reader does while its connections are consuming (for error messages).
const DURING: &str = "consuming";

/// Flags of `ferry bench reader`.
#[derive(Debug, Clone, Args)]
pub struct ReaderArgs {
    /// Address, topic, connections, duration, verbosity.
    #[command(flatten)]
    pub common: CommonArgs,

    /// Channel to subscribe to.
    #[arg(long, default_value = "ch", value_parser = parse_channel)]
    pub channel: String,

    /// RDY count of each connection: how many unfinished messages the broker may send it
    /// (nsqd refuses more than its --max-rdy-count, 2500 by default).
    #[arg(long, default_value_t = 2500, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub rdy: u64,

    /// Stop as soon as N messages have arrived (over all connections) and report the time that
    /// took; --runfor is then a time limit, and reaching it first is an error.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub expect: Option<u64>,

    /// Message size, accepted for compatibility with nsq's bench_reader. Not used: MB/s comes
    /// from the sizes of the bodies actually received.
    #[arg(long, default_value_t = 200, value_name = "BYTES")]
    pub size: u32,
}

/// Consumes until `--runfor` ends, `--expect` messages have arrived, or `shutdown` is
/// cancelled, then reports the messages received.
pub async fn run(args: &ReaderArgs, shutdown: CancellationToken) -> Result<Report, BenchError> {
    let mut setup = JoinSet::new();
    for index in 0..args.common.connections as usize {
        let addr = args.common.broker.tcp_address.clone();
        let subscribe = Command::Sub {
            topic: args.common.topic.clone(),
            channel: args.channel.clone(),
        };
        let rdy = args.rdy;
        setup.spawn(async move {
            let mut conn = Conn::connect(&addr, READ_CHUNK).await?;
            let identify = Command::Identify(identify_body(Role::Reader, index, true));
            let reply = conn.request(&identify, "identifying").await?;
            check_identify_response(conn.addr(), &reply, rdy)?;
            let reply = conn.request(&subscribe, "subscribing").await?;
            if reply != OK {
                return Err(conn.unexpected("subscribing", describe_response(&reply)));
            }
            Ok((index, conn))
        });
    }
    let conns = join_all(setup).await?;

    let start = Instant::now();
    let deadline = start + args.common.runfor;
    // A child token: reaching --expect stops this run, never the caller's token.
    let stop = shutdown.child_token();
    let progress = Arc::new(Progress::new(args.expect, stop.clone()));
    let mut tasks = JoinSet::new();
    for (index, conn) in conns.into_iter().enumerate() {
        let (stop, progress, rdy) = (stop.clone(), Arc::clone(&progress), args.rdy);
        tasks.spawn(async move {
            let consumed = consume(conn, rdy, deadline, stop, &progress).await?;
            Ok((index, consumed))
        });
    }
    let consumed = join_all(tasks).await?;

    let end = progress
        .reached_at
        .get()
        .copied()
        .unwrap_or_else(|| consumed.iter().map(|c| c.stopped_at).max().unwrap_or(start));
    let counted = consumed.iter().filter(|c| c.counts.msgs > 0);
    let min_size = counted
        .clone()
        .map(|c| c.counts.min_size)
        .min()
        .unwrap_or(0);
    let max_size = counted.map(|c| c.counts.max_size).max().unwrap_or(0);
    let connections: Vec<_> = consumed
        .iter()
        .map(|c| ConnectionReport {
            msgs: c.counts.msgs,
            bytes: c.counts.bytes,
            after_stop: c.after_stop,
            fin_failed: c.counts.fin_failed,
        })
        .collect();
    let msgs = connections.iter().map(|c| c.msgs).sum();
    Ok(Report {
        role: Role::Reader,
        msgs,
        bytes: connections.iter().map(|c| c.bytes).sum(),
        elapsed: end.saturating_duration_since(start),
        detail: detail(args, size_range(min_size, max_size, msgs), msgs),
        expected: args.expect,
        connections,
        latency: None,
    })
}

/// Checks the broker's answer to IDENTIFY: `OK` (a broker without feature negotiation) or the
/// negotiated settings, which must not require anything this tool does not do.
pub fn check_identify_response(addr: &str, reply: &[u8], rdy: u64) -> Result<(), BenchError> {
    if reply == OK {
        return Ok(());
    }
    let settings: IdentifyResponse =
        serde_json::from_slice(reply).map_err(|source| BenchError::IdentifyResponse {
            addr: addr.to_owned(),
            source,
        })?;
    let unsupported = [
        (settings.auth_required, "AUTH"),
        (settings.tls_v1, "TLS"),
        (settings.snappy, "snappy compression"),
        (settings.deflate, "deflate compression"),
    ];
    if let Some(&(_, feature)) = unsupported.iter().find(|(on, _)| *on) {
        return Err(BenchError::Unsupported {
            addr: addr.to_owned(),
            feature,
        });
    }
    if settings.max_rdy_count > 0 && i64::try_from(rdy).unwrap_or(i64::MAX) > settings.max_rdy_count
    {
        return Err(BenchError::RdyTooHigh {
            addr: addr.to_owned(),
            rdy,
            max: settings.max_rdy_count,
        });
    }
    Ok(())
}

/// The count shared by every connection, for `--expect`.
#[derive(Debug)]
struct Progress {
    received: AtomicU64,
    expect: Option<u64>,
    /// When the expected count was reached.
    reached_at: OnceLock<Instant>,
    /// Cancelled when the expected count is reached.
    stop: CancellationToken,
}

impl Progress {
    fn new(expect: Option<u64>, stop: CancellationToken) -> Self {
        Progress {
            received: AtomicU64::new(0),
            expect,
            reached_at: OnceLock::new(),
            stop,
        }
    }

    /// Counts `n` more messages (once per read, not per message).
    fn add(&self, n: u64) {
        let Some(expect) = self.expect else {
            return;
        };
        // Relaxed: only the crossing matters, and exactly one caller sees it.
        let before = self.received.fetch_add(n, Ordering::Relaxed);
        if before < expect && before + n >= expect {
            let _ = self.reached_at.set(Instant::now());
            self.stop.cancel();
        }
    }
}

/// One connection's tallies.
#[derive(Debug, Clone, Copy)]
struct Counts {
    msgs: u64,
    bytes: u64,
    min_size: u64,
    max_size: u64,
    fin_failed: u64,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            msgs: 0,
            bytes: 0,
            min_size: u64::MAX,
            max_size: 0,
            fin_failed: 0,
        }
    }
}

/// What one connection did.
#[derive(Debug)]
struct Consumed {
    counts: Counts,
    /// Messages finished after the run, not counted.
    after_stop: u64,
    /// When this connection stopped counting.
    stopped_at: Instant,
}

/// One connection's run.
async fn consume(
    mut conn: Conn,
    rdy: u64,
    deadline: Instant,
    stop: CancellationToken,
    progress: &Progress,
) -> Result<Consumed, BenchError> {
    conn.push(&Command::Rdy(rdy));
    conn.flush(DURING).await?;
    let mut counts = Counts::default();
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = &mut timer => break,
            read = conn.read_more(DURING) => read?,
        }
        let before = counts.msgs;
        if handle_frames(&mut conn, &mut counts, DURING)? {
            return Err(conn.unexpected(DURING, "CLOSE_WAIT before CLS"));
        }
        conn.flush(DURING).await?;
        progress.add(counts.msgs - before);
        if Instant::now() >= deadline {
            break;
        }
    }
    let stopped_at = Instant::now();
    let after_stop = close(&mut conn).await;
    Ok(Consumed {
        counts,
        after_stop,
        stopped_at,
    })
}

/// Decodes every complete frame in the read buffer: counts messages and queues their FIN,
/// queues a NOP per heartbeat. Returns whether `CLOSE_WAIT` was among them.
fn handle_frames(
    conn: &mut Conn,
    counts: &mut Counts,
    during: &'static str,
) -> Result<bool, BenchError> {
    let mut close_wait = false;
    while let Some(frame) = conn.next_frame(during)? {
        match frame {
            Frame::Message(msg) => {
                conn.push(&Command::Fin(msg.id));
                let size = msg.body.len() as u64;
                counts.msgs += 1;
                counts.bytes += size;
                counts.min_size = counts.min_size.min(size);
                counts.max_size = counts.max_size.max(size);
            }
            Frame::Response(data) if data == HEARTBEAT => conn.push(&Command::Nop),
            Frame::Response(data) if data == CLOSE_WAIT => close_wait = true,
            Frame::Response(data) => return Err(conn.unexpected(during, describe_response(&data))),
            Frame::Error(data) => match ProtocolError::from_wire(&data) {
                // E_FIN_FAILED: the message timed out before our FIN arrived.
                Some(err) if !err.is_fatal() => counts.fin_failed += 1,
                _ => return Err(conn.broker_error(during, &data)),
            },
        }
    }
    Ok(close_wait)
}

/// Sends `CLS` and finishes what arrives until `CLOSE_WAIT` (at most [`CLOSE_TIMEOUT`]).
/// Returns how many messages were finished. Errors are ignored: the run is already over.
async fn close(conn: &mut Conn) -> u64 {
    const CLOSING: &str = "closing";
    let mut counts = Counts::default();
    let drain = async {
        conn.push(&Command::Cls);
        conn.flush(CLOSING).await?;
        loop {
            conn.read_more(CLOSING).await?;
            let close_wait = handle_frames(conn, &mut counts, CLOSING)?;
            conn.flush(CLOSING).await?;
            if close_wait {
                return Ok::<(), BenchError>(());
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain).await;
    counts.msgs
}

/// The run's parameters, for the summary line.
fn detail(args: &ReaderArgs, sizes: String, msgs: u64) -> String {
    let mut detail = format!(
        "{sizes}, channel {}, RDY {}, {}",
        args.channel,
        args.rdy,
        plural(args.common.connections, "connection")
    );
    match args.expect {
        Some(expect) if msgs >= expect => {
            detail.push_str(&format!(", stopped at --expect {}", thousands(expect)));
        }
        Some(expect) => detail.push_str(&format!(", expected {}", thousands(expect))),
        None => {}
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_ok_and_plain_settings_are_accepted() {
        assert!(check_identify_response("a", b"OK", 2500).is_ok());
        let settings = IdentifyResponse {
            max_rdy_count: 2500,
            version: "1.3.0".into(),
            ..IdentifyResponse::default()
        };
        assert!(check_identify_response("a", &settings.to_json(), 2500).is_ok());
        // A broker that does not say its maximum.
        assert!(check_identify_response("a", b"{}", 1_000_000).is_ok());
    }

    #[test]
    fn identify_refusals_are_explained() {
        let settings = IdentifyResponse {
            max_rdy_count: 100,
            ..IdentifyResponse::default()
        };
        let err = check_identify_response("b:1", &settings.to_json(), 101).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--rdy 101 is above b:1's max_rdy_count of 100"
        );
        let auth = IdentifyResponse {
            auth_required: true,
            ..IdentifyResponse::default()
        };
        let err = check_identify_response("b:1", &auth.to_json(), 1).unwrap_err();
        assert!(err.to_string().contains("requires AUTH"), "{err}");
        let err = check_identify_response("b:1", b"not json", 1).unwrap_err();
        assert!(matches!(err, BenchError::IdentifyResponse { .. }), "{err}");
    }

    #[test]
    fn progress_stops_the_run_once_at_the_expected_count() {
        let stop = CancellationToken::new();
        let progress = Progress::new(Some(10), stop.clone());
        progress.add(6);
        assert!(!stop.is_cancelled());
        assert!(progress.reached_at.get().is_none());
        progress.add(6);
        assert!(stop.is_cancelled());
        let reached = *progress.reached_at.get().unwrap();
        progress.add(6);
        assert_eq!(*progress.reached_at.get().unwrap(), reached);

        let stop = CancellationToken::new();
        Progress::new(None, stop.clone()).add(u64::MAX);
        assert!(!stop.is_cancelled());
    }
}
