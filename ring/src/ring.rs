//! The consistent-hash ring over alive members.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};

use hashring::HashRing;

/// A node's stable id (as stored in its data dir).
pub type NodeId = String;

/// Virtual nodes per member: enough that with 8 members no node gets more than ~1.25x the mean
/// share of namespaces (see the balance test), few enough that building the ring is cheap.
pub const DEFAULT_VNODES: u32 = 256;

/// One point of the ring: a member's `index`-th virtual node.
#[derive(Clone, Debug, PartialEq, Eq)]
struct VirtualNode {
    node: NodeId,
    index: u32,
}

impl Hash for VirtualNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Explicit bytes, not derived Hash: the ring must be identical on every node and
        // across releases.
        state.write(self.node.as_bytes());
        state.write(&[0]);
        state.write(&self.index.to_be_bytes());
    }
}

/// A namespace name hashed as its bytes.
struct NamespaceKey<'a>(&'a str);

impl Hash for NamespaceKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0.as_bytes());
    }
}

/// The ring over a set of members.
#[derive(Debug)]
pub struct Ring {
    ring: HashRing<VirtualNode>,
    members: BTreeSet<NodeId>,
}

impl Ring {
    /// A ring over `members` (duplicates ignored) with `vnodes` points each.
    pub fn new<'a>(members: impl IntoIterator<Item = &'a NodeId>, vnodes: u32) -> Ring {
        // Sorted and deduplicated, so equal hash points (vanishingly rare) are broken the same
        // way everywhere: hashring's sort is stable.
        let members: BTreeSet<NodeId> = members.into_iter().cloned().collect();
        let mut ring = HashRing::new();
        let points = members
            .iter()
            .flat_map(|node| {
                (0..vnodes.max(1)).map(|index| VirtualNode {
                    node: node.clone(),
                    index,
                })
            })
            .collect();
        ring.batch_add(points);
        Ring { ring, members }
    }

    /// The members on the ring.
    pub fn members(&self) -> &BTreeSet<NodeId> {
        &self.members
    }

    /// The member owning `namespace` on the ring, or `None` for an empty ring.
    pub fn owner(&self, namespace: &str) -> Option<&NodeId> {
        self.ring.get(&NamespaceKey(namespace)).map(|v| &v.node)
    }

    /// Every member once, in clockwise order from `namespace`'s point: the first is
    /// [`Ring::owner`], then each member in the order its first point follows. Replica sets are
    /// cut from this list ([`crate::replica_set`]), so every node orders a namespace's replicas
    /// the same way. Empty for an empty ring.
    ///
    /// Walks the ring's points from the namespace's one (hashring's `get_with_replicas`, which
    /// starts at the same point as `get`), so it costs one pass over `members * vnodes` points;
    /// callers keep the answer per ring rather than asking on every write.
    pub fn successors(&self, namespace: &str) -> Vec<NodeId> {
        // `get_with_replicas(key, r)` yields `r + 1` points (capped at all of them); asking for
        // `len - 1` replicas yields every point once, starting at the owner's.
        let points = self
            .ring
            .get_with_replicas(&NamespaceKey(namespace), self.ring.len().saturating_sub(1))
            .unwrap_or_default();
        let mut seen = BTreeSet::new();
        let mut order = Vec::with_capacity(self.members.len());
        for point in points {
            if order.len() == self.members.len() {
                break;
            }
            if seen.insert(point.node.clone()) {
                order.push(point.node);
            }
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_ring_owns_nothing_and_one_member_owns_everything() {
        let empty: [NodeId; 0] = [];
        assert_eq!(Ring::new(empty.iter(), 16).owner("a"), None);
        let one = ["n1".to_string()];
        let ring = Ring::new(one.iter(), 16);
        assert!(
            ["a", "b", "c"]
                .iter()
                .all(|ns| ring.owner(ns) == Some(&one[0]))
        );
    }

    #[test]
    fn successors_list_every_member_once_starting_at_the_owner() {
        let empty: [NodeId; 0] = [];
        assert!(Ring::new(empty.iter(), 16).successors("a").is_empty());
        let one = ["n1".to_string()];
        assert_eq!(Ring::new(one.iter(), 16).successors("a"), one.to_vec());
        let members: Vec<NodeId> = (0..5).map(|i| format!("n{i}")).collect();
        let ring = Ring::new(members.iter(), 16);
        let reversed = Ring::new(members.iter().rev(), 16);
        let mut firsts = BTreeSet::new();
        for ns in (0..200).map(|i| format!("ns{i}")) {
            let order = ring.successors(&ns);
            assert_eq!(order.first(), ring.owner(&ns), "{ns}");
            let distinct: BTreeSet<&NodeId> = order.iter().collect();
            assert_eq!(distinct.len(), members.len(), "{ns}: {order:?}");
            // The order is the ring's, not the order the members were given in.
            assert_eq!(reversed.successors(&ns), order, "{ns}");
            firsts.insert(order[1].clone());
        }
        // The second place is spread over the members, not always the same one.
        assert_eq!(firsts.len(), members.len());
    }

    #[test]
    fn successors_follow_the_points_clockwise() {
        // Rebuilt independently from the hashring's points (walked from the owner's first
        // point) on a ring with one point per member, where the order is the points' order.
        let members: Vec<NodeId> = (0..6).map(|i| format!("n{i}")).collect();
        let ring = Ring::new(members.iter(), 1);
        let points: Vec<NodeId> = ring.ring.clone().into_iter().map(|v| v.node).collect();
        for ns in ["a", "b", "c", "d", "e", "f", "g"] {
            let owner = ring.owner(ns).expect("non-empty ring");
            let start = points
                .iter()
                .position(|p| p == owner)
                .expect("owner has a point");
            let expected: Vec<NodeId> = points[start..]
                .iter()
                .chain(&points[..start])
                .cloned()
                .collect();
            assert_eq!(ring.successors(ns), expected, "{ns}");
        }
    }
}
