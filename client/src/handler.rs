//! [`Handler`]: what a consumer does with each message, and the loop that runs it.
//!
//! The handler gets the [`Message`] by value. When it returns, the runtime answers for it
//! (unless the handler already did):
//!
//! ```text
//! Ok(())                                  → FIN                  (backoff: success)
//! Err(_) or panic, attempts < max         → REQ requeue_delay    (backoff: failure)
//! Err(_) or panic, attempts ≥ max         → on_give_up, FIN      (backoff: failure)
//! delivered with attempts > max_attempts  → on_give_up, FIN      (handler not called)
//! ```

use std::any::Any;
use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;

use tokio::sync::Mutex;
use tracing::{error, warn};

use crate::consumer::Inbox;
use crate::consumer::rdy::Signal;
use crate::message::Message;

/// Processes the messages of a [`Consumer`](crate::Consumer).
///
/// Implement it on your own type for a stateful handler with a give-up hook, or use
/// [`handler_fn`] for a closure.
///
/// ```no_run
/// use ferry_client::{Config, Consumer, Handler, Message};
///
/// struct Indexer;
///
/// impl Handler for Indexer {
///     type Error = std::io::Error;
///
///     async fn handle(&self, msg: Message) -> Result<(), Self::Error> {
///         println!("indexing {} bytes", msg.body().len());
///         Ok(())
///     }
///
///     fn on_give_up(&self, msg: &Message) {
///         eprintln!("giving up on {} after {} attempts", msg.id(), msg.attempts());
///     }
/// }
///
/// # async fn f() -> Result<(), ferry_client::Error> {
/// let consumer = Consumer::new("docs", "indexer", Config::new(), Indexer)?;
/// consumer.connect_to_broker("127.0.0.1:4150").await?;
/// # Ok(()) }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// The handler's error, logged when a message fails.
    type Error: Display + Send;

    /// Processes one message. `Ok` finishes it, `Err` requeues it (see the module docs); the
    /// handler may also answer it itself (`msg.finish()`, `msg.requeue(..)`, `msg.touch()`).
    fn handle(&self, msg: Message) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Called once for a message given up after `max_attempts` deliveries, before it is
    /// finished (go-nsq's `LogFailedMessage`). Does nothing by default.
    fn on_give_up(&self, msg: &Message) {
        let _ = msg;
    }
}

/// A [`Handler`] made of closures; see [`handler_fn`].
///
/// ```
/// use ferry_client::{HandlerFn, Message, handler_fn};
///
/// async fn index(msg: Message) -> Result<(), std::io::Error> {
///     println!("{} bytes", msg.body().len());
///     Ok(())
/// }
/// let handler: HandlerFn<_, _> = handler_fn(index).on_give_up(|msg| eprintln!("{}", msg.id()));
/// ```
#[derive(Debug, Clone)]
pub struct HandlerFn<F, G = fn(&Message)> {
    handle: F,
    give_up: G,
}

/// Makes a [`Handler`] from an async closure `Fn(Message) -> Result<(), E>`.
///
/// ```no_run
/// use ferry_client::{Config, Consumer, handler_fn};
///
/// # async fn f() -> Result<(), ferry_client::Error> {
/// let handler = handler_fn(|msg| async move {
///     let n: u64 = std::str::from_utf8(msg.body())?.parse()?;
///     println!("{}", n * n);
///     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
/// })
/// .on_give_up(|msg| eprintln!("dropping {:?}", msg.body()));
/// let consumer = Consumer::new("numbers", "squarer", Config::new(), handler)?;
/// # Ok(()) }
/// ```
pub fn handler_fn<F, Fut, E>(handle: F) -> HandlerFn<F>
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Display + Send,
{
    HandlerFn {
        handle,
        give_up: |_| {},
    }
}

impl<F> HandlerFn<F> {
    /// Adds a callback for messages given up after `max_attempts`.
    ///
    /// ```no_run
    /// # use ferry_client::handler_fn;
    /// let handler = handler_fn(|_msg| async { Err::<(), _>("always fails") })
    ///     .on_give_up(|msg| eprintln!("gave up on {}", msg.id()));
    /// ```
    pub fn on_give_up<G>(self, give_up: G) -> HandlerFn<F, G>
    where
        G: Fn(&Message) + Send + Sync + 'static,
    {
        HandlerFn {
            handle: self.handle,
            give_up,
        }
    }
}

impl<F, Fut, E, G> Handler for HandlerFn<F, G>
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Display + Send,
    G: Fn(&Message) + Send + Sync + 'static,
{
    type Error = E;

    fn handle(&self, msg: Message) -> impl Future<Output = Result<(), E>> + Send {
        (self.handle)(msg)
    }

    fn on_give_up(&self, msg: &Message) {
        (self.give_up)(msg);
    }
}

/// The only handler worker (`concurrent_handlers` = 1): owns the queue.
pub(crate) async fn work_alone<H: Handler>(handler: Arc<H>, mut inbox: Inbox, max_attempts: u16) {
    while let Some(msg) = inbox.recv().await {
        handle_one(&*handler, msg, max_attempts).await;
    }
}

/// One of several handler workers: they take turns on the shared queue.
pub(crate) async fn work_shared<H: Handler>(
    handler: Arc<H>,
    inbox: Arc<Mutex<Inbox>>,
    max_attempts: u16,
) {
    loop {
        // The lock only orders the workers' waits; it is released before handling.
        let next = inbox.lock().await.recv().await;
        let Some(msg) = next else { return };
        handle_one(&*handler, msg, max_attempts).await;
    }
}

/// Runs the handler on one message and answers for it.
async fn handle_one<H: Handler>(handler: &H, msg: Message, max_attempts: u16) {
    let limited = max_attempts > 0;
    let attempts = msg.attempts();
    let answer = msg.answer_handle();
    if limited && attempts > max_attempts {
        handler.on_give_up(&msg);
        drop(msg);
        let _ = answer.finish(Signal::Failure).await;
        return;
    }
    // Only a failure on the last attempt needs the message again (for on_give_up).
    let last_chance = (limited && attempts >= max_attempts).then(|| msg.share());
    let id = msg.id();
    let outcome = catch_unwind(handler.handle(msg)).await;
    if answer.is_answered() {
        return;
    }
    let failed = match outcome {
        Ok(Ok(())) => {
            let _ = answer.finish(Signal::Success).await;
            return;
        }
        Ok(Err(err)) => err.to_string(),
        Err(panic) => {
            let what = panic_text(&*panic);
            error!(%id, panic = %what, "message handler panicked");
            what
        }
    };
    match last_chance {
        Some(msg) => {
            warn!(%id, attempts, error = %failed, "giving up on message");
            handler.on_give_up(&msg);
            drop(msg);
            let _ = answer.finish(Signal::Failure).await;
        }
        None => {
            warn!(%id, attempts, error = %failed, "message handler failed, requeueing");
            let _ = answer.requeue_failed(attempts).await;
        }
    }
}

/// Polls `fut`, turning a panic into an `Err` (a handler's panic must not kill its worker).
async fn catch_unwind<F: Future>(fut: F) -> Result<F::Output, Box<dyn Any + Send>> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    })
    .await
}

fn panic_text(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_owned()
    }
}
