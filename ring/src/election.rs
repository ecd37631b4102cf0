//! Fencing and promotion, as pure rules: which appends a replica takes ([`check_append`]),
//! which epochs it promises ([`check_promise`]), when a candidate has won ([`Election`]), and
//! the lease that keeps a deposed holder from serving stale reads ([`Lease`]). The node keeps
//! a [`ReplicaState`] durably per namespace, asks these rules at every request, writes the
//! returned state durably, and only then answers. The design is `docs/replication.md`.
//!
//! Why two holders never both acknowledge: a candidate for epoch `e` needs the promise of a
//! quorum, and a replica that promised `e` refuses every append below `e`
//! ([`AppendRefusal::Fenced`]), so an older holder can no longer gather a quorum for a write.
//! Why no acknowledged write is lost: it is on a quorum, the candidate's quorum shares a member
//! with it, and the candidate takes the highest position among its grants
//! ([`ElectionOutcome::Won`]), whose log holds every acknowledged write.

use std::collections::BTreeMap;

use crate::epoch::{Epoch, EpochError, next_epoch};
use crate::replicas::{LogPosition, quorum};
use crate::ring::NodeId;

/// What a replica keeps durably per namespace, and writes before it answers an append or a
/// promise: a restart must not forget a promise, or it could help elect two holders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaState {
    /// The highest epoch this replica promised (or took an append at): it takes nothing from
    /// an epoch below it.
    pub promised: Epoch,
    /// Where its log of the namespace ends.
    pub position: LogPosition,
}

/// An append as the follower sees it (the rows it carries are the node's business).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Append {
    /// The sender's holder epoch.
    pub epoch: Epoch,
    /// The position the rows start after, which must be the follower's; `None` for a full
    /// copy, which replaces the follower's log whatever it held.
    pub base: Option<LogPosition>,
    /// The follower's position once the rows are applied (the holder's position when it sent
    /// them), always at the holder's epoch.
    pub to: LogPosition,
}

/// Why a replica refused an append. The message is what the holder is told; the holder acts on
/// [`AppendRefusal::code`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppendRefusal {
    /// The sender's epoch is below the replica's promise: a newer holder was elected (or is
    /// being elected), and the sender is no longer holder.
    #[error(
        "append at epoch {epoch} refused: this replica promised epoch {promised} to a newer \
         holder; stop writing as holder (writes can no longer reach a quorum) and look up the \
         current holder"
    )]
    Fenced {
        /// The replica's promise.
        promised: Epoch,
        /// The append's epoch.
        epoch: Epoch,
    },
    /// The rows start after `base`, but the replica is at `mine`: the holder's view of it is
    /// out of date (a lost or duplicated answer, a restart).
    #[error(
        "append from {base} refused: this replica's log ends at {mine}; resend from {mine} \
         (or a full copy if {mine} is not on your log)"
    )]
    NotMyPosition {
        /// The replica's position.
        mine: LogPosition,
        /// The append's base.
        base: LogPosition,
    },
    /// The append contradicts itself: its target is not at its own epoch, or lies below its
    /// base. No honest holder sends one.
    #[error(
        "malformed append at epoch {epoch}: it goes to {to} from {}; an append goes to a \
         position at its own epoch, at or above its base (a bug in the sender)",
        base.map_or_else(|| "a full copy".to_string(), |b| b.to_string())
    )]
    Malformed {
        /// The append's epoch.
        epoch: Epoch,
        /// The append's base.
        base: Option<LogPosition>,
        /// The append's target.
        to: LogPosition,
    },
    /// A full copy that would take the replica back: it is already past the copy's target in
    /// the copy's own epoch (a late or duplicated copy overtaken by later appends). Taking it
    /// would drop entries the holder may already count as acknowledged here.
    #[error(
        "full copy to {to} refused: this replica is already at {mine}, past it; resend from \
         {mine}"
    )]
    StaleCopy {
        /// The replica's position.
        mine: LogPosition,
        /// The copy's target.
        to: LogPosition,
    },
}

