//! [`Config`]: every knob of producers and consumers, with go-nsq's defaults.
//!
//! A `Config` is plain data built with chained setters; [`Producer`](crate::Producer) and
//! [`Consumer`](crate::Consumer) check it ([`Config::validate`]) when they are created, so a bad
//! value is reported once, up front, rather than as a broker error later.
//!
//! | setting | default | used by |
//! |---|---|---|
//! | `max_in_flight` | 1 | consumer: messages in flight over all connections |
//! | `heartbeat_interval` | 30 s | both, sent in IDENTIFY |
//! | `read_timeout` / `write_timeout` | 60 s / 1 s | both |
//! | `dial_timeout` | 1 s | both |
//! | `lookupd_poll_interval` / `lookupd_poll_jitter` | 60 s / 0.3 | consumer |
//! | `max_attempts` | 5 | consumer handler |
//! | `default_requeue_delay` / `max_requeue_delay` | 90 s / 15 min | consumer |
//! | `backoff_multiplier` / `max_backoff_duration` | 1 s / 2 min | consumer RDY backoff |
//! | `rdy_redistribute_interval` | 5 s | consumer |
//! | `msg_timeout` | broker default | consumer, sent in IDENTIFY |

use std::time::Duration;

use crate::error::Error;

/// Settings of a [`Producer`](crate::Producer) or [`Consumer`](crate::Consumer).
///
/// Start from [`Config::new`] (go-nsq's defaults) and change what you need:
///
/// ```
/// use std::time::Duration;
/// use ferry_client::Config;
///
/// let config = Config::new()
///     .max_in_flight(100)
///     .lookupd_poll_interval(Duration::from_secs(15))
///     .client_id("billing-worker");
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) max_in_flight: u64,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) read_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) dial_timeout: Duration,
    pub(crate) lookupd_poll_interval: Duration,
    pub(crate) lookupd_poll_jitter: f64,
    pub(crate) lookupd_poll_timeout: Duration,
    pub(crate) max_attempts: u16,
    pub(crate) default_requeue_delay: Duration,
    pub(crate) max_requeue_delay: Duration,
    pub(crate) backoff_multiplier: Duration,
    pub(crate) max_backoff_duration: Duration,
    pub(crate) rdy_redistribute_interval: Duration,
    pub(crate) low_rdy_idle_timeout: Duration,
    pub(crate) low_rdy_timeout: Duration,
    pub(crate) msg_timeout: Option<Duration>,
    pub(crate) output_buffer_size: u64,
    pub(crate) output_buffer_timeout: Duration,
    pub(crate) sample_rate: u8,
    pub(crate) client_id: String,
    pub(crate) hostname: String,
    pub(crate) user_agent: String,
    pub(crate) auth_secret: Option<String>,
    pub(crate) tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    pub(crate) snappy: bool,
    pub(crate) deflate: Option<u32>,
    pub(crate) concurrent_handlers: usize,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) reconnect_delay: Duration,
    pub(crate) max_reconnect_delay: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

impl Config {
    /// go-nsq's defaults; `client_id` is the short hostname, `hostname` the full one.
    ///
    /// ```
    /// let config = ferry_client::Config::new();
    /// assert!(config.validate().is_ok());
    /// ```
    pub fn new() -> Config {
        let hostname = gethostname::gethostname().to_string_lossy().into_owned();
        let client_id = hostname.split('.').next().unwrap_or_default().to_owned();
        Config {
            max_in_flight: 1,
            heartbeat_interval: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(1),
            dial_timeout: Duration::from_secs(1),
            lookupd_poll_interval: Duration::from_secs(60),
            lookupd_poll_jitter: 0.3,
            lookupd_poll_timeout: Duration::from_secs(60),
            max_attempts: 5,
            default_requeue_delay: Duration::from_secs(90),
            max_requeue_delay: Duration::from_secs(15 * 60),
            backoff_multiplier: Duration::from_secs(1),
            max_backoff_duration: Duration::from_secs(2 * 60),
            rdy_redistribute_interval: Duration::from_secs(5),
            low_rdy_idle_timeout: Duration::from_secs(10),
            low_rdy_timeout: Duration::from_secs(30),
            msg_timeout: None,
            output_buffer_size: 16 * 1024,
            output_buffer_timeout: Duration::from_millis(250),
            sample_rate: 0,
            client_id,
            hostname,
            user_agent: concat!("ferry-client/", env!("CARGO_PKG_VERSION")).to_owned(),
            auth_secret: None,
            tls: None,
            snappy: false,
            deflate: None,
            concurrent_handlers: 1,
            shutdown_timeout: Duration::from_secs(30),
            reconnect_delay: Duration::from_secs(1),
            max_reconnect_delay: Duration::from_secs(60),
        }
    }

