//! A namespace's replica state on this node, and the rules it applies to promises, appends
//! and the start of its own epoch (docs/replication.md, sections Terms, Writes, Promotion).
//!
//! Pure: the functions here take the stored [`ReplicaState`] and [`NamespaceState`] and decide;
//! `apply` reads and writes the rows around them inside the writer's transaction.
//!
//! # What is stored
//!
//! One row per namespace in the `replicas` table (format byte + bincode, like every record).
//! It is this node's own state: [`crate::Store::export`], [`crate::Store::export_changes`] and
//! [`crate::Store::import`] never carry it, and a [`TransferOp::ClearNamespace`] (the start of
//! every full copy) leaves it alone, because a promise is a durable word that no copy may
//! make the node forget. Only [`crate::Store::drop_namespace`] removes it.
//!
//! # Positions
//!
//! A copy's position ([`LogPos`]) is, by one rule ([`current_position`]):
//!
//! - a follower's (a record without `epoch_start`): the stored `position`, moved by appends;
//! - a holder's (a record with `epoch_start`): derived, see [`ReplicaState::epoch_start`];
//! - a namespace without a record (data from before replication, or from a handoff import):
//!   `(NamespaceState::epoch, revision)`, the epoch the rows carry; this node wrote them or
//!   took them whole, so they are one linear log;
//! - no namespace and no record: [`LogPos::ZERO`].

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::model::validate_namespace;
use crate::store::validate_node_id;
use crate::transfer::{TransferOp, check_ops};
use crate::types::{NamespaceState, Revision};

/// Most members a replica set may name (the design's sets are 1 to 5; this only bounds what a
/// peer can make this node store).
pub const MAX_REPLICAS: usize = 64;

/// A position in a namespace's replicated log: the epoch of the holder that wrote the newest
/// rows, and their revision. Ordered epoch first, then revision (the field order), so a copy
/// from a later holder is ahead of any copy of an earlier one.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogPos {
    /// The holder epoch that wrote the rows; within one epoch the log has one writer, so two
    /// copies at the same epoch hold the same log up to the lower revision.
    pub epoch: u64,
    /// The namespace revision reached.
    pub revision: Revision,
}

impl LogPos {
    /// Before every write of every epoch: where an empty copy stands.
    pub const ZERO: LogPos = LogPos {
        epoch: 0,
        revision: 0,
    };

    /// The position `(epoch, revision)`.
    pub fn new(epoch: u64, revision: Revision) -> LogPos {
        LogPos { epoch, revision }
    }
}

impl std::fmt::Display for LogPos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(epoch {}, revision {})", self.epoch, self.revision)
    }
}

/// This node's durable replica state of one namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaState {
    /// The replica takes nothing from an epoch below this one (appends are fenced), and grants
    /// no promise at or below it: a candidate that got this promise knows the old holder can
    /// no longer count this node towards a quorum.
    pub promised: u64,
    /// While a follower: the epoch of the holder that wrote this copy's newest rows, and their
    /// revision; set by every append in the same transaction as its rows. While holder (see
    /// [`ReplicaState::epoch_start`]) only its `epoch` is meant: the holder's own epoch, the
    /// epoch its local writes are at; the revision is derived (`Store::holder_position`).
    pub position: LogPos,
    /// Set only while THIS node is the namespace's holder: its position when its epoch began.
    /// Its own writes are at its epoch, so its position is `(position.epoch, revision)` once
    /// the namespace's revision passed `epoch_start.revision`, and `epoch_start` until then.
    /// Derived rather than stored because storing it on every local write would cost a row
    /// per batch on the write path. Cleared by the first append this node takes (a node
    /// taking appends is not the holder).
    pub epoch_start: Option<LogPos>,
    /// The holder as the last append told (or this node, once it began its epoch); empty while
    /// no holder has spoken to this node.
    pub holder: String,
    /// The replica set (holder first) as the holder last sent it, or as this node set it as
    /// holder: the set the next election counts votes in.
    pub replicas: Vec<String>,
    /// Which of its holders' sets `replicas` is: the holder's position when it began
    /// replicating to that set. The sets of one namespace are ordered by it (epoch first, and
    /// within an epoch its one holder's switches in turn), so a candidate can tell a grant from
    /// a member told an older set (docs/replication.md, "Set versions"). `LogPos::ZERO`:
    /// told by a build before set versions, or never told.
    ///
    /// Not in this struct's serde encoding: rows and write-ahead log records written before set
    /// versions must still decode. The stored row carries it after the struct
    /// ([`encode_record`]), and the writer's mutations carry it beside it.
    #[serde(skip)]
    pub set_version: LogPos,
}

