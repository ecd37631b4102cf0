//! Cluster administration answered by any node: members, placement, the ring, claims and pins
//! (docs/cluster.md). Claims and pins are authored here and gossiped to every node.

use cfgnode_transport::{ClusterRequest, ClusterResponse, Response, WireError};

use super::{Cluster, DirectiveKind};

/// Answers one cluster-admin request.
pub async fn serve(cluster: &Cluster, request: ClusterRequest) -> Result<Response, WireError> {
    let placement = |answer| Response::Cluster(ClusterResponse::Placement(answer));
    match request {
        ClusterRequest::Members => Ok(Response::Cluster(ClusterResponse::Members(
            cluster.members(),
        ))),
        ClusterRequest::Placement { namespace } => cluster.placement(&namespace).map(placement),
        ClusterRequest::Ring => Ok(Response::Cluster(ClusterResponse::Ring(
            cluster.ring_shares(),
        ))),
        ClusterRequest::Claim { namespace, node } => {
            let node = node.unwrap_or_else(|| cluster.me().to_string());
            cluster
                .set_directive(DirectiveKind::Claim, &namespace, Some(node))
                .await
                .map(placement)
        }
        ClusterRequest::Release { namespace } => cluster
            .set_directive(DirectiveKind::Claim, &namespace, None)
            .await
            .map(placement),
        ClusterRequest::Pin { namespace, node } => cluster
            .set_directive(DirectiveKind::Pin, &namespace, Some(node))
            .await
            .map(placement),
        ClusterRequest::Unpin { namespace } => cluster
            .set_directive(DirectiveKind::Pin, &namespace, None)
            .await
            .map(placement),
    }
}
