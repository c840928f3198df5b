//! `ferry bench writer`: publishes MPUB batches over several connections.
//!
//! Each connection keeps `--pipeline` MPUBs outstanding: it sends that many, then sends one more
//! for each `OK`. When `--runfor` ends (or on Ctrl-C) it stops sending and waits for the `OK`s of
//! the batches still outstanding, so every counted message was acknowledged by the broker.
//!
//! The MPUB is encoded once, before the run; every connection resends the same bytes, so the hot
//! loop only reads `OK` frames and writes a shared buffer.

use bytes::{Bytes, BytesMut};
use clap::Args;
use ferry_proto::v2::{Command, Frame, HEARTBEAT, OK};
use tokio::task::JoinSet;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::conn::{Conn, describe_response};
use super::report::{ConnectionReport, Report, Role};
use super::{BenchError, CommonArgs, identify_body, join_all};

/// Free read-buffer space per read: the writer only reads tiny `OK` frames.
const READ_CHUNK: usize = 16 * 1024;

/// How long, after the run, to wait for the `OK`s of outstanding MPUBs.
const ACK_GRACE: Duration = Duration::from_secs(10);

/// What the writer does while its connections are publishing (for error messages).
const DURING: &str = "publishing (MPUB)";

/// Flags of `ferry bench writer`.
#[derive(Debug, Clone, Args)]
pub struct WriterArgs {
    /// Address, topic, connections, duration, verbosity.
    #[command(flatten)]
    pub common: CommonArgs,

    /// Size of each message body, in bytes.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..), value_name = "BYTES")]
    pub size: u32,

    /// Messages per MPUB command.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub batch_size: u32,

    /// MPUBs in flight per connection: sent before waiting for their OK (1 = wait for each).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024), value_name = "K")]
    pub pipeline: u32,
}

/// Publishes until `--runfor` ends or `shutdown` is cancelled, then reports the acknowledged
/// messages.
pub async fn run(args: &WriterArgs, shutdown: CancellationToken) -> Result<Report, BenchError> {
    let mpub = encode_mpub(&args.common.topic, args.size, args.batch_size)?;

    let mut setup = JoinSet::new();
    for index in 0..args.common.connections as usize {
        let addr = args.common.broker.tcp_address.clone();
        setup.spawn(async move {
            let mut conn = Conn::connect(&addr, READ_CHUNK).await?;
            let identify = Command::Identify(identify_body(Role::Writer, index, false));
            let reply = conn.request(&identify, "identifying").await?;
            // `OK` without feature negotiation; tolerate a broker that negotiates anyway.
            if reply != OK && !reply.starts_with(b"{") {
                return Err(conn.unexpected("identifying", describe_response(&reply)));
            }
            Ok((index, conn))
        });
    }
    let conns = join_all(setup).await?;

    let start = Instant::now();
    let deadline = start + args.common.runfor;
    let mut tasks = JoinSet::new();
    for (index, conn) in conns.into_iter().enumerate() {
        let (mpub, shutdown) = (mpub.clone(), shutdown.clone());
        let pipeline = args.pipeline as usize;
        tasks.spawn(async move {
            let batches = publish(conn, mpub, pipeline, deadline, shutdown).await?;
            Ok((index, batches))
        });
    }
    let batches = join_all(tasks).await?;
    let elapsed = start.elapsed();

    let batch_size = u64::from(args.batch_size);
    let msg_bytes = u64::from(args.size);
    let connections: Vec<_> = batches
        .iter()
        .map(|&batches| ConnectionReport {
            msgs: batches * batch_size,
            bytes: batches * batch_size * msg_bytes,
            ..ConnectionReport::default()
        })
        .collect();
    Ok(Report {
        role: Role::Writer,
        msgs: connections.iter().map(|c| c.msgs).sum(),
        bytes: connections.iter().map(|c| c.bytes).sum(),
        elapsed,
        detail: detail(args),
        expected: None,
        connections,
        latency: None,
    })
}

/// The MPUB of `batch_size` messages of `size` bytes to `topic`, in its wire form.
pub fn encode_mpub(topic: &str, size: u32, batch_size: u32) -> Result<Bytes, BenchError> {
    // [u32 body size][u32 count]([u32 size][data])×count; sizes are i32 on the wire.
    let body = 4 + u64::from(batch_size) * (4 + u64::from(size));
    let max = i32::MAX as u64;
    if body > max {
        return Err(BenchError::BatchTooLarge {
            size,
            batch_size,
            body,
            max,
        });
    }
    // Printable and not all one byte, so that `ferry tail` and friends show something.
    let message: Bytes = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let command = Command::Mpub {
        topic: topic.to_owned(),
        bodies: vec![message; batch_size as usize],
    };
    let mut wire = BytesMut::new();
    command.encode(&mut wire);
    Ok(wire.freeze())
}

