//! [`View`]: the membership as routing sees it (who counts as alive, where members are, the
//! ring over the alive ones), built once per membership change and shared by every request.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use cfgnode_ring::{ClusterMap, DEFAULT_VNODES, NodeId, Placement, Ring, desired_owner};

use crate::membership::{MemberState, MemberView};

/// Who is alive, where members are, and the ring over the alive ones: everything routing
/// needs from the membership, built once per membership change.
#[derive(Debug)]
pub struct View {
    /// Members that count as alive for placement and routing (alive or suspect: a suspect
    /// may well refute, and moving namespaces away from it at once would be churn), this node
    /// included.
    pub alive: BTreeSet<NodeId>,
    addrs: HashMap<NodeId, SocketAddr>,
    ring: Ring,
}

impl View {
    pub(super) fn new(me: &str, members: &[MemberView]) -> View {
        let mut alive: BTreeSet<NodeId> = members
            .iter()
            .filter(|m| m.state != MemberState::Down)
            .map(|m| m.peer.id.clone())
            .collect();
        alive.insert(me.to_string());
        let addrs = members
            .iter()
            .map(|m| (m.peer.id.clone(), m.peer.quic))
            .collect();
        let ring = Ring::new(&alive, DEFAULT_VNODES);
        View { alive, addrs, ring }
    }

    /// The QUIC address of member `node`.
    pub fn addr_of(&self, node: &str) -> Option<SocketAddr> {
        self.addrs.get(node).copied()
    }

    /// The desired owner of `namespace` under `map`.
    pub fn desired(&self, namespace: &str, map: &ClusterMap) -> Option<Placement> {
        desired_owner(
            namespace,
            &self.ring,
            &self.alive,
            map.pin(namespace),
            map.claim(namespace),
        )
    }
}
