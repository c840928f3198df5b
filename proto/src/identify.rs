//! JSON bodies of IDENTIFY (request and feature-negotiation response) and of the AUTH response.
//!
//! ```text
//! client ──IDENTIFY\n[i32 size]{"client_id":..,"feature_negotiation":true,..}──▶ broker
//! client ◀──response frame {"max_rdy_count":2500,"version":..,..}────────────── broker
//! client ──AUTH\n[i32 size]<secret>──────────────────────────────────────────▶ broker
//! client ◀──response frame {"identity":..,"identity_url":..,"permission_count":N} broker
//! ```
//!
//! Decoding is as lenient as nsqd's Go `encoding/json`: unknown fields (go-nsq sends `short_id`
//! and `long_id`) are ignored, missing fields and explicit `null` read as the zero value. A zero
//! value in a request means "the broker's default" (NSQ's convention); range checks against the
//! broker's configuration are the broker's job. Times are milliseconds.

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, ProtocolError};
use crate::json::null_as_default;

/// Body of a client's IDENTIFY command.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IdentifyRequest {
    /// Client-chosen identifier (shown in stats).
    #[serde(deserialize_with = "null_as_default")]
    pub client_id: String,
    /// The client's hostname.
    #[serde(deserialize_with = "null_as_default")]
    pub hostname: String,
    /// Client library and version, e.g. `go-nsq/1.1.0`.
    #[serde(deserialize_with = "null_as_default")]
    pub user_agent: String,
    /// Milliseconds between heartbeats; -1 disables, 0 means the default.
    #[serde(deserialize_with = "null_as_default")]
    pub heartbeat_interval: i64,
    /// Bytes the broker may buffer before writing; -1 unbuffered, 0 default.
    #[serde(deserialize_with = "null_as_default")]
    pub output_buffer_size: i64,
    /// Milliseconds the broker may hold buffered output; -1 disables, 0 default.
    #[serde(deserialize_with = "null_as_default")]
    pub output_buffer_timeout: i64,
    /// Whether the client wants the JSON response instead of `OK`.
    #[serde(deserialize_with = "null_as_default")]
    pub feature_negotiation: bool,
    /// Whether the client wants to upgrade to TLS.
    #[serde(deserialize_with = "null_as_default")]
    pub tls_v1: bool,
    /// Whether the client wants snappy compression.
    #[serde(deserialize_with = "null_as_default")]
    pub snappy: bool,
    /// Whether the client wants deflate compression.
    #[serde(deserialize_with = "null_as_default")]
    pub deflate: bool,
    /// Requested deflate level; 0 or less means the default (6).
    #[serde(deserialize_with = "null_as_default")]
    pub deflate_level: i32,
    /// Percentage of messages to deliver (0 = all).
    #[serde(deserialize_with = "null_as_default")]
    pub sample_rate: i32,
    /// Milliseconds before an unacknowledged message is redelivered; 0 means the default.
    #[serde(deserialize_with = "null_as_default")]
    pub msg_timeout: i64,
}

/// nsqd's description for an IDENTIFY body that is not valid JSON (code `E_BAD_BODY`).
pub const BAD_JSON_MESSAGE: &str = "IDENTIFY failed to decode JSON body";

impl IdentifyRequest {
    /// Reads an IDENTIFY body. On error, log the cause and answer the client with
    /// [`IdentifyRequest::bad_json_error`], as nsqd does (it never tells the client why).
    pub fn from_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// nsqd's error for an IDENTIFY body that [`IdentifyRequest::from_json`] rejected:
    /// `E_BAD_BODY IDENTIFY failed to decode JSON body`.
    pub fn bad_json_error() -> ProtocolError {
        ProtocolError::new(ErrorCode::BadBody, BAD_JSON_MESSAGE)
    }

    /// The JSON body to send.
    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// The broker's answer to IDENTIFY when `feature_negotiation` is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IdentifyResponse {
    /// Largest RDY count the broker accepts.
    #[serde(deserialize_with = "null_as_default")]
    pub max_rdy_count: i64,
    /// Broker version.
    #[serde(deserialize_with = "null_as_default")]
    pub version: String,
    /// Largest `msg_timeout` a client may ask for, in milliseconds.
    #[serde(deserialize_with = "null_as_default")]
    pub max_msg_timeout: i64,
    /// The message timeout in force for this client, in milliseconds.
    #[serde(deserialize_with = "null_as_default")]
    pub msg_timeout: i64,
    /// Whether the connection upgrades to TLS next.
    #[serde(deserialize_with = "null_as_default")]
    pub tls_v1: bool,
    /// Whether the connection switches to deflate next.
    #[serde(deserialize_with = "null_as_default")]
    pub deflate: bool,
    /// Deflate level in force.
    #[serde(deserialize_with = "null_as_default")]
    pub deflate_level: i32,
    /// Largest deflate level the broker allows.
    #[serde(deserialize_with = "null_as_default")]
    pub max_deflate_level: i32,
    /// Whether the connection switches to snappy next.
    #[serde(deserialize_with = "null_as_default")]
    pub snappy: bool,
    /// Sample rate in force.
    #[serde(deserialize_with = "null_as_default")]
    pub sample_rate: i32,
    /// Whether the client must send AUTH before SUB or PUB.
    #[serde(deserialize_with = "null_as_default")]
    pub auth_required: bool,
    /// Output buffer size in force, in bytes.
    #[serde(deserialize_with = "null_as_default")]
    pub output_buffer_size: i64,
    /// Output buffer timeout in force, in milliseconds.
    #[serde(deserialize_with = "null_as_default")]
    pub output_buffer_timeout: i64,
}

