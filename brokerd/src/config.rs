//! Broker configuration: nsqd 1.3's flag names and defaults (nsqd/options.go), parsed with clap
//! as nsqd parses them (`-flag=value` or `--flag value`), and optionally read from nsqd's TOML
//! config file (`--config`), where keys are the flag names with underscores (`max_msg_size =
//! 2048`) and command-line flags win over the file. Every nsqd flag is accepted: the few with no
//! meaning in Ferry are listed in [`NSQD_IGNORED_FLAGS`] and logged once at startup.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
pub use ferry_daemon::DaemonConfig;
use ferry_daemon::{IgnoredFlag, NsqCompat};

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

    /// TCP port registered with lookupd, for a broker reached through a port mapping or proxy
    /// (nsqd 1.3's flag). 0: the port `--tcp-address` listens on.
    #[arg(long, default_value_t = 0)]
    pub broadcast_tcp_port: u16,

    /// HTTP port registered with lookupd, and the one the other replicas of a replicated
    /// topic send Raft traffic to (nsqd 1.3's flag). 0: the port `--http-address` listens on.
    #[arg(long, default_value_t = 0)]
    pub broadcast_http_port: u16,

    /// Unique id of this broker (0-1023), reported in /info and /stats.
    #[arg(long, default_value_t = 0)]
    pub node_id: u16,

    /// Directory that holds the topic logs.
    #[arg(long, default_value = ".")]
    pub data_path: PathBuf,

    /// Largest size of one log segment file in bytes (segments start at 64 KiB and grow to it).
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

    /// How long a topic keeps messages every channel has finished with, so channels can be
    /// rewound to them (0 = deleted once consumed, as nsqd). Per topic: `POST /topic/config`.
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub retention: Duration,

    /// Most bytes of finished-with messages a topic keeps (0 = no byte bound; with
    /// `--retention` too, whichever is reached first deletes). Units: KB, MB, GB, KiB, ...
    #[arg(long, default_value = "0", value_parser = ferry_daemon::parse_byte_size)]
    pub retention_bytes: u64,

    /// Deliveries after which a REQ or timeout sends a message to the channel's dead-letter
    /// topic (`<topic>.dead`) instead (0 = unlimited, as nsqd). Per channel:
    /// `POST /channel/config`. Not applied to channels of topics named `*.dead`.
    #[arg(long, default_value_t = 0)]
    pub max_attempts: u16,

    /// Longest message body `/channel/peek` shows, in bytes (longer ones are cut).
    #[arg(long, default_value_t = 4096)]
    pub max_peek_bytes: usize,

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

    /// An auth server (host:port or URL) that AUTH secrets are checked against; repeatable.
    /// With one, clients must AUTH before SUB/PUB (IDENTIFY says `auth_required`).
    #[arg(long = "auth-http-address", value_name = "ADDR")]
    pub auth_http_addresses: Vec<String>,

    /// Replicas of a topic created by `POST /topic/create` without `replicas=`: 1 (one
    /// broker, NSQ's behaviour) or an odd number of brokers, chosen among those lookupd lists,
    /// that each hold the topic in one Raft group.
    #[arg(long, default_value_t = 1, value_parser = parse_replicas)]
    pub default_replicas: usize,

    /// A replicated topic's replica snapshots its state every this many Raft log entries
    /// (one entry is one PUB, MPUB or DPUB, or one round of channel ops), then deletes the
    /// log files below it but a quarter of that; a member too far behind installs the
    /// snapshot and fetches the messages it lacks. 0: never (the Raft log grows for ever).
    #[arg(long, default_value_t = 2048)]
    pub raft_snapshot_every: u64,

    /// Connect timeout of the HTTP requests this broker makes (auth servers, lookupd).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub http_client_connect_timeout: Duration,

    /// Whole-request timeout of the HTTP requests this broker makes (auth servers, lookupd).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub http_client_request_timeout: Duration,

    /// PEM certificate (chain) for TLS: turns on `tls_v1` in IDENTIFY and the HTTPS server.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s) that client certificates are verified against.
    #[arg(long, value_name = "FILE")]
    pub tls_root_ca_file: Option<PathBuf>,

    /// Client certificates: `require` (any certificate) or `require-verify` (signed by
    /// `--tls-root-ca-file`). Default: not asked for (verified if given and a root CA is set).
    #[arg(long, value_name = "POLICY", value_parser = ["require", "require-verify"])]
    pub tls_client_auth_policy: Option<String>,

    /// Require TLS: `true` (TCP clients must upgrade with IDENTIFY tls_v1; plain HTTP answers
    /// 403 TLS_REQUIRED), `tcp-https` (TCP must upgrade; HTTP stays open) or `false`.
    #[arg(long, value_name = "MODE", default_value = "false", value_parser = ["true", "false", "tcp-https"], num_args = 0..=1, default_missing_value = "true")]
    pub tls_required: String,

    /// Lowest TLS version accepted: ssl3.0, tls1.0, tls1.1, tls1.2 or tls1.3 (TLS 1.2 is the
    /// lowest this broker speaks, so the first three mean tls1.2).
    #[arg(long, value_name = "VERSION", default_value = "tls1.0", value_parser = ["ssl3.0", "tls1.0", "tls1.1", "tls1.2", "tls1.3"])]
    pub tls_min_version: String,

    /// HTTPS address (served only when `--tls-cert` is set).
    #[arg(long, default_value = "0.0.0.0:4152")]
    pub https_address: SocketAddr,

    /// Allow snappy compression (IDENTIFY `snappy`).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub snappy: bool,

    /// Allow DEFLATE compression (IDENTIFY `deflate`).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub deflate: bool,

    /// Highest DEFLATE level a client may ask for (1-9).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub max_deflate_level: u32,

    /// Log filter: error, warn, info, debug, trace (or a tracing EnvFilter expression).
    #[arg(long, default_value = "info")]
    pub log_level: String,

    /// Log line format: `text` (human-readable) or `json` (one JSON object per line).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// End-to-end (publish to FIN) latency percentile to report in /stats, in (0, 1]; repeat
    /// or comma-separate for several ("0.99,0.95"). Default: none (latency not tracked).
    #[arg(
        long = "e2e-processing-latency-percentile",
        value_name = "Q",
        value_delimiter = ',',
        value_parser = parse_percentile
    )]
    pub e2e_processing_latency_percentiles: Vec<f64>,

    /// Window of FINs the end-to-end latency percentiles describe (nsqd's meaning: "60s" shows
    /// the last 60 seconds).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub e2e_processing_latency_window_time: Duration,
}

