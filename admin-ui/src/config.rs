//! admin-ui configuration: nsqadmin's flag names and defaults where nsqadmin has the flag
//! (`--http-address`, `--lookupd-http-address`, `--nsqd-http-address`, `--admin-user`,
//! `--acl-http-header`, `--http-client-*-timeout`), plus Ferry's own knobs for live updates and
//! history. Every limit is a flag.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// Every knob of `admin-ui`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "admin-ui",
    version,
    about = "Ferry's operator dashboard: topics, channels, clients and nodes, live, with history",
    long_about = "Ferry's operator dashboard (nsqadmin's pages, updated live, with a chart of \
                  each topic's and channel's rate and depth). It finds brokers through lookupd \
                  (--lookupd-http-address) or is given them (--broker-http-address); it reads \
                  NSQ's /stats JSON, so it works with nsqd as well as with Ferry's brokerd."
)]
pub struct Config {
    /// Address to listen on for HTTP clients (browsers).
    #[arg(long, default_value = "0.0.0.0:4171")]
    pub http_address: SocketAddr,

    /// HTTP address of a lookup daemon (host:port); repeat for several.
    #[arg(long = "lookupd-http-address", value_name = "ADDR")]
    pub lookupd_http_addresses: Vec<String>,

    /// HTTP address of a broker (host:port) to show even when no lookupd knows it; repeat for
    /// several. `--nsqd-http-address` (nsqadmin's name) is accepted too.
    #[arg(
        long = "broker-http-address",
        alias = "nsqd-http-address",
        value_name = "ADDR"
    )]
    pub broker_http_addresses: Vec<String>,

    /// A user allowed to take actions (pause, empty, delete, create); repeat for several. When
    /// none is given, anyone who reaches the page may act.
    #[arg(long = "admin-user", value_name = "USER")]
    pub admin_users: Vec<String>,

    /// Request header that names the user (set by the authenticating proxy in front).
    #[arg(long, default_value = "X-Forwarded-User")]
    pub acl_http_header: String,

    /// PEM CA certificate(s) that brokers' and lookupds' HTTPS certificates are checked
    /// against (default: the system's roots). Give addresses as `https://host:4152` for HTTPS.
    #[arg(long, value_name = "FILE")]
    pub http_client_tls_root_ca_file: Option<std::path::PathBuf>,

    /// PEM client certificate for HTTPS requests (with `--http-client-tls-key`).
    #[arg(long, value_name = "FILE", requires = "http_client_tls_key")]
    pub http_client_tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of `--http-client-tls-cert`.
    #[arg(long, value_name = "FILE", requires = "http_client_tls_cert")]
    pub http_client_tls_key: Option<std::path::PathBuf>,

    /// Timeout for connecting to a broker or lookupd.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub http_client_connect_timeout: Duration,

    /// Timeout for a whole request to a broker or lookupd.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub http_client_request_timeout: Duration,

    /// How often the sampler records every topic's and channel's counts for the charts.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub sample_interval: Duration,

    /// How much history the charts keep (in memory).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub history: Duration,

    /// Most topics + channels whose history is kept; new ones beyond it are not charted.
    #[arg(long, default_value_t = 10_000)]
    pub max_history_series: usize,

    /// How often an open page receives fresh numbers (server-sent events).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub refresh_interval: Duration,

    /// Most pages receiving live updates at once; more get 503 on their event stream.
    #[arg(long, default_value_t = 256)]
    pub max_live_clients: usize,

    /// Most brokers or lookupds asked at the same time.
    #[arg(long, default_value_t = 32)]
    pub max_concurrent_requests: usize,

    /// Largest reply accepted from a broker or lookupd.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_response_bytes: usize,

    /// Alert when a channel's depth (summed over brokers) rose at this many samples in a row;
    /// it resolves when the depth falls, or has not risen for as many samples. 0 disables.
    #[arg(long, default_value = "8", value_parser = parse_count, value_name = "N")]
    pub alert_depth_rising_samples: u32,

    /// Alert when a channel has had messages waiting and no consumer connected for this long.
    /// 0 disables.
    #[arg(long, default_value = "5m", value_parser = parse_window)]
    pub alert_no_consumer_after: Duration,

    /// Alert when a channel's timeouts plus requeues exceed this many per second (between two
    /// samples). 0 disables.
    #[arg(long, default_value = "10", value_parser = parse_rate, value_name = "PER_SEC")]
    pub alert_retry_rate: f64,

    /// Alert when messages were dead-lettered on a channel within this window (it resolves
    /// once none were for as long). 0 disables.
    #[arg(long, default_value = "5m", value_parser = parse_window)]
    pub alert_dead_letters: Duration,

    /// Alert when messages expired (max age) on a channel within this window. 0 disables.
    #[arg(long, default_value = "5m", value_parser = parse_window)]
    pub alert_expired: Duration,

    /// Alert when a broker's `/stats` failed, or its health was not OK (disk full...), at this
    /// many samples in a row. 0 disables.
    #[arg(long, default_value = "2", value_parser = parse_count, value_name = "N")]
    pub alert_broker_down_samples: u32,

    /// Alert when a broker (given with --broker-http-address, or listed by a lookupd before)
    /// is missing from every lookupd that answered, at this many samples in a row. 0 disables.
    #[arg(long, default_value = "3", value_parser = parse_count, value_name = "N")]
    pub alert_broker_missing_samples: u32,

    /// Alert when a replicated topic's member has been stuck this long (the leader knows no
    /// matched index for it, or its lag stays above 0 without moving, or its broker does not
    /// answer), or when no member of the group reports itself leader for as long. 0 disables.
    #[arg(long, default_value = "30s", value_parser = parse_window)]
    pub alert_replica_lost_after: Duration,

    /// Resolved alerts kept for the alerts page.
    #[arg(long, default_value_t = 100)]
    pub alert_max_resolved: usize,

    /// URL that receives a JSON POST when an alert fires or resolves (Slack-compatible `text`
    /// plus the alert's fields); repeat for several.
    #[arg(long = "alert-webhook-url", value_name = "URL")]
    pub alert_webhook_urls: Vec<String>,

    /// Notifications waiting per webhook; more are dropped (and logged).
    #[arg(long, default_value_t = 1000)]
    pub alert_webhook_max_queue: usize,

    /// Tries per notification (with exponential backoff from 250ms, at most 30s apart).
    #[arg(long, default_value_t = 6)]
    pub alert_webhook_attempts: u32,

    /// Log filter: error, warn, info, debug, trace (or a tracing EnvFilter expression).
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// Parses Go-style durations ("250ms", "10s", "1h") and plain milliseconds.
pub use ferry_daemon::parse_duration;

