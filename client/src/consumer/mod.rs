//! [`Consumer`]: subscribes to a topic's channel on every broker that has it.
//!
//! ```text
//!   connect_to_broker(addr) ─┐        lookup task (lookup.rs): GET /lookup?topic= every poll
//!                            ▼        interval, joins new brokers, drops vanished ones
//!   supervisor task per broker (broker.rs) ◀──────────┘
//!     connect → IDENTIFY → SUB; reconnect with backoff when the connection drops
//!                │ Connected / Disconnected
//!                ▼
//!   manager task (manager.rs): RdyState (rdy.rs) ──RDY n──▶ each connection's writer
//!                ▲ Signal (failures, and anything while backing off)
//!                │
//!   conn reader ─┴─ messages of one read ──▶ queue (bounded) ──▶ handler workers
//!                                                              or the Messages stream
//!                         FIN / REQ / TOUCH over the message's own connection ◀─┘
//! ```
//!
//! Invariants: a message is in flight from its arrival to its answer (or drop, which requeues
//! it), so a graceful close knows when handlers are done. RDY is only ever sent by the manager,
//! the single owner of the RDY state; it stops when stopping begins, and each connection then
//! gets `CLS`, waits for its in-flight messages (bounded by `shutdown_timeout`) and closes.

mod broker;
pub(crate) mod lookup;

pub use lookup::Discovery;
mod manager;
pub(crate) mod rdy;

pub(crate) use self::broker::ConsumerConn;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use ferry_proto::ErrorCode;
use ferry_proto::names::{is_valid_channel_name, is_valid_topic_name};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use self::broker::supervise;
use self::manager::{Event, manage};
use crate::config::Config;
use crate::conn::ConnOptions;
use crate::error::Error;
use crate::handler::{Handler, work_alone, work_shared};
use crate::message::Message;

/// RDY accepted by a broker that does not say (nsqd's default `--max-rdy-count`).
const DEFAULT_MAX_RDY: u64 = 2500;
/// Batches (each the messages of one read) queued for the handlers or the stream.
const QUEUE_BATCHES: usize = 256;

/// Subscribes to a channel of a topic and delivers its messages to a [`Handler`] or a
/// [`Messages`] stream.
///
/// ```no_run
/// use ferry_client::{Config, Consumer, handler_fn};
///
/// # async fn f() -> Result<(), ferry_client::Error> {
/// let consumer = Consumer::new(
///     "orders",
///     "billing",
///     Config::new().max_in_flight(32).concurrent_handlers(8),
///     handler_fn(|msg| async move {
///         println!("order {:?}", msg.body());
///         Ok::<_, std::io::Error>(())
///     }),
/// )?;
/// consumer.connect_to_lookupd("127.0.0.1:4161").await?;
/// tokio::signal::ctrl_c().await.ok();
/// consumer.stop().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Consumer {
    shared: Arc<Shared>,
    /// Handler workers (empty in stream mode). A `std` mutex: only taken to move the handles out.
    workers: Mutex<Vec<JoinHandle<()>>>,
}

/// The stream of messages of a consumer made with [`Consumer::stream`].
///
/// Each message must be answered (`finish`, `requeue`); a message dropped unanswered is requeued
/// at once. The stream ends once the consumer is stopped and every message was received.
///
/// ```no_run
/// use ferry_client::{Config, Consumer};
///
/// # async fn f() -> Result<(), ferry_client::Error> {
/// let (consumer, mut messages) = Consumer::stream("orders", "audit", Config::new())?;
/// consumer.connect_to_broker("127.0.0.1:4150").await?;
/// while let Some(msg) = messages.recv().await {
///     println!("{:?}", msg.body());
///     msg.finish().await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Messages {
    inbox: Inbox,
}

/// The receiving end of the message queue: batches in (one per read of a connection),
/// messages out.
#[derive(Debug)]
pub(crate) struct Inbox {
    rx: mpsc::Receiver<Vec<Message>>,
    batch: std::vec::IntoIter<Message>,
}