/// How log lines are written.
pub use ferry_daemon::LogFormat;

/// nsqd 1.3 flags Ferry accepts (so that nsqd's command lines and config files work unchanged)
/// but has no use for.
pub const NSQD_IGNORED_FLAGS: &[IgnoredFlag] = &[
    IgnoredFlag {
        name: "verbose",
        takes_value: false,
        why: "deprecated in nsqd as well; use --log-level",
    },
    IgnoredFlag {
        name: "worker-id",
        takes_value: false,
        why: "deprecated in nsqd as well; use --node-id",
    },
    IgnoredFlag {
        name: "log-prefix",
        takes_value: true,
        why: "log lines name their source themselves (--log-format json for structured logs)",
    },
    IgnoredFlag {
        name: "queue-scan-worker-pool-max",
        takes_value: true,
        why: "there is no queue-scan loop: each channel wakes at its next timeout or deferral",
    },
    IgnoredFlag {
        name: "queue-scan-selection-count",
        takes_value: true,
        why: "there is no queue-scan loop: each channel wakes at its next timeout or deferral",
    },
    IgnoredFlag {
        name: "output-buffer-timeout",
        takes_value: true,
        why: "a client's messages are flushed as soon as its RDY credit or the channel's \
              ready messages run out, never held back by a timer",
    },
    IgnoredFlag {
        name: "statsd-address",
        takes_value: true,
        why: "metrics are served for Prometheus at /metrics instead of pushed to statsd",
    },
    IgnoredFlag {
        name: "statsd-interval",
        takes_value: true,
        why: "metrics are served for Prometheus at /metrics instead of pushed to statsd",
    },
    IgnoredFlag {
        name: "statsd-mem-stats",
        takes_value: false,
        why: "metrics are served for Prometheus at /metrics instead of pushed to statsd",
    },
    IgnoredFlag {
        name: "statsd-prefix",
        takes_value: true,
        why: "metrics are served for Prometheus at /metrics instead of pushed to statsd",
    },
    IgnoredFlag {
        name: "statsd-udp-packet-size",
        takes_value: true,
        why: "metrics are served for Prometheus at /metrics instead of pushed to statsd",
    },
    IgnoredFlag {
        name: "auth-fail-closed",
        takes_value: false,
        why: "an unreachable auth server always refuses AUTH (E_AUTH_FAILED)",
    },
    IgnoredFlag {
        name: "auth-fail-default-ttl",
        takes_value: true,
        why: "an unreachable auth server always refuses AUTH (E_AUTH_FAILED)",
    },
    IgnoredFlag {
        name: "auth-fail-default-identity",
        takes_value: true,
        why: "an unreachable auth server always refuses AUTH (E_AUTH_FAILED)",
    },
    IgnoredFlag {
        name: "auth-fail-default-identity-url",
        takes_value: true,
        why: "an unreachable auth server always refuses AUTH (E_AUTH_FAILED)",
    },
];

