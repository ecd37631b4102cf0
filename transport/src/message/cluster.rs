//! Cluster administration: members, placement, the ring, claims and pins
//! (docs/cluster.md). Any node answers; claims and pins are gossiped to every node.

use serde::{Deserialize, Serialize};

/// A cluster-admin operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterRequest {
    /// Every member this node knows.
    Members,
    /// Where a namespace is and should be.
    Placement {
        /// Namespace.
        namespace: String,
    },
    /// Namespaces per node (held and desired).
    Ring,
    /// Claim a namespace for a node (durable ownership that follows the node while it lives).
    Claim {
        /// Namespace.
        namespace: String,
        /// The claimant; `None` = the node receiving the request.
        node: Option<String>,
    },
    /// Drop a namespace's claim.
    Release {
        /// Namespace.
        namespace: String,
    },
    /// Pin a namespace to a node (strict placement).
    Pin {
        /// Namespace.
        namespace: String,
        /// The node.
        node: String,
    },
    /// Drop a namespace's pin.
    Unpin {
        /// Namespace.
        namespace: String,
    },
}

impl ClusterRequest {
    /// True for the requests that change placement (claims and pins).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            ClusterRequest::Claim { .. }
                | ClusterRequest::Release { .. }
                | ClusterRequest::Pin { .. }
                | ClusterRequest::Unpin { .. }
        )
    }

    /// The operation's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            ClusterRequest::Members => "members",
            ClusterRequest::Placement { .. } => "placement",
            ClusterRequest::Ring => "ring",
            ClusterRequest::Claim { .. } => "claim",
            ClusterRequest::Release { .. } => "release",
            ClusterRequest::Pin { .. } => "pin",
            ClusterRequest::Unpin { .. } => "unpin",
        }
    }
}

/// A cluster-admin operation's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterResponse {
    /// Answer to `Members`.
    Members(Vec<WireMember>),
    /// Answer to `Placement`, `Claim`, `Release`, `Pin`, `Unpin`.
    Placement(WirePlacement),
    /// Answer to `Ring`.
    Ring(Vec<WireRingShare>),
}

/// A cluster member as operators see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMember {
    /// Node id.
    pub id: String,
    /// QUIC address.
    pub quic_addr: String,
    /// HTTP address.
    pub http_addr: String,
    /// `alive`, `suspect` or `down`.
    pub state: String,
    /// Grows at every start of the node.
    pub generation: u64,
}

/// Where a namespace is and should be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePlacement {
    /// Namespace.
    pub namespace: String,
    /// The node that should hold it (`None` when no member is alive).
    pub desired_owner: Option<String>,
    /// The node that holds it (`None` before its first write).
    pub holder: Option<String>,
    /// The holder epoch (0 before its first write).
    pub epoch: u64,
    /// Why the desired owner: `pin`, `claim` or `ring`.
    pub reason: Option<String>,
}

/// How many namespaces a node holds and should hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRingShare {
    /// Node id.
    pub node: String,
    /// `alive`, `suspect` or `down`.
    pub state: String,
    /// Namespaces it holds.
    pub holds: u64,
    /// Namespaces whose desired owner it is.
    pub desired: u64,
}
