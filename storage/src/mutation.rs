//! Write requests and what the writer answers for each.
//!
//! A [`Mutation`] is serializable: the writer logs each batch's mutations in the write-ahead
//! log ([`crate::wal`]) and recovery applies them again.

use serde::{Deserialize, Serialize};

use crate::model::Codec;
use crate::types::{Alias, Entry, Record, Revision};

/// How a put treats an existing key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteMode {
    /// Create the key or replace it.
    #[default]
    Upsert,
    /// Create the key; fail with a conflict if it exists.
    Create,
    /// Replace the key; fail with a conflict if it does not exist.
    Update,
}

/// A write of one key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PutRequest {
    /// The namespace.
    pub namespace: String,
    /// The key.
    pub key: String,
    /// The new value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// The value's codec.
    pub codec: Codec,
    /// Create, update or either.
    pub mode: WriteMode,
    /// Compare-and-set: the version the key must be at (0 = the key must be absent).
    pub if_version: Option<u64>,
}

/// A delete of one key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeleteRequest {
    /// The namespace.
    pub namespace: String,
    /// The key.
    pub key: String,
    /// Compare-and-delete: the version the key must be at.
    pub if_version: Option<u64>,
}

/// The result of a delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deleted {
    /// The namespace.
    pub namespace: String,
    /// The key.
    pub key: String,
    /// The version the delete was recorded as.
    pub version: u64,
    /// The namespace revision of the delete.
    pub revision: Revision,
}

/// The result of creating an alias.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AliasPut {
    /// The alias as stored.
    pub alias: Alias,
    /// False when the same alias with the same target already existed (an idempotent retry).
    pub created: bool,
}

/// A write of one record (see [`Record`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecordPut {
    /// The namespace; created if it has no data yet.
    pub namespace: String,
    /// The record's kind (`[a-z][a-z0-9_]{0,31}`).
    pub kind: String,
    /// The record's name (key syntax).
    pub name: String,
    /// The new value: opaque bytes, at most the store's `max_value_bytes`.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Compare-and-set: the version the record must be at (0 = the record must be absent).
    pub if_version: Option<u64>,
}

/// A delete of one record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecordDelete {
    /// The namespace.
    pub namespace: String,
    /// The record's kind.
    pub kind: String,
    /// The record's name.
    pub name: String,
    /// Compare-and-delete: the version the record must be at.
    pub if_version: Option<u64>,
}

/// The result of a record delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordDeleted {
    /// The namespace.
    pub namespace: String,
    /// The record's kind.
    pub kind: String,
    /// The record's name.
    pub name: String,
    /// The version the record had when it was deleted.
    pub version: u64,
    /// The namespace revision of the delete.
    pub revision: Revision,
}

/// The result of [`crate::Store::put_record_if_changed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordWrite {
    /// The record as stored after the call.
    pub record: Record,
    /// False when the stored value was already byte-identical: nothing was written, no
    /// revision taken, no event logged.
    pub written: bool,
}

