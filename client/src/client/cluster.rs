//! The typed cluster operations: members, placement, ring shares, claims and pins.

use cfgnode_transport::{
    ClusterRequest, ClusterResponse, Request, Response, WireMember, WirePlacement, WireRingShare,
};

use crate::error::ClientError;

use super::Client;

/// A cluster member.
pub type Member = WireMember;
/// Where a namespace is and should be.
pub type Placement = WirePlacement;
/// Namespaces per node.
pub type RingShare = WireRingShare;

impl Client {
    /// Every member the answering node knows.
    pub async fn members(&self) -> Result<Vec<Member>, ClientError> {
        match self.call(Request::Cluster(ClusterRequest::Members)).await? {
            Response::Cluster(ClusterResponse::Members(members)) => Ok(members),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Where `namespace` is (holder, epoch) and should be (desired owner, and why).
    pub async fn placement(&self, namespace: &str) -> Result<Placement, ClientError> {
        self.placement_call(Request::Cluster(ClusterRequest::Placement {
            namespace: namespace.into(),
        }))
        .await
    }

    /// How many namespaces each node holds and should hold.
    pub async fn ring(&self) -> Result<Vec<RingShare>, ClientError> {
        match self.call(Request::Cluster(ClusterRequest::Ring)).await? {
            Response::Cluster(ClusterResponse::Ring(shares)) => Ok(shares),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Claims `namespace` for `node` (`None`: the node that answers). The data moves in the
    /// background; poll [`Client::placement`] until `holder` is the claimant.
    pub async fn claim(
        &self,
        namespace: &str,
        node: Option<&str>,
    ) -> Result<Placement, ClientError> {
        self.placement_call(Request::Cluster(ClusterRequest::Claim {
            namespace: namespace.into(),
            node: node.map(str::to_string),
        }))
        .await
    }

    /// Drops the claim on `namespace`.
    pub async fn release(&self, namespace: &str) -> Result<Placement, ClientError> {
        self.placement_call(Request::Cluster(ClusterRequest::Release {
            namespace: namespace.into(),
        }))
        .await
    }

    /// Pins `namespace` to `node`, its preferred holder: with replication the namespace fails
    /// over while `node` is down and returns once it is back.
    pub async fn pin(&self, namespace: &str, node: &str) -> Result<Placement, ClientError> {
        self.pin_with(namespace, node, false).await
    }

    /// Pins `namespace` to `node`; `strict` keeps it there even while `node` is down (its
    /// requests answer `holder_down` meanwhile), for data that must not live elsewhere.
    pub async fn pin_with(
        &self,
        namespace: &str,
        node: &str,
        strict: bool,
    ) -> Result<Placement, ClientError> {
        self.placement_call(Request::Cluster(ClusterRequest::Pin {
            namespace: namespace.into(),
            node: node.into(),
            strict,
        }))
        .await
    }

    /// Drops the pin on `namespace`.
    pub async fn unpin(&self, namespace: &str) -> Result<Placement, ClientError> {
        self.placement_call(Request::Cluster(ClusterRequest::Unpin {
            namespace: namespace.into(),
        }))
        .await
    }

    async fn placement_call(&self, request: Request) -> Result<Placement, ClientError> {
        match self.call(request).await? {
            Response::Cluster(ClusterResponse::Placement(placement)) => Ok(placement),
            other => Err(Self::unexpected(other)),
        }
    }
}
