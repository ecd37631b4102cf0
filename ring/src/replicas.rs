//! Replica sets and what the holder of a namespace decides from its followers' positions: who
//! the followers are ([`replica_set`]), how many make a majority ([`quorum`]), how far a write
//! is acknowledged ([`Progress::committed`]), and what a follower must be sent to catch up
//! ([`sync_plan`]). The design is `docs/replication.md`.
//!
//! Everything rests on one fact: **one writer per epoch**. Only the holder of epoch `e` writes
//! entries at `e`, and its log only grows during `e`, so the entries of one epoch form one
//! linear log. A replica whose newest entry is `(e, r)` (its [`LogPosition`]) holds exactly the
//! holder-of-`e`'s log up to revision `r`: two replicas at `(e, r1)` and `(e, r2)` with
//! `r1 <= r2` share the log up to `r1`.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::epoch::Epoch;
use crate::ring::{NodeId, Ring};

/// Where a replica's log of a namespace ends: the epoch of the holder that wrote its newest
/// entry (or that relabelled the log when its epoch began), and that entry's revision.
///
/// Ordered epoch first, then revision, so a newer holder's log always wins an election over an
/// older holder's, however long the older one's unacknowledged tail.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogPosition {
    /// The holder epoch that wrote (or relabelled) the log up to `revision`; compared first.
    pub epoch: Epoch,
    /// The revision of the newest entry (0: an empty log).
    pub revision: u64,
}

impl LogPosition {
    /// An empty log that no holder wrote: below every other position.
    pub const ZERO: LogPosition = LogPosition {
        epoch: 0,
        revision: 0,
    };

    /// The position `(epoch, revision)`.
    pub const fn new(epoch: Epoch, revision: u64) -> LogPosition {
        LogPosition { epoch, revision }
    }
}

impl fmt::Display for LogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}/r{}", self.epoch, self.revision)
    }
}

/// How many members of a set of `n` make a majority: `n / 2 + 1` (1 of 1, 2 of 2, 2 of 3, 3 of
/// 5). Any two majorities share a member, which is what makes an acknowledged write survive
/// any election. `n = 0` counts as a set of one (the holder alone).
pub fn quorum(n: usize) -> usize {
    n.max(1) / 2 + 1
}

/// How many members a replica set has when `--replicas` asks for `wanted` and the cluster
/// knows `members` nodes: `min(wanted, members)`, except that a set smaller than asked is never
/// even. An even set tolerates no more failures than the odd set one smaller (a set of two
/// stops acknowledging when either member dies), so with the default of three, a two-node
/// cluster keeps one copy per namespace (and today's availability) instead of a set of two
/// that any death would stop; the third node brings three. An even `wanted` that the cluster
/// can fill is kept as asked. `wanted = 0` counts as 1.
pub fn set_size(wanted: usize, members: usize) -> usize {
    let wanted = wanted.max(1);
    let size = wanted.min(members.max(1));
    if size < wanted && size.is_multiple_of(2) {
        size - 1
    } else {
        size
    }
}

/// The replica set of `namespace` held by `holder`: the holder first, then the next distinct
/// members clockwise on `ring` from the namespace's point ([`Ring::successors`]), skipping the
/// holder and every member not in `alive`, up to `n` in all (`n = 0` counts as 1).
///
/// So the length is `min(n, 1 + alive ring members other than the holder)`: a down member is
/// never chosen, because a follower that cannot answer only delays the quorum. Members are
/// taken from the ring, so a node that is alive but not on it is not chosen either (the node
/// builds its ring from the alive members, so that does not happen there). The holder need
/// not be on the ring: a claim or a pin may name any node.
pub fn replica_set(
    namespace: &str,
    holder: &NodeId,
    ring: &Ring,
    alive: &BTreeSet<NodeId>,
    n: usize,
) -> Vec<NodeId> {
    let n = n.max(1);
    let mut set = Vec::with_capacity(n);
    set.push(holder.clone());
    set.extend(
        ring.successors(namespace)
            .into_iter()
            .filter(|member| member != holder && alive.contains(member))
            .take(n - 1),
    );
    set
}