impl Inbox {
    fn new(rx: mpsc::Receiver<Vec<Message>>) -> Inbox {
        Inbox {
            rx,
            batch: Vec::new().into_iter(),
        }
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        loop {
            if let Some(msg) = self.batch.next() {
                return Poll::Ready(Some(msg));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(batch)) => self.batch = batch.into_iter(),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    pub(crate) async fn recv(&mut self) -> Option<Message> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

impl Messages {
    /// The next message; `None` once the consumer is stopped and drained.
    ///
    /// ```no_run
    /// # async fn f(mut messages: ferry_client::Messages) {
    /// if let Some(msg) = messages.recv().await {
    ///     let _ = msg.finish().await;
    /// }
    /// # }
    /// ```
    pub async fn recv(&mut self) -> Option<Message> {
        self.inbox.recv().await
    }
}

impl futures_core::Stream for Messages {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.inbox.poll_recv(cx)
    }
}

/// Counters of a consumer, from [`Consumer::stats`].
///
/// ```no_run
/// # fn f(consumer: &ferry_client::Consumer) {
/// let stats = consumer.stats();
/// assert_eq!(
///     stats.in_flight,
///     stats.messages_received - stats.messages_finished - stats.messages_requeued
/// );
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// Connections currently subscribed.
    pub connections: u64,
    /// Messages received (redeliveries included).
    pub messages_received: u64,
    /// Messages finished (FIN sent), given-up ones included.
    pub messages_finished: u64,
    /// Messages requeued (REQ sent), dropped ones included.
    pub messages_requeued: u64,
    /// Messages received and not yet answered.
    pub in_flight: u64,
}

/// State shared by the consumer's handle and tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    topic: String,
    channel: String,
    config: Config,
    opts: ConnOptions,
    events: mpsc::UnboundedSender<Event>,
    /// Mirrors `RdyState::in_backoff`: while false, successes need not reach the manager.
    in_backoff: AtomicBool,
    /// The sending side of the message queue; taken at stop so that the queue ends.
    queue: Mutex<Option<mpsc::Sender<Vec<Message>>>>,
    /// Brokers being supervised, by address. A `std` mutex: short insert/remove sections.
    brokers: Mutex<HashMap<String, BrokerEntry>>,
    lookup: lookup::Lookup,
    /// Cancelled when stopping: no more connections, every connection closes gracefully.
    stop: CancellationToken,
    /// Supervisors and the lookup poller.
    tasks: TaskTracker,
    next_conn: AtomicU64,
    connections: AtomicU64,
    received: AtomicU64,
    finished: AtomicU64,
    requeued: AtomicU64,
}

#[derive(Debug)]
struct BrokerEntry {
    /// Tells this entry from a later one for the same address.
    generation: u64,
    cancel: CancellationToken,
    /// Found through lookupd (and dropped when lookupd stops listing it).
    discovered: bool,
}

impl Consumer {
    /// A consumer of `topic`/`channel` whose messages go to `handler`, run by
    /// `concurrent_handlers` workers. Connect it with [`Consumer::connect_to_broker`] or
    /// [`Consumer::connect_to_lookupd`]. Must be called inside a Tokio runtime.
    ///
    /// ```no_run
    /// use ferry_client::{Config, Consumer, handler_fn};
    ///
    /// # async fn f() -> Result<(), ferry_client::Error> {
    /// let consumer = Consumer::new("events", "archive", Config::new(), handler_fn(|msg| async move {
    ///     println!("{:?}", msg.body());
    ///     Ok::<_, std::convert::Infallible>(())
    /// }))?;
    /// consumer.connect_to_broker("127.0.0.1:4150").await?;
    /// # Ok(()) }
    /// ```
    pub fn new<H: Handler>(
        topic: &str,
        channel: &str,
        config: Config,
        handler: H,
    ) -> Result<Consumer, Error> {
        let (shared, inbox) = Shared::start(topic, channel, config)?;
        let handler = Arc::new(handler);
        let max_attempts = shared.config.max_attempts;
        let workers = match shared.config.concurrent_handlers {
            1 => vec![tokio::spawn(work_alone(handler, inbox, max_attempts))],
            n => {
                let inbox = Arc::new(tokio::sync::Mutex::new(inbox));
                (0..n)
                    .map(|_| {
                        tokio::spawn(work_shared(handler.clone(), inbox.clone(), max_attempts))
                    })
                    .collect()
            }
        };
        Ok(Consumer {
            shared,
            workers: Mutex::new(workers),
        })
    }

