//! `ferry`: Ferry's operator tool. Parses the command line and hands over to the library.

#![forbid(unsafe_code)]

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};
use ferry_cli::admin::{self, Action, AdminArgs};
use ferry_cli::api;
use ferry_cli::bench::BenchArgs;
use ferry_cli::config::{self, ConfigArgs};
use ferry_cli::create::{self, CreateArgs};
use ferry_cli::dev::{self, DevArgs};
use ferry_cli::feed::{to_broker, to_file, to_http};
use ferry_cli::import::{self, ImportArgs};
use ferry_cli::peek::{self, PeekArgs};
use ferry_cli::publish::{self, PubArgs};
use ferry_cli::redrive::{self, RedriveArgs};
use ferry_cli::rewind::{self, RewindArgs};
use ferry_cli::stat::{self, StatArgs};
use ferry_cli::tail::{self, TailArgs};
use tokio_util::sync::CancellationToken;

/// Ferry's operator tool.
#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = "Ferry's operator tool",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `ferry`'s subcommands; each holds its own flags.
#[derive(Debug, Subcommand)]
enum Command {
    // About and help text come from `BenchArgs`.
    Bench(BenchArgs),
    /// Create a topic (and a channel of it) before anything is published; `--replicas N`
    /// makes it a Raft group of N brokers, formed by one broker among those lookupd lists.
    Create(CreateArgs),
    /// Pause a topic or channel on every broker that holds it (messages keep queueing).
    Pause(AdminArgs),
    /// Resume a paused topic or channel on every broker that holds it.
    Unpause(AdminArgs),
    /// Drop a channel's messages (queued, in flight and deferred), or a topic's own backlog
    /// (what it keeps for a first channel; its channels keep theirs, as with nsqd), on every
    /// broker that holds it.
    Empty(AdminArgs),
    /// Delete a topic or channel, with its messages, on every broker that holds it.
    Delete(AdminArgs),
    /// Move a channel back to a point of its topic's retained log (earliest, a time, -1h) on
    /// every broker that holds the topic, so the messages from there on are delivered again.
    Rewind(RewindArgs),
    /// Show the next messages a channel would deliver, its in-flight and its deferred ones on
    /// every broker that holds the topic (changes nothing).
    Peek(PeekArgs),
    /// Show, or change with the setting flags, a topic's retention and a channel's max age,
    /// max attempts and dead-letter topic on every broker that holds the topic.
    Config(ConfigArgs),
    /// Publish the messages of a dead-letter topic's channel to another topic (the one they
    /// came from) on every broker that holds the dead-letter topic.
    Redrive(RedriveArgs),
    /// Live table of a topic's or channel's depth, in-flight, deferred, requeued, timed-out
    /// counts and message rate, summed across brokers (like nsq_stat).
    Stat(StatArgs),
    /// Print a topic's messages as they arrive (on a private ephemeral channel by default, so
    /// no consumer loses a message and no channel is left behind).
    Tail(TailArgs),
    /// Publish the given messages, or each line of stdin (batched with MPUB).
    Pub(PubArgs),
    /// Run lookupd, a broker (three with `--replicas 3`) and the admin dashboard on loopback
    /// in this process, data under the current directory: a complete Ferry for development.
    /// Ctrl-C stops it.
    Dev(DevArgs),
    /// Count what brokerd would import from nsqd 1.x data (nsqd.dat and its disk queues) in a
    /// directory, without changing anything: messages, bytes and paused flag per topic and
    /// channel.
    ImportNsqd(ImportArgs),
    /// Archive topics to files, rotated and optionally gzipped (like nsq_to_file).
    ToFile(to_file::ToFileArgs),
    /// Send each message to an HTTP endpoint (like nsq_to_http).
    ToHttp(to_http::ToHttpArgs),
    /// Copy topics to other brokers (like nsq_to_nsq).
    ToBroker(to_broker::ToBrokerArgs),
}

