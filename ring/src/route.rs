//! What a node does with a request for a namespace, and when it must hand a namespace over.
//! Pure decisions over the [`ClusterMap`], the membership and the [`Placement`]; the node only
//! carries them out.

use std::collections::BTreeSet;

use crate::directory::{ClusterMap, HolderRecord};
use crate::epoch::EpochError;
use crate::placement::Placement;
use crate::ring::NodeId;

/// Whether a request changes the namespace. Only writes create a namespace's holder record, so
/// reading a misspelt name does not leave a record behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// A read.
    Read,
    /// A write.
    Write,
}

/// Where a request for a namespace goes, as seen from one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// This node holds the namespace: serve it here.
    Serve,
    /// Nobody holds the namespace yet and this node is its desired owner: write the record
    /// `{holder: me, epoch: 1}` durably, then serve.
    Create,
    /// Nobody holds it and this node is its desired owner, but the request is a read: answer
    /// from here (the namespace does not exist) without creating anything.
    ServeAbsent,
    /// Another node holds it (or, with no holder yet, should): send the request there.
    Forward {
        /// The node to send to.
        to: NodeId,
        /// The holder epoch the decision is based on (0 when nobody holds it yet).
        epoch: u64,
    },
    /// The holder (or the pinned owner of a new namespace) is down: answer 503 naming it.
    Unavailable {
        /// The node that is down.
        node: NodeId,
    },
    /// No member is alive to own a new namespace (cannot happen on a running node, which is
    /// always alive itself; kept for completeness).
    NoOwner,
}

/// Routes a request for `namespace` arriving at `me`.
///
/// The holder record decides when there is one: data lives where the record says, whatever the
/// desired owner. Without one, the desired owner creates the namespace on its first write.
pub fn route(
    me: &str,
    namespace: &str,
    map: &ClusterMap,
    placement: Option<&Placement>,
    alive: &BTreeSet<NodeId>,
    intent: Intent,
) -> Route {
    match map.holder(namespace) {
        Some(record) if record.holder == me => Route::Serve,
        Some(record) if alive.contains(&record.holder) => Route::Forward {
            to: record.holder.clone(),
            epoch: record.epoch,
        },
        Some(record) => Route::Unavailable {
            node: record.holder.clone(),
        },
        None => match placement {
            Some(p) if p.owner == me => match intent {
                Intent::Write => Route::Create,
                Intent::Read => Route::ServeAbsent,
            },
            Some(p) if alive.contains(&p.owner) => Route::Forward {
                to: p.owner.clone(),
                epoch: 0,
            },
            Some(p) => Route::Unavailable {
                node: p.owner.clone(),
            },
            None => Route::NoOwner,
        },
    }
}

/// The node `me` must hand `namespace` to, if any: `me` holds it, and its desired owner is
/// another node that is alive. (A pin to a down node leaves the namespace where it is until
/// the node comes back: moving data to a node that cannot take it helps nobody.)
pub fn handoff_target(
    me: &str,
    namespace: &str,
    map: &ClusterMap,
    placement: Option<&Placement>,
    alive: &BTreeSet<NodeId>,
) -> Option<NodeId> {
    let record = map.holder(namespace)?;
    let owner = &placement?.owner;
    (record.holder == me && owner != me && alive.contains(owner)).then(|| owner.clone())
}

/// The steps of a handoff on the giving side, in the only order they may happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum HandoffStep {
    /// The receiver was told to drop any partial copy and get ready.
    Offered,
    /// The snapshot (every row at one revision) was sent; writes still run.
    Copied,
    /// Writes to the namespace are held; in-flight ones finished.
    Frozen,
    /// The rows changed since the snapshot were sent: the receiver has everything.
    CaughtUp,
    /// The record `{holder: receiver, epoch + 1}` is durable here: the namespace has moved.
    Committed,
}

/// A handoff in progress, from `record` (held by the giver) to `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handoff {
    /// The giver's record when the handoff started.
    pub record: HolderRecord,
    /// The receiver.
    pub to: NodeId,
    /// The last step done, `None` before the offer.
    pub done: Option<HandoffStep>,
}

/// A step taken out of order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutOfOrder {
    /// The step that was attempted.
    pub attempted: HandoffStep,
    /// The last step done.
    pub done: Option<HandoffStep>,
}

impl std::fmt::Display for OutOfOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "handoff step {:?} attempted after {:?}",
            self.attempted, self.done
        )
    }
}

impl std::error::Error for OutOfOrder {}