    /// Most messages a consumer has in flight (delivered, not yet finished or requeued) over all
    /// its connections. Each connection gets `max(1, max_in_flight / connections)` (RDY), capped
    /// at the broker's `max_rdy_count`. `0` pauses consumption. Default 1.
    ///
    /// ```
    /// let config = ferry_client::Config::new().max_in_flight(200);
    /// ```
    pub fn max_in_flight(mut self, n: u64) -> Config {
        self.max_in_flight = n;
        self
    }

    /// How often the broker sends a heartbeat (answered with `NOP`); 1 s up to the broker's
    /// maximum (60 s by default). Default 30 s.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = ferry_client::Config::new().heartbeat_interval(Duration::from_secs(10));
    /// ```
    pub fn heartbeat_interval(mut self, interval: Duration) -> Config {
        self.heartbeat_interval = interval;
        self
    }

    /// Longest wait for any bytes from the broker before the connection is declared dead; must
    /// exceed `heartbeat_interval`. Default 60 s.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = ferry_client::Config::new().read_timeout(Duration::from_secs(90));
    /// ```
    pub fn read_timeout(mut self, timeout: Duration) -> Config {
        self.read_timeout = timeout;
        self
    }

    /// Longest time one socket write may take before the connection is declared dead.
    /// Default 1 s (go-nsq's).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = ferry_client::Config::new().write_timeout(Duration::from_secs(5));
    /// ```
    pub fn write_timeout(mut self, timeout: Duration) -> Config {
        self.write_timeout = timeout;
        self
    }

    /// Longest time to establish a TCP connection (and to complete the handshake). Default 1 s.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = ferry_client::Config::new().dial_timeout(Duration::from_secs(3));
    /// ```
    pub fn dial_timeout(mut self, timeout: Duration) -> Config {
        self.dial_timeout = timeout;
        self
    }

    /// How often a consumer asks its lookupds which brokers have its topic. Default 60 s.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = ferry_client::Config::new().lookupd_poll_interval(Duration::from_secs(10));
    /// ```
    pub fn lookupd_poll_interval(mut self, interval: Duration) -> Config {
        self.lookupd_poll_interval = interval;
        self
    }

    /// Fraction (0 to 1) of the poll interval by which each wait is randomly shortened, so that
    /// many consumers do not poll in step. Default 0.3.
    ///
    /// ```
    /// let config = ferry_client::Config::new().lookupd_poll_jitter(0.1);
    /// ```
    pub fn lookupd_poll_jitter(mut self, jitter: f64) -> Config {
        self.lookupd_poll_jitter = jitter;
        self
    }

    /// Longest time one lookupd HTTP query may take. Default 60 s.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = ferry_client::Config::new().lookupd_poll_timeout(Duration::from_secs(5));
    /// ```
    pub fn lookupd_poll_timeout(mut self, timeout: Duration) -> Config {
        self.lookupd_poll_timeout = timeout;
        self
    }

    /// Deliveries after which a handler's failure gives the message up: the handler's
    /// `on_give_up` is called and the message is finished. `0` retries forever. Default 5.
    ///
    /// ```
    /// let config = ferry_client::Config::new().max_attempts(10);
    /// ```
    pub fn max_attempts(mut self, attempts: u16) -> Config {
        self.max_attempts = attempts;
        self
    }

