//! The Rust client SDK for Meridian's public protocol (`docs/protocol.md`).
//!
//! - [`Rest`]: the `/v1` REST API (registration, devices, conversations, history).
//! - [`Session`]: one authenticated WebSocket: send (awaiting `sent`), ack,
//!   receipts, and the stream of deliveries.
//! - [`Client`]: what an app uses: reconnects with jittered exponential
//!   backoff, resumes from the device's stored cursor, retries a send under the
//!   same `client_msg_id`, drops duplicates by `msg_id`, acknowledges what it
//!   stored, and keeps each conversation in display order
//!   `(hlc, origin_region, msg_id)`.
//! - [`Discovery`]: the gateways of a service name, through a DNS resolver
//!   (GeoDNS's SRV answers), for a [`Client`] that follows them.
//!
//! Depends only on the protocol types (`meridian-wire`), never on server crates.

mod client;
mod discovery;
mod rest;
mod session;
mod tls;

pub use client::{Client, Connector, GatewayStream, Timeline};
pub use discovery::Discovery;
pub use meridian_wire::ErrorCode;
pub use meridian_wire::frames;
pub use rest::Rest;
pub use session::{Event, Keepalive, SentInfo, Session};
pub use tls::TlsRoots;

/// What can go wrong talking to Meridian.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    /// The server refused the request with a typed error.
    #[error("{code} ({status}): {message}")]
    Api {
        /// HTTP status (0 for WebSocket errors).
        status: u16,
        /// Stable code.
        code: ErrorCode,
        /// Detail.
        message: String,
    },
    /// HTTP transport failure.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// WebSocket transport failure.
    #[error("websocket: {0}")]
    WebSocket(String),
    /// A TLS configuration that cannot be used (a CA that does not parse).
    #[error("tls: {0}")]
    Tls(String),
    /// The server answered something this SDK does not understand.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The connection closed.
    #[error("connection closed")]
    Closed,
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The service name did not resolve to a gateway.
    #[error("discovery: {0}")]
    Discovery(String),
    /// The gateway turned the connection away for now (draining, or
    /// taking connections as fast as it can): come back after
    /// `retry_after`, here or elsewhere.
    #[error("gateway busy ({status}): retry after {} ms", retry_after.as_millis())]
    Busy {
        /// HTTP status of the refused upgrade; 0 when the connection was
        /// upgraded and then sent away before `ready` (`go_away`: the home
        /// core shed the session).
        status: u16,
        /// How long the gateway asked the client to wait.
        retry_after: std::time::Duration,
    },
}

impl SdkError {
    /// The error code, when the server sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether retrying (after reconnecting) may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Api { code, .. } => matches!(
                code,
                // `unauthenticated` means no auth frame arrived in time (a
                // slow or lossy link): connecting again may well succeed.
                ErrorCode::Unavailable
                    | ErrorCode::RateLimited
                    | ErrorCode::Internal
                    | ErrorCode::Unauthenticated
            ),
            Self::Http(_)
            | Self::WebSocket(_)
            | Self::Closed
            | Self::Timeout
            | Self::Discovery(_)
            | Self::Busy { .. } => true,
            Self::Protocol(_) | Self::Tls(_) => false,
        }
    }
}
