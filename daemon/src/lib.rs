//! `ferry-daemon`: the plumbing Ferry's daemons share, so that `brokerd`, `lookupd` and
//! `admin-ui` start, log, read config files and stop the same way.
//!
//! - [`main`]: a multi-threaded runtime running the daemon until SIGINT or SIGTERM;
//! - [`init_logging`] with [`LogFormat`] (`--log-level`, `--log-format`);
//! - [`parse_nsq_style`]: command lines and `--config` TOML files as NSQ's daemons take them
//!   (Go-style `-flag=value`, NSQ-only flags accepted with a warning, the command line winning);
//! - [`parse_duration`]: Go-style durations or plain milliseconds, as NSQ's flags take them.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

mod flags;

pub use flags::{IgnoredFlag, NsqCompat, Parsed, go_style_args, parse_nsq_style};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the current span's fields.
    Json,
}

/// Logs to stderr at `level` (an EnvFilter expression, or one of NSQ's level names: `debug`,
/// `info`, `warn`, `error`, `fatal`, any case; `info` if it does not parse), as text or as one
/// JSON object per line carrying the current span's fields.
pub fn init_logging(level: &str, format: LogFormat) {
    let level = nsq_log_level(level);
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
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

/// NSQ's log level names in tracing's terms (`fatal` is `error`; names are case-insensitive).
fn nsq_log_level(level: &str) -> String {
    match level.trim().to_ascii_lowercase().as_str() {
        "fatal" => "error".to_owned(),
        "warning" => "warn".to_owned(),
        l @ ("debug" | "info" | "warn" | "error" | "trace") => l.to_owned(),
        _ => level.to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsq_log_levels() {
        assert_eq!(nsq_log_level("FATAL"), "error");
        assert_eq!(nsq_log_level("Warning"), "warn");
        assert_eq!(nsq_log_level("info"), "info");
        assert_eq!(nsq_log_level("ferry=debug"), "ferry=debug");
    }

    #[test]
    fn durations_go_style_or_milliseconds() {
        assert_eq!(parse_duration("250"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("soon").is_err());
    }
}
