//! `ferry-daemon`: the plumbing Ferry's daemons share, so that `brokerd`, `lookupd` and
//! `admin-ui` start, log, read config files and stop the same way.
//!
//! - [`main`]: a multi-threaded runtime running the daemon until SIGINT or SIGTERM;
//! - [`init_logging`] with [`LogFormat`] (`--log-level`, `--log-format`);
//! - [`parse_with_config_file`]: flags merged with an NSQ-style TOML file (`--config`), the
//!   command line winning;
//! - [`parse_duration`]: Go-style durations or plain milliseconds, as NSQ's flags take them.

use std::ffi::OsString;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the current span's fields.
    Json,
}

/// Logs to stderr at `level` (an EnvFilter expression; `info` if it does not parse), as text
/// or as one JSON object per line carrying the current span's fields.
pub fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the daemon can only be killed; keep serving.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Runs `daemon(shutdown)` on a multi-threaded runtime whose threads are named `name`;
/// `shutdown` is cancelled by SIGINT or SIGTERM.
pub fn main<F, Fut, E>(name: &str, daemon: F) -> Result<(), E>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: From<std::io::Error>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(name)
        .build()?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            signal.cancel();
        });
        daemon(shutdown).await
    })
}

/// Parses Go-style durations ("250ms", "60s", "15m", "1h") and plain milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// Parses `args` (program name first) into `C`; when `config_file(&parsed)` names a file,
/// its options come first and the command line, parsed after them, wins. `renames` maps NSQ
/// config-file keys whose flag is named differently (`("nsqlookupd_tcp_addresses",
/// "lookupd-tcp-address")`).
pub fn parse_with_config_file<C, I, T>(
    args: I,
    config_file: impl Fn(&C) -> Option<&Path>,
    renames: &[(&str, &str)],
) -> Result<C, clap::Error>
where
    C: Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let first = C::try_parse_from(&args)?;
    let Some(path) = config_file(&first).map(Path::to_path_buf) else {
        return Ok(first);
    };
    let file_args = config_file_args(&C::command(), &path, renames)
        .map_err(|msg| C::command().error(clap::error::ErrorKind::InvalidValue, msg))?;
    let mut merged: Vec<OsString> = Vec::with_capacity(args.len() + file_args.len());
    merged.extend(args.first().cloned());
    merged.extend(file_args);
    merged.extend(args.into_iter().skip(1));
    let matches = C::command()
        .args_override_self(true)
        .try_get_matches_from(merged)?;
    C::from_arg_matches(&matches)
}

/// Turns a TOML file into `--flag=value` arguments for `command` (arrays become repeated
/// flags; `snake_case` keys become `kebab-case` flags unless `renames` says otherwise).
fn config_file_args(
    command: &clap::Command,
    path: &Path,
    renames: &[(&str, &str)],
) -> Result<Vec<OsString>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("cannot parse config file {}: {e}", path.display()))?;
    let known: Vec<&str> = command
        .get_arguments()
        .filter_map(|a| a.get_long())
        .collect();
    let mut out = Vec::new();
    for (key, value) in table {
        let flag = match renames.iter().find(|(k, _)| *k == key) {
            Some((_, flag)) => (*flag).to_owned(),
            None => key.replace('_', "-"),
        };
        if flag == "config" {
            continue;
        }
        if !known.contains(&flag.as_str()) {
            return Err(format!(
                "config file {}: unknown option {key:?}",
                path.display()
            ));
        }
        let values = match value {
            toml::Value::Array(items) => items,
            other => vec![other],
        };
        for v in values {
            let text = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => return Err(format!("config option {key:?}: unsupported value {other}")),
            };
            out.push(OsString::from(format!("--{flag}={text}")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 1)]
        size: u32,
        #[arg(long = "peer")]
        peers: Vec<String>,
    }

    #[test]
    fn the_command_line_wins_over_the_file() {
        let dir = std::env::temp_dir().join(format!("ferry-daemon-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f.cfg");
        std::fs::write(&file, "size = 7\nnsq_peers = [\"a\", \"b\"]\n").unwrap();
        let cfg = file.to_str().unwrap();
        let renames = [("nsq_peers", "peer")];
        let f: Flags = parse_with_config_file(
            ["x", "--config", cfg],
            |f: &Flags| f.config.as_deref(),
            &renames,
        )
        .unwrap();
        assert_eq!((f.size, f.peers.clone()), (7, vec!["a".into(), "b".into()]));
        let f: Flags = parse_with_config_file(
            ["x", "--config", cfg, "--size", "9"],
            |f: &Flags| f.config.as_deref(),
            &renames,
        )
        .unwrap();
        assert_eq!(f.size, 9);
        std::fs::write(&file, "nope = 1\n").unwrap();
        let err = parse_with_config_file::<Flags, _, _>(
            ["x", "--config", cfg],
            |f: &Flags| f.config.as_deref(),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown option \"nope\""), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn durations_go_style_or_milliseconds() {
        assert_eq!(parse_duration("250"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("soon").is_err());
    }
}