/// One connection's run: returns the number of acknowledged MPUBs.
async fn publish(
    mut conn: Conn,
    mpub: Bytes,
    pipeline: usize,
    deadline: Instant,
    shutdown: CancellationToken,
) -> Result<u64, BenchError> {
    for _ in 0..pipeline {
        conn.write_encoded(&mpub, DURING).await?;
    }
    let mut outstanding = pipeline;
    let mut acked = 0u64;
    let mut sending = true;
    // First the end of the run, then the end of the grace period for the last `OK`s.
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    while outstanding > 0 {
        tokio::select! {
            biased;
            () = &mut timer => {
                if !sending {
                    return Err(BenchError::AckTimeout {
                        addr: conn.addr().to_owned(),
                        outstanding,
                        grace: ACK_GRACE,
                    });
                }
                sending = false;
                timer.as_mut().reset(Instant::now() + ACK_GRACE);
                continue;
            }
            () = shutdown.cancelled(), if sending => {
                sending = false;
                timer.as_mut().reset(Instant::now() + ACK_GRACE);
                continue;
            }
            read = conn.read_more(DURING) => read?,
        }

        let mut oks = 0usize;
        while let Some(frame) = conn.next_frame(DURING)? {
            match frame {
                Frame::Response(data) if data == OK => oks += 1,
                Frame::Response(data) if data == HEARTBEAT => conn.push(&Command::Nop),
                Frame::Response(data) => {
                    return Err(conn.unexpected(DURING, describe_response(&data)));
                }
                Frame::Error(data) => return Err(conn.broker_error(DURING, &data)),
                Frame::Message(_) => return Err(conn.unexpected(DURING, "message frame")),
            }
        }
        if oks > outstanding {
            return Err(conn.unexpected(DURING, "OK with no MPUB outstanding"));
        }
        outstanding -= oks;
        acked += oks as u64;

        if sending && Instant::now() >= deadline {
            sending = false;
            timer.as_mut().reset(Instant::now() + ACK_GRACE);
        }
        if sending {
            for _ in 0..oks {
                conn.write_encoded(&mpub, DURING).await?;
            }
            outstanding += oks;
        } else {
            // A NOP, if a heartbeat came.
            conn.flush(DURING).await?;
        }
    }
    Ok(acked)
}

/// The run's parameters, for the summary line.
fn detail(args: &WriterArgs) -> String {
    let mut detail = format!(
        "{}-byte messages, MPUB batches of {}, {}",
        args.size,
        args.batch_size,
        plural(args.common.connections, "connection")
    );
    if args.pipeline > 1 {
        detail.push_str(&format!(", {} MPUBs in flight each", args.pipeline));
    }
    detail
}

/// `"1 connection"`, `"2 connections"`.
pub(crate) fn plural(n: u32, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use ferry_proto::v2::{DecodeLimits, decode_command};

    use super::*;
    use crate::bench::BrokerArg;

    #[test]
    fn mpub_decodes_back_to_the_batch() {
        let wire = encode_mpub("sub_bench", 200, 50).unwrap();
        assert!(wire.starts_with(b"MPUB sub_bench\n"));
        let mut src = BytesMut::from(&wire[..]);
        let Some(Command::Mpub { topic, bodies }) =
            decode_command(&mut src, &DecodeLimits::default()).unwrap()
        else {
            panic!("not an MPUB");
        };
        assert!(src.is_empty(), "exactly one command");
        assert_eq!(topic, "sub_bench");
        assert_eq!(bodies.len(), 50);
        for body in &bodies {
            assert_eq!(body.len(), 200);
            assert_eq!(&body[..3], b"abc");
        }
        // Line + [size][count] + 50 × ([size] + 200 bytes).
        assert_eq!(wire.len(), 15 + 8 + 50 * 204);
    }

    #[test]
    fn oversized_batches_are_refused_before_encoding() {
        let err = encode_mpub("t", u32::MAX, 2).unwrap_err();
        assert!(matches!(err, BenchError::BatchTooLarge { .. }), "{err}");
        assert!(encode_mpub("t", 1, 1).is_ok());
    }

    #[test]
    fn summary_detail() {
        let mut args = WriterArgs {
            common: CommonArgs {
                broker: BrokerArg {
                    tcp_address: "127.0.0.1:4150".into(),
                },
                topic: "t".into(),
                connections: 2,
                runfor: Duration::from_secs(1),
                verbose: false,
            },
            size: 200,
            batch_size: 100,
            pipeline: 1,
        };
        assert_eq!(
            detail(&args),
            "200-byte messages, MPUB batches of 100, 2 connections"
        );
        args.common.connections = 1;
        args.pipeline = 4;
        assert_eq!(
            detail(&args),
            "200-byte messages, MPUB batches of 100, 1 connection, 4 MPUBs in flight each"
        );
    }
}