impl AppendRefusal {
    /// A short stable name for the wire and for metric labels: `fenced`, `not_my_position`,
    /// `malformed_append`, `stale_copy`.
    pub fn code(&self) -> &'static str {
        match self {
            AppendRefusal::Fenced { .. } => "fenced",
            AppendRefusal::NotMyPosition { .. } => "not_my_position",
            AppendRefusal::Malformed { .. } => "malformed_append",
            AppendRefusal::StaleCopy { .. } => "stale_copy",
        }
    }
}

/// Whether a replica in `state` takes `append`, and its state after (to be written durably,
/// with the rows, in one transaction).
///
/// Refused, in this order: from an epoch below the promise ([`AppendRefusal::Fenced`]); a
/// target not at the append's epoch, or below its base ([`AppendRefusal::Malformed`]); rows
/// from a base that is not the replica's position ([`AppendRefusal::NotMyPosition`]); a full
/// copy to a target below the replica's position ([`AppendRefusal::StaleCopy`]: the
/// replica's position never goes back, so a follower the holder counted keeps what it was
/// counted for). A taken append raises the promise to its epoch, so an older holder is fenced
/// from then on, and moves the position to its target.
pub fn check_append(state: &ReplicaState, append: &Append) -> Result<ReplicaState, AppendRefusal> {
    if append.epoch < state.promised {
        return Err(AppendRefusal::Fenced {
            promised: state.promised,
            epoch: append.epoch,
        });
    }
    if append.to.epoch != append.epoch || append.base.is_some_and(|base| append.to < base) {
        return Err(AppendRefusal::Malformed {
            epoch: append.epoch,
            base: append.base,
            to: append.to,
        });
    }
    match append.base {
        Some(base) if base != state.position => {
            return Err(AppendRefusal::NotMyPosition {
                mine: state.position,
                base,
            });
        }
        None if append.to < state.position => {
            return Err(AppendRefusal::StaleCopy {
                mine: state.position,
                to: append.to,
            });
        }
        _ => {}
    }
    Ok(ReplicaState {
        promised: state.promised.max(append.epoch),
        position: append.to,
    })
}

/// Why a replica refused to promise an epoch. The message is what the candidate is told.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PromiseRefusal {
    /// The replica already promised this epoch or a higher one (to this candidate, or to a
    /// rival that picked the same epoch).
    #[error(
        "promise refused: this replica already promised epoch {promised}; if no holder \
         appears, run again above epoch {promised}"
    )]
    AlreadyPromised {
        /// The replica's promise.
        promised: Epoch,
    },
    /// The replica heard from its holder less than a lease ago: that holder may still be
    /// serving reads, so a new holder now could make them stale.
    #[error(
        "promise refused: this replica heard from its holder less than a lease ago; retry once \
         the lease has run out (the holder is probably alive: check the failure detector)"
    )]
    HolderLeased,
}

impl PromiseRefusal {
    /// A short stable name for the wire and for metric labels: `already_promised`,
    /// `holder_leased`.
    pub fn code(&self) -> &'static str {
        match self {
            PromiseRefusal::AlreadyPromised { .. } => "already_promised",
            PromiseRefusal::HolderLeased => "holder_leased",
        }
    }
}

/// Whether a replica in `state` promises `epoch`, and its state after (to be written durably
/// before it answers its position). `lease_expired` is [`Lease::follower_may_promise`] for the
/// holder it follows.
///
/// Refused when `epoch` is not above the promise (each epoch is promised once, so two
/// candidates of one epoch cannot both gather a quorum), then while the lease runs.
pub fn check_promise(
    state: &ReplicaState,
    epoch: Epoch,
    lease_expired: bool,
) -> Result<ReplicaState, PromiseRefusal> {
    if epoch <= state.promised {
        return Err(PromiseRefusal::AlreadyPromised {
            promised: state.promised,
        });
    }
    if !lease_expired {
        return Err(PromiseRefusal::HolderLeased);
    }
    Ok(ReplicaState {
        promised: epoch,
        position: state.position,
    })
}