/// The holder's view of its replica set's positions in its epoch, fed by the followers'
/// answers, from which it tells which writes are acknowledged and who lags.
///
/// Kept in memory only: after a restart the holder learns the positions again from the
/// followers' answers, and until then counts nobody but itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The holder's epoch: only positions at this epoch count towards a quorum.
    epoch: Epoch,
    /// Every member once, the holder first, with the newest position known for it (ZERO until
    /// it answers). A vector in set order, so `lagging` lists members in that order.
    positions: Vec<(NodeId, LogPosition)>,
}

impl Progress {
    /// The progress of the set `{holder} + replicas` (the holder may be among `replicas`, as
    /// [`replica_set`] returns it; duplicates are ignored) at `epoch`, the holder being at
    /// `own` and the followers not heard from yet.
    pub fn new(holder: NodeId, replicas: &[NodeId], epoch: Epoch, own: LogPosition) -> Progress {
        let mut positions = vec![(holder, own)];
        for replica in replicas {
            if positions.iter().all(|(member, _)| member != replica) {
                positions.push((replica.clone(), LogPosition::ZERO));
            }
        }
        Progress { epoch, positions }
    }

    /// The holder's epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The members, the holder first.
    pub fn members(&self) -> impl Iterator<Item = &NodeId> {
        self.positions.iter().map(|(member, _)| member)
    }

    /// The newest position known for `node`, if it is a member.
    pub fn position(&self, node: &str) -> Option<LogPosition> {
        self.positions
            .iter()
            .find(|(member, _)| member == node)
            .map(|(_, position)| *position)
    }

    /// Records that `node` is at `position` (its answer to an append, or its refusal naming
    /// its position). Ignored for a non-member, and for a position below the one known: a
    /// replica's position never goes back, so an older position is a late or duplicated
    /// answer.
    pub fn record(&mut self, node: &str, position: LogPosition) {
        if let Some((_, known)) = self.positions.iter_mut().find(|(member, _)| member == node) {
            *known = (*known).max(position);
        }
    }

    /// Records the holder's own position (after each of its writes is durable).
    pub fn own(&mut self, position: LogPosition) {
        let known = &mut self.positions[0].1;
        *known = (*known).max(position);
    }

    /// The highest revision `r` that a quorum of the set (holder included) holds at this
    /// epoch, or 0 when no quorum holds anything at it yet: the writes up to `r` are
    /// acknowledged.
    ///
    /// A member counts for `r` iff its position's epoch is the holder's and its revision is at
    /// least `r`. Positions of older epochs do not count, even at a higher revision: an older
    /// holder's entry on a majority can still lose an election to a position of a newer epoch
    /// that lacks it (Raft's figure 8), while a position at this epoch is in this holder's
    /// linear log. The entries the holder took over when its epoch began count as soon as a
    /// quorum is at `(epoch, r)`: the holder starts its epoch at `(epoch, its last revision)`
    /// (like Raft's no-op entry at a new term) and ships that position with its first
    /// append.
    pub fn committed(&self) -> u64 {
        let mut revisions: Vec<u64> = self
            .positions
            .iter()
            .filter(|(_, position)| position.epoch == self.epoch)
            .map(|(_, position)| position.revision)
            .collect();
        revisions.sort_unstable_by(|a, b| b.cmp(a));
        revisions
            .get(quorum(self.positions.len()) - 1)
            .copied()
            .unwrap_or(0)
    }

    /// The followers that do not hold the holder's newest write at this epoch, in set order,
    /// each with how many revisions it is behind the holder. A follower still at an older
    /// epoch is listed even at the holder's revision (at least 1 behind): it has yet to take
    /// an append of this epoch before it counts.
    pub fn lagging(&self) -> Vec<(NodeId, u64)> {
        let own = self.positions[0].1;
        self.positions[1..]
            .iter()
            .filter_map(|(member, position)| {
                let behind = own.revision.saturating_sub(position.revision);
                let behind = if position.epoch == self.epoch {
                    behind
                } else {
                    behind.max(1)
                };
                (behind > 0).then(|| (member.clone(), behind))
            })
            .collect()
    }
}

