//! [`ClusterError`]: why a cluster answer (placement, a claim or pin, a create check, a handoff
//! step received, a pushed map) failed. The cluster's methods return it; the front ends turn it
//! into their own shape once, at their edge: `WireError` (its code from
//! `cfgnode_transport::codes`) for QUIC, `ApiError` for HTTP (`http::error`).

use cfgnode_ring::{EpochError, NodeId, Refusal};
use cfgnode_storage::StoreError;
use cfgnode_transport::{WireError, codes};

/// Why a cluster answer failed. Each variant has one wire code ([`ClusterError::code`]).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A claim or pin names a node that is not a member; the operator mistyped it or the node
    /// has not joined yet.
    #[error("node {node:?} is not a member of this cluster; `cfgnode cluster members` lists them")]
    UnknownNode {
        /// The id as the request spelled it, so the operator sees the typo.
        node: NodeId,
    },
    /// The namespace's pin or claim epoch cannot grow any more (an epoch is a `u64`: only a
    /// hostile or corrupt history gets there).
    #[error("{namespace:?}: {source}")]
    EpochExhausted {
        /// Whose directive could not be changed.
        namespace: String,
        /// What the epoch rule said.
        source: EpochError,
    },
    /// This node refused a handoff step (an offer, a chunk or a commit) by the receiving rule;
    /// the giver keeps the namespace and retries later.
    #[error(transparent)]
    HandoffRefused(#[from] Refusal),
    /// A handoff chunk or a pushed map did not decode: the sender runs another version or is
    /// broken.
    #[error("{0}")]
    Malformed(String),
    /// A change to the cluster map could not be made durable here (the persister stopped: the
    /// node is shutting down, or storage failed; see the node's log).
    #[error("cannot record a cluster map change durably: {0}")]
    NotRecorded(String),
    /// A blocking storage task died (a bug; see the node's log).
    #[error("a storage task failed: {0}")]
    Task(String),
    /// Storage refused or failed (an invalid namespace name included).
    #[error(transparent)]
    Storage(#[from] StoreError),
}

impl ClusterError {
    /// The stable wire code of this error (`cfgnode_transport::codes`), shared by QUIC and HTTP.
    pub fn code(&self) -> &'static str {
        match self {
            ClusterError::UnknownNode { .. } => codes::UNKNOWN_NODE,
            ClusterError::HandoffRefused(_) => codes::HANDOFF_REFUSED,
            ClusterError::Malformed(_) => codes::MALFORMED,
            ClusterError::EpochExhausted { .. }
            | ClusterError::NotRecorded(_)
            | ClusterError::Task(_) => codes::INTERNAL,
            ClusterError::Storage(e) => crate::error::error_code(e),
        }
    }
}

/// The one conversion to the wire: the code and the message, internal errors logged.
impl From<ClusterError> for WireError {
    fn from(error: ClusterError) -> Self {
        let code = error.code();
        if code == codes::INTERNAL {
            tracing::error!(error = %error, "internal error answering a cluster request");
        }
        WireError::new(code, error.to_string())
    }
}
