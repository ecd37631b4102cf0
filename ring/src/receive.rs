//! The receiving side of a handoff, as a pure rule: which offers, chunks and commits a node
//! takes, and what it answers otherwise. The node carries the decisions out (durable records,
//! storage writes, the QUIC answer) and asks the rule at every request.
//!
//! A handoff reaches the receiver as three kinds of requests, each from a sender the node
//! authenticated by its connection:
//!
//! 1. **Offer** `{namespace, epoch}`: judged by [`check_offer`] against the receiver's map. It is
//!    taken only when it matches what the receiver knows (the sender's own record at that epoch,
//!    or, for a namespace created a moment ago and not yet gossiped here, nothing yet and epoch
//!    1 from another alive member). The node then writes the sender's record durably, so its
//!    partial copy is never taken for its own, and records the offer with
//!    [`Receiving::accept`].
//! 2. **Chunks**: taken only from the accepted giver at the accepted epoch
//!    ([`Receiving::check_chunk`]).
//! 3. **Commit** `{epoch + 1, revision}`: [`Receiving::check_commit`] answers yes at once when
//!    the receiver already holds the namespace at that epoch or later (a repeated commit whose
//!    answer was lost, or a record learned by gossip); otherwise it needs the accepted offer at
//!    `epoch`, and then the receiver's copy at exactly `revision`
//!    ([`PendingCommit::check_revision`]). The node writes the returned record durably, then
//!    forgets the offer ([`Receiving::committed`]) and answers.
//!
//! Every refusal is a [`Refusal`] whose message is what the node sends back; a refused request
//! changes nothing here.

use std::collections::{BTreeMap, BTreeSet};

use crate::directory::{ClusterMap, HolderRecord};
use crate::epoch::Epoch;
use crate::ring::NodeId;

/// An offer as the receiver sees it: the authenticated sender and the holder epoch it offers
/// the namespace at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The sender, taken from the connection (requests never name their giver, so a member
    /// cannot speak for another).
    pub giver: NodeId,
    /// The giver's holder epoch; the commit will come at the next one.
    pub epoch: Epoch,
}

/// What the receiving node knows when it judges a request.
#[derive(Clone, Copy, Debug)]
pub struct Receiver<'a> {
    /// The receiving node.
    pub me: &'a str,
    /// Its cluster map.
    pub map: &'a ClusterMap,
    /// The members it sees alive (a brand-new namespace is taken only from one of them).
    pub alive: &'a BTreeSet<NodeId>,
}

/// Why a handoff request is refused. The message is the answer the sender gets (wire code
/// `handoff_refused`); the giver keeps the namespace and retries later.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The receiver is still finishing its own handoff of the namespace (dropping its copy): a
    /// new copy must not be written under that drop.
    #[error("this node is still finishing its handoff of {namespace:?}; retry shortly")]
    StillGiving {
        /// The namespace offered.
        namespace: String,
    },
    /// The receiver holds the namespace itself: an offer would overwrite the only serving copy.
    #[error("this node already holds {namespace:?} (epoch {epoch}); refusing to overwrite it")]
    AlreadyHeld {
        /// The namespace offered.
        namespace: String,
        /// The receiver's own holder epoch.
        epoch: Epoch,
    },
    /// The offer names a giver or epoch the receiver's record does not: made up, stale, or the
    /// receiver lags (anti-entropy then catches it up before the giver's retry).
    #[error(
        "the offer of {namespace:?} from {giver} at epoch {epoch} does not match this node's record ({}); retry after the cluster map converges",
        describe(.known)
    )]
    OfferMismatch {
        /// The namespace offered.
        namespace: String,
        /// The sender of the offer.
        giver: NodeId,
        /// The epoch it offered at.
        epoch: Epoch,
        /// The receiver's record, if any.
        known: Option<HolderRecord>,
    },
    /// A chunk or commit from a node other than the one whose offer was accepted.
    #[error("the handoff of {namespace:?} in progress here comes from {giver}, not {sender}")]
    WrongSender {
        /// The namespace.
        namespace: String,
        /// The giver whose offer was accepted.
        giver: NodeId,
        /// The node that sent this request.
        sender: NodeId,
    },
    /// A chunk or commit with no accepted offer at its epoch (none at all, or one at another
    /// epoch).
    #[error(
        "no handoff of {namespace:?} at epoch {epoch} is in progress here; start with an offer"
    )]
    NotInProgress {
        /// The namespace.
        namespace: String,
        /// The offer epoch the request needs (a commit at `e` needs the offer at `e - 1`).
        epoch: Epoch,
    },
    /// The node refuses every commit (a test's fault injection).
    #[error("commit of {namespace:?} refused (fault injection)")]
    CommitsDisabled {
        /// The namespace.
        namespace: String,
    },
    /// The receiver's copy is not at the giver's revision: something was lost on the way, and
    /// taking the namespace over would lose writes.
    #[error("commit of {namespace:?} at revision {revision}, but this node has revision {have}")]
    RevisionMismatch {
        /// The namespace.
        namespace: String,
        /// The giver's revision.
        revision: u64,
        /// The revision of the copy here.
        have: u64,
    },
}

