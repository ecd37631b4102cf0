//! The node's error type for starting and running, and how a storage error is answered on
//! the wire (request errors over HTTP are `http::ApiError`). Neutral: every role and the
//! cluster use it.

use cfgnode_storage::StoreError;
use cfgnode_transport::{WireError, codes};

/// Why the node could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A setting or a file the node needs is wrong; the message says which and how to fix it.
    #[error("{0}")]
    Config(String),
    /// Storage could not be opened.
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// A listener could not be bound.
    #[error(
        "cannot listen on {addr}: {source}; is another process using it? pick another with {flag}"
    )]
    Bind {
        /// The address asked for.
        addr: String,
        /// The flag that sets it.
        flag: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The HTTP server failed while running.
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
}

/// The stable error code of a storage error, shared by the HTTP API and the QUIC protocol.
pub fn error_code(error: &StoreError) -> &'static str {
    match error {
        StoreError::InvalidNamespace { .. } => codes::INVALID_NAMESPACE,
        StoreError::InvalidKey { .. } => codes::INVALID_KEY,
        StoreError::InvalidRecordKind { .. } => codes::INVALID_RECORD_KIND,
        StoreError::UnknownCodec { .. } => codes::UNKNOWN_CODEC,
        StoreError::CodecMismatch { .. } => codes::CODEC_MISMATCH,
        StoreError::Invalid(_) => codes::INVALID_REQUEST,
        StoreError::ValueTooLarge { .. } => codes::VALUE_TOO_LARGE,
        StoreError::NamespaceNotFound { .. } => codes::NAMESPACE_NOT_FOUND,
        StoreError::KeyNotFound { .. } | StoreError::DanglingAlias { .. } => codes::KEY_NOT_FOUND,
        StoreError::AliasNotFound { .. } => codes::ALIAS_NOT_FOUND,
        StoreError::RecordNotFound { .. } => codes::RECORD_NOT_FOUND,
        StoreError::VersionNotFound { .. } => codes::VERSION_NOT_FOUND,
        StoreError::AlreadyExists { .. } => codes::ALREADY_EXISTS,
        StoreError::DoesNotExist { .. } => codes::DOES_NOT_EXIST,
        StoreError::VersionMismatch { .. } | StoreError::RecordVersionMismatch { .. } => {
            codes::VERSION_MISMATCH
        }
        StoreError::NameTaken(_) => codes::NAME_TAKEN,
        StoreError::Fenced { .. } | StoreError::OlderSet { .. } => codes::FENCED,
        StoreError::AlreadyPromised { .. } => codes::ALREADY_PROMISED,
        StoreError::NotMyPosition { .. } => codes::NOT_MY_POSITION,
        StoreError::StaleCopy { .. } => codes::STALE_COPY,
        // Local only (a release is never asked over the wire): the record moved on.
        StoreError::NotReleased { .. } => codes::NOT_MY_POSITION,
        StoreError::InvalidAppend(_) => codes::INVALID_APPEND,
        StoreError::WriterStopped => codes::UNAVAILABLE,
        StoreError::NoQuorum { .. } => codes::NO_QUORUM,
        StoreError::NodeIdMismatch { .. }
        | StoreError::InUse { .. }
        | StoreError::Corrupt(_)
        | StoreError::Storage(_) => codes::INTERNAL,
    }
}

/// A storage error as the wire carries it: the shared code and the message.
pub fn to_wire_error(error: StoreError) -> WireError {
    let code = error_code(&error);
    if code == codes::INTERNAL {
        tracing::error!(error = %error, "internal error answering a QUIC request");
    }
    WireError::new(code, error.to_string())
}
