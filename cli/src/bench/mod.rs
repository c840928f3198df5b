//! `ferry bench`: a load generator for any broker that speaks NSQ's protocol V2, after nsq's
//! `bench/bench_writer` and `bench/bench_reader`.
//!
//! ```text
//!            setup (concurrent)                  measured run (one task per connection)
//! writer ──▶ connect, "  V2", IDENTIFY ─┐       ┌▶ MPUB ×K ─▶ OK ─▶ MPUB ... until --runfor
//! reader ──▶ connect, "  V2", IDENTIFY, ├─start─┤
//!            SUB topic channel ────────┘       └▶ RDY n ─▶ messages ─▶ FIN (one write per read)
//! ```
//!
//! The clock starts once every connection is set up, so connecting is not measured. A failure
//! on any connection ends the whole run with an error; Ctrl-C (the `shutdown` token) ends it
//! early with a normal report of what was done.
//!
//! - [`writer`]: publishing with pipelined MPUBs;
//! - [`reader`]: consuming and finishing;
//! - [`latency`]: fixed-rate publishing with a consumer, latency percentiles;
//! - [`report`]: the summary line;
//! - [`error`][]: [`BenchError`].

use std::time::Duration;

use clap::{Args, Subcommand};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::args::{default_connections, parse_positive_duration};

mod conn;
pub mod error;
pub mod latency;
pub mod reader;
pub mod report;
pub mod writer;

pub use error::BenchError;
pub use latency::LatencyArgs;
pub use reader::ReaderArgs;
pub use report::{ConnectionReport, Report, Role};
pub use writer::WriterArgs;

/// How to compare brokers; shown by `ferry bench --help`.
const COMPARE_HELP: &str = "\
Comparing Ferry with another NSQ broker (e.g. nsqd 1.3):

  1. Start ONE broker, alone on the machine, with an empty data directory, e.g.
       brokerd --data-path /tmp/ferry-bench        (or: nsqd --data-path /tmp/nsqd-bench)
     Both listen on port 4150 (TCP) and port 4151 (HTTP) by default.
  2. Publish for a fixed time; note the message count it prints (N):
       ferry bench writer --topic sub_bench --size 200 --batch-size 200 --runfor 10s
     The topic has no channel yet, so the broker keeps every message for the first channel.
  3. Consume exactly what was written, and time it:
       ferry bench reader --topic sub_bench --channel ch --rdy 2500 --expect N --runfor 60s
     (--expect stops at N messages and reports the elapsed time; --runfor is then only a time
     limit.) Without --expect, the reader runs for --runfor and reports what it received.
  4. Stop the broker, delete its data directory, start the other broker, and run the SAME two
     commands against it. Repeat each run a few times and compare medians.

For numbers that mean something:
  - The topic must be empty when each writer run starts, and the channel drained before each
    reader run: messages left over (depth) from an earlier run are read by the next reader and
    skew its count. Start from a fresh data directory, or between runs delete the topic:
       curl -X POST 'http://127.0.0.1:4151/topic/delete?topic=sub_bench'
    or empty the channel:
       curl -X POST 'http://127.0.0.1:4151/channel/empty?topic=sub_bench&channel=ch'
    and check that depth is 0:
       curl 'http://127.0.0.1:4151/stats?format=json&topic=sub_bench'
  - Use the same flags (--size, --batch-size, --pipeline, --connections, --rdy) and the same
    machine for both brokers. The tool shares the CPUs with the broker; --connections defaults
    to the number of CPUs, as in nsq's bench tools.
  - To measure a live pipeline instead of a backlog, run a reader and a writer at the same time.
  - Durability differs: nsqd holds up to --mem-queue-size messages per topic and channel in
    memory (default 10000) and syncs its disk queue every --sync-every/--sync-timeout, while
    Ferry writes every message to its log before answering OK. Say which settings you used.
  - Messages in flight when a reader stops are finished if they arrive before the broker's
    CLOSE_WAIT (not counted), else requeued by the broker.

Results are one line per run; MB is 2^20 bytes of message body, as in nsq's bench tools.
Ctrl-C stops a run early and still prints its summary. Exit status is non-zero on a connection
error, an error frame from the broker, or (reader) fewer than --expect messages.";

