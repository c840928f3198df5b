//! `ferry bench` end to end against a minimal in-test broker that speaks just enough of
//! protocol V2: the magic, IDENTIFY (with and without feature negotiation), SUB, MPUB, RDY, FIN,
//! NOP and CLS, one shared queue, and a heartbeat after every IDENTIFY so that both tools must
//! answer one. The real broker is tested elsewhere; this checks the tools on their own.

use std::collections::VecDeque;
use std::process::Command as Process;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferry_cli::bench::{
    self, BenchCommand, BenchError, BrokerArg, CommonArgs, ReaderArgs, Report, WriterArgs,
};
use ferry_proto::identify::{IdentifyRequest, IdentifyResponse};
use ferry_proto::v2::{
    CLOSE_WAIT, Command, DecodeLimits, HEARTBEAT, MAGIC, OK, decode_command, encode_message,
    encode_response,
};
use ferry_proto::{ErrorCode, MessageId, ProtocolError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the fake broker saw, shared by its connections.
#[derive(Debug, Default)]
struct State {
    /// Published bodies not yet delivered.
    queue: Mutex<VecDeque<Bytes>>,
    published: AtomicU64,
    delivered: AtomicU64,
    finished: AtomicU64,
    nops: AtomicU64,
    cls: AtomicU64,
    next_id: AtomicU64,
    /// Answer MPUB with a fatal error and close.
    refuse_mpub: AtomicBool,
}

struct FakeBroker {
    addr: String,
    state: Arc<State>,
}

impl FakeBroker {
    async fn start() -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&shared)));
            }
        });
        FakeBroker { addr, state }
    }

    /// Queues `n` messages of `size` bytes, as if published earlier.
    fn preload(&self, n: usize, size: usize) {
        let mut queue = self.state.queue.lock().unwrap();
        queue.extend((0..n).map(|_| Bytes::from(vec![b'x'; size])));
        self.state.published.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Waits (at most 2 s) until the broker has seen `n` FINs.
    async fn wait_finished(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.state.finished.load(Ordering::Relaxed) < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} FINs arrived",
                self.state.finished.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// One client connection of the fake broker.
async fn serve(mut stream: TcpStream, state: Arc<State>) {
    let mut magic = [0u8; 4];
    if stream.read_exact(&mut magic).await.is_err() || magic != MAGIC {
        return;
    }
    let limits = DecodeLimits::default();
    let (mut rbuf, mut wbuf) = (BytesMut::with_capacity(64 * 1024), BytesMut::new());
    let (mut rdy, mut in_flight) = (0u64, 0u64);
    loop {
        match stream.read_buf(&mut rbuf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        loop {
            let command = match decode_command(&mut rbuf, &limits) {
                Ok(Some(command)) => command,
                Ok(None) => break,
                Err(err) => panic!("the tool sent an invalid command: {err}"),
            };
            match command {
                Command::Identify(body) => {
                    let request = IdentifyRequest::from_json(&body).unwrap();
                    assert!(request.client_id.starts_with("ferry-bench-"));
                    if request.feature_negotiation {
                        let settings = IdentifyResponse {
                            max_rdy_count: 2500,
                            version: "fake".into(),
                            ..IdentifyResponse::default()
                        };
                        encode_response(&mut wbuf, &settings.to_json());
                    } else {
                        encode_response(&mut wbuf, OK);
                    }
                    encode_response(&mut wbuf, HEARTBEAT);
                }
                Command::Sub { .. } => encode_response(&mut wbuf, OK),
                Command::Mpub { bodies, .. } => {
                    if state.refuse_mpub.load(Ordering::Relaxed) {
                        let err = ProtocolError::new(ErrorCode::MpubFailed, "MPUB refused");
                        ferry_proto::v2::encode_error(&mut wbuf, &err);
                        let _ = stream.write_all(&wbuf).await;
                        return;
                    }
                    let n = bodies.len() as u64;
                    state.queue.lock().unwrap().extend(bodies);
                    state.published.fetch_add(n, Ordering::Relaxed);
                    encode_response(&mut wbuf, OK);
                }
                Command::Rdy(count) => rdy = count,
                Command::Fin(_) => {
                    in_flight -= 1;
                    state.finished.fetch_add(1, Ordering::Relaxed);
                }
                Command::Nop => {
                    state.nops.fetch_add(1, Ordering::Relaxed);
                }
                Command::Cls => {
                    state.cls.fetch_add(1, Ordering::Relaxed);
                    rdy = 0;
                    encode_response(&mut wbuf, CLOSE_WAIT);
                }
                other => panic!("the tool sent an unexpected {}", other.name()),
            }
        }
        // Deliver while the client has credit.
        while in_flight < rdy {
            let Some(body) = state.queue.lock().unwrap().pop_front() else {
                break;
            };
            let id = MessageId::from_seq(state.next_id.fetch_add(1, Ordering::Relaxed));
            encode_message(&mut wbuf, 1, 1, &id, &body);
            in_flight += 1;
            state.delivered.fetch_add(1, Ordering::Relaxed);
        }
        if !wbuf.is_empty() {
            if stream.write_all(&wbuf).await.is_err() {
                return;
            }
            wbuf.clear();
        }
    }
}

fn common(addr: &str, connections: u32, runfor: Duration) -> CommonArgs {
    CommonArgs {
        broker: BrokerArg {
            tcp_address: addr.to_owned(),
        },
        topic: "sub_bench".into(),
        connections,
        runfor,
        verbose: false,
    }
}

async fn run(command: BenchCommand) -> Result<Report, BenchError> {
    bench::run(&command, CancellationToken::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_then_reader_moves_every_message() {
    let broker = FakeBroker::start().await;
    let writer = run(BenchCommand::Writer(WriterArgs {
        common: common(&broker.addr, 2, Duration::from_millis(150)),
        size: 50,
        batch_size: 10,
        pipeline: 3,
    }))
    .await
    .unwrap();
    let published = broker.state.published.load(Ordering::Relaxed);
    assert!(writer.msgs > 0);
    assert_eq!(
        writer.msgs, published,
        "every counted message was acknowledged"
    );
    assert_eq!(writer.bytes, writer.msgs * 50);
    assert_eq!(writer.connections.len(), 2);
    assert!(writer.elapsed >= Duration::from_millis(150));
    let line = writer.to_string();
    assert!(line.starts_with("writer: "), "{line}");
    assert!(
        line.ends_with(
            "(50-byte messages, MPUB batches of 10, 2 connections, 3 MPUBs in flight each)"
        ),
        "{line}"
    );

    let reader = run(BenchCommand::Reader(ReaderArgs {
        common: common(&broker.addr, 2, Duration::from_secs(10)),
        channel: "ch".into(),
        rdy: 100,
        expect: Some(writer.msgs),
        size: 50,
    }))
    .await
    .unwrap();
    assert_eq!(reader.msgs, writer.msgs);
    assert_eq!(reader.bytes, writer.bytes);
    assert_eq!(reader.shortfall(), None);
    assert!(
        reader
            .to_string()
            .contains("50-byte messages, channel ch, RDY 100, 2 connections, stopped at --expect")
    );
    broker.wait_finished(writer.msgs).await;
    assert_eq!(broker.state.delivered.load(Ordering::Relaxed), writer.msgs);
    assert_eq!(
        broker.state.cls.load(Ordering::Relaxed),
        2,
        "each connection sent CLS"
    );
    // One heartbeat per IDENTIFY (2 writers, 2 readers), each answered.
    assert_eq!(broker.state.nops.load(Ordering::Relaxed), 4);
}

#[tokio::test]
async fn reader_runs_for_its_duration_and_reports_a_shortfall() {
    let broker = FakeBroker::start().await;
    broker.preload(30, 7);
    let reader = run(BenchCommand::Reader(ReaderArgs {
        common: common(&broker.addr, 1, Duration::from_millis(200)),
        channel: "ch".into(),
        rdy: 4,
        expect: Some(31),
        size: 200,
    }))
    .await
    .unwrap();
    assert_eq!(reader.msgs, 30);
    assert!(reader.elapsed >= Duration::from_millis(200));
    assert_eq!(
        reader.shortfall().unwrap(),
        format!(
            "reader: received only 30 of the 31 expected messages in {:.2}s",
            reader.elapsed.as_secs_f64()
        )
    );
    assert!(
        reader
            .to_string()
            .contains("(7-byte messages, channel ch, RDY 4, 1 connection, expected 31)")
    );
    broker.wait_finished(30).await;
}

#[tokio::test]
async fn an_error_frame_fails_the_writer() {
    let broker = FakeBroker::start().await;
    broker.state.refuse_mpub.store(true, Ordering::Relaxed);
    let err = run(BenchCommand::Writer(WriterArgs {
        common: common(&broker.addr, 1, Duration::from_secs(5)),
        size: 10,
        batch_size: 10,
        pipeline: 1,
    }))
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} sent an error while publishing (MPUB): E_MPUB_FAILED MPUB refused",
            broker.addr
        )
    );
}

#[tokio::test]
async fn rdy_above_the_brokers_maximum_is_refused() {
    let broker = FakeBroker::start().await;
    let err = run(BenchCommand::Reader(ReaderArgs {
        common: common(&broker.addr, 1, Duration::from_secs(5)),
        channel: "ch".into(),
        rdy: 2501,
        expect: None,
        size: 200,
    }))
    .await
    .unwrap_err();
    assert!(
        matches!(err, BenchError::RdyTooHigh { max: 2500, .. }),
        "{err}"
    );
}

/// Runs the `ferry` binary with `args` (off the runtime's threads) and returns its status,
/// stdout and stderr.
async fn ferry(args: &[&str]) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|&arg| arg.to_owned()).collect();
    let output = tokio::task::spawn_blocking(move || {
        Process::new(env!("CARGO_BIN_EXE_ferry"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_prints_one_summary_line() {
    let broker = FakeBroker::start().await;
    let (ok, stdout, stderr) = ferry(&[
        "bench",
        "writer",
        "--tcp-address",
        &broker.addr,
        "--runfor",
        "100ms",
        "--connections",
        "1",
        "--batch-size",
        "5",
    ])
    .await;
    assert!(ok, "{stderr}");
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert!(lines[0].starts_with("writer: "), "{stdout}");
    assert!(lines[0].contains(" msgs/s, "), "{stdout}");

    let (ok, stdout, stderr) = ferry(&[
        "bench",
        "reader",
        "--tcp-address",
        &broker.addr,
        "--runfor",
        "100ms",
        "-c",
        "2",
        "-v",
    ])
    .await;
    assert!(ok, "{stderr}");
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with("  connection 0: "), "{stdout}");
    assert!(lines[2].starts_with("reader: "), "{stdout}");
}

#[tokio::test]
async fn binary_exits_non_zero_with_a_clear_message() {
    // A port nobody listens on.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let (ok, stdout, stderr) = ferry(&["bench", "writer", "--tcp-address", &addr]).await;
    assert!(!ok);
    assert_eq!(stdout, "");
    assert!(
        stderr.starts_with(&format!("ferry: error: cannot connect to {addr}: ")),
        "{stderr}"
    );

    let broker = FakeBroker::start().await;
    let (ok, stdout, stderr) = ferry(&[
        "bench",
        "reader",
        "--tcp-address",
        &broker.addr,
        "--runfor",
        "50ms",
        "--expect",
        "5",
    ])
    .await;
    assert!(!ok);
    assert!(stdout.starts_with("reader: 0 msgs in "), "{stdout}");
    assert!(
        stderr.contains("received only 0 of the 5 expected messages"),
        "{stderr}"
    );
}