/// One write for the group-commit writer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Mutation {
    /// Replace the stored cluster membership (opaque to storage).
    PutClusterMembers(Vec<u8>),
    /// Upsert cluster facts (opaque to storage), all in one commit.
    PutClusterRecords(Vec<(String, Vec<u8>)>),
    /// Apply transfer ops to a namespace (a handoff's receiving side, or dropping a namespace
    /// that moved away). Checked whole before anything is written.
    Import {
        namespace: String,
        ops: Vec<crate::transfer::TransferOp>,
    },
    /// Set (`Some`) or remove (`None`) one of a namespace's attachments.
    PutAttachment {
        namespace: String,
        name: String,
        bytes: Option<Vec<u8>>,
    },
    Put(PutRequest),
    Delete(DeleteRequest),
    PutAlias {
        namespace: String,
        alias: String,
        target: String,
    },
    DeleteAlias {
        namespace: String,
        alias: String,
    },
    /// Put a record; `skip_unchanged` leaves a byte-identical value alone (no revision).
    PutRecord {
        put: RecordPut,
        skip_unchanged: bool,
    },
    DeleteRecord(RecordDelete),
    /// Remove every row of a namespace and its replica record (it left this node).
    DropNamespace {
        namespace: String,
    },
    /// Promise a replica takes nothing from an epoch below `epoch`.
    Promise {
        namespace: String,
        epoch: u64,
    },
    /// A follower's append as builds before set versions logged it (its set version is
    /// `LogPos::ZERO`); only replayed from such a log. New appends are [`Mutation::AppendInSet`].
    Append(crate::replica::ReplicaAppend),
    /// The namespace's rows are now a handoff's copy of `giver`'s log at `epoch`.
    LabelCopy {
        namespace: String,
        epoch: u64,
        giver: String,
    },
    /// Drop the rows of a copy this node no longer replicates, keeping its replica record
    /// (and so its promise) at no position, if the record is still `expected`.
    Release {
        namespace: String,
        expected: crate::replica::ReplicaState,
        revision: crate::types::Revision,
    },
    /// [`Mutation::BeginEpochInSet`] as builds before set versions logged it (set version
    /// `LogPos::ZERO`); only replayed from such a log.
    BeginEpoch {
        namespace: String,
        epoch: u64,
        holder: String,
        replicas: Vec<String>,
    },
    // New variants go last: bincode numbers variants by position, and the write-ahead log of
    // an earlier build must still decode.
    /// A follower's append: checked whole (fence, base, target revision), then its rows and
    /// the new position in the one transaction. The append's set version travels beside it
    /// (`ReplicaAppend::set_version` is not in its encoding).
    AppendInSet {
        append: crate::replica::ReplicaAppend,
        set_version: crate::replica::LogPos,
    },
    /// This node (`holder`) becomes the namespace's holder at `epoch`, replicating to
    /// `replicas`, the set of version `set_version`.
    BeginEpochInSet {
        namespace: String,
        epoch: u64,
        holder: String,
        replicas: Vec<String>,
        set_version: crate::replica::LogPos,
    },
}

impl Mutation {
    /// The namespace of one of a holder's own writes (a key, an alias, a record or an
    /// attachment): the mutations whose changes the feed ([`crate::feed`]) follows.
    pub(crate) fn namespace_write(&self) -> Option<&str> {
        match self {
            Mutation::Put(req) => Some(&req.namespace),
            Mutation::Delete(req) => Some(&req.namespace),
            Mutation::PutAlias { namespace, .. }
            | Mutation::DeleteAlias { namespace, .. }
            | Mutation::PutAttachment { namespace, .. } => Some(namespace),
            Mutation::PutRecord { put, .. } => Some(&put.namespace),
            Mutation::DeleteRecord(req) => Some(&req.namespace),
            _ => None,
        }
    }

    /// The namespace any other mutation of a namespace touches (an import, a drop, a replica
    /// state change): the feed drops what it has of it, since such a change is not described
    /// by the namespace's log.
    pub(crate) fn namespace_other(&self) -> Option<&str> {
        match self {
            Mutation::Import { namespace, .. }
            | Mutation::DropNamespace { namespace }
            | Mutation::Promise { namespace, .. }
            | Mutation::LabelCopy { namespace, .. }
            | Mutation::Release { namespace, .. }
            | Mutation::BeginEpoch { namespace, .. }
            | Mutation::BeginEpochInSet { namespace, .. } => Some(namespace),
            Mutation::Append(append) => Some(&append.namespace),
            Mutation::AppendInSet { append, .. } => Some(&append.namespace),
            _ => None,
        }
    }
}

/// What the writer did for one [`Mutation`].
#[derive(Debug)]
pub(crate) enum Applied {
    ClusterMembers,
    ClusterRecords,
    Imported,
    Attachment,
    Put(Entry),
    Deleted(Deleted),
    AliasPut(AliasPut),
    AliasDeleted(Alias),
    RecordPut(RecordWrite),
    RecordDeleted(RecordDeleted),
    Dropped,
    Replica(crate::replica::ReplicaState),
}