/// The epoch a candidate in `state` runs for, `holder_epoch` being the namespace's holder epoch
/// in its cluster map: one above everything it knows of (the record, its promise, its log).
///
/// Never epoch 1, even with no record (`holder_epoch = 0`): the namespace's creator takes
/// epoch 1 without an election (it writes the record on the first write), so nobody has
/// promised 1 and a candidate for it could win next to the creator. Refused, like every new
/// epoch, once [`crate::MAX_EPOCH`] is reached.
pub fn candidate_epoch(holder_epoch: Epoch, state: &ReplicaState) -> Result<Epoch, EpochError> {
    next_epoch(
        holder_epoch
            .max(state.promised)
            .max(state.position.epoch)
            .max(1),
    )
}

/// Where an [`Election`] stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElectionOutcome {
    /// Neither a quorum of grants nor enough refusals to rule one out yet.
    Pending,
    /// A quorum granted. `source` is the granter with the highest position (the candidate
    /// itself on a tie, then the first in set order): the candidate fetches what it lacks from
    /// it, then becomes holder.
    Won {
        /// The member whose log to take.
        source: NodeId,
        /// Its position when it granted.
        position: LogPosition,
    },
    /// So many refused that a quorum can no longer be reached: run again at an epoch above
    /// `retry_above` (the highest promise among the refusals, at least this election's).
    Lost {
        /// The epoch the next attempt must exceed.
        retry_above: Epoch,
    },
}

/// A candidate's count of one election: its own grant, then its set's answers. Kept in memory
/// only (a candidate that restarts runs a new election; its promise is durable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Election {
    me: NodeId,
    epoch: Epoch,
    /// The set, the candidate first, each once: the order breaks ties between sources.
    members: Vec<NodeId>,
    /// Each granter's position when it promised; the first grant of a member stands.
    grants: BTreeMap<NodeId, LogPosition>,
    /// Each refuser's promise; dropped if the member grants after all (a duplicated request
    /// that reached it after its lease ran out).
    refusals: BTreeMap<NodeId, Epoch>,
}

impl Election {
    /// `me` runs for `epoch` in the set `replicas` (it is added if missing), having promised
    /// the epoch itself at position `own`.
    pub fn new(me: NodeId, epoch: Epoch, replicas: Vec<NodeId>, own: LogPosition) -> Election {
        let mut members = vec![me.clone()];
        for replica in replicas {
            if !members.contains(&replica) {
                members.push(replica);
            }
        }
        let grants = BTreeMap::from([(me.clone(), own)]);
        Election {
            me,
            epoch,
            members,
            grants,
            refusals: BTreeMap::new(),
        }
    }

    /// The epoch run for.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Records `node`'s grant at `position`. A grant is a durable promise, so it stands even
    /// over an earlier refusal; a repeated grant changes nothing; a non-member is ignored.
    pub fn grant(&mut self, node: &str, position: LogPosition) {
        if !self.members.iter().any(|m| m == node) {
            return;
        }
        self.refusals.remove(node);
        self.grants.entry(node.to_string()).or_insert(position);
    }

    /// Records `node`'s refusal, naming its promise. Ignored for a non-member and for a member
    /// that granted (a refusal after a grant answers a duplicated request: the member refuses
    /// because it already promised this very epoch).
    pub fn refuse(&mut self, node: &str, promised: Epoch) {
        if !self.members.iter().any(|m| m == node) || self.grants.contains_key(node) {
            return;
        }
        let known = self.refusals.entry(node.to_string()).or_insert(promised);
        *known = (*known).max(promised);
    }

    /// Where the election stands.
    pub fn outcome(&self) -> ElectionOutcome {
        let n = self.members.len();
        let needed = quorum(n);
        if self.grants.len() >= needed {
            // Highest position; on a tie the earliest in set order, which puts `me` first.
            let mut best: Option<(&NodeId, LogPosition)> = None;
            for member in &self.members {
                if let Some(&position) = self.grants.get(member)
                    && best.is_none_or(|(_, top)| position > top)
                {
                    best = Some((member, position));
                }
            }
            let (source, position) = best.expect("a quorum of grants holds at least one");
            return ElectionOutcome::Won {
                source: source.clone(),
                position,
            };
        }
        if self.refusals.len() > n - needed {
            let highest = self.refusals.values().copied().max().unwrap_or(0);
            return ElectionOutcome::Lost {
                retry_above: highest.max(self.epoch),
            };
        }
        ElectionOutcome::Pending
    }
}

