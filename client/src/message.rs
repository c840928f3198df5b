//! [`Message`]: one delivery, and how it is answered (FIN, REQ, TOUCH).
//!
//! A message belongs to the connection it arrived on: its answer goes back over that connection,
//! and the consumer counts it in flight until then. It is answered exactly once:
//!
//! ```text
//! finish()                   FIN          backoff: success
//! requeue(delay)             REQ delay    backoff: failure
//! requeue_without_backoff()  REQ delay    backoff: neutral
//! dropped unanswered         REQ 0        backoff: neutral (redelivered at once)
//! ```
//!
//! `finish` and `requeue` take the message by value, so a second answer does not compile. A
//! handler's automatic answer after it returns is skipped if the handler answered itself.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ferry_proto::MessageId;
use ferry_proto::v2::{self, Command};

use crate::consumer::ConsumerConn;
use crate::consumer::rdy::Signal;
use crate::error::Error;

/// A message delivered to a consumer.
///
/// ```no_run
/// # async fn f(mut messages: ferry_client::Messages) -> Result<(), ferry_client::Error> {
/// while let Some(msg) = messages.recv().await {
///     println!("{} (attempt {}): {:?}", msg.id(), msg.attempts(), msg.body());
///     msg.finish().await?;
/// }
/// # Ok(()) }
/// ```
pub struct Message {
    timestamp_ns: i64,
    attempts: u16,
    body: Bytes,
    ack: Arc<Ack>,
}

/// The answering side of a message, shared by the copies the consumer keeps.
struct Ack {
    id: MessageId,
    conn: Arc<ConsumerConn>,
    answered: AtomicBool,
}

impl Message {
    /// A message that just arrived on `conn`.
    pub(crate) fn new(raw: v2::Message, conn: &Arc<ConsumerConn>) -> Message {
        conn.received();
        Message {
            timestamp_ns: raw.timestamp_ns,
            attempts: raw.attempts,
            body: raw.body,
            ack: Arc::new(Ack {
                id: raw.id,
                conn: conn.clone(),
                answered: AtomicBool::new(false),
            }),
        }
    }

    /// Another handle on the same delivery (the handler runtime keeps one to answer after the
    /// handler returns).
    pub(crate) fn share(&self) -> Message {
        Message {
            timestamp_ns: self.timestamp_ns,
            attempts: self.attempts,
            body: self.body.clone(),
            ack: self.ack.clone(),
        }
    }

    /// The message's ID (the same on every channel).
    ///
    /// ```no_run
    /// # fn f(msg: &ferry_client::Message) {
    /// println!("{}", msg.id());
    /// # }
    /// ```
    pub fn id(&self) -> MessageId {
        self.ack.id
    }

    /// How many times it has been delivered, this delivery included (1 the first time).
    ///
    /// ```no_run
    /// # fn f(msg: &ferry_client::Message) {
    /// if msg.attempts() > 1 { println!("redelivery") }
    /// # }
    /// ```
    pub fn attempts(&self) -> u16 {
        self.attempts
    }

    /// The body as published.
    ///
    /// ```no_run
    /// # fn f(msg: &ferry_client::Message) {
    /// let text = std::str::from_utf8(msg.body()).unwrap_or("<binary>");
    /// # }
    /// ```
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// When the message was published, in nanoseconds since the Unix epoch.
    ///
    /// ```no_run
    /// # fn f(msg: &ferry_client::Message) {
    /// let ns = msg.timestamp_ns();
    /// # }
    /// ```
    pub fn timestamp_ns(&self) -> i64 {
        self.timestamp_ns
    }

    /// When the message was published.
    ///
    /// ```no_run
    /// # fn f(msg: &ferry_client::Message) {
    /// let age = msg.timestamp().elapsed().unwrap_or_default();
    /// # }
    /// ```
    pub fn timestamp(&self) -> SystemTime {
        let ns = u64::try_from(self.timestamp_ns).unwrap_or(0);
        UNIX_EPOCH + Duration::from_nanos(ns)
    }

    /// A handle to answer this delivery after the message itself was given away.
    pub(crate) fn answer_handle(&self) -> Answer {
        Answer(self.ack.clone())
    }