/// Why a handoff cannot write its commit record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The receiver has not caught up yet (or the handoff already committed).
    #[error(transparent)]
    OutOfOrder(#[from] OutOfOrder),
    /// The holder epoch cannot grow (see [`EpochError`]); the namespace stays where it is.
    #[error("cannot hand the namespace over: {0}")]
    Epoch(#[from] EpochError),
}

impl Handoff {
    /// A handoff about to start.
    pub fn new(record: HolderRecord, to: NodeId) -> Handoff {
        Handoff {
            record,
            to,
            done: None,
        }
    }

    /// Records `step` as done; refuses anything but the next step.
    pub fn advance(&mut self, step: HandoffStep) -> Result<(), OutOfOrder> {
        let expected = match self.done {
            None => HandoffStep::Offered,
            Some(HandoffStep::Offered) => HandoffStep::Copied,
            Some(HandoffStep::Copied) => HandoffStep::Frozen,
            Some(HandoffStep::Frozen) => HandoffStep::CaughtUp,
            Some(HandoffStep::CaughtUp) => HandoffStep::Committed,
            Some(HandoffStep::Committed) => {
                return Err(OutOfOrder {
                    attempted: step,
                    done: self.done,
                });
            }
        };
        if step != expected {
            return Err(OutOfOrder {
                attempted: step,
                done: self.done,
            });
        }
        self.done = Some(step);
        Ok(())
    }

    /// The record to write at commit; only once the receiver has caught up, and only while
    /// the holder epoch can grow.
    pub fn commit_record(&self) -> Result<HolderRecord, CommitError> {
        if self.done == Some(HandoffStep::CaughtUp) {
            Ok(self.record.passed_to(self.to.clone())?)
        } else {
            Err(CommitError::OutOfOrder(OutOfOrder {
                attempted: HandoffStep::Committed,
                done: self.done,
            }))
        }
    }

    /// Whether writes to the namespace must wait (between freeze and the end of the handoff).
    pub fn holds_writes(&self) -> bool {
        matches!(self.done, Some(HandoffStep::Frozen | HandoffStep::CaughtUp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::Update;
    use crate::placement::Reason;

    fn alive(ids: &[&str]) -> BTreeSet<NodeId> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn placed(owner: &str) -> Placement {
        Placement {
            owner: owner.into(),
            reason: Reason::Ring,
        }
    }

    #[test]
    fn the_record_decides_over_the_desired_owner() {
        let mut map = ClusterMap::new();
        map.apply(Update::Holder {
            namespace: "a".into(),
            record: HolderRecord {
                holder: "n1".into(),
                epoch: 3,
            },
        });
        let everyone = alive(&["n1", "n2"]);
        let p = placed("n2");
        assert_eq!(
            route("n1", "a", &map, Some(&p), &everyone, Intent::Write),
            Route::Serve
        );
        assert_eq!(
            route("n2", "a", &map, Some(&p), &everyone, Intent::Read),
            Route::Forward {
                to: "n1".into(),
                epoch: 3
            }
        );
        assert_eq!(
            route("n2", "a", &map, Some(&p), &alive(&["n2"]), Intent::Read),
            Route::Unavailable { node: "n1".into() }
        );
        assert_eq!(
            handoff_target("n1", "a", &map, Some(&p), &everyone),
            Some("n2".into())
        );
        assert_eq!(
            handoff_target("n1", "a", &map, Some(&p), &alive(&["n1"])),
            None
        );
        assert_eq!(handoff_target("n2", "a", &map, Some(&p), &everyone), None);
    }

    #[test]
    fn new_namespaces_are_created_by_their_desired_owner_on_write_only() {
        let map = ClusterMap::new();
        let everyone = alive(&["n1", "n2"]);
        let p = placed("n1");
        assert_eq!(
            route("n1", "new", &map, Some(&p), &everyone, Intent::Write),
            Route::Create
        );
        assert_eq!(
            route("n1", "new", &map, Some(&p), &everyone, Intent::Read),
            Route::ServeAbsent
        );
        assert_eq!(
            route("n2", "new", &map, Some(&p), &everyone, Intent::Write),
            Route::Forward {
                to: "n1".into(),
                epoch: 0
            }
        );
    }

    #[test]
    fn handoff_steps_only_go_forward_in_order() {
        let record = HolderRecord {
            holder: "n1".into(),
            epoch: 4,
        };
        let mut h = Handoff::new(record, "n2".into());
        assert!(h.commit_record().is_err());
        assert!(h.advance(HandoffStep::Copied).is_err());
        for step in [
            HandoffStep::Offered,
            HandoffStep::Copied,
            HandoffStep::Frozen,
            HandoffStep::CaughtUp,
        ] {
            h.advance(step).expect("in order");
        }
        assert!(h.holds_writes());
        let next = h.commit_record().expect("caught up");
        assert_eq!((next.holder.as_str(), next.epoch), ("n2", 5));
        h.advance(HandoffStep::Committed).expect("commit");
        assert!(!h.holds_writes());
        assert!(h.advance(HandoffStep::Offered).is_err());
    }

    #[test]
    fn a_handoff_from_an_exhausted_epoch_cannot_commit() {
        let record = HolderRecord {
            holder: "n1".into(),
            epoch: crate::MAX_EPOCH,
        };
        let mut h = Handoff::new(record, "n2".into());
        for step in [
            HandoffStep::Offered,
            HandoffStep::Copied,
            HandoffStep::Frozen,
            HandoffStep::CaughtUp,
        ] {
            h.advance(step).expect("in order");
        }
        assert_eq!(
            h.commit_record(),
            Err(CommitError::Epoch(EpochError::Exhausted {
                current: crate::MAX_EPOCH
            }))
        );
        assert!(
            h.commit_record()
                .map_err(|e| e.to_string())
                .is_err_and(|m| m.contains("epoch exhausted"))
        );
    }
}