/// A replica record as stored: the record, then its set version (see
/// [`ReplicaState::set_version`]).
pub(crate) fn encode_record(state: &ReplicaState) -> Vec<u8> {
    let mut out = crate::records::encode(state);
    bincode::serde::encode_into_std_write(state.set_version, &mut out, bincode::config::standard())
        .expect("a position always encodes into a Vec");
    out
}

/// Decodes a stored replica record: the record, and the set version after it (absent from
/// rows written before set versions: `LogPos::ZERO`).
pub(crate) fn decode_record(bytes: &[u8]) -> Result<ReplicaState, StoreError> {
    let body = match bytes.split_first() {
        Some((&crate::records::FORMAT_VERSION, body)) => body,
        _ => return crate::records::decode(bytes),
    };
    let config = bincode::config::standard();
    let (mut state, used): (ReplicaState, usize) = bincode::serde::decode_from_slice(body, config)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let rest = &body[used..];
    if !rest.is_empty() {
        let (version, _): (LogPos, usize) = bincode::serde::decode_from_slice(rest, config)
            .map_err(|e| StoreError::Corrupt(format!("replica record's set version: {e}")))?;
        state.set_version = version;
    }
    Ok(state)
}

impl ReplicaState {
    /// A record for a replica that has promised nothing yet, standing at `position`.
    fn fresh(position: LogPos) -> ReplicaState {
        ReplicaState {
            promised: 0,
            position,
            epoch_start: None,
            holder: String::new(),
            replicas: Vec::new(),
            set_version: LogPos::ZERO,
        }
    }
}

/// One append from the holder to a follower: the rows the follower lacks and the position they
/// bring it to, applied in one durable transaction by [`crate::Store::append`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaAppend {
    /// The namespace.
    pub namespace: String,
    /// The sender's holder epoch: refused when below the follower's promise (fencing).
    pub epoch: u64,
    /// The sender's node id, kept as the follower's idea of the holder.
    pub holder: String,
    /// The replica set the sender replicates to, kept by the follower for the next election.
    pub replicas: Vec<String>,
    /// The position the holder believes the follower is at: the follower refuses the append
    /// when it is elsewhere. `None`: a full copy, and `ops` must start with
    /// [`TransferOp::ClearNamespace`] (a brand-new follower gets one first).
    pub base: Option<LogPos>,
    /// The position the rows bring the follower to: `epoch` and the holder's revision after
    /// them. A heartbeat (no ops) keeps the revision: `to.revision == base.revision`.
    pub to: LogPos,
    /// The rows: [`crate::Store::export`] chunks (a full copy) or
    /// [`crate::Store::export_changes`] (the rows since the follower's revision).
    pub ops: Vec<TransferOp>,
    /// The version of `replicas` (see [`ReplicaState::set_version`]), kept with it. Not in
    /// this struct's serde encoding, for the same reason: the writer's log carries it beside.
    #[serde(skip)]
    pub set_version: LogPos,
}

/// The position of this node's copy by the rules of the module doc.
pub(crate) fn current_position(
    record: Option<&ReplicaState>,
    namespace: Option<&NamespaceState>,
) -> LogPos {
    let revision = namespace.map_or(0, |s| s.revision);
    match record {
        Some(ReplicaState {
            epoch_start: Some(start),
            position,
            ..
        }) => {
            if revision > start.revision {
                LogPos::new(position.epoch, revision)
            } else {
                *start
            }
        }
        Some(record) => record.position,
        None => namespace.map_or(LogPos::ZERO, |s| LogPos::new(s.epoch, s.revision)),
    }
}