/// What the holder sends a follower so that the follower's log becomes the holder's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPlan {
    /// The follower's log is a prefix of the holder's: send the rows after `from_revision`
    /// (the follower's revision), with the follower's position as the append's base.
    Rows {
        /// The follower's revision; the rows sent are the ones above it.
        from_revision: u64,
    },
    /// The follower's log may hold entries the holder's does not (an unacknowledged tail of an
    /// older holder) or is unknown: send the whole namespace, replacing the follower's copy.
    FullCopy,
}

/// What to send a follower at `follower` when the holder is at `holder_now` and was at
/// `holder_start` when its epoch began (its log's last entry written by an older holder).
///
/// Rows when the follower's log is a prefix of the holder's, which positions alone tell
/// because each epoch's log is linear (one writer per epoch, see the module docs):
///
/// - `follower` at the holder's epoch and at or below its revision: both hold this epoch's
///   log, the follower a prefix of it;
/// - `follower` at the epoch of `holder_start` and at or below its revision: both hold that
///   older holder's log up to the follower's revision, and the holder's log went on from
///   there.
///
/// Anything else gets a full copy: a follower past `holder_start` in the old epoch holds an
/// unacknowledged tail the holder never had (it lost the election to a quorum without it),
/// and a follower at another epoch may have diverged anywhere after a common prefix that
/// positions cannot locate. A full copy is always correct, only slower.
pub fn sync_plan(
    holder_start: LogPosition,
    holder_now: LogPosition,
    follower: LogPosition,
) -> SyncPlan {
    let within = |holder: LogPosition| {
        follower.epoch == holder.epoch && follower.revision <= holder.revision
    };
    if within(holder_now) || within(holder_start) {
        SyncPlan::Rows {
            from_revision: follower.revision,
        }
    } else {
        SyncPlan::FullCopy
    }
}

/// The set a holder replicates to next, and the learners it syncs meanwhile, when the set it
/// should have (`desired`, holder first) differs from the one it has (`current`, holder
/// first; empty when it has none yet).
///
/// Members that join the set (`desired` but not `current`) first catch up as **learners**:
/// they take appends but are not counted for quorums or told they are in the set, while the
/// current set stays. Only once every newcomer is in `caught_up` (it holds the current set's
/// committed writes) does the holder switch: to the current set plus that one newcomer (one
/// member added at a time keeps any two consecutive sets' majorities overlapping, Raft's
/// single-member change); members `desired` lacks leave once every newcomer is in. Replacing a member at once would let
/// a majority of the new set (the newcomer and a lagging member) lack a write a majority of the
/// old set acknowledged; after the catch-up, the newcomer has every such write. A set that
/// only loses members (the cluster shrank) switches at once: the holder is in both sets, and no
/// election can run without a majority of the set its voters were last told of.
///
/// One step removes fewer than a quorum of `current` ([`step_toward`]): after a switch, the
/// holder keeps counting a majority of the old set too until the members left to be told of
/// the new one can no longer make up a quorum of the old (`replication::holder`), and the
/// members removed are never told. Pure.
pub fn next_set(
    current: &[NodeId],
    desired: &[NodeId],
    caught_up: &BTreeSet<NodeId>,
) -> (Vec<NodeId>, Vec<NodeId>) {
    if current.is_empty() || current == desired {
        return (desired.to_vec(), Vec::new());
    }
    let newcomers: Vec<NodeId> = desired
        .iter()
        .filter(|node| !current.contains(node))
        .cloned()
        .collect();
    if newcomers.is_empty() {
        return (step_toward(current, desired), Vec::new());
    }
    // Members join before any leaves, one at a time (Raft's single-member add, then remove):
    // the set grows by the first newcomer that caught up, the others keep learning, and a
    // later step drops the members `desired` lacks.
    match newcomers.iter().position(|node| caught_up.contains(node)) {
        Some(first) => {
            let mut learners = newcomers;
            let joining = learners.remove(first);
            let mut grown = current.to_vec();
            grown.push(joining);
            (grown, learners)
        }
        None => (current.to_vec(), newcomers),
    }
}

