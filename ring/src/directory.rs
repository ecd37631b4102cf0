//! The cluster map every node keeps: who holds each namespace (the directory), and the pins and
//! claims. Pure data with merge rules, so gossip and anti-entropy can deliver updates in any
//! order, any number of times, and every node ends with the same map.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::directive::{Directive, Epoch};
use crate::ring::NodeId;

/// Who holds a namespace's data and serves it, and since which holder epoch.
///
/// Only the holder writes a new version: it creates the record (epoch 1) on the namespace's
/// first write, and passes it on at the end of a handoff with `epoch + 1`. So epochs of one
/// namespace never fork, except when two nodes create the same new namespace at once under
/// different membership views; the merge then picks one deterministically (higher holder id).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HolderRecord {
    /// The node holding the namespace.
    pub holder: NodeId,
    /// Grows by one at every change of holder.
    pub epoch: Epoch,
}

impl HolderRecord {
    /// Whether `self` wins over `other`: the higher epoch, then the higher holder id.
    pub fn supersedes(&self, other: &HolderRecord) -> bool {
        (self.epoch, &self.holder) > (other.epoch, &other.holder)
    }

    /// The record a holder writes when it hands the namespace to `to`.
    pub fn passed_to(&self, to: NodeId) -> HolderRecord {
        HolderRecord {
            holder: to,
            epoch: self.epoch + 1,
        }
    }
}

/// One fact about a namespace, as gossiped, exchanged and stored.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Update {
    /// The namespace's holder record.
    Holder {
        /// The namespace.
        namespace: String,
        /// The record.
        record: HolderRecord,
    },
    /// The namespace's pin.
    Pin {
        /// The namespace.
        namespace: String,
        /// The pin (target `None` = unpinned).
        directive: Directive,
    },
    /// The namespace's claim.
    Claim {
        /// The namespace.
        namespace: String,
        /// The claim (target `None` = released).
        directive: Directive,
    },
}

/// Which fact an [`Update`] is about: a newer update replaces an older one with the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum UpdateKind {
    /// A holder record.
    Holder,
    /// A pin.
    Pin,
    /// A claim.
    Claim,
}

impl UpdateKind {
    /// A short stable name (storage keys, logs).
    pub fn name(self) -> &'static str {
        match self {
            UpdateKind::Holder => "holder",
            UpdateKind::Pin => "pin",
            UpdateKind::Claim => "claim",
        }
    }
}

impl Update {
    /// The namespace the update is about.
    pub fn namespace(&self) -> &str {
        match self {
            Update::Holder { namespace, .. }
            | Update::Pin { namespace, .. }
            | Update::Claim { namespace, .. } => namespace,
        }
    }

    /// What kind of fact it is.
    pub fn kind(&self) -> UpdateKind {
        match self {
            Update::Holder { .. } => UpdateKind::Holder,
            Update::Pin { .. } => UpdateKind::Pin,
            Update::Claim { .. } => UpdateKind::Claim,
        }
    }
}

/// The directory, pins and claims of the whole cluster as one node knows them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterMap {
    holders: BTreeMap<String, HolderRecord>,
    pins: BTreeMap<String, Directive>,
    claims: BTreeMap<String, Directive>,
}

impl ClusterMap {
    /// An empty map.
    pub fn new() -> Self {
        ClusterMap::default()
    }

    /// Merges one update. Returns true when it changed the map (it was newer than what was
    /// known), which is when it is worth passing on.
    pub fn apply(&mut self, update: Update) -> bool {
        match update {
            Update::Holder { namespace, record } => match self.holders.get(&namespace) {
                Some(known) if !record.supersedes(known) => false,
                _ => {
                    self.holders.insert(namespace, record);
                    true
                }
            },
            Update::Pin {
                namespace,
                directive,
            } => merge_directive(&mut self.pins, namespace, directive),
            Update::Claim {
                namespace,
                directive,
            } => merge_directive(&mut self.claims, namespace, directive),
        }
    }