/// Checks what an append says about itself, before it reaches the writer: names, the epoch of
/// `to`, a full copy's first op, `to` not behind `base`, and every row decodable.
pub(crate) fn check_append_shape(append: &ReplicaAppend) -> Result<(), StoreError> {
    let ns = append.namespace.as_str();
    validate_namespace(ns)?;
    check_replica_set(&append.replicas)?;
    validate_node_id(&append.holder).map_err(|_| {
        StoreError::InvalidAppend(format!(
            "namespace {ns:?}: the holder id {:?} is not a node id",
            append.holder
        ))
    })?;
    if append.to.epoch != append.epoch {
        return Err(StoreError::InvalidAppend(format!(
            "namespace {ns:?}: an append of epoch {} must lead to a position of that epoch, not {}",
            append.epoch, append.to
        )));
    }
    match append.base {
        None if append.ops.first() != Some(&TransferOp::ClearNamespace) => {
            return Err(StoreError::InvalidAppend(format!(
                "namespace {ns:?}: an append without a base is a full copy and must start with \
                 ClearNamespace; send the rows since the follower's position with that position \
                 as base, or a full export"
            )));
        }
        Some(base) if append.to < base => {
            return Err(StoreError::InvalidAppend(format!(
                "namespace {ns:?}: an append from {base} may not lead back to {}",
                append.to
            )));
        }
        _ => {}
    }
    check_ops(ns, &append.ops)
}

/// Checks a replica set: at most [`MAX_REPLICAS`] node ids.
pub(crate) fn check_replica_set(replicas: &[String]) -> Result<(), StoreError> {
    if replicas.len() > MAX_REPLICAS {
        return Err(StoreError::InvalidAppend(format!(
            "a replica set of {} members is over the limit of {MAX_REPLICAS}",
            replicas.len()
        )));
    }
    for id in replicas {
        validate_node_id(id).map_err(|_| {
            StoreError::InvalidAppend(format!("replica {id:?} of the set is not a node id"))
        })?;
    }
    Ok(())
}

/// The namespace revision `ops` leave behind, computed without applying them: only
/// [`TransferOp::ClearNamespace`] (no state row: revision 0) and [`TransferOp::State`] touch
/// the namespace's state row, so the last of them decides, and with neither it stays
/// `current`.
fn revision_after(
    namespace: &str,
    current: Revision,
    ops: &[TransferOp],
) -> Result<Revision, StoreError> {
    let last = ops
        .iter()
        .rev()
        .find(|op| matches!(op, TransferOp::ClearNamespace | TransferOp::State { .. }));
    match last {
        None => Ok(current),
        Some(TransferOp::State { record }) => {
            let state: NamespaceState = crate::records::decode(record).map_err(|e| {
                StoreError::Invalid(format!(
                    "append to namespace {namespace:?}: malformed state record: {e}"
                ))
            })?;
            Ok(state.revision)
        }
        Some(_) => Ok(0),
    }
}