/// Whether, after a switch away from `old` (holder first), the members of `old` that were not
/// told the new set (`told`: members that answered an append of it) can no longer make up a
/// quorum of `old` without the holder: then no election in `old` can win, and the holder may
/// count the new set alone. Until then it counts a majority of `old` as well, so a write the
/// new set acknowledged is on any quorum of `old` that could still elect. Pure.
pub fn old_set_outvoted(old: &[NodeId], told: &BTreeSet<NodeId>) -> bool {
    let untold = old.iter().skip(1).filter(|n| !told.contains(*n)).count();
    untold < quorum(old.len())
}

/// The next set on the way from `current` to `desired` (both holder first): `desired` itself
/// when it removes fewer than a quorum of `current`, else `desired` with the removed members
/// past the first `quorum - 1` kept (in `current`'s order) in place of its last newcomers.
/// Sets of three change one member at a time, sets of five two. Pure.
pub fn step_toward(current: &[NodeId], desired: &[NodeId]) -> Vec<NodeId> {
    let removed: Vec<&NodeId> = current.iter().filter(|n| !desired.contains(n)).collect();
    let may_remove = quorum(current.len()) - 1;
    if removed.len() <= may_remove {
        return desired.to_vec();
    }
    let keep = &removed[may_remove..];
    let room = desired.len().saturating_sub(keep.len());
    let mut step: Vec<NodeId> = desired
        .iter()
        .filter(|n| current.contains(n))
        .cloned()
        .collect();
    for newcomer in desired.iter().filter(|n| !current.contains(n)) {
        if step.len() < room {
            step.push(newcomer.clone());
        }
    }
    step.extend(keep.iter().map(|n| (*n).clone()));
    step
}

#[cfg(test)]
mod tests {
    #[test]
    fn sets_smaller_than_asked_are_odd() {
        // --replicas 3 (the default): one node, two nodes, three, many.
        assert_eq!(
            [1, 2, 3, 7].map(|members| set_size(3, members)),
            [1, 1, 3, 3]
        );
        assert_eq!(
            [2, 3, 4, 5, 9].map(|members| set_size(5, members)),
            [1, 3, 3, 5, 5]
        );
        // An even size asked for and filled is kept; 0 counts as 1.
        assert_eq!(set_size(2, 2), 2);
        assert_eq!(set_size(4, 6), 4);
        assert_eq!(set_size(0, 5), 1);
        assert_eq!(set_size(1, 0), 1);
    }

    #[test]
    fn a_newcomer_learns_before_it_counts() {
        let ids = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let none = BTreeSet::new();
        // No set yet: the desired one.
        assert_eq!(
            super::next_set(&[], &ids(&["h", "a", "b"]), &none),
            (ids(&["h", "a", "b"]), vec![])
        );
        // c replaces b: b's set stays and c learns, until c has caught up.
        let (current, desired) = (ids(&["h", "a", "b"]), ids(&["h", "a", "c"]));
        assert_eq!(
            super::next_set(&current, &desired, &none),
            (current.clone(), ids(&["c"]))
        );
        // Caught up, c joins; b leaves in the next step.
        let caught_up: BTreeSet<String> = ["c".to_string()].into();
        let grown = ids(&["h", "a", "b", "c"]);
        assert_eq!(
            super::next_set(&current, &desired, &caught_up),
            (grown.clone(), vec![])
        );
        assert_eq!(
            super::next_set(&grown, &desired, &caught_up),
            (desired.clone(), vec![])
        );
        // Shrinking needs no catch-up; the same set changes nothing.
        assert_eq!(
            super::next_set(&current, &ids(&["h", "a"]), &none),
            (ids(&["h", "a"]), vec![])
        );
        assert_eq!(
            super::next_set(&desired, &desired, &none),
            (desired, vec![])
        );
    }