    /// A consumer of `topic`/`channel` whose messages come out of the returned [`Messages`];
    /// the caller answers each one. `max_attempts` and `concurrent_handlers` do not apply.
    /// Must be called inside a Tokio runtime.
    ///
    /// ```no_run
    /// use ferry_client::{Config, Consumer};
    ///
    /// # async fn f() -> Result<(), ferry_client::Error> {
    /// let (consumer, mut messages) = Consumer::stream("events", "tail", Config::new())?;
    /// consumer.connect_to_broker("127.0.0.1:4150").await?;
    /// let msg = messages.recv().await.expect("a message");
    /// msg.requeue(None).await?;
    /// # Ok(()) }
    /// ```
    pub fn stream(
        topic: &str,
        channel: &str,
        config: Config,
    ) -> Result<(Consumer, Messages), Error> {
        let (shared, inbox) = Shared::start(topic, channel, config)?;
        let consumer = Consumer {
            shared,
            workers: Mutex::new(Vec::new()),
        };
        Ok((consumer, Messages { inbox }))
    }

    /// The topic.
    ///
    /// ```no_run
    /// # fn f(consumer: &ferry_client::Consumer) {
    /// println!("consuming {}/{}", consumer.topic(), consumer.channel());
    /// # }
    /// ```
    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    /// The channel.
    ///
    /// ```no_run
    /// # fn f(consumer: &ferry_client::Consumer) {
    /// println!("{}", consumer.channel());
    /// # }
    /// ```
    pub fn channel(&self) -> &str {
        &self.shared.channel
    }