fn main() -> ExitCode {
    // Long flags may have one dash, as in NSQ's Go tools (`ferry tail -topic=t -n 10`).
    let args = ferry_daemon::go_style_args(std::env::args_os().collect(), &Cli::command());
    let cli = Cli::parse_from(args);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ferry")
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&anyhow::Error::new(err).context("cannot start the runtime")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // A first Ctrl-C (or SIGTERM) ends a run early and cleanly (it still reports what it
    // did); a second Ctrl-C exits at once.
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return;
        };
        tokio::select! {
            r = tokio::signal::ctrl_c() => if r.is_err() { return },
            _ = term.recv() => {}
        }
        on_signal.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
    match cli.command {
        Command::Create(a) => {
            let report = create::run(&a).await?;
            print!("{}", report.render());
            if report.failed.len() > 1 {
                for failure in &report.failed {
                    eprintln!("ferry: {failure}");
                }
            }
            report.outcome()
        }
        Command::Pause(a) => admin_command(Action::Pause, &a).await,
        Command::Unpause(a) => admin_command(Action::Unpause, &a).await,
        Command::Empty(a) => admin_command(Action::Empty, &a).await,
        Command::Delete(a) => admin_command(Action::Delete, &a).await,
        Command::Rewind(a) => {
            let answers = rewind::run(&a).await?;
            print!("{}", rewind::render(&a, &answers));
            api::all_succeeded(&answers)
        }
        Command::Peek(a) => {
            let answers = peek::run(&a).await?;
            if a.json {
                println!("{:#}", api::to_json(&answers));
            } else {
                print!(
                    "{}",
                    peek::render(&a, &answers, std::time::SystemTime::now())
                );
            }
            api::all_succeeded(&answers)
        }
        Command::Config(a) => {
            let report = config::run(&a).await?;
            print!("{}", config::render(&a, &report));
            api::all_succeeded(report.answers())
        }
        Command::Redrive(a) => {
            let answers = redrive::run(&a).await?;
            print!("{}", redrive::render(&a, &answers));
            api::all_succeeded(&answers)
        }
        Command::Stat(a) => stat::run(&a, shutdown).await,
        Command::Tail(a) => {
            let mut out = std::io::BufWriter::new(std::io::stdout());
            tail::run(&a, &mut out, shutdown).await.map(drop)
        }
        Command::Pub(a) => {
            let stdin_is_terminal = std::io::stdin().is_terminal();
            if a.messages.is_empty() && stdin_is_terminal {
                eprintln!("ferry pub: reading messages from stdin, one per line (Ctrl-D ends)");
            }
            let input = Box::new(std::io::BufReader::with_capacity(1 << 16, std::io::stdin()));
            let report = publish::run(&a, input, !stdin_is_terminal, shutdown).await?;
            let skipped = match report.skipped_empty {
                0 => String::new(),
                n => format!(" ({n} empty lines skipped)"),
            };
            let noun = if report.published == 1 {
                "message"
            } else {
                "messages"
            };
            println!(
                "published {} {noun} to {}{skipped}",
                report.published, a.topic
            );
            Ok(())
        }
        Command::Dev(a) => {
            ferry_daemon::init_logging(&a.log_filter(), ferry_daemon::LogFormat::Text);
            dev::run(&a, shutdown, |addrs| {
                print!("{}", dev::banner(addrs, &a.data_path));
                let _ = std::io::stdout().flush();
            })
            .await
        }
        Command::ImportNsqd(a) => {
            print!("{}", import::run(&a)?);
            Ok(())
        }
        Command::ToFile(a) => to_file::run(&a, shutdown).await,
        Command::ToHttp(a) => to_http::run(&a, shutdown).await,
        Command::ToBroker(a) => to_broker::run(&a, shutdown).await,
        Command::Bench(bench) => {
            let report = ferry_cli::bench::run(&bench.command, shutdown).await?;
            if bench.command.json() {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.render(bench.command.verbose()));
            }
            if let Some(shortfall) = report.shortfall() {
                anyhow::bail!(shortfall);
            }
            Ok(())
        }
    }
}

async fn admin_command(action: Action, args: &AdminArgs) -> anyhow::Result<()> {
    let answers = admin::run(action, args).await?;
    print!("{}", admin::render(action, args, &answers));
    api::all_succeeded(&answers)
}

fn fail(err: &anyhow::Error) -> ExitCode {
    eprintln!("ferry: error: {err:#}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bench_subcommands_parse() {
        let cli = Cli::try_parse_from(["ferry", "bench", "writer", "--runfor", "1s"]).unwrap();
        let Command::Bench(bench) = cli.command else {
            panic!("bench expected");
        };
        assert!(matches!(
            bench.command,
            ferry_cli::bench::BenchCommand::Writer(_)
        ));
        assert!(Cli::try_parse_from(["ferry", "bench"]).is_err());
        assert!(Cli::try_parse_from(["ferry", "bench", "nope"]).is_err());
    }
}
