//! cfgnode storage: one redb database per node.
//!
//! # Layout
//!
//! - [`model`](crate::validate_namespace): names, keys, codecs and their validation (pure).
//! - `records`: on-disk rows (format byte + bincode 2) and the redb table definitions (among
//!   them the `RECORDS` table of the namespace [`Record`]s that roles keep).
//! - `apply`: one mutation inside a write transaction; checks first, writes second.
//! - `writer`: the group-commit writer thread that owns every write transaction, and the
//!   recovery that replays the write-ahead log at open.
//! - `wal`: the write-ahead log file (`<database>.wal`): records, checksums, preallocation.
//! - `feed`: each batch's changes of the namespaces this node replicates as holder, kept in
//!   memory for its replication streams (built by the writer in the batch's transaction).
//! - `transfer`: a namespace's rows exported and imported for a handoff ([`TransferOp`]).
//! - `replica`: a namespace's replica state on this node ([`ReplicaState`]: promise,
//!   [`LogPos`], holder, set) and the pure rules for promises, the follower's appends
//!   ([`ReplicaAppend`]: fenced, based on its own position, rows and position in one
//!   transaction) and the start of a holder's epoch (docs/replication.md).
//! - [`Store`] (`store/`): the facade the node uses: `store/writes` (async, answered after the
//!   durable commit), `store/reads` (synchronous read transactions), `store/schema` (tables,
//!   schema version, node id and generation, settled at open).
//!
//! # Place in the map
//!
//! `node -> storage`; storage depends on no crate of ours (not even `cfgnode-ring`: epochs are
//! plain `u64` here, and the ring's replication rules stay pure above it). Every mutation of a namespace takes
//! the next namespace [`Revision`] and appends an [`Event`] to the namespace log in the same
//! transaction as the data, so the log is exactly the history of the namespace (watch resume and
//! handoff read it). A namespace holds three kinds of data: entries (keys, with history),
//! aliases, and records (a role's state, e.g. registry instances, by kind and name, with no
//! history); all three are in the log and move on handoff. Attachments (webhooks) are bytes
//! the node keeps beside a namespace, outside its log. The replica record (promise and
//! position) is the node's own too, and no export, import or copy carries or clears it. The log and per-key history are trimmed
//! to a configured retention; a reader older than the log gets [`LogRead::Compacted`], never a
//! silent gap.
//!
//! # Durability
//!
//! A write future resolves only after the batch holding it is durable: logged and synced in the
//! write-ahead log (then committed to redb without a sync), or committed with
//! `Durability::Immediate` (a checkpoint, at least every 100 ms under load). Concurrent writes
//! share that sync (group commit). A crash loses no acknowledged write: the next open applies
//! the logged batches redb had not made durable (`wal` has the details).

mod apply;
mod error;
mod feed;
mod model;
mod mutation;
mod records;
mod replica;
mod store;
mod transfer;
mod types;
mod visibility;
mod wal;
mod writer;

pub use error::StoreError;
pub use feed::FeedRows;
pub use model::{
    Codec, MAX_KEY_LEN, MAX_NAMESPACE_LEN, MAX_RECORD_KIND_LEN, validate_key, validate_namespace,
    validate_record_kind, validate_system_namespace,
};
pub use mutation::{
    AliasPut, DeleteRequest, Deleted, PutRequest, RecordDelete, RecordDeleted, RecordPut,
    RecordWrite, WriteMode,
};
pub use replica::{LogPos, MAX_REPLICAS, ReplicaAppend, ReplicaState};
pub use store::{GENERATION_STEP, Store, StoreOptions, validate_node_id};
pub use transfer::{MAX_ATTACHMENT_BYTES, NamespaceExport, TransferOp};
pub use types::{
    Alias, Entry, Event, EventKind, LogRead, Lookup, Millis, NamespaceState, Page, Record,
    Revision, Snapshot, VersionEntry,
};
pub use writer::{CommitObserver, CommitStats, Flush};