    /// Connects to the broker at `addr` (`host:port` of its TCP interface) and subscribes.
    ///
    /// Fails if this first connection fails; afterwards a dropped connection is re-established
    /// in the background (after `reconnect_delay`, doubling up to `max_reconnect_delay`).
    ///
    /// ```no_run
    /// # async fn f(consumer: ferry_client::Consumer) -> Result<(), ferry_client::Error> {
    /// consumer.connect_to_broker("127.0.0.1:4150").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_to_broker(&self, addr: impl Into<String>) -> Result<(), Error> {
        let addr = addr.into();
        let (first, result) = oneshot::channel();
        self.shared.supervise(addr, false, Some(first))?;
        result.await.unwrap_or(Err(Error::Closed))
    }

    /// Connects to several brokers at once; fails with the first error (the others stay
    /// connected).
    ///
    /// ```no_run
    /// # async fn f(consumer: ferry_client::Consumer) -> Result<(), ferry_client::Error> {
    /// consumer.connect_to_brokers(["10.0.0.1:4150", "10.0.0.2:4150"]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_to_brokers<I>(&self, addrs: I) -> Result<(), Error>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let mut waits = Vec::new();
        for addr in addrs {
            let (first, result) = oneshot::channel();
            self.shared.supervise(addr.into(), false, Some(first))?;
            waits.push(result);
        }
        let mut outcome = Ok(());
        for result in waits {
            let res = result.await.unwrap_or(Err(Error::Closed));
            if outcome.is_ok() {
                outcome = res;
            }
        }
        outcome
    }

    /// Adds a lookupd (`host:port` of its HTTP interface, or an `http://` URL) to discover the
    /// brokers that have the topic: queried at once, then every `lookupd_poll_interval` (with
    /// jitter). Brokers that appear are connected; brokers that stop being listed (twice in a
    /// row, by every lookupd) are closed gracefully.
    ///
    /// ```no_run
    /// # async fn f(consumer: ferry_client::Consumer) -> Result<(), ferry_client::Error> {
    /// consumer.connect_to_lookupd("127.0.0.1:4161").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_to_lookupd(&self, addr: impl Into<String>) -> Result<(), Error> {
        lookup::add(&self.shared, addr.into()).await
    }

    /// Adds several lookupds (see [`Consumer::connect_to_lookupd`]).
    ///
    /// ```no_run
    /// # async fn f(consumer: ferry_client::Consumer) -> Result<(), ferry_client::Error> {
    /// consumer.connect_to_lookupds(["10.0.0.1:4161", "10.0.0.2:4161"]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_to_lookupds<I>(&self, addrs: I) -> Result<(), Error>
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        for addr in addrs {
            self.connect_to_lookupd(addr).await?;
        }
        Ok(())
    }

    /// Changes `max_in_flight`; RDY is redistributed at once.
    ///
    /// ```no_run
    /// # fn f(consumer: &ferry_client::Consumer) {
    /// consumer.set_max_in_flight(0); // pause
    /// # }
    /// ```
    pub fn set_max_in_flight(&self, max_in_flight: u64) {
        let _ = self.shared.events.send(Event::MaxInFlight(max_in_flight));
    }

    /// The consumer's counters.
    ///
    /// ```no_run
    /// # fn f(consumer: &ferry_client::Consumer) {
    /// let stats = consumer.stats();
    /// println!("{} received over {} connections", stats.messages_received, stats.connections);
    /// # }
    /// ```
    pub fn stats(&self) -> ConsumerStats {
        let s = &self.shared;
        let finished = s.finished.load(Ordering::Relaxed);
        let requeued = s.requeued.load(Ordering::Relaxed);
        let received = s.received.load(Ordering::Relaxed);
        ConsumerStats {
            connections: s.connections.load(Ordering::Relaxed),
            messages_received: received,
            messages_finished: finished,
            messages_requeued: requeued,
            in_flight: received.saturating_sub(finished + requeued),
        }
    }

    /// What lookupd discovery knows: whether any lookupd lists a broker with the topic, and
    /// which lookupds failed to answer the last poll (and why). Empty without lookupds.
    pub async fn discovery(&self) -> lookup::Discovery {
        lookup::discovery(&self.shared).await
    }

    /// Stops gracefully: no new connections; each connection sends `CLS` (the broker stops
    /// delivering), waits for its in-flight messages to be answered (at most
    /// `shutdown_timeout`) and closes; then the handler workers finish and the [`Messages`]
    /// stream ends. Idempotent.
    ///
    /// In stream mode, keep receiving and answering while `stop` runs (e.g. from another task),
    /// or the wait lasts `shutdown_timeout`.
    ///
    /// ```no_run
    /// # async fn f(consumer: ferry_client::Consumer) {
    /// consumer.stop().await;
    /// # }
    /// ```
    pub async fn stop(&self) {
        let shared = &self.shared;
        shared.stop.cancel();
        shared.tasks.close();
        shared.tasks.wait().await;
        shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let workers =
            std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
        let deadline = tokio::time::Instant::now() + shared.config.shutdown_timeout;
        for worker in workers {
            match tokio::time::timeout_at(deadline, worker).await {
                Ok(_) => {}
                Err(_elapsed) => warn!("a handler is still running after shutdown_timeout"),
            }
        }
        debug!(topic = %shared.topic, channel = %shared.channel, "consumer stopped");
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Without stop(): connections still close gracefully, in the background.
        self.shared.stop.cancel();
        for worker in self
            .workers
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            worker.abort();
        }
    }
}

