//! Cluster administration answered by any node: members, placement, the ring, claims and pins
//! (docs/cluster.md). Claims and pins are authored here and gossiped to every node. The
//! answers are [`Cluster`] methods (the HTTP API calls them too); [`serve`] answers the QUIC
//! requests with them.

use cfgnode_ring::{Directive, Reason, Update};
use cfgnode_storage::validate_namespace;
use cfgnode_transport::{
    ClusterRequest, ClusterResponse, Response, WireError, WireMember, WirePlacement,
    WireReplicaView, WireRingShare,
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
    let (kind, namespace, target, strict) = match request {
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
            let answer = cluster.placement_view(&namespace).await?;
            return Ok(Response::Cluster(ClusterResponse::Placement(answer)));
        }
        ClusterRequest::Claim { namespace, node } => {
            let node = node.unwrap_or_else(|| cluster.me().to_string());
            (DirectiveKind::Claim, namespace, Some(node), false)
        }
        ClusterRequest::Release { namespace } => (DirectiveKind::Claim, namespace, None, false),
        ClusterRequest::Pin {
            namespace,
            node,
            strict,
        } => (DirectiveKind::Pin, namespace, Some(node), strict),
        ClusterRequest::Unpin { namespace } => (DirectiveKind::Pin, namespace, None, false),
    };
    let answer = cluster
        .set_directive(kind, &namespace, target, strict)
        .await?;
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
                replicas: Vec::new(),
                strict: map
                    .pin(namespace)
                    .is_some_and(|p| p.strict && p.target.is_some()),
            }
        }))
    }

    /// [`Cluster::placement`] with, under replication, the namespace's replica set as its
    /// holder replicates to it (else as the ring draws it), each member's position as it
    /// answers a state query now, and its lag behind the holder. Asks the members at once,
    /// each for at most a second.
    pub async fn placement_view(&self, namespace: &str) -> Result<WirePlacement, ClusterError> {
        let mut placement = self.placement(namespace)?;
        let Some(holder) = placement.holder.clone() else {
            return Ok(placement);
        };
        if self.inner.replicas <= 1 {
            return Ok(placement);
        }
        let (holder_state, holder_error) = match self.replica_state(&holder, namespace).await {
            Ok(state) => (state, None),
            Err(e) => (None, Some(e)),
        };
        let set = match holder_state.as_ref().map(|s| s.replicas.clone()) {
            Some(set) if set.first() == Some(&holder) => set,
            _ => self
                .view()
                .replica_set(namespace, &holder, self.inner.replicas),
        };
        let members = self.members();
        let state_of = |node: &str| {
            members
                .iter()
                .find(|m| m.id == node)
                .map_or("unknown".to_string(), |m| m.state.clone())
        };
        let asks = set
            .iter()
            .skip(1)
            .map(|node| async move { (node.clone(), self.replica_state(node, namespace).await) });
        let answers: Vec<(String, Result<_, String>)> = futures_util::future::join_all(asks).await;
        let holder_position = holder_state.as_ref().map(|s| s.position);
        let mut views = vec![WireReplicaView {
            node: holder.clone(),
            state: state_of(&holder),
            position: holder_position,
            lag: holder_position.map(|_| 0),
            error: holder_error,
            set_version: holder_state.as_ref().map(|s| s.set_version),
        }];
        for (node, answer) in answers {
            let (position, set_version, error) = match answer {
                Ok(state) => (
                    state.as_ref().map(|s| s.position),
                    state.map(|s| s.set_version),
                    None,
                ),
                Err(e) => (None, None, Some(e)),
            };
            let lag = match (holder_position, position) {
                (Some(h), Some(p)) => Some(h.revision.saturating_sub(p.revision)),
                (Some(h), None) if error.is_none() => Some(h.revision),
                _ => None,
            };
            views.push(WireReplicaView {
                state: state_of(&node),
                node,
                position,
                lag,
                error,
                set_version,
            });
        }
        placement.replicas = views;
        Ok(placement)
    }

    /// `node`'s replica state of `namespace` (this node's own from its store).
    pub(super) async fn replica_state(
        &self,
        node: &str,
        namespace: &str,
    ) -> Result<Option<cfgnode_transport::WireReplica>, String> {
        if node == self.inner.me {
            let ns = namespace.to_string();
            let found = crate::blocking::read(&self.inner.store, move |s| {
                Ok(s.replica(&ns)?.map(|r| (r, s.position(&ns))))
            })
            .await
            .map_err(|e| e.to_string())?;
            return match found {
                Some((record, position)) => {
                    let position = position.map_err(|e| e.to_string())?;
                    Ok(Some(cfgnode_transport::WireReplica {
                        promised: record.promised,
                        position: cfgnode_transport::WireLogPosition {
                            epoch: position.epoch,
                            revision: position.revision,
                        },
                        holder: record.holder,
                        replicas: record.replicas,
                        set_version: cfgnode_transport::WireLogPosition {
                            epoch: record.set_version.epoch,
                            revision: record.set_version.revision,
                        },
                    }))
                }
                None => Ok(None),
            };
        }
        let addr = self
            .addr_of(node)
            .ok_or_else(|| format!("no address known for {node}"))?;
        let request = cfgnode_transport::PeerRequest::ReplicaState {
            namespace: namespace.to_string(),
        };
        match self
            .peers()
            .call(addr, request, std::time::Duration::from_secs(1))
            .await
        {
            Ok(Response::Peer(cfgnode_transport::PeerResponse::Replica(state))) => Ok(state),
            Ok(other) => Err(format!("unexpected answer: {other:?}")),
            Err(e) => Err(e.into_wire().message),
        }
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
    /// `strict` (pins only) keeps the namespace on the pinned node even while it is down.
    pub async fn set_directive(
        &self,
        kind: DirectiveKind,
        namespace: &str,
        target: Option<String>,
        strict: bool,
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
            let directive = Directive::next(current, target, self.inner.me.clone())
                .map_err(|source| ClusterError::EpochExhausted {
                    namespace: namespace.to_string(),
                    source,
                })?
                .strict(strict && kind == DirectiveKind::Pin);
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
