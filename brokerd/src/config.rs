//! Broker configuration: NSQ's flag names and defaults (nsqd/options.go), parsed with clap, and
//! optionally read from an NSQ-style TOML file (`--config`), where keys are the flag names with
//! underscores (`max_msg_size = 2048`) and command-line flags win over the file.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};

/// Every knob of `brokerd`. Defaults are nsqd 1.3's.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "brokerd",
    version,
    about = "Ferry's broker: NSQ-compatible topics and channels over a durable, mmap-backed log",
    long_about = "Ferry's broker daemon. Speaks NSQ's TCP protocol (V2) and HTTP API, so every NSQ \
                  client and tool works with it. Every published message is written once to its \
                  topic's log on disk before it is acknowledged; channels are cursors into that log."
)]
pub struct Config {
    /// NSQ-style TOML config file (keys are flag names with underscores); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on for TCP clients (NSQ protocol V2).
    #[arg(long, default_value = "0.0.0.0:4150")]
    pub tcp_address: SocketAddr,

    /// Address to listen on for HTTP clients.
    #[arg(long, default_value = "0.0.0.0:4151")]
    pub http_address: SocketAddr,

    /// Address to listen on for gRPC clients (`proto/ferry/v1/broker.proto`).
    #[arg(long, default_value = "0.0.0.0:4153")]
    pub grpc_address: SocketAddr,

    /// Address this broker is reached at by consumers (registered with lookupd). Default: hostname.
    #[arg(long)]
    pub broadcast_address: Option<String>,

    /// Unique id of this broker (0-1023), reported in /info and /stats.
    #[arg(long, default_value_t = 0)]
    pub node_id: u16,

    /// Directory that holds the topic logs.
    #[arg(long, default_value = ".")]
    pub data_path: PathBuf,

    /// Size of one log segment file in bytes (each is preallocated).
    #[arg(long, default_value_t = 104_857_600)]
    pub max_bytes_per_file: u64,

    /// Number of messages per topic after which the log is synced to disk (msync + fsync).
    #[arg(long, default_value_t = 2500)]
    pub sync_every: u64,

    /// Longest time a topic's log goes unsynced while it has new messages.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub sync_timeout: Duration,

    /// Default time a consumer has to FIN/REQ/TOUCH a message before it is redelivered.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub msg_timeout: Duration,

    /// Largest msg_timeout a client may ask for in IDENTIFY (and the cap of TOUCH extensions).
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub max_msg_timeout: Duration,

    /// Largest single message body in bytes.
    #[arg(long, default_value_t = 1_048_576)]
    pub max_msg_size: u32,

    /// Largest command body (MPUB batch, IDENTIFY) in bytes.
    #[arg(long, default_value_t = 5_242_880)]
    pub max_body_size: u32,

    /// Largest REQ delay and DPUB defer time.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub max_req_timeout: Duration,

    /// Largest heartbeat interval a client may ask for.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub max_heartbeat_interval: Duration,

    /// Largest RDY count a client may send (larger is a fatal E_INVALID).
    #[arg(long, default_value_t = 2500)]
    pub max_rdy_count: u64,

    /// Largest output buffer a client may ask for, in bytes.
    #[arg(long, default_value_t = 65_536)]
    pub max_output_buffer_size: i64,

    /// Largest output buffer timeout a client may ask for.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub max_output_buffer_timeout: Duration,

    /// Smallest output buffer timeout a client may ask for.
    #[arg(long, default_value = "25ms", value_parser = parse_duration)]
    pub min_output_buffer_timeout: Duration,

    /// Most consumers one channel accepts (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub max_channel_consumers: usize,

    /// Messages an #ephemeral topic keeps in memory before it drops the oldest.
    #[arg(long, default_value_t = 10_000)]
    pub mem_queue_size: usize,

    /// Most simultaneous TCP client connections.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,

    /// A lookupd to register with (host:port of its TCP interface); repeat for several.
    #[arg(long = "lookupd-tcp-address", value_name = "ADDR")]
    pub lookupd_tcp_addresses: Vec<String>,

    /// Log filter: error, warn, info, debug, trace (or a tracing EnvFilter expression).
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// Parses Go-style durations ("250ms", "60s", "15m", "1h") and plain milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

impl Config {
    /// Parses the process's command line, merging `--config` if given.
    pub fn from_env_args() -> Result<Config, clap::Error> {
        Self::from_args(std::env::args_os())
    }

