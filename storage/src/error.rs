//! The storage error type: every way a storage call can fail, with messages that say what to do.

/// Why a storage call failed.
///
/// Variants before [`StoreError::Storage`] are the caller's fault and changed nothing; the HTTP
/// and QUIC layers map each to a stable error code. [`StoreError::Storage`] and
/// [`StoreError::WriterStopped`] are the server's fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A namespace name does not follow the naming rules.
    #[error("invalid namespace name {name:?}: {reason}")]
    InvalidNamespace {
        /// The offending name (shortened).
        name: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A key or alias name does not follow the key rules.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The offending key (shortened).
        key: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A record kind does not follow the kind rules.
    #[error(
        "invalid record kind {kind:?}: {reason}; a kind is 1-32 lowercase letters, digits or '_', starting with a letter (e.g. instance, route)"
    )]
    InvalidRecordKind {
        /// The offending kind (shortened).
        kind: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// The codec name is neither a known codec nor `client:<name>`.
    #[error(
        "unknown codec {codec:?}: use json, yaml, toml, text, bytes, or client:<name> for an opaque application codec"
    )]
    UnknownCodec {
        /// The offending codec name (shortened).
        codec: String,
    },
    /// The value is not a well-formed document of its codec.
    #[error("value is not valid {codec}: {detail}")]
    CodecMismatch {
        /// The codec the value claims.
        codec: String,
        /// The parser's complaint.
        detail: String,
    },
    /// The value is larger than the node's limit.
    #[error("value is {size} bytes, over this node's limit of {limit} bytes (--max-value-bytes)")]
    ValueTooLarge {
        /// The value's size in bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A request was malformed in a way the other variants do not cover.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The namespace has no data.
    #[error("namespace {namespace:?} not found")]
    NamespaceNotFound {
        /// The namespace asked for.
        namespace: String,
    },
    /// The key (or alias) does not exist.
    #[error("key {key:?} not found in namespace {namespace:?}")]
    KeyNotFound {
        /// The namespace asked for.
        namespace: String,
        /// The key asked for.
        key: String,
    },
    /// An alias points at a key that no longer exists.
    #[error(
        "alias {alias:?} points to key {target:?}, which does not exist in namespace {namespace:?}"
    )]
    DanglingAlias {
        /// The namespace.
        namespace: String,
        /// The alias named.
        alias: String,
        /// Its missing target.
        target: String,
    },
    /// The alias does not exist.
    #[error("alias {alias:?} not found in namespace {namespace:?}")]
    AliasNotFound {
        /// The namespace asked for.
        namespace: String,
        /// The alias asked for.
        alias: String,
    },
    /// The record does not exist.
    #[error("record {kind}/{name:?} not found in namespace {namespace:?}")]
    RecordNotFound {
        /// The namespace asked for.
        namespace: String,
        /// The record's kind.
        kind: String,
        /// The record's name.
        name: String,
    },
    /// A compare-and-set of a record found another version.
    #[error(
        "record {kind}/{name:?} is at version {}, not the expected {expected}; read it again and retry",
        actual.map_or_else(|| "none (absent)".to_string(), |v| v.to_string())
    )]
    RecordVersionMismatch {
        /// The record's kind.
        kind: String,
        /// The record's name.
        name: String,
        /// The version the caller expected (0 = absent).
        expected: u64,
        /// The version found, if the record exists.
        actual: Option<u64>,
    },
    /// The requested version of a key is not in its retained history.
    #[error("version {version} of key {key:?} is not in its retained history")]
    VersionNotFound {
        /// The key asked for.
        key: String,
        /// The version asked for.
        version: u64,
    },
    /// A create-only write found the key already there.
    #[error(
        "key {key:?} already exists (version {version}); write without create mode to replace it"
    )]
    AlreadyExists {
        /// The key written.
        key: String,
        /// Its current version.
        version: u64,
    },
    /// An update-only write found no key.
    #[error("key {key:?} does not exist; update mode only replaces existing keys")]
    DoesNotExist {
        /// The key written.
        key: String,
    },
    /// A compare-and-set found another version.
    #[error(
        "key {key:?} is at version {}, not the expected {expected}; read it again and retry",
        actual.map_or_else(|| "none (absent)".to_string(), |v| v.to_string())
    )]
    VersionMismatch {
        /// The key written.
        key: String,
        /// The version the caller expected (0 = absent).
        expected: u64,
        /// The version found, if the key exists.
        actual: Option<u64>,
    },
    /// A name is already taken by a key or by an alias.
    #[error("{0}")]
    NameTaken(String),
    /// A replica was asked to promise (or to begin as holder) an epoch it cannot: it already
    /// promised this epoch or a later one.
    #[error(
        "namespace {namespace:?}: this replica already promised epoch {promised}; it grants only a higher epoch: read the cluster map and retry above {promised}"
    )]
    AlreadyPromised {
        /// The namespace.
        namespace: String,
        /// The replica's promise.
        promised: u64,
    },
    /// An append came from an epoch below the replica's promise: its sender is a deposed
    /// holder.
    #[error(
        "namespace {namespace:?}: this replica promised epoch {promised}; an append from epoch {epoch} is from a deposed holder. Stop writing as holder and refresh the cluster map"
    )]
    Fenced {
        /// The namespace.
        namespace: String,
        /// The replica's promise.
        promised: u64,
        /// The epoch the append came from.
        epoch: u64,
    },
    /// An append names an older replica set than the one this replica was told (a stream the
    /// holder replaced, whose last append arrived late): taking it would make the replica name
    /// the older set in the next election.
    #[error(
        "namespace {namespace:?}: this replica was told set version {told}; an append of the older set version {got} is from a stream its holder replaced, and is refused"
    )]
    OlderSet {
        /// The namespace.
        namespace: String,
        /// The set version this replica was told.
        told: crate::replica::LogPos,
        /// The append's set version.
        got: crate::replica::LogPos,
    },
    /// An append was built on another position than the replica's own.
    #[error(
        "namespace {namespace:?}: this replica is at {mine}, not at {base} the append was built on; resend from {mine}: the rows since its revision if that is a prefix of your log, else a full copy"
    )]
    NotMyPosition {
        /// The namespace.
        namespace: String,
        /// Where this replica's copy is.
        mine: crate::replica::LogPos,
        /// Where the sender believed it was.
        base: crate::replica::LogPos,
    },
    /// A full copy would move this replica back: a late or repeated copy from before writes
    /// the replica already took (and the holder may have counted towards a quorum).
    #[error(
        "namespace {namespace:?}: this replica is at {mine}; a full copy to {to} would move it back and drop rows it already took; build the copy from a newer read of your store"
    )]
    StaleCopy {
        /// The namespace.
        namespace: String,
        /// Where this replica's copy is.
        mine: crate::replica::LogPos,
        /// Where the copy would leave it.
        to: crate::replica::LogPos,
    },
    /// A copy left behind by a change of the set was not released: its record changed since
    /// the holder was asked (an append arrived, the holder took it back into the set), or
    /// this node holds the namespace. Nothing was removed.
    #[error("namespace {namespace:?}: the copy was not released: {why}; ask the holder again")]
    NotReleased {
        /// The namespace.
        namespace: String,
        /// What changed.
        why: String,
    },
    /// An append contradicts itself (its epoch, its full-copy rows, its target position);
    /// nothing was written.
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    /// The on-disk data was written by an incompatible format version, or is corrupt.
    #[error(
        "stored record is unreadable ({0}); the data dir may be from a newer cfgnode or damaged"
    )]
    Corrupt(String),
    /// The data directory belongs to another node id.
    #[error(
        "data dir belongs to node {stored:?}, not {requested:?}: start with --node-id {stored} or use another --data-dir"
    )]
    NodeIdMismatch {
        /// The id stored in the data dir.
        stored: String,
        /// The id asked for on the command line.
        requested: String,
    },
    /// The database file is locked by another process.
    #[error("the database {path} is in use by another process: stop it or pick another --data-dir")]
    InUse {
        /// The database file.
        path: String,
    },
    /// redb failed: IO error, full disk, corruption.
    #[error("storage failure: {0}")]
    Storage(String),
    /// A write committed on the holder did not reach a majority of the namespace's replicas
    /// in time (replication): it is not acknowledged, and its outcome is unknown (it may still
    /// reach them).
    #[error(
        "namespace {namespace:?}: the write is on the holder but not yet on a majority of the namespace's replicas ({detail}); it is not acknowledged and may still take effect: read it back before retrying"
    )]
    NoQuorum {
        /// The namespace.
        namespace: String,
        /// Which replicas lag or cannot be reached.
        detail: String,
    },
    /// The writer thread is gone (the node is shutting down).
    #[error("the storage writer has stopped; the node is shutting down")]
    WriterStopped,
}

impl StoreError {
    /// True for errors that are the server's fault rather than the request's.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            StoreError::Storage(_) | StoreError::WriterStopped | StoreError::Corrupt(_)
        )
    }
}

macro_rules! storage_error_from {
    ($($t:ty),* $(,)?) => {
        $(impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Storage(e.to_string())
            }
        })*
    };
}

storage_error_from!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::SetDurabilityError,
);
