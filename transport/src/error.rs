//! Transport errors: framing, decoding, and the error answer a peer sends.

use serde::{Deserialize, Serialize};

use crate::codes;

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
