//! Transport errors: framing, decoding, and the error answer a peer sends.

use serde::{Deserialize, Serialize};

/// A frame could not be cut from the byte stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The peer declared (or we tried to send) a frame over the limit.
    #[error("frame of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The declared size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("the stream ended in the middle of a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes of the partial frame.
        buffered: usize,
    },
}

/// A frame's payload is not a message we can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload does not start with the cfgnode magic bytes: not our protocol.
    #[error("not a cfgnode message (bad magic bytes)")]
    BadMagic,
    /// The peer speaks another protocol version.
    #[error(
        "peer speaks protocol version {theirs}, this node speaks {ours}: upgrade the older side"
    )]
    UnsupportedVersion {
        /// The peer's version.
        theirs: u16,
        /// Ours.
        ours: u16,
    },
    /// The message is from another cluster.
    #[error("message is for cluster {theirs:?}, this is cluster {ours:?}: check --cluster-id")]
    WrongCluster {
        /// The peer's cluster id.
        theirs: String,
        /// Ours.
        ours: String,
    },
    /// The body does not decode.
    #[error("malformed message body: {0}")]
    Malformed(String),
}

impl DecodeError {
    /// The stable error code for this error, as sent in a [`WireError`].
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::BadMagic | DecodeError::Malformed(_) => codes::MALFORMED,
            DecodeError::UnsupportedVersion { .. } => codes::UNSUPPORTED_VERSION,
            DecodeError::WrongCluster { .. } => codes::WRONG_CLUSTER,
        }
    }
}

/// The error answer of a request, as it travels on the wire.
///
/// `code` is a stable string (the same vocabulary as the HTTP API's `error.code`) rather than an
/// enum, so a newer peer's new code still decodes on an older one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct WireError {
    /// A stable machine-readable code, e.g. `key_not_found`.
    pub code: String,
    /// What happened and what to do.
    pub message: String,
}

impl WireError {
    /// An error with `code` and `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        WireError {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// The error codes the transport itself produces (the config role adds its own, shared with
/// the HTTP API).
pub mod codes {
    /// The payload could not be decoded.
    pub const MALFORMED: &str = "malformed";
    /// The peer speaks another protocol version.
    pub const UNSUPPORTED_VERSION: &str = "unsupported_version";
    /// The peer belongs to another cluster.
    pub const WRONG_CLUSTER: &str = "wrong_cluster";
    /// A frame was over the size limit.
    pub const FRAME_TOO_LARGE: &str = "frame_too_large";
    /// Missing or wrong token.
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    /// The node is shutting down or overloaded.
    pub const UNAVAILABLE: &str = "unavailable";
    /// The server failed.
    pub const INTERNAL: &str = "internal";
    /// The request took too long.
    pub const TIMEOUT: &str = "timeout";
    /// The namespace's holder is down (its data is on that node only).
    pub const HOLDER_DOWN: &str = "holder_down";
    /// The namespace is moving between nodes and the request could not follow it within the
    /// hop limit; retry.
    pub const MOVING: &str = "namespace_moving";
    /// A node named in the request is not a member of the cluster.
    pub const UNKNOWN_NODE: &str = "unknown_node";
    /// The request is only for nodes of the cluster (handoff, anti-entropy).
    pub const FORBIDDEN: &str = "forbidden";
    /// The node cannot decide yet: it has not merged the cluster map from a peer since it
    /// started, or the members do not agree yet on who creates a new namespace; retry shortly.
    pub const NOT_READY: &str = "not_ready";
}
