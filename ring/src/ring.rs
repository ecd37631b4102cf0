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
}