/// nsqd config-file keys whose flag has another name.
const NSQD_CONFIG_RENAMES: &[(&str, &str)] = &[
    ("id", "node-id"),
    ("nsqlookupd_tcp_addresses", "lookupd-tcp-address"),
    ("auth_http_addresses", "auth-http-address"),
    (
        "e2e_processing_latency_percentiles",
        "e2e-processing-latency-percentile",
    ),
];

/// A quantile in (0, 1], as nsqd accepts for `--e2e-processing-latency-percentile`.
pub fn parse_percentile(s: &str) -> Result<f64, String> {
    let q: f64 = s
        .trim()
        .parse()
        .map_err(|e| format!("invalid percentile {s:?}: {e}"))?;
    if q > 0.0 && q <= 1.0 {
        Ok(q)
    } else {
        Err(format!("percentile {q} is not in (0, 1]"))
    }
}

/// Parses a replica count: 1 or an odd number up to 9.
pub fn parse_replicas(text: &str) -> Result<usize, String> {
    let n: usize = text
        .trim()
        .parse()
        .map_err(|e| format!("{text:?} is not a number of replicas: {e}"))?;
    if n == 0 || n.is_multiple_of(2) || n > 9 {
        return Err(format!(
            "replicas must be 1 or an odd number up to 9 (a majority decides), not {n}"
        ));
    }
    Ok(n)
}

/// Parses Go-style durations ("250ms", "60s", "15m", "1h") and plain milliseconds.
pub use ferry_daemon::parse_duration;

impl ferry_daemon::DaemonConfig for Config {
    const COMPAT: NsqCompat<'static> = NsqCompat {
        renames: NSQD_CONFIG_RENAMES,
        ignored: NSQD_IGNORED_FLAGS,
    };

    fn config_file(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }

    fn logging(&self) -> (&str, LogFormat) {
        (&self.log_level, self.log_format)
    }
}

