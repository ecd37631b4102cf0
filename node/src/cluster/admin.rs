//! Cluster administration answered by any node: members, placement, the ring, claims and pins
//! (docs/cluster.md). Claims and pins are authored here and gossiped to every node. The
//! answers are [`Cluster`] methods (the HTTP API calls them too); [`serve`] answers the QUIC
//! requests with them.

use cfgnode_ring::{Directive, Reason, Update};
use cfgnode_storage::validate_namespace;
use cfgnode_transport::{
    ClusterRequest, ClusterResponse, Response, WireError, WireMember, WirePlacement, WireRingShare,
};

use super::{Cluster, ClusterError};
use crate::membership::{MemberState, MemberView};

/// Which directive an operator sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectiveKind {
    /// A pin.
    Pin,
    /// A claim.
    Claim,
}

/// Answers one cluster-admin request (the QUIC edge: a [`ClusterError`] becomes its wire
/// error here).
pub async fn serve(cluster: &Cluster, request: ClusterRequest) -> Result<Response, WireError> {
    let (kind, namespace, target) = match request {
        ClusterRequest::Members => {
            return Ok(Response::Cluster(ClusterResponse::Members(
                cluster.members(),
            )));
        }
        ClusterRequest::Ring => {
            return Ok(Response::Cluster(ClusterResponse::Ring(
                cluster.ring_shares(),
            )));
        }
        ClusterRequest::Placement { namespace } => {
            let answer = cluster.placement(&namespace)?;
            return Ok(Response::Cluster(ClusterResponse::Placement(answer)));
        }
        ClusterRequest::Claim { namespace, node } => {
            let node = node.unwrap_or_else(|| cluster.me().to_string());
            (DirectiveKind::Claim, namespace, Some(node))
        }
        ClusterRequest::Release { namespace } => (DirectiveKind::Claim, namespace, None),
        ClusterRequest::Pin { namespace, node } => (DirectiveKind::Pin, namespace, Some(node)),
        ClusterRequest::Unpin { namespace } => (DirectiveKind::Pin, namespace, None),
    };
    let answer = cluster.set_directive(kind, &namespace, target).await?;
    Ok(Response::Cluster(ClusterResponse::Placement(answer)))
}

impl Cluster {
    /// Where `namespace` is and should be.
    pub fn placement(&self, namespace: &str) -> Result<WirePlacement, ClusterError> {
        validate_namespace(namespace)?;
        let view = self.view();
        Ok(self.inner.state.read(|map| {
            let placement = view.desired(namespace, map);
            let record = map.holder(namespace);
            WirePlacement {
                namespace: namespace.to_string(),
                desired_owner: placement.as_ref().map(|p| p.owner.clone()),
                holder: record.map(|r| r.holder.clone()),
                epoch: record.map_or(0, |r| r.epoch),
                reason: placement.map(|p| reason_name(p.reason).to_string()),
            }
        }))
    }

    /// Every member this node knows.
    pub fn members(&self) -> Vec<WireMember> {
        self.inner
            .membership
            .members()
            .into_iter()
            .map(|m: MemberView| WireMember {
                id: m.peer.id,
                quic_addr: m.peer.quic.to_string(),
                http_addr: m.peer.http.to_string(),
                state: state_name(m.state).to_string(),
                generation: m.peer.generation,
            })
            .collect()
    }

    /// Namespaces per member: how many each holds and how many it should hold.
    pub fn ring_shares(&self) -> Vec<WireRingShare> {
        let view = self.view();
        let members = self.inner.membership.members();
        let mut shares: Vec<WireRingShare> = members
            .iter()
            .map(|m| WireRingShare {
                node: m.peer.id.clone(),
                state: state_name(m.state).to_string(),
                holds: 0,
                desired: 0,
            })
            .collect();
        self.inner.state.read(|map| {
            for (namespace, record) in map.holders() {
                if let Some(s) = shares.iter_mut().find(|s| s.node == record.holder) {
                    s.holds += 1;
                }
                if let Some(p) = view.desired(namespace, map)
                    && let Some(s) = shares.iter_mut().find(|s| s.node == p.owner)
                {
                    s.desired += 1;
                }
            }
        });
        shares
    }

    /// Sets (`Some`) or removes (`None`) a pin or claim, authored by this node with the next
    /// epoch, and answers the resulting placement. The namespace then moves in the background.
    pub async fn set_directive(
        &self,
        kind: DirectiveKind,
        namespace: &str,
        target: Option<String>,
    ) -> Result<WirePlacement, ClusterError> {
        validate_namespace(namespace)?;
        if let Some(node) = &target {
            let known = self
                .inner
                .membership
                .members()
                .iter()
                .any(|m| &m.peer.id == node);
            if !known {
                return Err(ClusterError::UnknownNode { node: node.clone() });
            }
        }
        let update = self.inner.state.read(|map| {
            let current = match kind {
                DirectiveKind::Pin => map.pin(namespace),
                DirectiveKind::Claim => map.claim(namespace),
            };
            let directive =
                Directive::next(current, target, self.inner.me.clone()).map_err(|source| {
                    ClusterError::EpochExhausted {
                        namespace: namespace.to_string(),
                        source,
                    }
                })?;
            Ok::<_, ClusterError>(match kind {
                DirectiveKind::Pin => Update::Pin {
                    namespace: namespace.to_string(),
                    directive,
                },
                DirectiveKind::Claim => Update::Claim {
                    namespace: namespace.to_string(),
                    directive,
                },
            })
        })?;
        self.author(update).await?;
        self.placement(namespace)
    }
}

fn reason_name(reason: Reason) -> &'static str {
    match reason {
        Reason::Pin => "pin",
        Reason::Claim => "claim",
        Reason::Ring => "ring",
    }
}

fn state_name(state: MemberState) -> &'static str {
    match state {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Down => "down",
    }
}