    /// Marks the message processed (`FIN`).
    ///
    /// Fails with [`Error::ConnectionLost`] if its connection closed meanwhile; the broker then
    /// delivers it again (at least once).
    ///
    /// ```no_run
    /// # async fn f(msg: ferry_client::Message) -> Result<(), ferry_client::Error> {
    /// msg.finish().await?;
    /// # Ok(()) }
    /// ```
    pub async fn finish(self) -> Result<(), Error> {
        self.ack
            .answer(Command::Fin(self.ack.id), Signal::Success)
            .await
    }

    /// Gives the message back for redelivery after `delay` (`None`: the consumer's
    /// `default_requeue_delay × attempts`, capped at `max_requeue_delay`), and counts as a
    /// failure for the consumer's backoff.
    ///
    /// ```no_run
    /// # async fn f(msg: ferry_client::Message) -> Result<(), ferry_client::Error> {
    /// msg.requeue(Some(std::time::Duration::from_secs(10))).await?;
    /// # Ok(()) }
    /// ```
    pub async fn requeue(self, delay: Option<Duration>) -> Result<(), Error> {
        let cmd = self.requeue_command(delay);
        self.ack.answer(cmd, Signal::Failure).await
    }

    /// Like [`Message::requeue`], without affecting the consumer's backoff (e.g. "not now"
    /// rather than "failed").
    ///
    /// ```no_run
    /// # async fn f(msg: ferry_client::Message) -> Result<(), ferry_client::Error> {
    /// msg.requeue_without_backoff(Some(std::time::Duration::ZERO)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn requeue_without_backoff(self, delay: Option<Duration>) -> Result<(), Error> {
        let cmd = self.requeue_command(delay);
        self.ack.answer(cmd, Signal::Neutral).await
    }

    /// Resets the message's timeout on the broker (`TOUCH`), for long processing.
    ///
    /// ```no_run
    /// # async fn f(msg: ferry_client::Message) -> Result<(), ferry_client::Error> {
    /// msg.touch().await?;
    /// # Ok(()) }
    /// ```
    pub async fn touch(&self) -> Result<(), Error> {
        if self.ack.answered.load(Ordering::Acquire) {
            return Ok(());
        }
        self.ack.conn.sender.send(Command::Touch(self.ack.id)).await
    }

    fn requeue_command(&self, delay: Option<Duration>) -> Command {
        self.ack.requeue_command(delay, self.attempts)
    }
}

/// Answers a delivery on behalf of a handler that took the [`Message`].
#[derive(Debug)]
pub(crate) struct Answer(Arc<Ack>);

impl Answer {
    /// Whether the delivery was answered already (by the handler itself).
    pub(crate) fn is_answered(&self) -> bool {
        self.0.answered.load(Ordering::Acquire)
    }

    /// `FIN`, reporting `signal` for backoff; nothing if already answered.
    pub(crate) async fn finish(&self, signal: Signal) -> Result<(), Error> {
        self.0.answer(Command::Fin(self.0.id), signal).await
    }

    /// `REQ` with the default delay for `attempts`, as a failure; nothing if already answered.
    pub(crate) async fn requeue_failed(&self, attempts: u16) -> Result<(), Error> {
        let cmd = self.0.requeue_command(None, attempts);
        self.0.answer(cmd, Signal::Failure).await
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.ack.id)
            .field("attempts", &self.attempts)
            .field("timestamp_ns", &self.timestamp_ns)
            .field("body_len", &self.body.len())
            .field("broker", &self.ack.conn.sender.addr())
            .finish()
    }
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ack")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Ack {
    fn requeue_command(&self, delay: Option<Duration>, attempts: u16) -> Command {
        let delay = delay.unwrap_or_else(|| self.conn.requeue_delay(attempts));
        Command::Req {
            id: self.id,
            timeout_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Sends `cmd` unless the message was already answered.
    async fn answer(&self, cmd: Command, signal: Signal) -> Result<(), Error> {
        if self.answered.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let finished = matches!(cmd, Command::Fin(_));
        let sent = self.conn.sender.send(cmd).await;
        self.conn.answered(finished, signal);
        sent
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if !self.answered.swap(true, Ordering::AcqRel) {
            // Dropped unanswered: give it back at once rather than wait for the broker's timeout.
            self.conn.requeue_dropped(self.id);
            self.conn.answered(false, Signal::Neutral);
        }
    }
}
