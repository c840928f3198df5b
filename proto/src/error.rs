//! NSQ's client-visible error codes and the error a decoder returns.
//!
//! On the wire an error is the text `"<CODE> <description>"`, carried in an error frame
//! (protocol V2) or in a plain response (lookup protocol V1):
//!
//! ```text
//! E_BAD_TOPIC PUB topic name "a b" is not valid
//! └─ code ──┘ └──────────── message ───────────┘
//! ```
//!
//! Every code except `E_FIN_FAILED`, `E_REQ_FAILED` and `E_TOUCH_FAILED` is fatal: the broker sends
//! the error and then closes the connection.

use std::fmt;

/// One of NSQ's error codes (the first word of an error frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `E_INVALID`: malformed or unknown command, bad parameter, wrong state.
    Invalid,
    /// `E_BAD_PROTOCOL`: the connection did not start with a known magic.
    BadProtocol,
    /// `E_BAD_BODY`: a body size or body content is invalid.
    BadBody,
    /// `E_BAD_MESSAGE`: a message size is invalid.
    BadMessage,
    /// `E_BAD_TOPIC`: a topic name is invalid.
    BadTopic,
    /// `E_BAD_CHANNEL`: a channel name is invalid.
    BadChannel,
    /// `E_IDENTIFY_FAILED`: feature negotiation failed.
    IdentifyFailed,
    /// `E_AUTH_DISABLED`: AUTH sent to a broker without an auth server.
    AuthDisabled,
    /// `E_AUTH_FAILED`: the auth server refused or could not be reached.
    AuthFailed,
    /// `E_AUTH_FIRST`: a command that needs AUTH came before it.
    AuthFirst,
    /// `E_AUTH_ERROR`: an internal error while answering AUTH.
    AuthError,
    /// `E_UNAUTHORIZED`: the identity may not do this.
    Unauthorized,
    /// `E_SUB_FAILED`: subscribing failed.
    SubFailed,
    /// `E_PUB_FAILED`: publishing one message failed.
    PubFailed,
    /// `E_MPUB_FAILED`: publishing a batch failed.
    MpubFailed,
    /// `E_DPUB_FAILED`: publishing a deferred message failed.
    DpubFailed,
    /// `E_FIN_FAILED`: FIN of an unknown or foreign message (not fatal).
    FinFailed,
    /// `E_REQ_FAILED`: REQ of an unknown or foreign message (not fatal).
    ReqFailed,
    /// `E_TOUCH_FAILED`: TOUCH of an unknown or foreign message (not fatal).
    TouchFailed,
    /// `E_TOO_MANY_CHANNEL_CONSUMERS`: the channel has `--max-channel-consumers` subscribers.
    TooManyChannelConsumers,
    /// `E_TOO_MANY_CONNECTIONS`: the broker has `--max-connections` clients; sent instead of
    /// serving a new connection, which is then closed.
    TooManyConnections,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 21] = [
        ErrorCode::Invalid,
        ErrorCode::BadProtocol,
        ErrorCode::BadBody,
        ErrorCode::BadMessage,
        ErrorCode::BadTopic,
        ErrorCode::BadChannel,
        ErrorCode::IdentifyFailed,
        ErrorCode::AuthDisabled,
        ErrorCode::AuthFailed,
        ErrorCode::AuthFirst,
        ErrorCode::AuthError,
        ErrorCode::Unauthorized,
        ErrorCode::SubFailed,
        ErrorCode::PubFailed,
        ErrorCode::MpubFailed,
        ErrorCode::DpubFailed,
        ErrorCode::FinFailed,
        ErrorCode::ReqFailed,
        ErrorCode::TouchFailed,
        ErrorCode::TooManyChannelConsumers,
        ErrorCode::TooManyConnections,
    ];

    /// The code as it appears on the wire, e.g. `"E_INVALID"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Invalid => "E_INVALID",
            ErrorCode::BadProtocol => "E_BAD_PROTOCOL",
            ErrorCode::BadBody => "E_BAD_BODY",
            ErrorCode::BadMessage => "E_BAD_MESSAGE",
            ErrorCode::BadTopic => "E_BAD_TOPIC",
            ErrorCode::BadChannel => "E_BAD_CHANNEL",
            ErrorCode::IdentifyFailed => "E_IDENTIFY_FAILED",
            ErrorCode::AuthDisabled => "E_AUTH_DISABLED",
            ErrorCode::AuthFailed => "E_AUTH_FAILED",
            ErrorCode::AuthFirst => "E_AUTH_FIRST",
            ErrorCode::AuthError => "E_AUTH_ERROR",
            ErrorCode::Unauthorized => "E_UNAUTHORIZED",
            ErrorCode::SubFailed => "E_SUB_FAILED",
            ErrorCode::PubFailed => "E_PUB_FAILED",
            ErrorCode::MpubFailed => "E_MPUB_FAILED",
            ErrorCode::DpubFailed => "E_DPUB_FAILED",
            ErrorCode::FinFailed => "E_FIN_FAILED",
            ErrorCode::ReqFailed => "E_REQ_FAILED",
            ErrorCode::TouchFailed => "E_TOUCH_FAILED",
            ErrorCode::TooManyChannelConsumers => "E_TOO_MANY_CHANNEL_CONSUMERS",
            ErrorCode::TooManyConnections => "E_TOO_MANY_CONNECTIONS",
        }
    }

    /// Whether the broker closes the connection after sending this error.
    ///
    /// Only the failures of FIN, REQ and TOUCH leave the connection open: a consumer may race a
    /// timeout and must be able to carry on.
    pub const fn is_fatal(self) -> bool {
        !matches!(
            self,
            ErrorCode::FinFailed | ErrorCode::ReqFailed | ErrorCode::TouchFailed
        )
    }

    /// The code named by `s` (exact, case-sensitive), if it is one of ours.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|code| code.as_str() == s)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error to send to the peer: NSQ's code and a human-readable description.
