//! The cluster map every node keeps: who holds each namespace (the directory), and the pins and
//! claims. Pure data with merge rules, so gossip and anti-entropy can deliver updates in any
//! order, any number of times, and every node ends with the same map.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::directive::Directive;
use crate::epoch::{Epoch, EpochError, ImplausibleUpdate, MAX_EPOCH, MAX_EPOCH_JUMP, next_epoch};
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

    /// The record a holder writes when it hands the namespace to `to`. Refused once the epoch
    /// is exhausted (at [`MAX_EPOCH`], which only a faulty or hostile writer reaches), so it
    /// never wraps.
    pub fn passed_to(&self, to: NodeId) -> Result<HolderRecord, EpochError> {
        Ok(HolderRecord {
            holder: to,
            epoch: next_epoch(self.epoch)?,
        })
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

impl std::fmt::Display for UpdateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
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

    /// The epoch the update carries.
    pub fn epoch(&self) -> Epoch {
        match self {
            Update::Holder { record, .. } => record.epoch,
            Update::Pin { directive, .. } | Update::Claim { directive, .. } => directive.epoch,
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

    /// Checks that `update` could come from an honest history, before it is merged: its epoch
    /// is at most [`MAX_EPOCH`] and at most [`MAX_EPOCH_JUMP`] ahead of the epoch this map
    /// knows for the same fact (0 when unknown). Every record an honest node writes passes
    /// (it takes the next epoch of a fact it knows, or epoch 1), so a refusal names a faulty or
    /// hostile sender; merging its update could freeze the fact at an epoch nobody can
    /// supersede. Only the epoch is checked here: names are the node's to validate.
    ///
    /// The maximum is a property of the update alone, so it keeps merging convergent. The jump
    /// bound depends on what this map knows: a record crafted right at the edge of one node's
    /// window can be taken by it and refused by a node that knows an older epoch, and that
    /// fact then differs between them until a newer version is written. No honest history
    /// gets near the edge (a node would have to miss 2^32 changes of one fact); see
    /// `docs/cluster.md`.
    pub fn check_plausible(&self, update: &Update) -> Result<(), ImplausibleUpdate> {
        let epoch = update.epoch();
        if epoch > MAX_EPOCH {
            return Err(ImplausibleUpdate::AboveMaximum {
                namespace: update.namespace().to_string(),
                kind: update.kind(),
                epoch,
            });
        }
        let known = self.known_epoch(update.namespace(), update.kind());
        if epoch.saturating_sub(known) > MAX_EPOCH_JUMP {
            return Err(ImplausibleUpdate::TooFarAhead {
                namespace: update.namespace().to_string(),
                kind: update.kind(),
                epoch,
                known,
            });
        }
        Ok(())
    }

    /// [`ClusterMap::check_plausible`], then [`ClusterMap::apply`]: how updates received from
    /// peers are merged. A refused update changes nothing.
    pub fn apply_plausible(&mut self, update: Update) -> Result<bool, ImplausibleUpdate> {
        self.check_plausible(&update)?;
        Ok(self.apply(update))
    }

    /// The epoch this map knows for one fact, 0 when it knows nothing of it.
    pub fn known_epoch(&self, namespace: &str, kind: UpdateKind) -> Epoch {
        match kind {
            UpdateKind::Holder => self.holders.get(namespace).map(|r| r.epoch),
            UpdateKind::Pin => self.pins.get(namespace).map(|d| d.epoch),
            UpdateKind::Claim => self.claims.get(namespace).map(|d| d.epoch),
        }
        .unwrap_or(0)
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

    fn pin(ns: &str, epoch: u64) -> Update {
        Update::Pin {
            namespace: ns.into(),
            directive: Directive {
                target: Some("n1".into()),
                epoch,
                author: "n1".into(),
                strict: false,
            },
        }
    }

    #[test]
    fn epochs_above_the_maximum_are_refused_and_change_nothing() {
        let mut map = ClusterMap::new();
        map.apply(holder("a", "n1", 5));
        let before = map.clone();
        for epoch in [MAX_EPOCH + 1, u64::MAX] {
            for update in [
                holder("a", "evil", epoch),
                pin("a", epoch),
                holder("b", "evil", epoch),
            ] {
                let refused = map.apply_plausible(update.clone());
                assert_eq!(
                    refused,
                    Err(ImplausibleUpdate::AboveMaximum {
                        namespace: update.namespace().into(),
                        kind: update.kind(),
                        epoch,
                    })
                );
                assert_eq!(refused.map_err(|e| e.reason()), Err("above_maximum"));
            }
        }
        assert_eq!(map, before);
        // The maximum itself is a plausible epoch (when close enough to the known one).
        let mut high = ClusterMap::new();
        high.apply(holder("a", "n1", MAX_EPOCH - 1));
        assert_eq!(high.apply_plausible(holder("a", "n2", MAX_EPOCH)), Ok(true));
    }

    #[test]
    fn epochs_too_far_ahead_of_the_known_one_are_refused() {
        let mut map = ClusterMap::new();
        // Unknown facts count from 0.
        assert_eq!(
            map.check_plausible(&pin("a", MAX_EPOCH_JUMP + 1))
                .map_err(|e| e.reason()),
            Err("too_far_ahead")
        );
        assert_eq!(map.apply_plausible(pin("a", MAX_EPOCH_JUMP)), Ok(true));
        // Known facts count from their epoch: exactly the jump passes, one more does not.
        let known = MAX_EPOCH_JUMP;
        assert_eq!(
            map.apply_plausible(pin("a", known + MAX_EPOCH_JUMP + 1)),
            Err(ImplausibleUpdate::TooFarAhead {
                namespace: "a".into(),
                kind: UpdateKind::Pin,
                epoch: known + MAX_EPOCH_JUMP + 1,
                known,
            })
        );
        assert_eq!(map.known_epoch("a", UpdateKind::Pin), known);
        assert_eq!(
            map.apply_plausible(pin("a", known + MAX_EPOCH_JUMP)),
            Ok(true)
        );
        // Each fact has its own known epoch: the pin's does not vouch for a claim or a holder.
        assert!(
            map.check_plausible(&holder("a", "n1", MAX_EPOCH_JUMP + 2))
                .is_err()
        );
        // Old and equal epochs are plausible (and merely stale).
        assert_eq!(map.apply_plausible(pin("a", 1)), Ok(false));
    }

    #[test]
    fn passed_to_refuses_an_exhausted_epoch_instead_of_wrapping() {
        let record = HolderRecord {
            holder: "n1".into(),
            epoch: 7,
        };
        assert_eq!(
            record.passed_to("n2".into()),
            Ok(HolderRecord {
                holder: "n2".into(),
                epoch: 8
            })
        );
        for epoch in [MAX_EPOCH, u64::MAX] {
            let top = HolderRecord {
                holder: "n1".into(),
                epoch,
            };
            assert_eq!(
                top.passed_to("n2".into()),
                Err(EpochError::Exhausted { current: epoch })
            );
        }
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