    /// The holder record of `namespace`, if any node ever held it.
    pub fn holder(&self, namespace: &str) -> Option<&HolderRecord> {
        self.holders.get(namespace)
    }

    /// The pin of `namespace` (possibly an unpin).
    pub fn pin(&self, namespace: &str) -> Option<&Directive> {
        self.pins.get(namespace)
    }

    /// The claim of `namespace` (possibly a release).
    pub fn claim(&self, namespace: &str) -> Option<&Directive> {
        self.claims.get(namespace)
    }

    /// Every namespace with a holder record, in name order.
    pub fn holders(&self) -> impl Iterator<Item = (&String, &HolderRecord)> {
        self.holders.iter()
    }

    /// Every namespace the map mentions (holder, pin or claim), in name order, once each.
    pub fn namespaces(&self) -> Vec<&String> {
        let mut names: Vec<&String> = self
            .holders
            .keys()
            .chain(self.pins.keys())
            .chain(self.claims.keys())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The whole map as updates (for anti-entropy and persistence).
    pub fn updates(&self) -> Vec<Update> {
        let holders = self.holders.iter().map(|(ns, r)| Update::Holder {
            namespace: ns.clone(),
            record: r.clone(),
        });
        let pins = self.pins.iter().map(|(ns, d)| Update::Pin {
            namespace: ns.clone(),
            directive: d.clone(),
        });
        let claims = self.claims.iter().map(|(ns, d)| Update::Claim {
            namespace: ns.clone(),
            directive: d.clone(),
        });
        holders.chain(pins).chain(claims).collect()
    }

    /// A fingerprint of the map: equal maps have equal digests, so two nodes compare 8 bytes
    /// before exchanging the whole map. Fixed-key SipHash over the ordered contents, so it is the
    /// same on every node and release.
    pub fn digest(&self) -> u64 {
        #[allow(deprecated)]
        let mut hasher =
            std::hash::SipHasher::new_with_keys(0x6366_676e_6f64_6521, 0x6469_6765_7374);
        self.holders.hash(&mut hasher);
        self.pins.hash(&mut hasher);
        self.claims.hash(&mut hasher);
        hasher.finish()
    }

    /// The number of facts held (holder records + pins + claims).
    pub fn len(&self) -> usize {
        self.holders.len() + self.pins.len() + self.claims.len()
    }

    /// True when the map holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn merge_directive(
    map: &mut BTreeMap<String, Directive>,
    namespace: String,
    directive: Directive,
) -> bool {
    match map.get(&namespace) {
        Some(known) if !directive.supersedes(known) => false,
        _ => {
            map.insert(namespace, directive);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(ns: &str, node: &str, epoch: u64) -> Update {
        Update::Holder {
            namespace: ns.into(),
            record: HolderRecord {
                holder: node.into(),
                epoch,
            },
        }
    }

    #[test]
    fn newer_records_win_and_stale_ones_change_nothing() {
        let mut map = ClusterMap::new();
        assert!(map.apply(holder("a", "n1", 1)));
        assert!(map.apply(holder("a", "n2", 2)));
        assert!(!map.apply(holder("a", "n1", 1)), "stale");
        assert!(!map.apply(holder("a", "n2", 2)), "duplicate");
        assert_eq!(map.holder("a").map(|r| r.holder.as_str()), Some("n2"));
        // Two creations at once: the higher holder id wins everywhere.
        assert!(map.apply(holder("b", "n1", 1)));
        assert!(map.apply(holder("b", "n3", 1)));
        assert!(!map.apply(holder("b", "n2", 1)));
        assert_eq!(map.holder("b").map(|r| r.holder.as_str()), Some("n3"));
    }

    #[test]
    fn digest_tracks_content() {
        let mut a = ClusterMap::new();
        let mut b = ClusterMap::new();
        assert_eq!(a.digest(), b.digest());
        a.apply(holder("x", "n1", 1));
        assert_ne!(a.digest(), b.digest());
        b.apply(holder("x", "n1", 1));
        assert_eq!(a.digest(), b.digest());
    }
}