fn describe(known: &Option<HolderRecord>) -> String {
    known.as_ref().map_or_else(
        || "no record".to_string(),
        |r| format!("{} at epoch {}", r.holder, r.epoch),
    )
}

/// Judges an offer of `namespace` against what `at` knows; `still_giving` says whether `at` is
/// itself still handing the namespace off. Returns the record `at` must write durably before
/// it accepts the offer (with [`Receiving::accept`]).
///
/// The table of offers in progress plays no part: a matching offer replaces an older one (the
/// giver starts again), and the record check alone keeps made-up offers out.
pub fn check_offer(
    at: &Receiver<'_>,
    still_giving: bool,
    namespace: &str,
    offer: &Offer,
) -> Result<HolderRecord, Refusal> {
    if still_giving {
        return Err(Refusal::StillGiving {
            namespace: namespace.to_string(),
        });
    }
    let current = at.map.holder(namespace);
    if let Some(r) = current
        && r.holder == at.me
    {
        return Err(Refusal::AlreadyHeld {
            namespace: namespace.to_string(),
            epoch: r.epoch,
        });
    }
    let matches = match current {
        Some(r) => r.holder == offer.giver && r.epoch == offer.epoch,
        None => offer.epoch == 1 && at.alive.contains(&offer.giver) && offer.giver != at.me,
    };
    if !matches {
        return Err(Refusal::OfferMismatch {
            namespace: namespace.to_string(),
            giver: offer.giver.clone(),
            epoch: offer.epoch,
            known: current.cloned(),
        });
    }
    Ok(HolderRecord {
        holder: offer.giver.clone(),
        epoch: offer.epoch,
    })
}

/// A commit as the receiver sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// The sender, taken from the connection.
    pub sender: NodeId,
    /// The new holder epoch (the offer's plus one).
    pub epoch: Epoch,
    /// The giver's revision of the namespace, which the copy here must have.
    pub revision: u64,
}

/// What to do with a commit that passed [`Receiving::check_commit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitDecision {
    /// This node already holds the namespace at the commit's epoch or later (it took this
    /// commit before and the answer was lost, or learned the record by gossip or a redirect):
    /// answer yes, nothing to write.
    AlreadyHolder,
    /// The commit belongs to the handoff in progress: compare the copy's revision next.
    CheckRevision(PendingCommit),
}

/// A commit of the handoff in progress, waiting for the copy's revision (which the node reads
/// from its store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingCommit {
    namespace: String,
    me: NodeId,
    epoch: Epoch,
    revision: u64,
}

impl PendingCommit {
    /// The record `{me, epoch}` to write durably when the copy here is at exactly the giver's
    /// revision (`have`; 0 when there is no copy); refused otherwise.
    pub fn check_revision(self, have: u64) -> Result<HolderRecord, Refusal> {
        if have != self.revision {
            return Err(Refusal::RevisionMismatch {
                namespace: self.namespace,
                revision: self.revision,
                have,
            });
        }
        Ok(HolderRecord {
            holder: self.me,
            epoch: self.epoch,
        })
    }
}

