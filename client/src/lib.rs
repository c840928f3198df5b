//! `ferry-client`: an async client for Ferry and NSQ brokers (protocol V2), in the spirit of
//! go-nsq.
//!
//! - [`Producer`]: publishes (`PUB`, `MPUB`, `DPUB`) over one pipelined connection shared by
//!   every clone; reconnects after the broker restarts.
//! - [`Consumer`]: subscribes to a topic's channel on brokers given directly or discovered
//!   through lookupd; shares `max_in_flight` among its connections (RDY), backs off when
//!   handlers fail, answers heartbeats, stops gracefully. Messages go to a [`Handler`] (with
//!   automatic FIN/REQ and `max_attempts`) or come out of a [`Messages`] stream.
//! - [`Config`]: go-nsq's settings and defaults; [`Error`]: typed errors with NSQ's codes.
//!
//! # Quick start
//!
//! ```no_run
//! use ferry_client::{Config, Consumer, Producer, handler_fn};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), ferry_client::Error> {
//!     // Publish.
//!     let producer = Producer::connect("127.0.0.1:4150", Config::new()).await?;
//!     producer.publish("greetings", "hello").await?;
//!
//!     // Consume with a handler: Ok → FIN, Err → REQ with backoff.
//!     let consumer = Consumer::new(
//!         "greetings",
//!         "printer",
//!         Config::new().max_in_flight(10),
//!         handler_fn(|msg| async move {
//!             println!("{}", String::from_utf8_lossy(msg.body()));
//!             Ok::<_, std::convert::Infallible>(())
//!         }),
//!     )?;
//!     consumer.connect_to_broker("127.0.0.1:4150").await?; // or connect_to_lookupd("…:4161")
//!
//!     tokio::signal::ctrl_c().await.ok();
//!     consumer.stop().await;
//!     producer.stop().await;
//!     Ok(())
//! }
//! ```
//!
//! Or consume as a stream and answer each message yourself:
//!
//! ```no_run
//! # async fn f() -> Result<(), ferry_client::Error> {
//! use ferry_client::{Config, Consumer};
//!
//! let (consumer, mut messages) = Consumer::stream("greetings", "tail", Config::new())?;
//! consumer.connect_to_broker("127.0.0.1:4150").await?;
//! while let Some(msg) = messages.recv().await {
//!     if msg.body().is_empty() {
//!         msg.requeue(None).await?;
//!     } else {
//!         msg.finish().await?;
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - `config.rs`: [`Config`]; `error.rs`: [`Error`]; `message.rs`: [`Message`] and its answers;
//!   `handler.rs`: [`Handler`], [`handler_fn`] and the handler workers.
//! - `conn/`: one broker connection: handshake (IDENTIFY with feature negotiation, AUTH, SUB),
//!   a writer task batching commands, a reader task matching responses FIFO, answering
//!   heartbeats and passing messages on.
//! - `producer.rs`: [`Producer`].
//! - `consumer/mod.rs`: [`Consumer`] and [`Messages`]; `consumer/broker.rs`: one supervisor
//!   task per broker (connect, reconnect, graceful close); `consumer/manager.rs`: the task that
//!   owns RDY; `consumer/rdy.rs`: the RDY/backoff state machine (pure, unit-tested);
//!   `consumer/lookup.rs`: discovery through lookupd.
//!
//! - `tls.rs`: TLS (`tls_v1` in IDENTIFY, rustls, optional client certificate); compression
//!   (snappy or DEFLATE, negotiated in IDENTIFY) comes from the `ferry-stream` crate.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod conn;
mod consumer;
mod error;
mod handler;
mod message;
mod producer;
pub mod tls;

pub use config::Config;
pub use consumer::{Consumer, ConsumerStats, Discovery, Messages};
pub use error::Error;
pub use ferry_proto::{ErrorCode, MessageId};
pub use handler::{Handler, HandlerFn, handler_fn};
pub use message::Message;
pub use producer::Producer;

#[cfg(test)]
mod tests {
    /// The public types can be shared between tasks and threads.
    #[test]
    fn public_types_are_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<super::Producer>();
        check::<super::Consumer>();
        check::<super::Message>();
        check::<super::Messages>();
        check::<super::Error>();
        check::<super::Config>();
    }
}