///
/// `Display` gives the exact wire text, `"<CODE> <message>"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {message}")]
pub struct ProtocolError {
    /// The code, the first word on the wire.
    pub code: ErrorCode,
    /// The description that follows the code.
    pub message: String,
}

impl ProtocolError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtocolError {
            code,
            message: message.into(),
        }
    }

    /// Whether the connection must be closed after sending this error.
    pub fn is_fatal(&self) -> bool {
        self.code.is_fatal()
    }

    /// Reads an error back from its wire text (the data of an error frame), for clients.
    ///
    /// Returns `None` when the first word is not one of [`ErrorCode`]'s codes (nsqd has a few
    /// more, e.g. `E_TOO_MANY_CHANNEL_CONSUMERS`) or the text is not UTF-8.
    pub fn from_wire(data: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(data).ok()?;
        let (code, message) = text.split_once(' ').unwrap_or((text, ""));
        Some(ProtocolError::new(ErrorCode::parse(code)?, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_parses_back_from_its_text() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert_eq!(code.to_string(), code.as_str());
            assert!(code.as_str().starts_with("E_"));
        }
        assert_eq!(ErrorCode::parse("e_invalid"), None);
        assert_eq!(ErrorCode::parse("E_NO_SUCH_CODE"), None);
        assert_eq!(ErrorCode::parse(""), None);
    }

    #[test]
    fn only_fin_req_touch_failures_are_not_fatal() {
        let non_fatal: Vec<_> = ErrorCode::ALL
            .into_iter()
            .filter(|c| !c.is_fatal())
            .collect();
        assert_eq!(
            non_fatal,
            [
                ErrorCode::FinFailed,
                ErrorCode::ReqFailed,
                ErrorCode::TouchFailed
            ]
        );
    }

    #[test]
    fn display_is_the_wire_text() {
        let err = ProtocolError::new(ErrorCode::BadTopic, "PUB topic name \"a b\" is not valid");
        assert_eq!(
            err.to_string(),
            "E_BAD_TOPIC PUB topic name \"a b\" is not valid"
        );
        assert!(err.is_fatal());
        assert!(!ProtocolError::new(ErrorCode::FinFailed, "x").is_fatal());
    }

    #[test]
    fn from_wire_reads_code_and_message() {
        let err = ProtocolError::from_wire(b"E_FIN_FAILED FIN 0000000000000001 failed").unwrap();
        assert_eq!(err.code, ErrorCode::FinFailed);
        assert_eq!(err.message, "FIN 0000000000000001 failed");
        let bare = ProtocolError::from_wire(b"E_INVALID").unwrap();
        assert_eq!(bare, ProtocolError::new(ErrorCode::Invalid, ""));
        assert_eq!(ProtocolError::from_wire(b"E_UNKNOWN x"), None);
        assert_eq!(ProtocolError::from_wire(b"\xff"), None);
    }
}