/// `ferry bench`: the load generator.
#[derive(Debug, Clone, Args)]
#[command(
    about = "Load generator for any NSQ-protocol broker (Ferry's brokerd or nsqd)",
    long_about = "Load generator for any broker that speaks NSQ's TCP protocol (Ferry's brokerd \
                  or nsqd): `writer` publishes MPUB batches, `reader` consumes and FINs, each \
                  over several connections, and prints messages/s and MB/s. Modelled on nsq's \
                  bench_writer and bench_reader. `latency` publishes at a fixed --rate while \
                  consuming, and prints latency percentiles.",
    after_help = "See `ferry bench --help` for how to compare Ferry with another broker.",
    after_long_help = COMPARE_HELP
)]
pub struct BenchArgs {
    /// Which side of the broker to load.
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// The benchmark tools.
#[derive(Debug, Clone, Subcommand)]
pub enum BenchCommand {
    /// Publish MPUB batches as fast as the broker acknowledges them.
    Writer(WriterArgs),
    /// Subscribe, receive and FIN messages as fast as the broker delivers them.
    Reader(ReaderArgs),
    /// Publish at a fixed --rate while consuming the same topic; report publish-ack and
    /// delivery latency percentiles (measured from each message's scheduled send time).
    Latency(LatencyArgs),
}

impl BenchCommand {
    /// Whether `-v` was given.
    pub fn verbose(&self) -> bool {
        match self {
            BenchCommand::Writer(args) => args.common.verbose,
            BenchCommand::Reader(args) => args.common.verbose,
            BenchCommand::Latency(_) => false,
        }
    }

    /// Whether the report is wanted as JSON (`--json`).
    pub fn json(&self) -> bool {
        matches!(self, BenchCommand::Latency(args) if args.json)
    }
}

/// The broker every bench tool talks to.
#[derive(Debug, Clone, Args)]
pub struct BrokerArg {
    /// Broker TCP address (NSQ protocol V2), host:port (`--broker-tcp-address`, as `ferry pub`
    /// and `ferry tail` take it).
    #[arg(
        long = "broker-tcp-address",
        visible_aliases = ["tcp-address", "nsqd-tcp-address"],
        default_value = "127.0.0.1:4150",
        value_name = "ADDR"
    )]
    pub tcp_address: String,
}

/// Flags common to the writer and the reader.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// The broker's address.
    #[command(flatten)]
    pub broker: BrokerArg,

    /// Topic to publish to or consume from.
    #[arg(long, default_value = "sub_bench", value_parser = parse_topic)]
    pub topic: String,

    /// Number of connections, each served by its own task [default: number of CPUs].
    #[arg(
        long,
        short = 'c',
        default_value_t = default_connections(),
        hide_default_value = true,
        value_parser = clap::value_parser!(u32).range(1..=10_000)
    )]
    pub connections: u32,

    /// How long to run (Go-style duration: 10s, 500ms, 2m, 1m30s).
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub runfor: Duration,

    /// Also print each connection's count.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

/// Runs the chosen tool until `--runfor` ends (or `--expect` is met, or `shutdown` is
/// cancelled) and returns its report.
pub async fn run(
    command: &BenchCommand,
    shutdown: CancellationToken,
) -> Result<Report, BenchError> {
    match command {
        BenchCommand::Writer(args) => writer::run(args, shutdown).await,
        BenchCommand::Reader(args) => reader::run(args, shutdown).await,
        BenchCommand::Latency(args) => latency::run(args, shutdown).await,
    }
}

fn parse_topic(name: &str) -> Result<String, String> {
    if ferry_proto::names::is_valid_topic_name(name) {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "invalid topic name {name:?}: 1-64 characters of [.a-zA-Z0-9_-], optionally ending in #ephemeral"
        ))
    }
}

fn parse_channel(name: &str) -> Result<String, String> {
    if ferry_proto::names::is_valid_channel_name(name) {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "invalid channel name {name:?}: 1-64 characters of [.a-zA-Z0-9_-], optionally ending in #ephemeral"
        ))
    }
}

/// The IDENTIFY body of connection `index` of `role`.
fn identify_body(role: Role, index: usize, feature_negotiation: bool) -> bytes::Bytes {
    let hostname = gethostname::gethostname().to_string_lossy().into_owned();
    ferry_proto::identify::IdentifyRequest {
        client_id: format!("ferry-bench-{role}-{index}"),
        hostname,
        user_agent: concat!("ferry-bench/", env!("CARGO_PKG_VERSION")).to_owned(),
        feature_negotiation,
        ..Default::default()
    }
    .to_json()
    .into()
}

