//! [`Producer`]: publishes to one broker over one pipelined connection.
//!
//! ```text
//! task A ─publish─┐                       ┌─ reply A (oneshot)
//! task B ─publish─┼─▶ ConnSender ─▶ writer ─▶ PUB A, MPUB B, DPUB C ─▶ broker
//! task C ─publish─┘   (mpsc)                 ◀─ OK, OK, E_BAD_MESSAGE ─┘ matched FIFO
//! ```
//!
//! Every clone of a `Producer` shares the connection; requests from many tasks are pipelined
//! and their answers matched in order. The connection is made on first use (or by
//! [`Producer::connect`]) and remade on the next call after it dies: requests that were in
//! flight when it died fail with [`Error::ConnectionLost`] (they may or may not have been
//! applied), requests that had not been written yet are sent on the new connection.
//!
//! Names and sizes the broker would refuse with a fatal error (closing the connection under
//! every other pipelined request) are checked here first and refused with the same code.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferry_proto::ErrorCode;
use ferry_proto::names::is_valid_topic_name;
use ferry_proto::v2::{Command, OK};
use tracing::debug;

use crate::config::Config;
use crate::conn::{self, ConnOptions, ConnSender, ReplyError};
use crate::error::Error;

/// Publishes messages to one broker; cheap to clone and share between tasks.
///
/// ```no_run
/// use std::time::Duration;
/// use ferry_client::{Config, Producer};
///
/// # async fn f() -> Result<(), ferry_client::Error> {
/// let producer = Producer::connect("127.0.0.1:4150", Config::new()).await?;
/// producer.publish("events", "hello").await?;
/// producer.multi_publish("events", ["a", "b", "c"]).await?;
/// producer.deferred_publish("events", Duration::from_secs(30), "later").await?;
/// producer.stop().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    addr: String,
    opts: ConnOptions,
    shutdown_timeout: Duration,
    /// The current connection. A `std` mutex: held only to clone or replace the handle.
    conn: Mutex<Option<ConnSender>>,
    /// Serializes (re)connecting, so that many callers make one connection.
    connecting: tokio::sync::Mutex<()>,
    stopped: AtomicBool,
}

impl Producer {
    /// A producer for the broker at `addr` (`host:port` of its TCP interface) that connects on
    /// first use.
    ///
    /// ```
    /// use ferry_client::{Config, Producer};
    /// let producer = Producer::new("127.0.0.1:4150", Config::new()).unwrap();
    /// assert_eq!(producer.addr(), "127.0.0.1:4150");
    /// ```
    pub fn new(addr: impl Into<String>, config: Config) -> Result<Producer, Error> {
        config.validate()?;
        Ok(Producer {
            inner: Arc::new(Inner {
                addr: addr.into(),
                opts: ConnOptions::new(&config),
                shutdown_timeout: config.shutdown_timeout,
                conn: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                stopped: AtomicBool::new(false),
            }),
        })
    }