    #[test]
    fn the_old_set_is_outvoted_once_enough_of_it_was_told() {
        let ids = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let told = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
        // {h, a, b} -> {h, a, c}: b is never told; a and b could elect until a is.
        let old = ids(&["h", "a", "b"]);
        assert!(!super::old_set_outvoted(&old, &told(&[])));
        assert!(!super::old_set_outvoted(&old, &told(&["c"])));
        assert!(super::old_set_outvoted(&old, &told(&["a"])));
        // Five: two removed, so two of the three staying must be told.
        let old = ids(&["h", "a", "b", "c", "d"]);
        assert!(!super::old_set_outvoted(&old, &told(&["a"])));
        assert!(super::old_set_outvoted(&old, &told(&["a", "b"])));
        // A set that only grew: nobody left it, but its members still need telling.
        assert!(!super::old_set_outvoted(&ids(&["h", "a", "b"]), &told(&[])));
    }

    #[test]
    fn a_step_removes_fewer_than_a_quorum() {
        let ids = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        // Three members, both followers replaced: one at a time.
        let step = super::step_toward(&ids(&["h", "a", "b"]), &ids(&["h", "c", "d"]));
        assert_eq!(step, ids(&["h", "c", "b"]));
        assert_eq!(
            super::step_toward(&step, &ids(&["h", "c", "d"])),
            ids(&["h", "c", "d"])
        );
        // Replacing both followers: they join one at a time, then both leave (a set of five
        // may lose two).
        let all: BTreeSet<String> = ["c".to_string(), "d".to_string()].into();
        assert_eq!(
            super::next_set(&ids(&["h", "a", "b"]), &ids(&["h", "c", "d"]), &all),
            (ids(&["h", "a", "b", "c"]), ids(&["d"]))
        );
        assert_eq!(
            super::next_set(&ids(&["h", "a", "b", "c"]), &ids(&["h", "c", "d"]), &all),
            (ids(&["h", "a", "b", "c", "d"]), vec![])
        );
        assert_eq!(
            super::next_set(
                &ids(&["h", "a", "b", "c", "d"]),
                &ids(&["h", "c", "d"]),
                &all
            ),
            (ids(&["h", "c", "d"]), vec![])
        );
        // Five members: two at a time; one removed is a single step.
        assert_eq!(
            super::step_toward(
                &ids(&["h", "a", "b", "c", "d"]),
                &ids(&["h", "e", "f", "g", "d"])
            ),
            ids(&["h", "d", "e", "f", "c"])
        );
        assert_eq!(
            super::step_toward(&ids(&["h", "a", "b"]), &ids(&["h", "a", "c"])),
            ids(&["h", "a", "c"])
        );
        // Growing removes nothing.
        assert_eq!(
            super::step_toward(&ids(&["h", "a", "b"]), &ids(&["h", "a", "b", "r"])),
            ids(&["h", "a", "b", "r"])
        );
    }

    use super::*;

    fn ids(names: &[&str]) -> Vec<NodeId> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn pos(epoch: Epoch, revision: u64) -> LogPosition {
        LogPosition::new(epoch, revision)
    }

    #[test]
    fn quorum_is_a_strict_majority() {
        let expected = [
            (0, 1),
            (1, 1),
            (2, 2),
            (3, 2),
            (4, 3),
            (5, 3),
            (6, 4),
            (7, 4),
        ];
        for (n, q) in expected {
            assert_eq!(quorum(n), q, "n = {n}");
        }
    }

    #[test]
    fn positions_order_by_epoch_then_revision_and_print_both() {
        assert!(pos(2, 0) > pos(1, 99));
        assert!(pos(2, 5) > pos(2, 4));
        assert!(LogPosition::ZERO < pos(0, 1));
        assert_eq!(LogPosition::default(), LogPosition::ZERO);
        assert_eq!(pos(3, 17).to_string(), "e3/r17");
    }

