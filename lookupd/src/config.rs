//! Lookup daemon configuration: nsqlookupd 1.3's flag names and defaults
//! (nsqlookupd/options.go), parsed as nsqlookupd parses them (`-flag=value` or `--flag value`),
//! and optionally read from nsqlookupd's TOML config file (`--config`), where keys are the flag
//! names with underscores (`tombstone_lifetime = "45s"`) and command-line flags win over the
//! file. Every nsqlookupd flag is accepted; [`NSQLOOKUPD_IGNORED_FLAGS`] have no effect.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
pub use ferry_daemon::DaemonConfig;
use ferry_daemon::{IgnoredFlag, NsqCompat};

/// Every knob of `lookupd`. Defaults are nsqlookupd 1.3's.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "lookupd",
    version,
    about = "Ferry's lookup daemon: brokers register their topics, clients find the brokers",
    long_about = "Ferry's lookup daemon, wire-compatible with nsqlookupd. Brokers register their \
                  topics and channels over TCP (lookup protocol V1); consumers and operators ask \
                  over HTTP which brokers hold a topic (/lookup, /topics, /channels, /nodes)."
)]
pub struct Config {
    /// NSQ-style TOML config file (keys are flag names with underscores); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on for brokers (lookup protocol V1).
    #[arg(long, default_value = "0.0.0.0:4160")]
    pub tcp_address: SocketAddr,

    /// Address to listen on for HTTP clients.
    #[arg(long, default_value = "0.0.0.0:4161")]
    pub http_address: SocketAddr,

    /// Address of this lookupd, sent to brokers in the IDENTIFY reply. Default: hostname.
    #[arg(long)]
    pub broadcast_address: Option<String>,

    /// How long a broker stays in /lookup and /nodes after its last PING (or IDENTIFY).
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub inactive_producer_timeout: Duration,

    /// How long a tombstoned broker stays hidden from /lookup for its topic.
    #[arg(long, default_value = "45s", value_parser = parse_duration)]
    pub tombstone_lifetime: Duration,

    /// Most simultaneous broker (TCP) connections.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,

    /// Log filter: error, warn, info, debug, trace (or a tracing EnvFilter expression).
    #[arg(long, default_value = "info")]
    pub log_level: String,

    /// Log line format: `text` (human-readable) or `json` (one JSON object per line).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
pub use ferry_daemon::LogFormat;

/// nsqlookupd 1.3 flags Ferry accepts (so that its command lines and config files work
/// unchanged) but has no use for.
pub const NSQLOOKUPD_IGNORED_FLAGS: &[IgnoredFlag] = &[
    IgnoredFlag {
        name: "verbose",
        takes_value: false,
        why: "deprecated in nsqlookupd as well; use --log-level",
    },
    IgnoredFlag {
        name: "log-prefix",
        takes_value: true,
        why: "log lines name their source themselves (--log-format json for structured logs)",
    },
];

/// Parses Go-style durations ("250ms", "45s", "5m", "1h") and plain milliseconds.
pub use ferry_daemon::parse_duration;

impl ferry_daemon::DaemonConfig for Config {
    const COMPAT: NsqCompat<'static> = NsqCompat {
        renames: &[],
        ignored: NSQLOOKUPD_IGNORED_FLAGS,
    };

    fn config_file(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }

    fn logging(&self) -> (&str, LogFormat) {
        (&self.log_level, self.log_format)
    }
}

impl Config {
    /// The configuration tests and `ferry dev` use: loopback and ephemeral ports.
    pub fn for_tests() -> Config {
        let mut cfg = Config::try_parse_from(["lookupd"]).expect("defaults parse");
        cfg.tcp_address = SocketAddr::from(([127, 0, 0, 1], 0));
        cfg.http_address = SocketAddr::from(([127, 0, 0, 1], 0));
        cfg.broadcast_address = Some("127.0.0.1".into());
        cfg
    }

    /// The broadcast address: the flag, or this machine's hostname.
    pub fn broadcast_address(&self) -> String {
        self.broadcast_address.clone().unwrap_or_else(hostname)
    }
}

/// This machine's host name (what nsqlookupd reports as `hostname`).
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_nsqlookupds() {
        let c = Config::from_args(["lookupd"]).unwrap();
        assert_eq!(c.tcp_address, "0.0.0.0:4160".parse().unwrap());
        assert_eq!(c.http_address, "0.0.0.0:4161".parse().unwrap());
        assert_eq!(c.inactive_producer_timeout, Duration::from_secs(300));
        assert_eq!(c.tombstone_lifetime, Duration::from_secs(45));
        assert_eq!(c.log_level, "info");
        assert_eq!(c.broadcast_address, None);
        assert_eq!(c.broadcast_address(), hostname());
    }

    #[test]
    fn for_tests_is_loopback_with_ephemeral_ports() {
        let c = Config::for_tests();
        assert_eq!(c.tcp_address, "127.0.0.1:0".parse().unwrap());
        assert_eq!(c.http_address, "127.0.0.1:0".parse().unwrap());
        assert_eq!(c.broadcast_address(), "127.0.0.1");
    }

    #[test]
    fn config_file_is_merged_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nsqlookupd.cfg");
        std::fs::write(
            &path,
            "tcp_address = \"127.0.0.1:5160\"\ntombstone_lifetime = \"10s\"\n\
             inactive_producer_timeout = \"1m\"\nbroadcast_address = \"lookup.example\"\n",
        )
        .unwrap();
        let c = Config::from_args([
            "lookupd",
            "--config",
            path.to_str().unwrap(),
            "--tombstone-lifetime",
            "2s",
        ])
        .unwrap();
        assert_eq!(c.tombstone_lifetime, Duration::from_secs(2), "flag wins");
        assert_eq!(c.inactive_producer_timeout, Duration::from_secs(60));
        assert_eq!(c.tcp_address.port(), 5160);
        assert_eq!(c.broadcast_address(), "lookup.example");
    }

    #[test]
    fn nsqlookupd_config_file_and_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nsqlookupd.cfg");
        // Every key of nsqlookupd 1.3's example config, plus one it does not know.
        std::fs::write(
            &path,
            "log_level = \"info\"\nlog_prefix = \"[nsqlookupd] \"\ntcp_address = \"127.0.0.1:5160\"\n\
             http_address = \"127.0.0.1:5161\"\nbroadcast_address = \"\"\n\
             inactive_producer_timeout = \"300s\"\ntombstone_lifetime = \"45s\"\n\
             no_such_option = 1\n",
        )
        .unwrap();
        let p = Config::parse_nsq_style([
            "nsqlookupd",
            &format!("-config={}", path.display()),
            "-verbose",
            "-tombstone-lifetime",
            "30s",
            "-log-level=WARN",
        ])
        .unwrap();
        assert_eq!(p.config.tcp_address.port(), 5160);
        assert_eq!(p.config.http_address.port(), 5161);
        assert_eq!(
            p.config.tombstone_lifetime,
            Duration::from_secs(30),
            "flag wins"
        );
        assert_eq!(p.config.broadcast_address, None, "empty string = unset");
        assert_eq!(p.config.log_level, "WARN");
        let warnings = p.warnings.join("\n");
        assert_eq!(p.warnings.len(), 3, "{warnings}");
        assert!(warnings.contains("no_such_option"), "{warnings}");
        assert!(warnings.contains("--verbose"), "{warnings}");
        assert!(warnings.contains("--log-prefix"), "{warnings}");
    }

    #[test]
    fn durations_parse_go_style() {
        assert_eq!(parse_duration("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1500").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("soon").is_err());
    }
}