/// A count where empty means 0 (off).
fn parse_count(s: &str) -> Result<u32, String> {
    match s.trim() {
        "" => Ok(0),
        t => t.parse().map_err(|e| format!("{t:?}: {e}")),
    }
}

/// A rate where empty means 0 (off).
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim() {
        "" => Ok(0.0),
        t => match t.parse::<f64>() {
            Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
            _ => Err(format!("{t:?} is not a rate (a number, 0 = off)")),
        },
    }
}

/// A duration where empty means 0 (off).
fn parse_window(s: &str) -> Result<Duration, String> {
    match s.trim() {
        "" => Ok(Duration::ZERO),
        t => parse_duration(t),
    }
}

impl Config {
    /// Parses `args` (program name first); long flags may have one dash, as nsqadmin's do.
    pub fn from_args<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::CommandFactory as _;
        let args = args.into_iter().map(Into::into).collect();
        let config = Config::try_parse_from(ferry_daemon::go_style_args(args, &Config::command()))?;
        config
            .validate()
            .map_err(|msg| Config::command().error(clap::error::ErrorKind::InvalidValue, msg))?;
        Ok(config)
    }

    /// Parses the process's command line.
    pub fn from_env_args() -> Result<Config, clap::Error> {
        Self::from_args(std::env::args_os())
    }

    /// The configuration tests and `ferry dev` use: loopback, an ephemeral port, fast updates.
    pub fn for_tests() -> Config {
        let mut cfg = Config::try_parse_from(["admin-ui"]).expect("defaults parse");
        cfg.http_address = SocketAddr::from(([127, 0, 0, 1], 0));
        cfg.sample_interval = Duration::from_millis(200);
        cfg.refresh_interval = Duration::from_millis(200);
        cfg.http_client_connect_timeout = Duration::from_secs(1);
        cfg.http_client_request_timeout = Duration::from_secs(2);
        cfg
    }

    /// Checks values clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.sample_interval.is_zero() || self.refresh_interval.is_zero() {
            return Err("--sample-interval and --refresh-interval must be above zero".into());
        }
        if self.history < self.sample_interval {
            return Err("--history must be at least --sample-interval".into());
        }
        if self.alert_webhook_max_queue == 0 || self.alert_webhook_attempts == 0 {
            return Err(
                "--alert-webhook-max-queue and --alert-webhook-attempts must be at least 1".into(),
            );
        }
        if let Some(bad) = self
            .alert_webhook_urls
            .iter()
            .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            return Err(format!("--alert-webhook-url {bad:?}: not an http(s) URL"));
        }
        if self.max_concurrent_requests == 0 {
            return Err("--max-concurrent-requests must be at least 1".into());
        }
        Ok(())
    }

    /// Samples kept per series: the history window divided by the sample interval, plus one.
    pub fn history_len(&self) -> usize {
        let n = self.history.as_millis() / self.sample_interval.as_millis().max(1);
        usize::try_from(n).unwrap_or(usize::MAX).saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_nsqadmins() {
        let c = Config::from_args(["admin-ui"]).unwrap();
        assert_eq!(c.http_address, "0.0.0.0:4171".parse().unwrap());
        assert_eq!(c.acl_http_header, "X-Forwarded-User");
        assert!(c.admin_users.is_empty());
        assert_eq!(c.sample_interval, Duration::from_secs(10));
        assert_eq!(c.history, Duration::from_secs(3600));
        assert_eq!(c.history_len(), 361);
        assert_eq!(c.alert_depth_rising_samples, 8);
        assert_eq!(c.alert_no_consumer_after, Duration::from_secs(300));
        assert_eq!(c.alert_retry_rate, 10.0);
        assert_eq!(c.alert_replica_lost_after, Duration::from_secs(30));
    }

    #[test]
    fn zero_or_empty_disables_an_alert() {
        let c = Config::from_args([
            "admin-ui",
            "--alert-depth-rising-samples=",
            "--alert-no-consumer-after",
            "0",
            "--alert-retry-rate=",
            "--alert-dead-letters=",
        ])
        .unwrap();
        assert_eq!(c.alert_depth_rising_samples, 0);
        assert_eq!(c.alert_no_consumer_after, Duration::ZERO);
        assert_eq!(c.alert_retry_rate, 0.0);
        assert_eq!(c.alert_dead_letters, Duration::ZERO);
    }

    #[test]
    fn repeatable_addresses_and_nsqd_alias() {
        let c = Config::from_args([
            "admin-ui",
            "--lookupd-http-address",
            "a:4161",
            "--lookupd-http-address=b:4161",
            "--broker-http-address",
            "c:4151",
            "--nsqd-http-address",
            "d:4151",
            "--admin-user",
            "alice",
            "--admin-user",
            "bob",
        ])
        .unwrap();
        assert_eq!(c.lookupd_http_addresses, ["a:4161", "b:4161"]);
        assert_eq!(c.broker_http_addresses, ["c:4151", "d:4151"]);
        assert_eq!(c.admin_users, ["alice", "bob"]);
    }

    #[test]
    fn bad_intervals_are_rejected() {
        assert!(Config::from_args(["admin-ui", "--sample-interval", "0"]).is_err());
        assert!(
            Config::from_args(["admin-ui", "--sample-interval", "10s", "--history", "1s"]).is_err()
        );
        assert!(parse_duration("soon").is_err());
        assert!(Config::from_args(["admin-ui", "--alert-webhook-url", "hooks"]).is_err());
        assert!(Config::from_args(["admin-ui", "--alert-retry-rate", "-1"]).is_err());
        assert_eq!(parse_duration("1500").unwrap(), Duration::from_millis(1500));
    }
}