    /// Base of the requeue delay when a handler fails: the message is requeued for
    /// `default_requeue_delay × attempts`, at most `max_requeue_delay` (go-nsq's rule).
    /// Default 90 s.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = ferry_client::Config::new().default_requeue_delay(Duration::from_secs(5));
    /// ```
    pub fn default_requeue_delay(mut self, delay: Duration) -> Config {
        self.default_requeue_delay = delay;
        self
    }

    /// Cap of the automatic requeue delay. Default 15 min.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = ferry_client::Config::new().max_requeue_delay(Duration::from_secs(60));
    /// ```
    pub fn max_requeue_delay(mut self, delay: Duration) -> Config {
        self.max_requeue_delay = delay;
        self
    }

    /// Unit of the consumer's backoff: after failures at backoff level `n` every connection
    /// gets `RDY 0` for `backoff_multiplier × 2ⁿ`. Default 1 s.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = ferry_client::Config::new().backoff_multiplier(Duration::from_millis(100));
    /// ```
    pub fn backoff_multiplier(mut self, unit: Duration) -> Config {
        self.backoff_multiplier = unit;
        self
    }

    /// Longest backoff pause; `Duration::ZERO` disables backoff. Default 2 min.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let no_backoff = ferry_client::Config::new().max_backoff_duration(Duration::ZERO);
    /// ```
    pub fn max_backoff_duration(mut self, max: Duration) -> Config {
        self.max_backoff_duration = max;
        self
    }

    /// How often RDY is moved between connections when there are more connections than
    /// `max_in_flight` (or while backing off). Default 5 s.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = ferry_client::Config::new().rdy_redistribute_interval(Duration::from_secs(1));
    /// ```
    pub fn rdy_redistribute_interval(mut self, interval: Duration) -> Config {
        self.rdy_redistribute_interval = interval;
        self
    }

    /// During redistribution, a connection holding RDY that received nothing for this long gives
    /// it up to another. Default 10 s.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = ferry_client::Config::new().low_rdy_idle_timeout(Duration::from_secs(2));
    /// ```
    pub fn low_rdy_idle_timeout(mut self, timeout: Duration) -> Config {
        self.low_rdy_idle_timeout = timeout;
        self
    }

    /// During redistribution, a connection that has held RDY this long gives it up to another
    /// even if busy, so that every broker is served. Default 30 s.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = ferry_client::Config::new().low_rdy_timeout(Duration::from_secs(10));
    /// ```
    pub fn low_rdy_timeout(mut self, timeout: Duration) -> Config {
        self.low_rdy_timeout = timeout;
        self
    }

    /// Time the broker waits for FIN/REQ/TOUCH before redelivering a message; `None` keeps the
    /// broker's default (60 s for nsqd and Ferry). Default `None`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = ferry_client::Config::new().msg_timeout(Some(Duration::from_secs(120)));
    /// ```
    pub fn msg_timeout(mut self, timeout: Option<Duration>) -> Config {
        self.msg_timeout = timeout;
        self
    }

    /// Bytes the broker may buffer before writing to this client (64 up to the broker's
    /// maximum; 0 = the broker's default). Default 16 KiB.
    ///
    /// ```
    /// let config = ferry_client::Config::new().output_buffer_size(64 * 1024);
    /// ```
    pub fn output_buffer_size(mut self, bytes: u64) -> Config {
        self.output_buffer_size = bytes;
        self
    }

    /// Longest time the broker may hold buffered messages (25 ms to 30 s; zero = the broker's
    /// default). Default 250 ms.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = ferry_client::Config::new().output_buffer_timeout(Duration::from_millis(25));
    /// ```
    pub fn output_buffer_timeout(mut self, timeout: Duration) -> Config {
        self.output_buffer_timeout = timeout;
        self
    }

    /// Percentage of messages (0 = all, 1 to 99) the broker delivers to this consumer; the rest
    /// are dropped for it. Default 0.
    ///
    /// ```
    /// let config = ferry_client::Config::new().sample_rate(10);
    /// ```
    pub fn sample_rate(mut self, percent: u8) -> Config {
        self.sample_rate = percent;
        self
    }

    /// Identifier shown in the broker's stats. Default: the short hostname.
    ///
    /// ```
    /// let config = ferry_client::Config::new().client_id("worker-7");
    /// ```
    pub fn client_id(mut self, id: impl Into<String>) -> Config {
        self.client_id = id.into();
        self
    }