impl IdentifyResponse {
    /// The JSON data of the response frame.
    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// The broker's answer to a successful AUTH.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthResponse {
    /// Identity the auth server gave this secret.
    #[serde(deserialize_with = "null_as_default")]
    pub identity: String,
    /// Link about that identity, from the auth server.
    #[serde(deserialize_with = "null_as_default")]
    pub identity_url: String,
    /// How many authorizations the identity holds.
    #[serde(deserialize_with = "null_as_default")]
    pub permission_count: i64,
}

impl AuthResponse {
    /// The JSON data of the response frame.
    pub fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// Serializes one of this crate's plain structs, which cannot fail: they hold only strings,
/// integers and booleans.
pub(crate) fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|err| unreachable!("plain struct to JSON: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_go_nsq_identify() {
        let body = br#"{"client_id":"c1","hostname":"h","user_agent":"go-nsq/1.1.0",
            "short_id":"legacy","long_id":"legacy.example","feature_negotiation":true,
            "heartbeat_interval":30000,"output_buffer_size":16384,"output_buffer_timeout":250,
            "tls_v1":false,"snappy":false,"deflate":true,"deflate_level":6,"sample_rate":0,
            "msg_timeout":0}"#;
        let req = IdentifyRequest::from_json(body).unwrap();
        assert_eq!(req.client_id, "c1");
        assert_eq!(req.user_agent, "go-nsq/1.1.0");
        assert!(req.feature_negotiation);
        assert!(req.deflate);
        assert_eq!(req.heartbeat_interval, 30000);
        assert_eq!(req.deflate_level, 6);
    }

    #[test]
    fn missing_and_null_fields_are_zero() {
        assert_eq!(
            IdentifyRequest::from_json(b"{}").unwrap(),
            IdentifyRequest::default()
        );
        let req = IdentifyRequest::from_json(
            br#"{"client_id":null,"heartbeat_interval":null,"snappy":null,"sample_rate":7}"#,
        )
        .unwrap();
        assert_eq!(
            req,
            IdentifyRequest {
                sample_rate: 7,
                ..IdentifyRequest::default()
            }
        );
    }

    #[test]
    fn bad_json_is_rejected() {
        for body in [
            &b"not json"[..],
            b"1",
            br#"{"heartbeat_interval":"x"}"#,
            b"",
        ] {
            assert!(IdentifyRequest::from_json(body).is_err());
        }
        assert_eq!(
            IdentifyRequest::bad_json_error().to_string(),
            "E_BAD_BODY IDENTIFY failed to decode JSON body"
        );
    }

    #[test]
    fn request_round_trips() {
        let req = IdentifyRequest {
            client_id: "c".into(),
            hostname: "h".into(),
            user_agent: "ferry".into(),
            heartbeat_interval: -1,
            output_buffer_size: 64,
            output_buffer_timeout: 25,
            feature_negotiation: true,
            tls_v1: true,
            snappy: true,
            deflate: false,
            deflate_level: 3,
            sample_rate: 50,
            msg_timeout: 60000,
        };
        assert_eq!(IdentifyRequest::from_json(&req.to_json()).unwrap(), req);
    }

    #[test]
    fn response_has_nsqd_field_names() {
        let resp = IdentifyResponse {
            max_rdy_count: 2500,
            version: "1.3.0".into(),
            ..IdentifyResponse::default()
        };
        let value: serde_json::Value = serde_json::from_slice(&resp.to_json()).unwrap();
        let mut keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "auth_required",
                "deflate",
                "deflate_level",
                "max_deflate_level",
                "max_msg_timeout",
                "max_rdy_count",
                "msg_timeout",
                "output_buffer_size",
                "output_buffer_timeout",
                "sample_rate",
                "snappy",
                "tls_v1",
                "version"
            ]
        );
        let back: IdentifyResponse = serde_json::from_slice(&resp.to_json()).unwrap();
        assert_eq!(back, resp);
    }

    #[test]
    fn auth_response_round_trips() {
        let resp = AuthResponse {
            identity: "svc".into(),
            identity_url: "https://auth.invalid/svc".into(),
            permission_count: 2,
        };
        let json = String::from_utf8(resp.to_json()).unwrap();
        assert!(json.contains(r#""permission_count":2"#), "{json}");
        assert_eq!(serde_json::from_str::<AuthResponse>(&json).unwrap(), resp);
        let lenient: AuthResponse =
            serde_json::from_str(r#"{"identity":null,"extra":[1]}"#).unwrap();
        assert_eq!(lenient, AuthResponse::default());
    }
}
