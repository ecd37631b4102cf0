//! Epochs: the version numbers of holder records, pins and claims, and the bounds that keep
//! them far from `u64` wrap-around.
//!
//! Every fact of the cluster map merges by the higher epoch, so whoever writes the highest epoch
//! wins until somebody writes a higher one. Two bounds keep that rule safe:
//!
//! - [`MAX_EPOCH`] (2^48): no record may carry more. Honest writers stop there
//!   ([`next_epoch`] refuses to go past it), and a map refuses records above it
//!   ([`crate::ClusterMap::check_plausible`]). A real fact moves once per handoff or per
//!   operator change: at a million changes a second it would take 8.9 years to get there, and
//!   2^48 stays below 2^53, so every epoch is exact in JSON clients that read numbers as
//!   doubles. Far below `u64::MAX`, so `+ 1` never wraps.
//! - [`MAX_EPOCH_JUMP`] (2^32): a map refuses a record more than this far ahead of the epoch it
//!   already knows for the fact (0 when unknown). A single message can then never exhaust a
//!   fact (bring it to [`MAX_EPOCH`], where nobody can write a newer version): that takes at
//!   least 2^16 accepted steps. The bound is far above what an honest node can fall behind:
//!   missing 2^32 changes of one fact takes 136 years at one change a second.

use crate::directory::UpdateKind;

/// A fact's version: every change of a holder record, pin or claim takes the next epoch.
pub type Epoch = u64;

/// The highest epoch a record may carry (2^48; see the module docs for the choice).
pub const MAX_EPOCH: Epoch = 1 << 48;

/// How far ahead of the known epoch of a fact (0 when unknown) a received record may be
/// (2^32; see the module docs for the choice).
pub const MAX_EPOCH_JUMP: Epoch = 1 << 32;

// The choices of the module docs, checked at compile time: exact as an f64 (JavaScript
// numbers), and a fact takes at least 2^16 accepted jumps to reach the maximum.
const _: () = assert!(MAX_EPOCH < 1 << 53 && MAX_EPOCH / MAX_EPOCH_JUMP >= 1 << 16);

/// An epoch that cannot grow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EpochError {
    /// The next epoch would be above [`MAX_EPOCH`]. No honest history gets there; a record
    /// that did came from a faulty or hostile peer.
    #[error(
        "epoch exhausted: epoch {current} cannot grow past the maximum {MAX_EPOCH}; the record \
         was written by a faulty or hostile node (check cfgnode_cluster_updates_refused_total \
         and the logs of every node), so this fact can take no newer version"
    )]
    Exhausted {
        /// The epoch that could not grow.
        current: Epoch,
    },
}

/// The epoch after `current`, refused past [`MAX_EPOCH`] (so it never wraps, and every record
/// an honest node writes passes [`crate::ClusterMap::check_plausible`] on its peers).
pub fn next_epoch(current: Epoch) -> Result<Epoch, EpochError> {
    current
        .checked_add(1)
        .filter(|next| *next <= MAX_EPOCH)
        .ok_or(EpochError::Exhausted { current })
}

/// Why a received update was refused: it would have changed nothing anyway if it were honest
/// (no honest history reaches these epochs), and merging it could freeze the fact for good.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImplausibleUpdate {
    /// The epoch is above [`MAX_EPOCH`].
    #[error(
        "refused the {kind} of namespace {namespace:?} at epoch {epoch}: above the maximum \
         epoch {MAX_EPOCH}, which no real history reaches (the sender is faulty or hostile)"
    )]
    AboveMaximum {
        /// The namespace the update is about.
        namespace: String,
        /// Which fact.
        kind: UpdateKind,
        /// The epoch it carried.
        epoch: Epoch,
    },
    /// The epoch is more than [`MAX_EPOCH_JUMP`] ahead of the epoch known for the fact.
    #[error(
        "refused the {kind} of namespace {namespace:?} at epoch {epoch}: more than \
         {MAX_EPOCH_JUMP} ahead of the known epoch {known} (the sender is faulty or hostile)"
    )]
    TooFarAhead {
        /// The namespace the update is about.
        namespace: String,
        /// Which fact.
        kind: UpdateKind,
        /// The epoch it carried.
        epoch: Epoch,
        /// The epoch this map knew for the fact (0 when unknown).
        known: Epoch,
    },
}

impl ImplausibleUpdate {
    /// A short stable name of the reason, for metric labels (a bounded set: `above_maximum`,
    /// `too_far_ahead`).
    pub fn reason(&self) -> &'static str {
        match self {
            ImplausibleUpdate::AboveMaximum { .. } => "above_maximum",
            ImplausibleUpdate::TooFarAhead { .. } => "too_far_ahead",
        }
    }

    /// The namespace the refused update was about.
    pub fn namespace(&self) -> &str {
        match self {
            ImplausibleUpdate::AboveMaximum { namespace, .. }
            | ImplausibleUpdate::TooFarAhead { namespace, .. } => namespace,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_epoch_grows_by_one_up_to_the_maximum_and_never_wraps() {
        assert_eq!(next_epoch(0), Ok(1));
        assert_eq!(next_epoch(41), Ok(42));
        assert_eq!(next_epoch(MAX_EPOCH - 1), Ok(MAX_EPOCH));
        for current in [MAX_EPOCH, MAX_EPOCH + 1, u64::MAX - 1, u64::MAX] {
            assert_eq!(next_epoch(current), Err(EpochError::Exhausted { current }));
        }
    }
}