impl Config {
    /// The configuration tests and `ferry dev` use: loopback, ephemeral ports, given data dir.
    pub fn for_tests(data_path: impl Into<PathBuf>) -> Config {
        let mut cfg = Config::try_parse_from(["brokerd"]).expect("defaults parse");
        cfg.tcp_address = "127.0.0.1:0".parse().expect("addr");
        cfg.http_address = "127.0.0.1:0".parse().expect("addr");
        cfg.https_address = "127.0.0.1:0".parse().expect("addr");
        cfg.grpc_address = "127.0.0.1:0".parse().expect("addr");
        cfg.data_path = data_path.into();
        cfg.broadcast_address = Some("127.0.0.1".into());
        cfg
    }

    /// TCP clients must upgrade to TLS before anything but IDENTIFY.
    pub fn tls_required_tcp(&self) -> bool {
        self.tls_required != "false"
    }

    /// Plain HTTP is refused with 403 TLS_REQUIRED.
    pub fn tls_required_http(&self) -> bool {
        self.tls_required == "true"
    }

    /// The broadcast address: the flag, or this machine's hostname.
    pub fn broadcast_address(&self) -> String {
        self.broadcast_address
            .clone()
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn replicas_are_one_or_an_odd_number_up_to_nine() {
        for ok in ["1", "3", "5", " 9 "] {
            assert!(super::parse_replicas(ok).is_ok(), "{ok}");
        }
        for bad in ["0", "2", "4", "11", "-1", "three", ""] {
            assert!(super::parse_replicas(bad).is_err(), "{bad}");
        }
    }

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
    fn unknown_config_key_is_a_warning_as_in_nsqd() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd.cfg");
        std::fs::write(&path, "no_such_option = 1\nmax_msg_size = 10\n").unwrap();
        let p = Config::parse_nsq_style(["brokerd", "--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(p.config.max_msg_size, 10);
        assert_eq!(p.warnings.len(), 1);
        assert!(p.warnings[0].contains("no_such_option"), "{:?}", p.warnings);
    }

    #[test]
    fn every_nsqd_config_file_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nsqd.cfg");
        // Every option of nsqd 1.3's config file, with nsqd's key names and value types.
        std::fs::write(
            &path,
            r#"
id = 42
log_level = "warn"
log_prefix = "[nsqd] "
tcp_address = "127.0.0.1:5150"
http_address = "127.0.0.1:5151"
https_address = "127.0.0.1:5152"
broadcast_address = "broker-1.example"
nsqlookupd_tcp_addresses = ["127.0.0.1:4160", "127.0.0.1:4162"]
auth_http_addresses = ["127.0.0.1:4181"]
http_client_connect_timeout = "3s"
http_client_request_timeout = "7s"
data_path = "/var/lib/nsq"
mem_queue_size = 5000
max_bytes_per_file = 104857600
sync_every = 100
sync_timeout = "1s"
queue_scan_worker_pool_max = 4
queue_scan_selection_count = 20
msg_timeout = "30s"
max_msg_timeout = "10m"
max_msg_size = 2048
max_req_timeout = "2h"
max_body_size = 8192
max_heartbeat_interval = "30s"
max_rdy_count = 100
max_output_buffer_size = 32768
max_output_buffer_timeout = "1s"
min_output_buffer_timeout = "50ms"
output_buffer_timeout = "250ms"
max_channel_consumers = 3
statsd_address = ""
statsd_prefix = "nsq.%s"
statsd_interval = "60s"
statsd_mem_stats = true
statsd_udp_packet_size = 508
e2e_processing_latency_percentiles = [1.0, 0.99, 0.95]
e2e_processing_latency_window_time = "5m"
tls_cert = ""
tls_key = ""
tls_client_auth_policy = ""
tls_root_ca_file = ""
tls_required = false
tls_min_version = ""
deflate = true
max_deflate_level = 5
snappy = false
"#,
        )
        .unwrap();
        let cfg = path.to_str().unwrap();
        let p = Config::parse_nsq_style(["nsqd", "-config", cfg, "-max-rdy-count=200"]).unwrap();
        let c = p.config;
        assert_eq!(c.node_id, 42);
        assert_eq!(c.log_level, "warn");
        assert_eq!(c.tcp_address.port(), 5150);
        assert_eq!(c.https_address.port(), 5152);
        assert_eq!(c.broadcast_address(), "broker-1.example");
        assert_eq!(
            c.lookupd_tcp_addresses,
            ["127.0.0.1:4160", "127.0.0.1:4162"]
        );
        assert_eq!(c.auth_http_addresses, ["127.0.0.1:4181"]);
        assert_eq!(c.http_client_connect_timeout, Duration::from_secs(3));
        assert_eq!(c.data_path, PathBuf::from("/var/lib/nsq"));
        assert_eq!((c.mem_queue_size, c.sync_every), (5000, 100));
        assert_eq!(c.msg_timeout, Duration::from_secs(30));
        assert_eq!((c.max_msg_size, c.max_body_size), (2048, 8192));
        assert_eq!(c.max_rdy_count, 200, "the command line wins");
        assert_eq!(c.min_output_buffer_timeout, Duration::from_millis(50));
        assert_eq!(c.max_channel_consumers, 3);
        assert_eq!(c.e2e_processing_latency_percentiles, [1.0, 0.99, 0.95]);
        assert_eq!(c.tls_cert, None, "empty strings leave options unset");
        assert_eq!(
            (c.tls_required.as_str(), c.tls_min_version.as_str()),
            ("false", "tls1.0")
        );
        assert!(c.deflate && !c.snappy);
        assert_eq!(c.max_deflate_level, 5);
        let ignored: Vec<&str> = p
            .warnings
            .iter()
            .map(|w| w.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(
            ignored,
            [
                "--log-prefix",
                "--queue-scan-worker-pool-max",
                "--queue-scan-selection-count",
                "--output-buffer-timeout",
                "--statsd-interval",
                "--statsd-mem-stats",
                "--statsd-prefix",
                "--statsd-udp-packet-size",
            ],
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn e2e_percentiles_repeat_or_comma_separate() {
        let c = Config::from_args(["brokerd"]).unwrap();
        assert!(
            c.e2e_processing_latency_percentiles.is_empty(),
            "off by default"
        );
        assert_eq!(
            c.e2e_processing_latency_window_time,
            Duration::from_secs(600)
        );
        let c = Config::from_args([
            "brokerd",
            "--e2e-processing-latency-percentile=1.0,0.99",
            "--e2e-processing-latency-percentile",
            "0.5",
            "--e2e-processing-latency-window-time=60s",
        ])
        .unwrap();
        assert_eq!(c.e2e_processing_latency_percentiles, vec![1.0, 0.99, 0.5]);
        assert_eq!(
            c.e2e_processing_latency_window_time,
            Duration::from_secs(60)
        );
        for bad in ["0", "1.5", "-0.1", "p99"] {
            let arg = format!("--e2e-processing-latency-percentile={bad}");
            assert!(Config::from_args(["brokerd", &arg]).is_err(), "{bad}");
        }
    }

    #[test]
    fn e2e_percentiles_from_nsqd_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nsqd.cfg");
        std::fs::write(&path, "e2e_processing_latency_percentiles = [0.99, 0.5]\n").unwrap();
        let c = Config::from_args(["brokerd", "--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(c.e2e_processing_latency_percentiles, vec![0.99, 0.5]);
    }

    #[test]
    fn log_format_is_text_or_json() {
        let c = Config::from_args(["brokerd"]).unwrap();
        assert_eq!(c.log_format, LogFormat::Text);
        let c = Config::from_args(["brokerd", "--log-format", "json"]).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(Config::from_args(["brokerd", "--log-format", "xml"]).is_err());
    }

    #[test]
    fn durations_parse_go_style() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("1500").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("soon").is_err());
    }
}
