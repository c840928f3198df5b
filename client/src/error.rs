//! [`Error`]: everything a producer or consumer call can fail with.
//!
//! Broker refusals carry NSQ's code ([`ErrorCode`], e.g. `E_BAD_TOPIC`) so callers can match on
//! them; transport failures keep the broker's address and the `std::io::Error` as their source.
//!
//! ```text
//! Protocol         the broker (or the client, checking the same rule first) refused the command
//! ConnectionLost   the connection died with the request in flight: it may or may not have applied
//! Connect / Io     the socket could not be opened / failed
//! Timeout          dial, handshake or write took too long
//! Closed           the producer or consumer was stopped
//! ```

use std::time::Duration;

use ferry_proto::ErrorCode;
use ferry_proto::v2::FrameError;

/// Why a call failed.
///
/// ```no_run
/// use ferry_client::{Error, ErrorCode, Producer};
///
/// # async fn f(producer: Producer) {
/// match producer.publish("bad topic", "x").await {
///     Ok(()) => {}
///     Err(Error::Protocol { code: ErrorCode::BadTopic, message }) => eprintln!("refused: {message}"),
///     Err(err) if err.is_retryable() => eprintln!("try again later: {err}"),
///     Err(err) => eprintln!("failed: {err}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker refused the command with an NSQ error (or the client refused it first by the
    /// same rule, e.g. an invalid topic name, so that the shared connection is not closed).
    #[error("{code} {message}")]
    Protocol {
        /// NSQ's code, e.g. [`ErrorCode::BadTopic`].
        code: ErrorCode,
        /// The description after the code.
        message: String,
    },
    /// The broker sent an error frame with a code this client does not know.
    #[error("broker {addr} sent error {text:?}")]
    UnknownBrokerError {
        /// The broker.
        addr: String,
        /// The whole error text.
        text: String,
    },
    /// The connection closed while the request was in flight: the broker may or may not have
    /// applied it.
    #[error("connection to {addr} lost before the broker answered")]
    ConnectionLost {
        /// The broker.
        addr: String,
    },
    /// The TCP connection could not be established.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The broker.
        addr: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// Reading from or writing to the broker failed.
    #[error("I/O error with {addr}")]
    Io {
        /// The broker.
        addr: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// Something took longer than its configured limit.
    #[error("{during} with {addr} timed out after {timeout:?}")]
    Timeout {
        /// The broker.
        addr: String,
        /// What was being done, e.g. `"connecting"`.
        during: &'static str,
        /// The limit that was exceeded.
        timeout: Duration,
    },
    /// The broker sent bytes that are not a valid frame.
    #[error("invalid frame from {addr}")]
    Frame {
        /// The broker.
        addr: String,
        /// What is wrong with it.
        #[source]
        source: FrameError,
    },
    /// The broker sent a valid frame that makes no sense at this point.
    #[error("unexpected {what} from {addr}")]
    UnexpectedFrame {
        /// The broker.
        addr: String,
        /// A description of the frame.
        what: String,
    },
    /// The broker's IDENTIFY answer is not valid JSON.
    #[error("invalid IDENTIFY response from {addr}")]
    Identify {
        /// The broker.
        addr: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The broker wants a feature this client does not implement (TLS, compression).
    #[error("broker {addr} requires {feature}, which ferry-client does not support")]
    Unsupported {
        /// The broker.
        addr: String,
        /// The feature.
        feature: &'static str,
    },
    /// The TLS handshake failed (e.g. the broker's certificate is not trusted, or the broker
    /// refused ours).
    #[error("TLS handshake with {addr} failed")]
    Tls {
        /// The broker.
        addr: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The broker requires AUTH and no `auth_secret` is configured.
    #[error("broker {addr} requires authentication; set Config::auth_secret")]
    AuthRequired {
        /// The broker.
        addr: String,
    },
    /// The consumer is already connected (or connecting) to this broker or lookupd.
    #[error("already connected to {addr}")]
    AlreadyConnected {
        /// The address given.
        addr: String,
    },
    /// The settings are inconsistent (see [`Config::validate`](crate::Config::validate)).
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// The producer or consumer has been stopped.
    #[error("stopped")]
    Closed,
}

impl Error {
    /// NSQ's error code, if the broker refused the command.
    ///
    /// ```
    /// use ferry_client::{Error, ErrorCode};
    /// let err = Error::Protocol { code: ErrorCode::BadTopic, message: "x".into() };
    /// assert_eq!(err.code(), Some(ErrorCode::BadTopic));
    /// ```
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Protocol { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether retrying the same call later may succeed: the connection failed (the producer
    /// reconnects on the next call) or the broker could not write (`E_PUB_FAILED`...).
    ///
    /// ```
    /// use ferry_client::Error;
    /// assert!(Error::ConnectionLost { addr: "b:4150".into() }.is_retryable());
    /// assert!(!Error::Closed.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Protocol { code, .. } => matches!(
                code,
                ErrorCode::PubFailed | ErrorCode::MpubFailed | ErrorCode::DpubFailed
            ),
            Error::ConnectionLost { .. }
            | Error::Connect { .. }
            | Error::Io { .. }
            | Error::Timeout { .. } => true,
            _ => false,
        }
    }
}

/// An error frame's data as an [`Error`].
pub(crate) fn from_error_frame(addr: &str, data: &[u8]) -> Error {
    match ferry_proto::ProtocolError::from_wire(data) {
        Some(err) => Error::Protocol {
            code: err.code,
            message: err.message,
        },
        None => Error::UnknownBrokerError {
            addr: addr.to_owned(),
            text: String::from_utf8_lossy(data).into_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_frames_become_protocol_errors() {
        let err = from_error_frame("b", b"E_BAD_TOPIC PUB topic name \"a b\" is not valid");
        assert!(matches!(
            &err,
            Error::Protocol { code: ErrorCode::BadTopic, message } if message.starts_with("PUB")
        ));
        assert_eq!(
            err.to_string(),
            "E_BAD_TOPIC PUB topic name \"a b\" is not valid"
        );
        let unknown = from_error_frame("b", b"E_WHATEVER x");
        assert!(matches!(unknown, Error::UnknownBrokerError { .. }));
    }

    #[test]
    fn retryable() {
        let pub_failed = Error::Protocol {
            code: ErrorCode::PubFailed,
            message: String::new(),
        };
        assert!(pub_failed.is_retryable());
        let bad_topic = Error::Protocol {
            code: ErrorCode::BadTopic,
            message: String::new(),
        };
        assert!(!bad_topic.is_retryable());
        assert_eq!(bad_topic.code(), Some(ErrorCode::BadTopic));
    }
}
