//! The node's error type for starting and running (request errors are `http::ApiError`).

use cfgnode_storage::StoreError;

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