/// Decides an append against the stored record and namespace state: fenced below the promise,
/// refused unless `base` is this copy's position (or it is a full copy), refused unless the
/// rows lead exactly to `to.revision`. `Ok` means the writer may apply the rows; nothing is
/// written before this passed, so a refusal leaves the rest of a batch unaffected.
pub(crate) fn check_append(
    record: Option<&ReplicaState>,
    namespace: Option<&NamespaceState>,
    append: &ReplicaAppend,
) -> Result<(), StoreError> {
    let ns = append.namespace.as_str();
    let promised = record.map_or(0, |r| r.promised);
    if append.epoch < promised {
        return Err(StoreError::Fenced {
            namespace: ns.to_string(),
            promised,
            epoch: append.epoch,
        });
    }
    if let Some(told) = record.map(|r| r.set_version)
        && append.set_version < told
    {
        return Err(StoreError::OlderSet {
            namespace: ns.to_string(),
            told,
            got: append.set_version,
        });
    }
    let mine = current_position(record, namespace);
    if let Some(base) = append.base
        && base != mine
    {
        return Err(StoreError::NotMyPosition {
            namespace: ns.to_string(),
            mine,
            base,
        });
    }
    if append.base.is_none() && append.to < mine {
        return Err(StoreError::StaleCopy {
            namespace: ns.to_string(),
            mine,
            to: append.to,
        });
    }
    let after = revision_after(ns, namespace.map_or(0, |s| s.revision), &append.ops)?;
    if after != append.to.revision {
        return Err(StoreError::InvalidAppend(format!(
            "namespace {ns:?}: the rows lead to revision {after}, not to {} the append claims; \
             build the rows and `to` from one read of the holder's store",
            append.to
        )));
    }
    Ok(())
}

/// The record after an append that passed [`check_append`].
pub(crate) fn appended(record: Option<&ReplicaState>, append: &ReplicaAppend) -> ReplicaState {
    ReplicaState {
        promised: record.map_or(0, |r| r.promised).max(append.epoch),
        position: append.to,
        epoch_start: None,
        holder: append.holder.clone(),
        replicas: append.replicas.clone(),
        set_version: append.set_version,
    }
}

/// The record after promising `epoch`, or `AlreadyPromised` when `epoch` is not above the
/// promise. A replica without a record gets one at its current position.
pub(crate) fn promised(
    record: Option<&ReplicaState>,
    namespace_state: Option<&NamespaceState>,
    namespace: &str,
    epoch: u64,
) -> Result<ReplicaState, StoreError> {
    let mut next = record
        .cloned()
        .unwrap_or_else(|| ReplicaState::fresh(current_position(None, namespace_state)));
    if epoch <= next.promised {
        return Err(StoreError::AlreadyPromised {
            namespace: namespace.to_string(),
            promised: next.promised,
        });
    }
    next.promised = epoch;
    Ok(next)
}

/// The record of a copy that a handoff just brought whole from `giver`, holder at `epoch`:
/// the rows are the giver's log, so the copy is at `(epoch, revision)` as the giver's followers
/// are, and a later `begun` starts from there (a holder's old `epoch_start`, or a follower's
/// older position, would mislabel rows the giver wrote). The promise never goes down.
pub(crate) fn labelled(
    record: Option<&ReplicaState>,
    namespace_state: Option<&NamespaceState>,
    epoch: u64,
    giver: &str,
) -> ReplicaState {
    let revision = namespace_state.map_or(0, |s| s.revision);
    ReplicaState {
        promised: record.map_or(0, |r| r.promised).max(epoch),
        position: LogPos::new(epoch, revision),
        epoch_start: None,
        holder: giver.to_string(),
        replicas: record.map(|r| r.replicas.clone()).unwrap_or_default(),
        set_version: record.map_or(LogPos::ZERO, |r| r.set_version),
    }
}

/// The record of a copy released because its holder's set no longer has this node: the
/// same promise, holder and set (a candidate told that old set can still count this node's
/// grant only as it could before, and a holder of the new set never counts it), at no position
/// (it holds no rows, so it is never the longest log, and a holder that takes it back into a
/// set sends it a full copy).
///
/// Refused (`NotReleased`) unless the record is still `expected`, the one the caller saw when
/// it asked the holder: any append since (a holder that took this node back, fed it and may
/// have counted it towards a quorum) changes the record, so rows a quorum counted are never
/// released. Refused too while this node holds the namespace, and when there is no record.
pub(crate) fn released(
    record: Option<&ReplicaState>,
    expected: &ReplicaState,
    namespace: &str,
) -> Result<ReplicaState, StoreError> {
    let refuse = |why: &str| StoreError::NotReleased {
        namespace: namespace.to_string(),
        why: why.to_string(),
    };
    let record = record.ok_or_else(|| refuse("this node has no replica record of it"))?;
    if record.epoch_start.is_some() {
        return Err(refuse("this node holds it"));
    }
    // The set version is left out: a `Release` in the write-ahead log does not carry it (see
    // `ReplicaState::set_version`), and a replay must decide as the first apply did. Any
    // append since changes the position or the set anyway.
    let unversioned = |r: &ReplicaState| ReplicaState {
        set_version: LogPos::ZERO,
        ..r.clone()
    };
    if unversioned(record) != unversioned(expected) {
        return Err(refuse(
            "the replica record changed since the holder was asked",
        ));
    }
    Ok(ReplicaState {
        position: LogPos::ZERO,
        ..record.clone()
    })
}