/// How long a round a quorum answered lets the holder serve reads alone (1 s).
pub const LEASE_MS: u64 = 1000;

/// How often an idle holder sends an empty append (250 ms): four rounds per lease, so one lost
/// heartbeat does not end it.
pub const HEARTBEAT_MS: u64 = 250;

const _: () = assert!(HEARTBEAT_MS * 2 < LEASE_MS);

/// The read lease, over monotonic milliseconds the caller supplies (each node's own clock:
/// only the clocks' rates must agree, not their times).
///
/// The holder counts from when it *sent* a round a quorum answered; a follower counts from
/// when it *received* the holder's latest append, which is later. So a follower's lease ends
/// after the holder's, and by the time a quorum may promise a new epoch the old holder has
/// stopped serving reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    duration_ms: u64,
}

impl Default for Lease {
    /// A lease of [`LEASE_MS`].
    fn default() -> Self {
        Lease::new(LEASE_MS)
    }
}

impl Lease {
    /// A lease of `duration_ms` (tests use short ones).
    pub fn new(duration_ms: u64) -> Lease {
        Lease { duration_ms }
    }

    /// The lease's length.
    pub fn duration_ms(&self) -> u64 {
        self.duration_ms
    }

    /// Whether a holder may serve a linearizable read at `now_ms`, the last round a quorum
    /// answered having been sent at `round_started_ms`: strictly less than a lease since. A
    /// `now_ms` before the round (impossible on one monotonic clock) counts as no time passed.
    pub fn holder_may_serve(&self, round_started_ms: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(round_started_ms) < self.duration_ms
    }