impl Shared {
    /// Validates the names and config, and starts the manager task.
    fn start(topic: &str, channel: &str, config: Config) -> Result<(Arc<Shared>, Inbox), Error> {
        config.validate()?;
        if !is_valid_topic_name(topic) {
            return Err(Error::Protocol {
                code: ErrorCode::BadTopic,
                message: format!("SUB topic name {topic:?} is not valid"),
            });
        }
        if !is_valid_channel_name(channel) {
            return Err(Error::Protocol {
                code: ErrorCode::BadChannel,
                message: format!("SUB channel name {channel:?} is not valid"),
            });
        }
        // Batches of at least one message each; what they hold is bounded by RDY: the brokers
        // never have more than max_in_flight (plus one per connection while RDY moves)
        // unanswered messages out.
        let (queue, rx) = mpsc::channel(QUEUE_BATCHES);
        // Unbounded, but bounded in practice: at most one Signal per delivered message, and
        // only failures (or anything while backing off, when RDY is 0 or 1).
        let (events, events_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            topic: topic.to_owned(),
            channel: channel.to_owned(),
            opts: ConnOptions::new(&config),
            lookup: lookup::Lookup::new(&config)?,
            config,
            events,
            in_backoff: AtomicBool::new(false),
            queue: Mutex::new(Some(queue)),
            brokers: Mutex::new(HashMap::new()),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            next_conn: AtomicU64::new(1),
            connections: AtomicU64::new(0),
            received: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            requeued: AtomicU64::new(0),
        });
        tokio::spawn(manage(shared.clone(), events_rx));
        Ok((shared, Inbox::new(rx)))
    }

    /// Whether nothing can take messages any more (stopped, or the stream was dropped).
    fn queue_closed(&self) -> bool {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_none_or(mpsc::Sender::is_closed)
    }

    fn brokers(&self) -> std::sync::MutexGuard<'_, HashMap<String, BrokerEntry>> {
        self.brokers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts supervising the broker at `addr`. `first` gets the outcome of the first
    /// connection attempt; a supervisor with `first` gives up if that attempt fails.
    fn supervise(
        self: &Arc<Self>,
        addr: String,
        discovered: bool,
        first: Option<oneshot::Sender<Result<(), Error>>>,
    ) -> Result<(), Error> {
        if self.stop.is_cancelled() {
            return Err(Error::Closed);
        }
        let cancel = self.stop.child_token();
        let generation = self.next_conn.fetch_add(1, Ordering::Relaxed);
        {
            let mut brokers = self.brokers();
            if brokers.contains_key(&addr) {
                return Err(Error::AlreadyConnected { addr });
            }
            brokers.insert(
                addr.clone(),
                BrokerEntry {
                    generation,
                    cancel: cancel.clone(),
                    discovered,
                },
            );
        }
        self.tasks
            .spawn(supervise(self.clone(), addr, generation, cancel, first));
        Ok(())
    }

    /// Addresses of the brokers found through lookupd.
    pub(crate) fn discovered_brokers(&self) -> Vec<String> {
        self.brokers()
            .iter()
            .filter(|(_, e)| e.discovered)
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// Whether `addr` is supervised.
    pub(crate) fn has_broker(&self, addr: &str) -> bool {
        self.brokers().contains_key(addr)
    }

    /// Starts supervising a broker found through lookupd.
    pub(crate) fn join_discovered(self: &Arc<Self>, addr: &str) {
        match self.supervise(addr.to_owned(), true, None) {
            Ok(()) => info!(broker = %addr, "discovered broker"),
            Err(Error::AlreadyConnected { .. } | Error::Closed) => {}
            Err(err) => warn!(broker = %addr, error = %err, "cannot supervise broker"),
        }
    }

    /// Stops supervising a broker that lookupd no longer lists (its connection closes
    /// gracefully).
    pub(crate) fn drop_discovered(&self, addr: &str) {
        let entry = {
            let mut brokers = self.brokers();
            match brokers.get(addr) {
                Some(e) if e.discovered => brokers.remove(addr),
                _ => None,
            }
        };
        if let Some(entry) = entry {
            info!(broker = %addr, "broker no longer listed by lookupd, disconnecting");
            entry.cancel.cancel();
        }
    }

    fn forget_broker(&self, addr: &str, generation: u64) {
        let mut brokers = self.brokers();
        // Only our own entry: a vanished-then-rediscovered broker has a new one.
        if brokers
            .get(addr)
            .is_some_and(|e| e.generation == generation)
        {
            brokers.remove(addr);
        }
    }
}