    /// Parses `args` (program name first), merging the TOML file named by `--config`.
    pub fn from_args<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let first = Config::try_parse_from(&args)?;
        let Some(path) = first.config.clone() else {
            return Ok(first);
        };
        let file_args = config_file_args(&path)
            .map_err(|msg| Config::command().error(clap::error::ErrorKind::InvalidValue, msg))?;
        // File values go first so that the command line, parsed after them, wins.
        let mut merged: Vec<OsString> = Vec::with_capacity(args.len() + file_args.len());
        merged.push(args.first().cloned().unwrap_or_else(|| "brokerd".into()));
        merged.extend(file_args);
        merged.extend(args.into_iter().skip(1));
        let matches = Config::command()
            .args_override_self(true)
            .try_get_matches_from(merged)?;
        Config::from_arg_matches(&matches)
    }

    /// The configuration tests and `ferry dev` use: loopback, ephemeral ports, given data dir.
    pub fn for_tests(data_path: impl Into<PathBuf>) -> Config {
        let mut cfg = Config::try_parse_from(["brokerd"]).expect("defaults parse");
        cfg.tcp_address = "127.0.0.1:0".parse().expect("addr");
        cfg.http_address = "127.0.0.1:0".parse().expect("addr");
        cfg.grpc_address = "127.0.0.1:0".parse().expect("addr");
        cfg.data_path = data_path.into();
        cfg.broadcast_address = Some("127.0.0.1".into());
        cfg
    }

    /// The broadcast address: the flag, or this machine's hostname.
    pub fn broadcast_address(&self) -> String {
        self.broadcast_address
            .clone()
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned())
    }
}

/// Turns a TOML file into `--flag=value` arguments (arrays become repeated flags).
fn config_file_args(path: &std::path::Path) -> Result<Vec<OsString>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("cannot parse config file {}: {e}", path.display()))?;
    let known: Vec<String> = Config::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect();
    let mut out = Vec::new();
    for (key, value) in table {
        // NSQ's config files name some options differently from their flags.
        let flag = match key.as_str() {
            "nsqlookupd_tcp_addresses" => "lookupd-tcp-address".to_owned(),
            other => other.replace('_', "-"),
        };
        if flag == "config" {
            continue;
        }
        if !known.contains(&flag) {
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

    #[test]
    fn defaults_are_nsqds() {
        let c = Config::from_args(["brokerd"]).unwrap();
        assert_eq!(c.tcp_address.port(), 4150);
        assert_eq!(c.http_address.port(), 4151);
        assert_eq!(c.grpc_address.port(), 4153);
        assert_eq!(c.max_msg_size, 1_048_576);
        assert_eq!(c.max_body_size, 5_242_880);
        assert_eq!(c.msg_timeout, Duration::from_secs(60));
        assert_eq!(c.max_msg_timeout, Duration::from_secs(15 * 60));
        assert_eq!(c.max_req_timeout, Duration::from_secs(3600));
        assert_eq!(c.max_rdy_count, 2500);
        assert_eq!(c.sync_every, 2500);
        assert_eq!(c.max_bytes_per_file, 104_857_600);
    }

    #[test]
    fn config_file_is_merged_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nsqd.cfg");
        std::fs::write(
            &path,
            "max_msg_size = 2048\nmsg_timeout = \"5s\"\ntcp_address = \"127.0.0.1:5150\"\n",
        )
        .unwrap();
        let c = Config::from_args([
            "brokerd",
            "--config",
            path.to_str().unwrap(),
            "--max-msg-size",
            "4096",
        ])
        .unwrap();
        assert_eq!(c.max_msg_size, 4096, "flag wins over file");
        assert_eq!(c.msg_timeout, Duration::from_secs(5));
        assert_eq!(c.tcp_address.port(), 5150);
    }

    #[test]
    fn unknown_config_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.cfg");
        std::fs::write(&path, "no_such_option = 1\n").unwrap();
        let err = Config::from_args(["brokerd", "--config", path.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("no_such_option"), "{err}");
    }

    #[test]
    fn durations_parse_go_style() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("1500").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("soon").is_err());
    }
}