    /// A producer connected to the broker at `addr`: fails at once if the broker cannot be
    /// reached or refuses the handshake.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ferry_client::Error> {
    /// let producer = ferry_client::Producer::connect("127.0.0.1:4150", Default::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(addr: impl Into<String>, config: Config) -> Result<Producer, Error> {
        let producer = Producer::new(addr, config)?;
        producer.connection().await?;
        Ok(producer)
    }

    /// The broker's address, as given.
    ///
    /// ```
    /// # let producer = ferry_client::Producer::new("b:4150", Default::default()).unwrap();
    /// assert_eq!(producer.addr(), "b:4150");
    /// ```
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// Publishes one message (`PUB`); returns once the broker has accepted it.
    ///
    /// ```no_run
    /// # async fn f(producer: ferry_client::Producer) -> Result<(), ferry_client::Error> {
    /// producer.publish("events", b"{\"kind\":\"signup\"}".to_vec()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish(&self, topic: &str, body: impl Into<Bytes>) -> Result<(), Error> {
        let body = body.into();
        check_topic(topic, "PUB")?;
        check_body(&body, "PUB")?;
        self.request(&Command::Pub {
            topic: topic.to_owned(),
            body,
        })
        .await
    }

    /// Publishes a batch atomically (`MPUB`): all messages or none.
    ///
    /// ```no_run
    /// # async fn f(producer: ferry_client::Producer) -> Result<(), ferry_client::Error> {
    /// let batch: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    /// producer.multi_publish("numbers", batch).await?;
    /// # Ok(()) }
    /// ```
    pub async fn multi_publish<I>(&self, topic: &str, bodies: I) -> Result<(), Error>
    where
        I: IntoIterator,
        I::Item: Into<Bytes>,
    {
        check_topic(topic, "MPUB")?;
        let bodies: Vec<Bytes> = bodies.into_iter().map(Into::into).collect();
        if bodies.is_empty() {
            return Err(Error::Protocol {
                code: ErrorCode::BadBody,
                message: "MPUB invalid message count 0".into(),
            });
        }
        for body in &bodies {
            check_body(body, "MPUB")?;
        }
        self.request(&Command::Mpub {
            topic: topic.to_owned(),
            bodies,
        })
        .await
    }

    /// Publishes one message delivered after `delay` (`DPUB`, millisecond precision; the broker
    /// refuses delays above its `--max-req-timeout`, 1 h by default).
    ///
    /// ```no_run
    /// # async fn f(producer: ferry_client::Producer) -> Result<(), ferry_client::Error> {
    /// producer.deferred_publish("reminders", std::time::Duration::from_secs(3600), "call back").await?;
    /// # Ok(()) }
    /// ```
    pub async fn deferred_publish(
        &self,
        topic: &str,
        delay: Duration,
        body: impl Into<Bytes>,
    ) -> Result<(), Error> {
        let body = body.into();
        check_topic(topic, "DPUB")?;
        check_body(&body, "DPUB")?;
        self.request(&Command::Dpub {
            topic: topic.to_owned(),
            defer_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            body,
        })
        .await
    }

    /// Stops: later calls fail with [`Error::Closed`]; requests already sent get their answers
    /// (for at most `shutdown_timeout`), then the connection closes. Idempotent.
    ///
    /// ```no_run
    /// # async fn f(producer: ferry_client::Producer) {
    /// producer.stop().await;
    /// # }
    /// ```
    pub async fn stop(&self) {
        self.inner.stopped.store(true, Ordering::Release);
        let conn = self.lock_conn().take();
        if let Some(conn) = conn {
            conn.close().await;
            let _ = tokio::time::timeout(self.inner.shutdown_timeout, conn.closed()).await;
            conn.abort();
        }
    }

    /// Sends `cmd` and waits for `OK`, reconnecting once if the connection was found dead
    /// before anything was written.
    async fn request(&self, cmd: &Command) -> Result<(), Error> {
        let mut encoded = BytesMut::new();
        cmd.encode(&mut encoded);
        let encoded = encoded.freeze();
        for _ in 0..2 {
            let conn = self.connection().await?;
            match conn.request(encoded.clone()).await {
                Ok(data) if data == OK => return Ok(()),
                Ok(data) => {
                    let text = String::from_utf8_lossy(&data[..data.len().min(64)]);
                    return Err(Error::UnexpectedFrame {
                        addr: self.inner.addr.clone(),
                        what: format!("response {text:?} to {}", cmd.name()),
                    });
                }
                Err(ReplyError::Failed(err)) => return Err(err),
                Err(ReplyError::NotSent) => {
                    debug!(addr = %self.inner.addr, "connection was closed, reconnecting");
                }
            }
        }
        Err(Error::ConnectionLost {
            addr: self.inner.addr.clone(),
        })
    }

    /// The live connection, made (once, whoever asks first) if there is none.
    async fn connection(&self) -> Result<ConnSender, Error> {
        if let Some(conn) = self.live_conn()? {
            return Ok(conn);
        }
        let _gate = self.inner.connecting.lock().await;
        if let Some(conn) = self.live_conn()? {
            return Ok(conn);
        }
        let opts = &self.inner.opts;
        let handshake = conn::connect(&self.inner.addr, opts, None).await?;
        let conn = handshake.start(opts, |_| None);
        debug!(addr = %self.inner.addr, "producer connected");
        let mut slot = self.lock_conn();
        if self.inner.stopped.load(Ordering::Acquire) {
            conn.abort();
            return Err(Error::Closed);
        }
        *slot = Some(conn.clone());
        Ok(conn)
    }

    fn live_conn(&self) -> Result<Option<ConnSender>, Error> {
        if self.inner.stopped.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(self.lock_conn().clone().filter(|c| !c.is_closed()))
    }

    fn lock_conn(&self) -> std::sync::MutexGuard<'_, Option<ConnSender>> {
        self.inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The broker's fatal `E_BAD_TOPIC`, without closing the shared connection.
fn check_topic(topic: &str, cmd: &str) -> Result<(), Error> {
    if is_valid_topic_name(topic) {
        Ok(())
    } else {
        Err(Error::Protocol {
            code: ErrorCode::BadTopic,
            message: format!("{cmd} topic name {topic:?} is not valid"),
        })
    }
}

/// The broker's fatal `E_BAD_MESSAGE` for an empty body.
fn check_body(body: &Bytes, cmd: &str) -> Result<(), Error> {
    if body.is_empty() {
        Err(Error::Protocol {
            code: ErrorCode::BadMessage,
            message: format!("{cmd} invalid message body size 0"),
        })
    } else {
        Ok(())
    }
}