/// The handoffs a node is receiving: each namespace with the offer it accepted. Chunks and the
/// commit are checked against it, so only the accepted giver, at its epoch, can fill or commit
/// a copy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Receiving {
    accepted: BTreeMap<String, Offer>,
}

impl Receiving {
    /// No handoff in progress.
    pub fn new() -> Self {
        Receiving::default()
    }

    /// Records `offer` for `namespace`, once [`check_offer`] passed and its record is durable;
    /// it replaces any earlier offer of the namespace.
    pub fn accept(&mut self, namespace: &str, offer: Offer) {
        self.accepted.insert(namespace.to_string(), offer);
    }

    /// The offer accepted for `namespace`, if a handoff of it is in progress here.
    pub fn accepted(&self, namespace: &str) -> Option<&Offer> {
        self.accepted.get(namespace)
    }

    /// Whether a chunk of `namespace` at `epoch` from `sender` may be stored: only from the
    /// accepted giver, at the accepted epoch.
    pub fn check_chunk(&self, namespace: &str, sender: &str, epoch: Epoch) -> Result<(), Refusal> {
        match self.accepted.get(namespace) {
            Some(offer) if offer.epoch == epoch && offer.giver == sender => Ok(()),
            Some(offer) if offer.giver != sender => Err(Refusal::WrongSender {
                namespace: namespace.to_string(),
                giver: offer.giver.clone(),
                sender: sender.to_string(),
            }),
            _ => Err(Refusal::NotInProgress {
                namespace: namespace.to_string(),
                epoch,
            }),
        }
    }

    /// Judges a commit of `namespace` at `at`; `commits_disabled` is the fault injection that
    /// refuses every commit not already taken. In order: a namespace `at` already holds at the
    /// commit's epoch or later is answered yes whoever asks (nothing changes); then the commit
    /// must come from the accepted giver, whose offer was at the epoch before the commit's.
    pub fn check_commit(
        &self,
        at: &Receiver<'_>,
        commits_disabled: bool,
        namespace: &str,
        commit: &Commit,
    ) -> Result<CommitDecision, Refusal> {
        if let Some(r) = at.map.holder(namespace)
            && r.holder == at.me
            && r.epoch >= commit.epoch
        {
            return Ok(CommitDecision::AlreadyHolder);
        }
        if commits_disabled {
            return Err(Refusal::CommitsDisabled {
                namespace: namespace.to_string(),
            });
        }
        self.check_chunk(namespace, &commit.sender, commit.epoch.saturating_sub(1))?;
        Ok(CommitDecision::CheckRevision(PendingCommit {
            namespace: namespace.to_string(),
            me: at.me.to_string(),
            epoch: commit.epoch,
            revision: commit.revision,
        }))
    }

