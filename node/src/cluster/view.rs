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
    /// The ring over every known member, down ones included: replica sets are drawn from it, so
    /// a follower that is down stays in its set (and counts against the quorum) until an alive
    /// member can take its place.
    everyone: Ring,
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
        let mut all: BTreeSet<NodeId> = members.iter().map(|m| m.peer.id.clone()).collect();
        all.insert(me.to_string());
        let everyone = Ring::new(&all, DEFAULT_VNODES);
        View {
            alive,
            addrs,
            ring,
            everyone,
        }
    }

    /// The replica set of `namespace` held by `holder`, `n` nodes at most (fewer when the
    /// cluster has fewer members, and then never an even number: `cfgnode_ring::set_size`,
    /// so `--replicas 3` on two nodes keeps one copy rather than a set either death stops): the holder, then the next members clockwise on the ring of
    /// every known member, alive ones first. A down member is kept only while no alive one can
    /// replace it, so a cluster that lost a majority of a set stops acknowledging writes instead
    /// of shrinking the set to the survivors (docs/replication.md, "The replica set").
    /// Costs a pass over the ring's points: callers keep the answer.
    pub fn replica_set(&self, namespace: &str, holder: &NodeId, n: usize) -> Vec<NodeId> {
        let others: Vec<NodeId> = self
            .everyone
            .successors(namespace)
            .into_iter()
            .filter(|node| node != holder)
            .collect();
        let want = cfgnode_ring::set_size(n, others.len() + 1) - 1;
        let alive = others.iter().filter(|node| self.alive.contains(*node));
        let down = others.iter().filter(|node| !self.alive.contains(*node));
        let mut followers: Vec<&NodeId> = alive.chain(down).take(want).collect();
        // In ring order, so a follower going down (and staying in the set) does not reorder it.
        followers.sort_by_key(|node| others.iter().position(|o| o == *node));
        std::iter::once(holder.clone())
            .chain(followers.into_iter().cloned())
            .collect()
    }

    /// True when every replica set under `--replicas n` has one member (a one-node cluster,
    /// `--replicas 1`, or two nodes under the default 3: `cfgnode_ring::set_size`): writes
    /// and reads need no quorum, so the hot paths skip replication without a look at the ring.
    pub fn solo(&self, n: usize) -> bool {
        cfgnode_ring::set_size(n, self.everyone.members().len()) <= 1
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