    /// Whether a follower may promise a new epoch at `now_ms`, having last heard from its
    /// holder at `last_heard_ms`: at least a lease since, or never (`None`). A restarted node
    /// cannot know when it last heard (it may have been just before it went down), so it
    /// passes its start time rather than `None`.
    pub fn follower_may_promise(&self, last_heard_ms: Option<u64>, now_ms: u64) -> bool {
        last_heard_ms.is_none_or(|heard| now_ms.saturating_sub(heard) >= self.duration_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(epoch: Epoch, revision: u64) -> LogPosition {
        LogPosition::new(epoch, revision)
    }

    fn state(promised: Epoch, position: LogPosition) -> ReplicaState {
        ReplicaState { promised, position }
    }

    fn rows(epoch: Epoch, base: LogPosition, to: LogPosition) -> Append {
        Append {
            epoch,
            base: Some(base),
            to,
        }
    }

    fn copy(epoch: Epoch, to: LogPosition) -> Append {
        Append {
            epoch,
            base: None,
            to,
        }
    }

    fn ids(names: &[&str]) -> Vec<NodeId> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_append_from_the_followers_position_at_or_above_its_promise_is_taken() {
        let s = state(3, pos(2, 10));
        // The new holder's first append relabels the inherited log, then rows follow.
        assert_eq!(
            check_append(&s, &rows(3, pos(2, 10), pos(3, 10))),
            Ok(state(3, pos(3, 10)))
        );
        assert_eq!(
            check_append(&s, &rows(3, pos(2, 10), pos(3, 14))),
            Ok(state(3, pos(3, 14)))
        );
        // From a higher epoch than promised: the promise rises with it.
        assert_eq!(
            check_append(&s, &rows(5, pos(2, 10), pos(5, 11))),
            Ok(state(5, pos(5, 11)))
        );
        // A heartbeat: no rows, same position.
        let at = state(3, pos(3, 14));
        assert_eq!(check_append(&at, &rows(3, pos(3, 14), pos(3, 14))), Ok(at));
    }

    #[test]
    fn an_append_below_the_promise_is_fenced_whatever_it_carries() {
        let s = state(4, pos(3, 10));
        for append in [
            rows(3, pos(3, 10), pos(3, 12)),
            copy(3, pos(3, 20)),
            rows(0, pos(3, 10), pos(0, 12)),
        ] {
            let refused = check_append(&s, &append);
            assert_eq!(
                refused,
                Err(AppendRefusal::Fenced {
                    promised: 4,
                    epoch: append.epoch
                })
            );
            assert_eq!(refused.map_err(|e| e.code()), Err("fenced"));
        }
        assert_eq!(
            check_append(&s, &copy(3, pos(3, 20))).map_err(|e| e.to_string()),
            Err(
                "append at epoch 3 refused: this replica promised epoch 4 to a newer holder; \
                 stop writing as holder (writes can no longer reach a quorum) and look up the \
                 current holder"
                    .into()
            )
        );
    }

    #[test]
    fn rows_from_another_position_are_refused_naming_the_replicas() {
        let s = state(3, pos(3, 12));
        // A duplicate of an append already taken, and one from a stale belief.
        for base in [pos(3, 10), pos(2, 12), pos(3, 13)] {
            let refused = check_append(&s, &rows(3, base, pos(3, 14)));
            assert_eq!(
                refused,
                Err(AppendRefusal::NotMyPosition {
                    mine: pos(3, 12),
                    base
                })
            );
            assert_eq!(refused.map_err(|e| e.code()), Err("not_my_position"));
        }
        assert_eq!(
            check_append(&s, &rows(3, pos(3, 10), pos(3, 14))).map_err(|e| e.to_string()),
            Err(
                "append from e3/r10 refused: this replica's log ends at e3/r12; resend from \
                 e3/r12 (or a full copy if e3/r12 is not on your log)"
                    .into()
            )
        );
    }

    #[test]
    fn an_append_contradicting_itself_is_malformed() {
        let s = state(3, pos(3, 12));
        for append in [
            // Target at another epoch than the append's.
            rows(3, pos(3, 12), pos(2, 14)),
            rows(3, pos(3, 12), pos(4, 14)),
            copy(4, pos(3, 14)),
            // Target below the base.
            rows(3, pos(3, 12), pos(3, 11)),
        ] {
            let refused = check_append(&s, &append);
            assert_eq!(
                refused,
                Err(AppendRefusal::Malformed {
                    epoch: append.epoch,
                    base: append.base,
                    to: append.to
                }),
                "{append:?}"
            );
            assert_eq!(refused.map_err(|e| e.code()), Err("malformed_append"));
        }
        assert_eq!(
            check_append(&s, &copy(4, pos(3, 14))).map_err(|e| e.to_string()),
            Err(
                "malformed append at epoch 4: it goes to e3/r14 from a full copy; an append \
                 goes to a position at its own epoch, at or above its base (a bug in the sender)"
                    .into()
            )
        );
    }

    #[test]
    fn a_full_copy_replaces_any_log_but_never_takes_a_replica_back() {
        // A divergent tail of an older epoch, even a longer one, is replaced.
        assert_eq!(
            check_append(&state(3, pos(2, 40)), &copy(3, pos(3, 12))),
            Ok(state(3, pos(3, 12)))
        );
        // The same copy twice: the second changes nothing.
        let at = state(3, pos(3, 12));
        assert_eq!(check_append(&at, &copy(3, pos(3, 12))), Ok(at));
        // A late copy overtaken by rows: the holder may have counted r14 here already.
        let ahead = state(3, pos(3, 14));
        let refused = check_append(&ahead, &copy(3, pos(3, 12)));
        assert_eq!(
            refused,
            Err(AppendRefusal::StaleCopy {
                mine: pos(3, 14),
                to: pos(3, 12)
            })
        );
        assert_eq!(refused.map_err(|e| e.code()), Err("stale_copy"));
        assert_eq!(
            check_append(&ahead, &copy(3, pos(3, 12))).map_err(|e| e.to_string()),
            Err(
                "full copy to e3/r12 refused: this replica is already at e3/r14, past it; \
                 resend from e3/r14"
                    .into()
            )
        );
    }

    #[test]
    fn a_promise_is_given_once_per_epoch_and_only_after_the_lease() {
        let s = state(3, pos(3, 12));
        assert_eq!(check_promise(&s, 4, true), Ok(state(4, pos(3, 12))));
        assert_eq!(check_promise(&s, 9, true), Ok(state(9, pos(3, 12))));
        for epoch in [0, 2, 3] {
            let refused = check_promise(&s, epoch, true);
            assert_eq!(
                refused,
                Err(PromiseRefusal::AlreadyPromised { promised: 3 })
            );
            assert_eq!(refused.map_err(|e| e.code()), Err("already_promised"));
        }
        // The same epoch again (a duplicated request) is refused: a promise is given once.
        let promised = check_promise(&s, 4, true).expect("above the promise");
        assert_eq!(
            check_promise(&promised, 4, true),
            Err(PromiseRefusal::AlreadyPromised { promised: 4 })
        );
        let leased = check_promise(&s, 4, false);
        assert_eq!(leased, Err(PromiseRefusal::HolderLeased));
        assert_eq!(leased.map_err(|e| e.code()), Err("holder_leased"));
        // An epoch not above the promise is refused as such even under a lease.
        assert_eq!(
            check_promise(&s, 3, false),
            Err(PromiseRefusal::AlreadyPromised { promised: 3 })
        );
        assert_eq!(
            check_promise(&s, 2, true).map_err(|e| e.to_string()),
            Err(
                "promise refused: this replica already promised epoch 3; if no holder appears, \
                 run again above epoch 3"
                    .into()
            )
        );
    }

    #[test]
    fn a_candidate_runs_above_everything_it_knows_and_never_for_epoch_1() {
        assert_eq!(candidate_epoch(0, &ReplicaState::default()), Ok(2));
        assert_eq!(candidate_epoch(1, &ReplicaState::default()), Ok(2));
        assert_eq!(candidate_epoch(4, &state(2, pos(2, 9))), Ok(5));
        assert_eq!(candidate_epoch(4, &state(7, pos(3, 9))), Ok(8));
        assert_eq!(candidate_epoch(1, &state(0, pos(3, 9))), Ok(4));
        assert_eq!(
            candidate_epoch(crate::MAX_EPOCH, &ReplicaState::default()),
            Err(EpochError::Exhausted {
                current: crate::MAX_EPOCH
            })
        );
    }

    #[test]
    fn a_quorum_of_grants_wins_and_names_the_highest_position() {
        let mut e = Election::new("a".into(), 5, ids(&["a", "b", "c"]), pos(3, 10));
        assert_eq!(e.epoch(), 5);
        assert_eq!(e.outcome(), ElectionOutcome::Pending);
        e.grant("c", pos(3, 12));
        assert_eq!(
            e.outcome(),
            ElectionOutcome::Won {
                source: "c".into(),
                position: pos(3, 12)
            }
        );
        // A newer epoch beats a longer log.
        e.grant("b", pos(4, 1));
        assert_eq!(
            e.outcome(),
            ElectionOutcome::Won {
                source: "b".into(),
                position: pos(4, 1)
            }
        );
    }

    #[test]
    fn ties_prefer_the_candidate_then_set_order() {
        let mut e = Election::new("b".into(), 5, ids(&["a", "b", "c"]), pos(3, 10));
        e.grant("c", pos(3, 10));
        e.grant("a", pos(3, 10));
        assert_eq!(
            e.outcome(),
            ElectionOutcome::Won {
                source: "b".into(),
                position: pos(3, 10)
            }
        );
        let mut e = Election::new("c".into(), 5, ids(&["a", "b", "c"]), pos(3, 9));
        e.grant("b", pos(3, 10));
        e.grant("a", pos(3, 10));
        // Set order is the candidate, then the given order: a before b.
        assert_eq!(
            e.outcome(),
            ElectionOutcome::Won {
                source: "a".into(),
                position: pos(3, 10)
            }
        );
    }

    #[test]
    fn enough_refusals_lose_and_name_the_epoch_to_go_above() {
        let mut e = Election::new("a".into(), 5, ids(&["a", "b", "c"]), pos(3, 10));
        // One refusal of three still leaves a quorum possible.
        e.refuse("b", 7);
        assert_eq!(e.outcome(), ElectionOutcome::Pending);
        e.refuse("c", 2);
        assert_eq!(e.outcome(), ElectionOutcome::Lost { retry_above: 7 });
        // Refused under leases only: go above this election's epoch.
        let mut e = Election::new("a".into(), 5, ids(&["a", "b", "c"]), pos(3, 10));
        e.refuse("b", 3);
        e.refuse("c", 3);
        assert_eq!(e.outcome(), ElectionOutcome::Lost { retry_above: 5 });
    }

    #[test]
    fn non_members_duplicates_and_crossed_answers() {
        let mut e = Election::new("a".into(), 5, ids(&["a", "b", "c", "d", "e"]), pos(3, 10));
        // Strangers count for nothing.
        for stranger in ["x", "y", "z"] {
            e.grant(stranger, pos(9, 9));
        }
        e.refuse("w", 99);
        assert_eq!(e.outcome(), ElectionOutcome::Pending);
        // A duplicated grant counts once, and keeps the position it was given with.
        e.grant("b", pos(3, 11));
        e.grant("b", pos(3, 15));
        assert_eq!(e.outcome(), ElectionOutcome::Pending);
        // A refusal after a grant (a duplicated request) does not undo the grant.
        e.refuse("b", 5);
        // A grant after a refusal (the lease ran out before a duplicate arrived) counts.
        e.refuse("c", 4);
        e.grant("c", pos(3, 10));
        assert_eq!(
            e.outcome(),
            ElectionOutcome::Won {
                source: "b".into(),
                position: pos(3, 11)
            }
        );
        // The candidate's own grant cannot be refused away.
        let mut e = Election::new("a".into(), 5, ids(&["a", "b", "c"]), pos(3, 10));
        e.refuse("a", 6);
        e.refuse("b", 6);
        assert_eq!(e.outcome(), ElectionOutcome::Pending);
    }

    #[test]
    fn sets_of_one_and_two() {
        // Alone, the candidate wins at once with its own log.
        let e = Election::new("a".into(), 2, vec![], pos(1, 4));
        assert_eq!(
            e.outcome(),
            ElectionOutcome::Won {
                source: "a".into(),
                position: pos(1, 4)
            }
        );
        // Of two, both must grant, and one refusal loses.
        let mut e = Election::new("a".into(), 2, ids(&["b"]), pos(1, 4));
        assert_eq!(e.outcome(), ElectionOutcome::Pending);
        e.refuse("b", 2);
        assert_eq!(e.outcome(), ElectionOutcome::Lost { retry_above: 2 });
        let mut e = Election::new("a".into(), 2, ids(&["b"]), pos(1, 4));
        e.grant("b", pos(1, 5));
        assert_eq!(
            e.outcome(),
            ElectionOutcome::Won {
                source: "b".into(),
                position: pos(1, 5)
            }
        );
    }

    #[test]
    fn the_holder_serves_strictly_within_its_lease() {
        let lease = Lease::default();
        assert_eq!(lease.duration_ms(), LEASE_MS);
        assert!(lease.holder_may_serve(5_000, 5_000));
        assert!(lease.holder_may_serve(5_000, 5_999));
        assert!(!lease.holder_may_serve(5_000, 6_000));
        assert!(!lease.holder_may_serve(5_000, 60_000));
        // A clock that went back counts as no time passed.
        assert!(lease.holder_may_serve(5_000, 4_000));
        assert!(!Lease::new(0).holder_may_serve(5_000, 5_000));
    }

    #[test]
    fn a_follower_promises_only_a_full_lease_after_it_last_heard() {
        let lease = Lease::new(100);
        assert!(lease.follower_may_promise(None, 0));
        assert!(!lease.follower_may_promise(Some(1_000), 1_000));
        assert!(!lease.follower_may_promise(Some(1_000), 1_099));
        assert!(lease.follower_may_promise(Some(1_000), 1_100));
        assert!(!lease.follower_may_promise(Some(1_000), 900));
        // The follower's lease never ends before the holder's: it counts from when it received
        // what the holder sent, which is no earlier than when the holder sent it.
        for (sent, received) in [(0, 0), (0, 30), (500, 620)] {
            for now in 0..800 {
                if lease.follower_may_promise(Some(received), now) {
                    assert!(
                        !lease.holder_may_serve(sent, now),
                        "{sent} {received} {now}"
                    );
                }
            }
        }
    }
}