    #[test]
    fn positions_travel_as_epoch_and_revision() {
        // The wire and storage formats name the fields; a rename would break both.
        let json = serde_json::to_string(&pos(3, 17)).expect("a position serializes");
        assert_eq!(json, r#"{"epoch":3,"revision":17}"#);
        let back: LogPosition = serde_json::from_str(&json).expect("and parses back");
        assert_eq!(back, pos(3, 17));
    }

    fn ring_of(members: &[NodeId]) -> Ring {
        Ring::new(members.iter(), 16)
    }

    #[test]
    fn a_replica_set_is_the_holder_then_the_alive_successors_in_ring_order() {
        let members = ids(&["n0", "n1", "n2", "n3", "n4"]);
        let ring = ring_of(&members);
        let all: BTreeSet<NodeId> = members.iter().cloned().collect();
        for ns in ["alpha", "beta", "gamma", "delta"] {
            let order = ring.successors(ns);
            let holder = order[0].clone();
            assert_eq!(
                replica_set(ns, &holder, &ring, &all, 3),
                order[..3].to_vec()
            );
            // A holder elsewhere on the ring (a claim): skipped where it stands.
            let claimant = order[2].clone();
            let expected: Vec<NodeId> = std::iter::once(claimant.clone())
                .chain(order.iter().filter(|m| **m != claimant).take(2).cloned())
                .collect();
            assert_eq!(replica_set(ns, &claimant, &ring, &all, 3), expected);
            // A down member is passed over; the next alive one takes its place.
            let mut alive = all.clone();
            alive.remove(&order[1]);
            assert_eq!(
                replica_set(ns, &holder, &ring, &alive, 3),
                vec![holder.clone(), order[2].clone(), order[3].clone()]
            );
        }
    }

    #[test]
    fn a_replica_set_is_never_longer_than_the_alive_members_and_at_least_the_holder() {
        let members = ids(&["n0", "n1", "n2"]);
        let ring = ring_of(&members);
        let all: BTreeSet<NodeId> = members.iter().cloned().collect();
        let holder = ring.owner("ns").expect("non-empty ring").clone();
        assert_eq!(replica_set("ns", &holder, &ring, &all, 5).len(), 3);
        // n = 0 and n = 1: the holder alone (today's behaviour).
        assert_eq!(
            replica_set("ns", &holder, &ring, &all, 0),
            vec![holder.clone()]
        );
        assert_eq!(
            replica_set("ns", &holder, &ring, &all, 1),
            vec![holder.clone()]
        );
        assert_eq!(replica_set("ns", &holder, &ring, &all, 2).len(), 2);
        // Nobody else alive: the holder alone, whatever n.
        let only: BTreeSet<NodeId> = [holder.clone()].into();
        assert_eq!(
            replica_set("ns", &holder, &ring, &only, 3),
            vec![holder.clone()]
        );
        // A holder not on the ring (and not even alive in this view) still comes first.
        let stranger = "n9".to_string();
        let set = replica_set("ns", &stranger, &ring, &all, 3);
        assert_eq!(set[0], stranger);
        assert_eq!(set[1..].to_vec(), ring.successors("ns")[..2].to_vec());
    }

    fn progress(epoch: Epoch, own: LogPosition) -> Progress {
        Progress::new("h".into(), &ids(&["h", "a", "b"]), epoch, own)
    }

    #[test]
    fn committed_needs_a_quorum_at_the_holders_epoch() {
        let mut p = progress(3, pos(3, 10));
        // The holder alone is not a quorum of three.
        assert_eq!(p.committed(), 0);
        p.record("a", pos(3, 7));
        assert_eq!(p.committed(), 7);
        p.record("b", pos(3, 9));
        assert_eq!(p.committed(), 9);
        p.record("a", pos(3, 10));
        assert_eq!(p.committed(), 10);
        p.own(pos(3, 12));
        p.record("b", pos(3, 11));
        assert_eq!(p.committed(), 11);
    }

    #[test]
    fn positions_of_older_epochs_count_for_nothing() {
        // Both followers are far ahead in revision, but at an older holder's epoch.
        let mut p = progress(3, pos(3, 10));
        p.record("a", pos(2, 50));
        p.record("b", pos(2, 50));
        assert_eq!(p.committed(), 0);
        // Once a follower took this epoch's start position, the inherited entries count.
        p.record("a", pos(3, 10));
        assert_eq!(p.committed(), 10);
    }

    #[test]
    fn late_answers_non_members_and_duplicates_change_nothing() {
        let mut p = progress(3, pos(3, 10));
        p.record("a", pos(3, 9));
        p.record("a", pos(3, 4));
        p.record("a", pos(2, 99));
        assert_eq!(p.position("a"), Some(pos(3, 9)));
        p.record("a", pos(3, 9));
        assert_eq!(p.committed(), 9);
        p.record("stranger", pos(3, 10));
        p.record("stranger", pos(3, 10));
        assert_eq!(p.position("stranger"), None);
        assert_eq!(p.committed(), 9);
        p.own(pos(3, 2));
        assert_eq!(p.position("h"), Some(pos(3, 10)));
        // A follower that moved on to a newer epoch no longer counts here.
        p.record("a", pos(4, 1));
        assert_eq!(p.committed(), 0);
    }

    #[test]
    fn sets_of_one_and_two() {
        // One: the holder's own write is acknowledged at once.
        let mut one = Progress::new("h".into(), &[], 1, pos(1, 0));
        assert_eq!(one.committed(), 0);
        one.own(pos(1, 5));
        assert_eq!(one.committed(), 5);
        assert!(one.lagging().is_empty());
        // Two: both are needed.
        let mut two = Progress::new("h".into(), &ids(&["h", "a", "a"]), 1, pos(1, 5));
        assert_eq!(two.members().count(), 2);
        assert_eq!(two.committed(), 0);
        two.record("a", pos(1, 4));
        assert_eq!(two.committed(), 4);
    }

    #[test]
    fn lagging_lists_followers_behind_in_set_order() {
        let mut p = Progress::new("h".into(), &ids(&["c", "a", "b"]), 3, pos(3, 10));
        assert_eq!(
            p.lagging(),
            vec![("c".into(), 10), ("a".into(), 10), ("b".into(), 10)]
        );
        p.record("c", pos(3, 10));
        p.record("a", pos(3, 6));
        // Older epoch at the holder's revision: still behind, by at least one.
        p.record("b", pos(2, 10));
        assert_eq!(p.lagging(), vec![("a".into(), 4), ("b".into(), 1)]);
        p.record("b", pos(2, 3));
        p.record("b", pos(2, 12));
        assert_eq!(p.lagging(), vec![("a".into(), 4), ("b".into(), 1)]);
    }

    #[test]
    fn a_follower_on_the_holders_log_gets_rows_any_other_a_full_copy() {
        let start = pos(2, 10);
        let now = pos(3, 14);
        let rows = |from_revision| SyncPlan::Rows { from_revision };
        // At the holder's epoch, at or below its revision.
        assert_eq!(sync_plan(start, now, pos(3, 12)), rows(12));
        assert_eq!(sync_plan(start, now, pos(3, 14)), rows(14));
        // At the epoch the holder started from, at or below its start.
        assert_eq!(sync_plan(start, now, pos(2, 10)), rows(10));
        assert_eq!(sync_plan(start, now, pos(2, 0)), rows(0));
        // Past the start in the old epoch: an unacknowledged tail the holder never had.
        assert_eq!(sync_plan(start, now, pos(2, 11)), SyncPlan::FullCopy);
        // Another epoch, older or newer, or ahead of the holder in its own epoch.
        assert_eq!(sync_plan(start, now, pos(1, 3)), SyncPlan::FullCopy);
        assert_eq!(sync_plan(start, now, pos(4, 1)), SyncPlan::FullCopy);
        assert_eq!(sync_plan(start, now, pos(3, 15)), SyncPlan::FullCopy);
        // A brand-new namespace: everyone starts empty.
        let zero = LogPosition::ZERO;
        assert_eq!(sync_plan(zero, pos(1, 3), zero), rows(0));
    }
}
