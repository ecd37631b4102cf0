//! cfgnode placement: which node should own a namespace. Pure: no IO, no clock, no randomness,
//! so every node computes the same answer from the same inputs.
//!
//! # Layout
//!
//! - [`Ring`]: a consistent-hash ring (hashring) over alive members with virtual nodes. Every
//!   point is the hash of explicit bytes (node id, a zero byte, the vnode index big-endian), so
//!   the ring does not depend on platform, build or insertion order.
//! - [`Directive`]: a pin or a claim as stored and gossiped: a target node (or none, once
//!   released), an epoch, and the node that wrote it. [`Directive::merge`] picks the higher
//!   epoch, ties broken by author id, so any two nodes that saw the same directives agree.
//! - [`desired_owner`]: a pin (strict) > a claim whose claimant is alive > the ring.
//! - [`ClusterMap`]: the directory (each namespace's [`HolderRecord`]), pins and claims, merged
//!   from [`Update`]s in any order; [`ClusterMap::check_plausible`] refuses updates from peers
//!   whose epoch no honest history reaches.
//! - [`Epoch`]: the version of every fact, grown only by [`next_epoch`], which stops at
//!   [`MAX_EPOCH`] with an [`EpochError`] instead of wrapping.
//! - [`route`] and [`handoff_target`]: what a node does with a request, and when it must hand a
//!   namespace over; [`Handoff`] keeps a handoff's steps in their only valid order (the giving
//!   side).
//! - [`Receiving`] and [`check_offer`]: the receiving side of a handoff, which offers, chunks
//!   and commits a node takes (only the accepted giver, at its epoch, with the giver's
//!   revision), each refusal a typed [`Refusal`] carrying the answer the giver gets.
//! - `replicas` (replication, `docs/replication.md`, the holder's side): [`replica_set`] (the
//!   holder, then the next alive members clockwise from [`Ring::successors`]), [`quorum`],
//!   [`LogPosition`] (`(epoch, revision)`, epoch first), [`Progress`] (the holder's count of
//!   its followers' positions: which writes a quorum acknowledged, who lags) and [`sync_plan`]
//!   (rows or a full copy to catch a follower up).
//! - `election` (replication, fencing and promotion): a replica's durable [`ReplicaState`],
//!   [`check_append`] and [`check_promise`] (typed [`AppendRefusal`]s and [`PromiseRefusal`]s
//!   with stable wire codes), the [`candidate_epoch`] to run for, an [`Election`]'s count
//!   towards [`ElectionOutcome::Won`] (naming the member to fetch from), and the read
//!   [`Lease`] over caller-supplied monotonic time.
//!
//! # Place in the map
//!
//! `node -> ring`; ring depends on no crate of ours. The node feeds it the membership (from
//! SWIM) and the stored pins and claims, and acts on the answer (handoff, forwarding).

mod directive;
mod directory;
mod election;
mod epoch;
mod placement;
mod receive;
mod replicas;
mod ring;
mod route;

pub use directive::Directive;
pub use directory::{ClusterMap, HolderRecord, Update, UpdateKind};
pub use election::{
    Append, AppendRefusal, Election, ElectionOutcome, HEARTBEAT_MS, LEASE_MS, Lease,
    PromiseRefusal, ReplicaState, candidate_epoch, check_append, check_promise,
};
pub use epoch::{Epoch, EpochError, ImplausibleUpdate, MAX_EPOCH, MAX_EPOCH_JUMP, next_epoch};
pub use placement::{Placement, Reason, desired_owner};
pub use receive::{
    Commit, CommitDecision, Offer, PendingCommit, Receiver, Receiving, Refusal, check_offer,
};
pub use replicas::{
    LogPosition, Progress, SyncPlan, next_set, old_set_outvoted, quorum, replica_set, set_size,
    step_toward, sync_plan,
};
pub use ring::{DEFAULT_VNODES, NodeId, Ring};
pub use route::{
    CommitError, Handoff, HandoffStep, Intent, OutOfOrder, Route, handoff_target, route,
};