    /// Hostname shown in the broker's stats. Default: this machine's hostname.
    ///
    /// ```
    /// let config = ferry_client::Config::new().hostname("worker-7.example.com");
    /// ```
    pub fn hostname(mut self, hostname: impl Into<String>) -> Config {
        self.hostname = hostname.into();
        self
    }

    /// User agent shown in the broker's stats. Default `ferry-client/<version>`.
    ///
    /// ```
    /// let config = ferry_client::Config::new().user_agent("billing/2.1 ferry-client");
    /// ```
    pub fn user_agent(mut self, agent: impl Into<String>) -> Config {
        self.user_agent = agent.into();
        self
    }

    /// Secret sent with `AUTH` when the broker requires authentication. Default none.
    ///
    /// ```
    /// let config = ferry_client::Config::new().auth_secret("s3cr3t");
    /// ```
    pub fn auth_secret(mut self, secret: impl Into<String>) -> Config {
        self.auth_secret = Some(secret.into());
        self
    }

    /// Upgrades every connection to TLS (IDENTIFY `tls_v1`) with this rustls configuration;
    /// [`crate::tls::client_config`] builds one from PEM files. The broker's certificate must be
    /// valid for the host part of the address connected to. Default: plain TCP.
    ///
    /// ```no_run
    /// # fn f() -> Result<(), ferry_client::Error> {
    /// let tls = ferry_client::tls::client_config(Some("ca.pem".as_ref()), None)?;
    /// let config = ferry_client::Config::new().tls(tls);
    /// # Ok(()) }
    /// ```
    pub fn tls(mut self, config: std::sync::Arc<rustls::ClientConfig>) -> Config {
        self.tls = Some(config);
        self
    }

    /// Compresses every connection with snappy (IDENTIFY `snappy`), if the broker allows it.
    /// Default off.
    ///
    /// ```
    /// let config = ferry_client::Config::new().snappy(true);
    /// ```
    pub fn snappy(mut self, on: bool) -> Config {
        self.snappy = on;
        self
    }

    /// Compresses every connection with DEFLATE at `level` (1-9; the broker may lower it), if
    /// the broker allows it. Default off. Not together with snappy.
    ///
    /// ```
    /// let config = ferry_client::Config::new().deflate(6);
    /// ```
    pub fn deflate(mut self, level: u32) -> Config {
        self.deflate = Some(level);
        self
    }

    /// How many messages a consumer's handler processes at once. Default 1 (go-nsq's
    /// `AddHandler`; raise it like `AddConcurrentHandlers`).
    ///
    /// ```
    /// let config = ferry_client::Config::new().max_in_flight(64).concurrent_handlers(16);
    /// ```
    pub fn concurrent_handlers(mut self, n: usize) -> Config {
        self.concurrent_handlers = n;
        self
    }

    /// Longest time `Consumer::stop` waits for in-flight messages to be handled (and
    /// `Producer::stop` for pending replies). Default 30 s.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = ferry_client::Config::new().shutdown_timeout(Duration::from_secs(5));
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Config {
        self.shutdown_timeout = timeout;
        self
    }

    /// First wait before a consumer reconnects to a broker whose connection dropped; doubled
    /// after each failed attempt up to `max_reconnect_delay`. Default 1 s.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = ferry_client::Config::new().reconnect_delay(Duration::from_millis(200));
    /// ```
    pub fn reconnect_delay(mut self, delay: Duration) -> Config {
        self.reconnect_delay = delay;
        self
    }

    /// Longest wait between reconnection attempts. Default 60 s.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = ferry_client::Config::new().max_reconnect_delay(Duration::from_secs(10));
    /// ```
    pub fn max_reconnect_delay(mut self, delay: Duration) -> Config {
        self.max_reconnect_delay = delay;
        self
    }

