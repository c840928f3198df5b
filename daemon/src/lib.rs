//! `ferry-daemon`: the plumbing Ferry's daemons share, so that `brokerd`, `lookupd` and
//! `admin-ui` start, log, read config files and stop the same way.
//!
//! - [`main`]: a multi-threaded runtime running the daemon until SIGINT or SIGTERM;
//! - [`init_logging`] with [`LogFormat`] (`--log-level`, `--log-format`);
//! - [`parse_nsq_style`]: command lines and `--config` TOML files as NSQ's daemons take them
//!   (Go-style `-flag=value`, NSQ-only flags accepted with a warning, the command line winning);
//! - [`parse_duration`]: Go-style durations or plain milliseconds, as NSQ's flags take them.

#![forbid(unsafe_code)]

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

mod flags;

pub use flags::{DaemonConfig, IgnoredFlag, NsqCompat, Parsed, go_style_args, parse_nsq_style};

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
/// JSON object per line carrying the current span's fields. Text is coloured only when stderr
/// is a terminal.
pub fn init_logging(level: &str, format: LogFormat) {
    let level = nsq_log_level(level);
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_stderr())
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

/// Colour codes only for a terminal, never into a file or a pipe; `NO_COLOR` (any value)
/// turns them off there too.
fn colour_stderr() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
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

/// A daemon's whole `main`: parses its configuration from the command line (exiting with
/// clap's message on a bad one), starts logging, logs the parse warnings, then runs
/// `daemon(config, shutdown)` as [`main`] does.
pub fn run_daemon<C, F, Fut, E>(name: &str, daemon: F) -> Result<(), E>
where
    C: DaemonConfig,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: From<std::io::Error>,
{
    let parsed = C::from_env_args().unwrap_or_else(|e| e.exit());
    let (level, format) = parsed.config.logging();
    init_logging(level, format);
    for warning in &parsed.warnings {
        tracing::warn!("{warning}");
    }
    let config = parsed.config;
    main(name, |shutdown| daemon(config, shutdown))
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

/// A byte size: a plain number of bytes, or a number with a unit: `KB`, `MB`, `GB`, `TB`
/// (powers of 1000) or `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024); `B` and a space before the
/// unit are allowed, case is not significant (`10GB`, `512 mib`, `4096`).
pub fn parse_byte_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let mult: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {unit:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            ));
        }
    };
    let value: f64 = num.parse().map_err(|e| {
        format!("invalid size {s:?}: {e}; expected a number of bytes, e.g. 10GB or 512MiB")
    })?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("invalid size {s:?}: out of range"));
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_with_decimal_and_binary_units() {
        assert_eq!(parse_byte_size("4096"), Ok(4096));
        assert_eq!(parse_byte_size("10GB"), Ok(10_000_000_000));
        assert_eq!(parse_byte_size("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_byte_size("1.5kb"), Ok(1500));
        assert_eq!(parse_byte_size("0"), Ok(0));
        assert!(parse_byte_size("10 parsecs").is_err());
        assert!(parse_byte_size("").is_err());
        assert!(parse_byte_size("-1GB").is_err());
    }

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