/// The record of this node (`me`) becoming holder at `epoch` with the set `replicas`.
///
/// Refused (`AlreadyPromised`) when `epoch` is below the promise, and when this copy already
/// took appends of `epoch` from another holder: one epoch has one holder. Equal to the promise
/// is fine otherwise (a candidate promised itself first). Beginning the epoch it already holds
/// again keeps its start, so a retry changes nothing but the set.
pub(crate) fn begun(
    record: Option<&ReplicaState>,
    namespace_state: Option<&NamespaceState>,
    namespace: &str,
    epoch: u64,
    me: &str,
    replicas: Vec<String>,
    set_version: LogPos,
) -> Result<ReplicaState, StoreError> {
    let promised = record.map_or(0, |r| r.promised);
    let refuse = || StoreError::AlreadyPromised {
        namespace: namespace.to_string(),
        promised,
    };
    if epoch < promised {
        return Err(refuse());
    }
    let start = match record {
        Some(r) => match r.epoch_start {
            Some(start) if r.position.epoch == epoch => start,
            Some(_) => current_position(record, namespace_state),
            None if r.position.epoch == epoch && !r.holder.is_empty() && r.holder != me => {
                return Err(refuse());
            }
            None => r.position,
        },
        None => current_position(None, namespace_state),
    };
    Ok(ReplicaState {
        promised: epoch,
        position: LogPos::new(epoch, start.revision),
        epoch_start: Some(start),
        holder: me.to_string(),
        replicas,
        set_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored row keeps the set version after the record; a row written before set versions
    /// (the record alone) reads with `LogPos::ZERO`, and a build before them reads a new row
    /// (it stops after the record).
    #[test]
    fn stored_rows_carry_the_set_version_and_old_rows_still_read() {
        let state = ReplicaState {
            promised: 3,
            position: LogPos::new(3, 40),
            epoch_start: None,
            holder: "a".into(),
            replicas: vec!["a".into(), "b".into(), "c".into()],
            set_version: LogPos::new(3, 17),
        };
        let row = encode_record(&state);
        assert_eq!(decode_record(&row).expect("decodes"), state);
        let old_row = crate::records::encode(&state);
        let old = decode_record(&old_row).expect("an old row decodes");
        assert_eq!(old.set_version, LogPos::ZERO);
        assert_eq!(old.replicas, state.replicas);
        let by_old_build: ReplicaState = crate::records::decode(&row).expect("old reader");
        assert_eq!(by_old_build.position, state.position);
        // The record's own encoding is the one before set versions (the write-ahead log's
        // `Release` carries it, and a log of an earlier build must still decode): the same
        // bytes as the five fields it had.
        let config = bincode::config::standard();
        let old_fields = (
            state.promised,
            state.position,
            state.epoch_start,
            &state.holder,
            &state.replicas,
        );
        assert_eq!(
            bincode::serde::encode_to_vec(&state, config).expect("encodes"),
            bincode::serde::encode_to_vec(old_fields, config).expect("encodes")
        );
        let append = ReplicaAppend {
            namespace: "app".into(),
            epoch: 3,
            holder: "a".into(),
            replicas: state.replicas.clone(),
            base: Some(LogPos::new(3, 39)),
            to: LogPos::new(3, 40),
            ops: vec![TransferOp::TrimLog { before: 2 }],
            set_version: LogPos::new(3, 17),
        };
        let old_append = (
            &append.namespace,
            append.epoch,
            &append.holder,
            &append.replicas,
            append.base,
            append.to,
            &append.ops,
        );
        assert_eq!(
            bincode::serde::encode_to_vec(&append, config).expect("encodes"),
            bincode::serde::encode_to_vec(old_append, config).expect("encodes")
        );
        let mut torn = old_row.clone();
        torn.push(0xfd); // a varint's marker with no bytes after it
        assert!(
            decode_record(&torn).is_err(),
            "a torn set version is refused"
        );
    }

    fn ns(epoch: u64, revision: Revision) -> NamespaceState {
        NamespaceState {
            name: "app".into(),
            uid: 1,
            epoch,
            revision,
            key_count: 0,
            alias_count: 0,
            log_start: 1,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn positions_order_epoch_first() {
        assert!(LogPos::new(2, 0) > LogPos::new(1, 99));
        assert!(LogPos::new(2, 5) > LogPos::new(2, 4));
        assert_eq!(LogPos::default(), LogPos::ZERO);
    }

    #[test]
    fn a_holder_position_follows_its_revision_past_its_start() {
        let holder = begun(
            None,
            Some(&ns(1, 10)),
            "app",
            3,
            "a",
            vec!["a".into()],
            LogPos::ZERO,
        )
        .expect("no promise yet");
        assert_eq!(holder.epoch_start, Some(LogPos::new(1, 10)));
        assert_eq!(
            current_position(Some(&holder), Some(&ns(1, 10))),
            LogPos::new(1, 10)
        );
        assert_eq!(
            current_position(Some(&holder), Some(&ns(1, 12))),
            LogPos::new(3, 12)
        );
        // Beginning the same epoch again keeps the start.
        let again = begun(
            Some(&holder),
            Some(&ns(1, 12)),
            "app",
            3,
            "a",
            vec![],
            LogPos::ZERO,
        )
        .expect("retry");
        assert_eq!(again.epoch_start, Some(LogPos::new(1, 10)));
        // Moving to the next epoch starts from the derived position.
        let next = begun(
            Some(&holder),
            Some(&ns(1, 12)),
            "app",
            4,
            "a",
            vec![],
            LogPos::ZERO,
        )
        .expect("next");
        assert_eq!(next.epoch_start, Some(LogPos::new(3, 12)));
    }

    #[test]
    fn no_second_holder_in_an_epoch_that_already_wrote_here() {
        let follower = ReplicaState {
            promised: 5,
            position: LogPos::new(5, 7),
            epoch_start: None,
            holder: "b".into(),
            replicas: vec!["b".into(), "a".into()],
            set_version: LogPos::ZERO,
        };
        assert!(matches!(
            begun(Some(&follower), None, "app", 5, "a", vec![], LogPos::ZERO),
            Err(StoreError::AlreadyPromised { promised: 5, .. })
        ));
        assert!(begun(Some(&follower), None, "app", 6, "a", vec![], LogPos::ZERO).is_ok());
        // Promised itself 5, with rows of epoch 4: fine.
        let candidate = ReplicaState {
            position: LogPos::new(4, 7),
            ..follower
        };
        assert!(begun(Some(&candidate), None, "app", 5, "a", vec![], LogPos::ZERO).is_ok());
    }

    #[test]
    fn the_revision_after_is_the_last_state_row() {
        let state = crate::records::encode(&ns(1, 9));
        let ops = vec![
            TransferOp::ClearNamespace,
            TransferOp::State { record: state },
        ];
        assert_eq!(revision_after("app", 3, &ops).ok(), Some(9));
        assert_eq!(revision_after("app", 3, &[]).ok(), Some(3));
        assert_eq!(
            revision_after("app", 3, &[TransferOp::ClearNamespace]).ok(),
            Some(0)
        );
    }
}