    /// Forgets the handoff of `namespace`, once its commit record is durable here: later
    /// chunks and commits of it need a new offer.
    pub fn committed(&mut self, namespace: &str) {
        self.accepted.remove(namespace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::Update;

    fn map_with(holder: Option<(&str, Epoch)>) -> ClusterMap {
        let mut map = ClusterMap::new();
        if let Some((node, epoch)) = holder {
            map.apply(Update::Holder {
                namespace: "ns".into(),
                record: HolderRecord {
                    holder: node.into(),
                    epoch,
                },
            });
        }
        map
    }

    fn alive() -> BTreeSet<NodeId> {
        ["n1", "n2", "n3"].iter().map(|s| s.to_string()).collect()
    }

    fn offer(giver: &str, epoch: Epoch) -> Offer {
        Offer {
            giver: giver.into(),
            epoch,
        }
    }

    fn commit(sender: &str, epoch: Epoch, revision: u64) -> Commit {
        Commit {
            sender: sender.into(),
            epoch,
            revision,
        }
    }

    /// `n2` receiving from `n1` at epoch 4, offer accepted.
    fn receiving() -> Receiving {
        let mut r = Receiving::new();
        r.accept("ns", offer("n1", 4));
        r
    }

    #[test]
    fn an_offer_matching_the_record_is_taken_with_the_givers_record() {
        let map = map_with(Some(("n1", 4)));
        let alive = alive();
        let at = Receiver {
            me: "n2",
            map: &map,
            alive: &alive,
        };
        assert_eq!(
            check_offer(&at, false, "ns", &offer("n1", 4)),
            Ok(HolderRecord {
                holder: "n1".into(),
                epoch: 4
            })
        );
        // A namespace not gossiped here yet: epoch 1 from another alive member only.
        let empty = map_with(None);
        let at = Receiver {
            me: "n2",
            map: &empty,
            alive: &alive,
        };
        assert!(check_offer(&at, false, "ns", &offer("n1", 1)).is_ok());
        for refused in [offer("n1", 2), offer("n9", 1), offer("n2", 1)] {
            assert!(matches!(
                check_offer(&at, false, "ns", &refused),
                Err(Refusal::OfferMismatch { known: None, .. })
            ));
        }
    }

    #[test]
    fn an_offer_to_a_node_still_giving_the_namespace_is_refused() {
        let map = map_with(Some(("n1", 4)));
        let alive = alive();
        let at = Receiver {
            me: "n2",
            map: &map,
            alive: &alive,
        };
        let refused = check_offer(&at, true, "ns", &offer("n1", 4));
        assert_eq!(
            refused,
            Err(Refusal::StillGiving {
                namespace: "ns".into()
            })
        );
        assert_eq!(
            refused.map_err(|e| e.to_string()),
            Err("this node is still finishing its handoff of \"ns\"; retry shortly".into())
        );
    }

    #[test]
    fn an_offer_of_a_namespace_the_receiver_holds_is_refused() {
        let map = map_with(Some(("n2", 6)));
        let alive = alive();
        let at = Receiver {
            me: "n2",
            map: &map,
            alive: &alive,
        };
        let refused = check_offer(&at, false, "ns", &offer("n2", 6));
        assert_eq!(
            refused,
            Err(Refusal::AlreadyHeld {
                namespace: "ns".into(),
                epoch: 6
            })
        );
        assert_eq!(
            refused.map_err(|e| e.to_string()),
            Err("this node already holds \"ns\" (epoch 6); refusing to overwrite it".into())
        );
    }

    #[test]
    fn an_offer_with_a_stale_epoch_or_another_giver_is_refused() {
        let map = map_with(Some(("n1", 4)));
        let alive = alive();
        let at = Receiver {
            me: "n2",
            map: &map,
            alive: &alive,
        };
        for (giver, epoch) in [("n1", 3), ("n1", 5), ("n3", 4), ("n1", 0)] {
            let refused = check_offer(&at, false, "ns", &offer(giver, epoch));
            assert_eq!(
                refused,
                Err(Refusal::OfferMismatch {
                    namespace: "ns".into(),
                    giver: giver.into(),
                    epoch,
                    known: Some(HolderRecord {
                        holder: "n1".into(),
                        epoch: 4
                    }),
                })
            );
        }
        assert_eq!(
            check_offer(&at, false, "ns", &offer("n1", 3)).map_err(|e| e.to_string()),
            Err("the offer of \"ns\" from n1 at epoch 3 does not match this node's record (n1 at epoch 4); retry after the cluster map converges".into())
        );
    }

    #[test]
    fn chunks_come_only_from_the_accepted_giver_at_its_epoch() {
        let r = receiving();
        assert_eq!(r.check_chunk("ns", "n1", 4), Ok(()));
        let wrong = r.check_chunk("ns", "n3", 4);
        assert_eq!(
            wrong,
            Err(Refusal::WrongSender {
                namespace: "ns".into(),
                giver: "n1".into(),
                sender: "n3".into()
            })
        );
        assert_eq!(
            wrong.map_err(|e| e.to_string()),
            Err("the handoff of \"ns\" in progress here comes from n1, not n3".into())
        );
        // The right giver at another epoch, or a namespace with no offer.
        for (ns, epoch) in [("ns", 3), ("other", 4)] {
            let refused = r.check_chunk(ns, "n1", epoch);
            assert_eq!(
                refused,
                Err(Refusal::NotInProgress {
                    namespace: ns.into(),
                    epoch
                })
            );
        }
        assert_eq!(
            r.check_chunk("other", "n1", 4).map_err(|e| e.to_string()),
            Err(
                "no handoff of \"other\" at epoch 4 is in progress here; start with an offer"
                    .into()
            )
        );
    }

    #[test]
    fn a_commit_of_the_handoff_in_progress_needs_the_givers_revision() {
        let map = map_with(Some(("n1", 4)));
        let alive = alive();
        let at = Receiver {
            me: "n2",
            map: &map,
            alive: &alive,
        };
        let mut r = receiving();
        let Ok(CommitDecision::CheckRevision(pending)) =
            r.check_commit(&at, false, "ns", &commit("n1", 5, 17))
        else {
            panic!("the commit of the accepted offer goes on to the revision check");
        };
        let refused = pending.clone().check_revision(16);
        assert_eq!(
            refused,
            Err(Refusal::RevisionMismatch {
                namespace: "ns".into(),
                revision: 17,
                have: 16
            })
        );
        assert_eq!(
            refused.map_err(|e| e.to_string()),
            Err("commit of \"ns\" at revision 17, but this node has revision 16".into())
        );
        assert_eq!(
            pending.check_revision(17),
            Ok(HolderRecord {
                holder: "n2".into(),
                epoch: 5
            })
        );
        r.committed("ns");
        assert_eq!(r.accepted("ns"), None);
    }

    #[test]
    fn a_commit_from_another_sender_or_epoch_is_refused() {
        let map = map_with(Some(("n1", 4)));
        let alive = alive();
        let at = Receiver {
            me: "n2",
            map: &map,
            alive: &alive,
        };
        let r = receiving();
        assert_eq!(
            r.check_commit(&at, false, "ns", &commit("n3", 5, 17)),
            Err(Refusal::WrongSender {
                namespace: "ns".into(),
                giver: "n1".into(),
                sender: "n3".into()
            })
        );
        // A commit at `e` needs the offer at `e - 1`: the message names that epoch.
        assert_eq!(
            r.check_commit(&at, false, "ns", &commit("n1", 7, 17)),
            Err(Refusal::NotInProgress {
                namespace: "ns".into(),
                epoch: 6
            })
        );
        assert_eq!(
            Receiving::new().check_commit(&at, false, "ns", &commit("n1", 5, 17)),
            Err(Refusal::NotInProgress {
                namespace: "ns".into(),
                epoch: 4
            })
        );
    }

    #[test]
    fn fault_injection_refuses_commits_not_already_taken() {
        let map = map_with(Some(("n1", 4)));
        let alive = alive();
        let at = Receiver {
            me: "n2",
            map: &map,
            alive: &alive,
        };
        let refused = receiving().check_commit(&at, true, "ns", &commit("n1", 5, 17));
        assert_eq!(
            refused,
            Err(Refusal::CommitsDisabled {
                namespace: "ns".into()
            })
        );
        assert_eq!(
            refused.map_err(|e| e.to_string()),
            Err("commit of \"ns\" refused (fault injection)".into())
        );
    }

    #[test]
    fn a_repeated_commit_is_answered_yes_and_changes_nothing() {
        // The receiver took the commit at epoch 5 (and forgot the offer); the giver, which lost
        // the answer, asks again.
        let map = map_with(Some(("n2", 5)));
        let alive = alive();
        let at = Receiver {
            me: "n2",
            map: &map,
            alive: &alive,
        };
        let r = Receiving::new();
        for disabled in [false, true] {
            assert_eq!(
                r.check_commit(&at, disabled, "ns", &commit("n1", 5, 17)),
                Ok(CommitDecision::AlreadyHolder)
            );
        }
        // An older commit too; a newer one is not this node's yet.
        assert_eq!(
            r.check_commit(&at, false, "ns", &commit("n1", 4, 1)),
            Ok(CommitDecision::AlreadyHolder)
        );
        assert!(
            r.check_commit(&at, false, "ns", &commit("n1", 6, 1))
                .is_err()
        );
    }
}