    /// Checks the settings against each other and the protocol's ranges.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use ferry_client::{Config, Error};
    ///
    /// let bad = Config::new().heartbeat_interval(Duration::from_secs(90));
    /// assert!(matches!(bad.validate(), Err(Error::InvalidConfig { .. })));
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        let check = |ok: bool, reason: &str| {
            if ok {
                Ok(())
            } else {
                Err(Error::InvalidConfig {
                    reason: reason.to_owned(),
                })
            }
        };
        check(
            self.heartbeat_interval >= Duration::from_secs(1),
            "heartbeat_interval must be at least 1s",
        )?;
        check(
            self.read_timeout > self.heartbeat_interval,
            "read_timeout must exceed heartbeat_interval",
        )?;
        check(
            !self.write_timeout.is_zero() && !self.dial_timeout.is_zero(),
            "write_timeout and dial_timeout must be positive",
        )?;
        check(
            (0.0..=1.0).contains(&self.lookupd_poll_jitter),
            "lookupd_poll_jitter must be between 0 and 1",
        )?;
        check(
            !self.lookupd_poll_interval.is_zero() && !self.rdy_redistribute_interval.is_zero(),
            "lookupd_poll_interval and rdy_redistribute_interval must be positive",
        )?;
        check(self.sample_rate <= 99, "sample_rate must be 0 to 99")?;
        check(
            !(self.snappy && self.deflate.is_some()),
            "snappy and deflate cannot both be on",
        )?;
        check(
            self.deflate.is_none_or(|l| (1..=9).contains(&l)),
            "deflate level must be 1 to 9",
        )?;
        check(
            self.concurrent_handlers >= 1,
            "concurrent_handlers must be at least 1",
        )?;
        check(
            self.msg_timeout.is_none_or(|t| t >= Duration::from_secs(1)),
            "msg_timeout must be at least 1s",
        )?;
        check(
            self.output_buffer_size == 0 || self.output_buffer_size >= 64,
            "output_buffer_size must be 0 (broker default) or at least 64",
        )?;
        check(
            self.output_buffer_timeout.is_zero()
                || self.output_buffer_timeout >= Duration::from_millis(25),
            "output_buffer_timeout must be zero (broker default) or at least 25ms",
        )?;
        Ok(())
    }

    /// The automatic requeue delay of a message delivered `attempts` times.
    pub(crate) fn requeue_delay(&self, attempts: u16) -> Duration {
        self.default_requeue_delay
            .saturating_mul(u32::from(attempts.max(1)))
            .min(self.max_requeue_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_go_nsq_s() {
        let c = Config::new();
        assert_eq!(c.max_in_flight, 1);
        assert_eq!(c.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(c.lookupd_poll_interval, Duration::from_secs(60));
        assert_eq!(c.max_attempts, 5);
        assert_eq!(c.default_requeue_delay, Duration::from_secs(90));
        assert_eq!(c.max_requeue_delay, Duration::from_secs(900));
        assert_eq!(c.max_backoff_duration, Duration::from_secs(120));
        assert_eq!(c.backoff_multiplier, Duration::from_secs(1));
        assert_eq!(c.dial_timeout, Duration::from_secs(1));
        assert_eq!(c.read_timeout, Duration::from_secs(60));
        assert_eq!(c.write_timeout, Duration::from_secs(1));
        assert_eq!(c.rdy_redistribute_interval, Duration::from_secs(5));
        assert_eq!(c.msg_timeout, None);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn requeue_delay_is_linear_and_capped() {
        let c = Config::new();
        assert_eq!(c.requeue_delay(1), Duration::from_secs(90));
        assert_eq!(c.requeue_delay(3), Duration::from_secs(270));
        assert_eq!(c.requeue_delay(100), Duration::from_secs(900));
        assert_eq!(c.requeue_delay(0), Duration::from_secs(90));
    }

    #[test]
    fn validate_rejects_inconsistent_settings() {
        let bad = [
            Config::new().heartbeat_interval(Duration::from_millis(10)),
            Config::new().read_timeout(Duration::from_secs(30)),
            Config::new().lookupd_poll_jitter(1.5),
            Config::new().sample_rate(100),
            Config::new().concurrent_handlers(0),
            Config::new().msg_timeout(Some(Duration::from_millis(10))),
            Config::new().output_buffer_size(10),
            Config::new().output_buffer_timeout(Duration::from_millis(1)),
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }
}