/// Waits for every task of `set`, each returning its connection index and a value, and returns
/// the values in index order. The first failure is returned at once; dropping `set` then aborts
/// the other tasks.
async fn join_all<T: 'static>(
    mut set: JoinSet<Result<(usize, T), BenchError>>,
) -> Result<Vec<T>, BenchError> {
    let mut done = Vec::with_capacity(set.len());
    while let Some(joined) = set.join_next().await {
        done.push(joined??);
    }
    done.sort_by_key(|(index, _)| *index);
    Ok(done.into_iter().map(|(_, value)| value).collect())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// A stand-in for `ferry`'s top level, to parse `bench` command lines in tests.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Debug, Subcommand)]
    enum Top {
        Bench(BenchArgs),
    }

    fn parse(line: &str) -> Result<BenchCommand, clap::Error> {
        let cli = Cli::try_parse_from(line.split_whitespace())?;
        let Top::Bench(bench) = cli.command;
        Ok(bench.command)
    }

    #[test]
    fn writer_defaults_match_nsq_bench_writer() {
        let BenchCommand::Writer(args) = parse("ferry bench writer").unwrap() else {
            panic!("not the writer");
        };
        assert_eq!(args.common.broker.tcp_address, "127.0.0.1:4150");
        assert_eq!(args.common.topic, "sub_bench");
        assert_eq!(args.common.runfor, Duration::from_secs(10));
        assert_eq!(args.common.connections, default_connections());
        assert!(!args.common.verbose);
        assert_eq!((args.size, args.batch_size, args.pipeline), (200, 200, 1));
    }

    #[test]
    fn writer_flags() {
        let line = "ferry bench writer --tcp-address 10.0.0.1:4150 --topic t --size 100 \
                    --batch-size 50 --connections 3 --runfor 500ms --pipeline 4 -v";
        let BenchCommand::Writer(args) = parse(line).unwrap() else {
            panic!("not the writer");
        };
        assert_eq!(args.common.broker.tcp_address, "10.0.0.1:4150");
        assert_eq!(args.common.topic, "t");
        assert_eq!(args.common.connections, 3);
        assert_eq!(args.common.runfor, Duration::from_millis(500));
        assert!(args.common.verbose);
        assert_eq!((args.size, args.batch_size, args.pipeline), (100, 50, 4));
    }

    #[test]
    fn reader_defaults_and_flags() {
        let BenchCommand::Reader(args) = parse("ferry bench reader").unwrap() else {
            panic!("not the reader");
        };
        assert_eq!(args.channel, "ch");
        assert_eq!(args.rdy, 2500);
        assert_eq!(args.expect, None);
        let line = "ferry bench reader --nsqd-tcp-address h:1 --channel c#ephemeral --rdy 10 \
                    -c 2 --runfor 2m --expect 1000 --size 50";
        let BenchCommand::Reader(args) = parse(line).unwrap() else {
            panic!("not the reader");
        };
        assert_eq!(args.common.broker.tcp_address, "h:1");
        assert_eq!(args.channel, "c#ephemeral");
        assert_eq!(args.common.connections, 2);
        assert_eq!(args.common.runfor, Duration::from_secs(120));
        assert_eq!((args.rdy, args.expect, args.size), (10, Some(1000), 50));
    }

    #[test]
    fn bad_values_are_refused() {
        for line in [
            "ferry bench writer --runfor 10",
            "ferry bench writer --runfor 0s",
            "ferry bench writer --size 0",
            "ferry bench writer --batch-size 0",
            "ferry bench writer --pipeline 0",
            "ferry bench writer --connections 0",
            "ferry bench writer --topic a/b",
            "ferry bench reader --channel a:b",
            "ferry bench reader --rdy 0",
            "ferry bench reader --expect 0",
            "ferry bench reader --batch-size 2",
            "ferry bench latency",
            "ferry bench latency --rate 0",
            "ferry bench latency --rate 10 --size 0",
            "ferry bench latency --rate 10 --size 7",
            "ferry bench latency --rate 10 --rdy 0",
        ] {
            assert!(parse(line).is_err(), "{line}");
        }
    }

    #[test]
    fn latency_defaults_and_flags() {
        let BenchCommand::Latency(args) = parse("ferry bench latency --rate 10000").unwrap() else {
            panic!("not latency");
        };
        assert_eq!(args.broker.tcp_address, "127.0.0.1:4150");
        assert_eq!((args.rate, args.size, args.rdy), (10_000, 200, 2500));
        assert_eq!(args.runfor, Duration::from_secs(10));
        assert!(!args.json);
        let line = "ferry bench latency --rate 5 --size 8 --max-in-flight 10 --runfor 2s --json \
                    --topic t --channel c";
        let command = parse(line).unwrap();
        assert!(command.json() && !command.verbose());
        let BenchCommand::Latency(args) = command else {
            panic!("not latency");
        };
        assert_eq!((args.rate, args.size, args.rdy), (5, 8, 10));
        assert_eq!((args.topic.as_str(), args.channel.as_str()), ("t", "c"));
    }

    #[test]
    fn help_explains_how_to_compare_brokers() {
        let err = parse("ferry bench --help").unwrap_err();
        let help = err.to_string();
        for needle in ["nsqd", "--expect", "empty", "depth", "same"] {
            assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
        }
    }

    #[test]
    fn identify_names_the_tool() {
        let body = identify_body(Role::Reader, 3, true);
        let req = ferry_proto::identify::IdentifyRequest::from_json(&body).unwrap();
        assert_eq!(req.client_id, "ferry-bench-reader-3");
        assert!(req.user_agent.starts_with("ferry-bench/"));
        assert!(req.feature_negotiation);
    }
}
