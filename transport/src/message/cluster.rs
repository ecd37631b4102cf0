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
        /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
        namespace: String,
    },
    /// Namespaces per node (held and desired).
    Ring,
    /// Claim a namespace for a node (durable ownership that follows the node while it lives).
    Claim {
        /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
        namespace: String,
        /// The claimant; `None` = the node receiving the request.
        node: Option<String>,
    },
    /// Drop a namespace's claim.
    Release {
        /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
        namespace: String,
    },
    /// Pin a namespace to a node: its preferred holder (it fails over while the node is down
    /// and returns once it is back), or with `strict` its only holder (503 while down).
    Pin {
        /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
        namespace: String,
        /// The member to pin it to: a node id as `cfgnode cluster members` lists it.
        node: String,
        /// Keep the namespace on `node` even while it is down.
        strict: bool,
    },
    /// Drop a namespace's pin.
    Unpin {
        /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
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
    /// Its node id: stable across restarts (`generation` tells its lives apart).
    pub id: String,
    /// Where clients and peers reach it over QUIC (`host:port`).
    pub quic_addr: String,
    /// Where its HTTP API listens (`host:port`).
    pub http_addr: String,
    /// `alive`, `suspect` or `down`.
    pub state: String,
    /// Grows at every start of the node.
    pub generation: u64,
}

/// Where a namespace is and should be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePlacement {
    /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
    pub namespace: String,
    /// The node that should hold it (`None` when no member is alive).
    pub desired_owner: Option<String>,
    /// The node that holds it (`None` before its first write).
    pub holder: Option<String>,
    /// The holder epoch (0 before its first write).
    pub epoch: u64,
    /// Why the desired owner: `pin`, `claim` or `ring`.
    pub reason: Option<String>,
    /// With `--replicas` above 1, in `Placement` answers: the replica set (the holder first),
    /// each member's log position as it answered and its lag behind the holder. Empty without
    /// replication, and in answers to claims and pins.
    pub replicas: Vec<WireReplicaView>,
    /// True when the namespace is under a strict pin (it stays on the pinned node even while
    /// that node is down).
    pub strict: bool,
}

/// One member of a namespace's replica set as a placement view shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireReplicaView {
    /// The member, by node id.
    pub node: String,
    /// `alive`, `suspect` or `down` (as this node's membership sees it).
    pub state: String,
    /// Its copy's position, `None` when it did not answer (`error` says why).
    pub position: Option<crate::WireLogPosition>,
    /// Revisions it is behind the holder's (0 for the holder; `None` when either is unknown).
    pub lag: Option<u64>,
    /// Why its position is unknown.
    pub error: Option<String>,
    /// The version of the replica set it was last told (`ReplicaAppend::set_version`; the
    /// holder's own for the holder): a member behind the holder's has not heard of the newest
    /// set yet. `None` when it did not answer.
    pub set_version: Option<crate::WireLogPosition>,
}

/// How many namespaces a node holds and should hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRingShare {
    /// The member, by node id.
    pub node: String,
    /// `alive`, `suspect` or `down`.
    pub state: String,
    /// Namespaces it holds.
    pub holds: u64,
    /// Namespaces whose desired owner it is.
    pub desired: u64,
}
