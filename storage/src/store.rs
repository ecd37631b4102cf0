//! [`Store`]: the node's one redb database, its writer and its reads.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable};

use crate::apply::{Retention, to_alias};
use crate::error::StoreError;
use crate::model::{validate_key, validate_namespace};
use crate::mutation::{AliasPut, Applied, DeleteRequest, Deleted, Mutation, PutRequest};
use crate::records::{
    ALIASES, AliasRecord, CLUSTER, ENTRIES, EntryRecord, EventRecord, GenerationRecord, HISTORY,
    LOG, META, META_CLUSTER_MEMBERS, META_GENERATION, META_NODE_ID, META_SCHEMA, NAMESPACES,
    VersionRecord, decode, encode,
};
use crate::transfer::{NamespaceExport, TransferOp, changes_since, check_ops};
use crate::types::{
    Alias, Entry, Event, LogRead, Lookup, NamespaceState, Page, Revision, Snapshot, VersionEntry,
};
use crate::writer::{CommitObserver, GroupCommitWriter, WriterSettings};

/// The schema this build creates and understands.
const SCHEMA_VERSION: u8 = 1;

/// How far the generation counter moves at each open. The node's SWIM identity takes the
/// generation, and foca renews an identity declared down within one life by adding 1
/// (`Identity::renew`): leaving 1024 values per life keeps the next start above every renewal
/// of the previous one, so a restarted node never comes back as an identity its peers already
/// saw (and may hold as down).
pub const GENERATION_STEP: u64 = 1024;

/// How a [`Store`] behaves; [`StoreOptions::default`] suits a production node.
#[derive(Clone)]
pub struct StoreOptions {
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
    /// Versions kept per key (the current one included).
    pub history_per_key: u64,
    /// Events kept per namespace log; older readers are told to resync from a snapshot.
    pub log_per_namespace: u64,
    /// Most writes one transaction carries. 1 turns group commit off (for benchmarks).
    pub max_batch: usize,
    /// Writes that may wait for the writer before callers are held back.
    pub queue_depth: usize,
    /// Told about every commit, for metrics.
    pub observer: Option<Arc<dyn CommitObserver>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_value_bytes: 1024 * 1024,
            history_per_key: 10,
            log_per_namespace: 10_000,
            max_batch: 1024,
            queue_depth: 4096,
            observer: None,
        }
    }
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("max_value_bytes", &self.max_value_bytes)
            .field("history_per_key", &self.history_per_key)
            .field("log_per_namespace", &self.log_per_namespace)
            .field("max_batch", &self.max_batch)
            .field("queue_depth", &self.queue_depth)
            .finish_non_exhaustive()
    }
}

/// The node's storage: cheap to clone, shared by every task.
///
/// Writes are `async` and resolve only after their durable commit. Reads are synchronous redb
/// read transactions: call them from a blocking context (`spawn_blocking`) in async code.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .field("node_id", &self.inner.node_id)
            .finish_non_exhaustive()
    }
}

struct Inner {
    db: Arc<Database>,
    // Dropped after `db`: the writer thread holds its own `Arc` of the database, and dropping
    // the writer joins that thread once it has committed everything queued.
    writer: GroupCommitWriter,
    node_id: String,
    /// Taken from the durable counter at open: every open gets a higher one.
    generation: u64,
    path: PathBuf,
    max_value_bytes: usize,
}

impl Store {
    /// Opens (or creates) the database at `path`.
    ///
    /// `node_id` is the id asked for on the command line: `None` keeps the stored id, or makes
    /// a random one on first start. An id different from the stored one is refused, because
    /// cluster state (claims, directory) refers to nodes by id.
    pub fn open(
        path: &Path,
        node_id: Option<&str>,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
                path: path.display().to_string(),
            },
            other => StoreError::Storage(format!("cannot open {}: {other}", path.display())),
        })?;
        let (node_id, generation) = init_schema(&db, node_id)?;
        let db = Arc::new(db);
        let retention = Retention {
            history_per_key: options.history_per_key.max(1),
            log_per_namespace: options.log_per_namespace.max(1),
        };
        let writer = GroupCommitWriter::start(
            Arc::clone(&db),
            WriterSettings {
                max_batch: options.max_batch,
                queue_depth: options.queue_depth,
                retention,
                observer: options.observer.clone(),
            },
        )?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                writer,
                node_id,
                generation,
                path: path.to_path_buf(),
                max_value_bytes: options.max_value_bytes,
            }),
        })
    }

    /// This open's generation: higher than every generation any earlier open of this data dir
    /// took, durably (the counter is committed before [`Store::open`] returns), whatever the
    /// wall clock says. The node uses it as its SWIM identity's generation, so a restarted
    /// node always supersedes its previous life in its peers' membership.
    ///
    /// Each open moves the counter by [`GENERATION_STEP`]. A data dir without a counter (a
    /// new one, or one from before the counter existed, whose node used the wall clock in
    /// milliseconds as its generation) starts at the wall clock in milliseconds, so it still
    /// supersedes every identity of the earlier lives.
    pub fn generation(&self) -> u64 {
        self.inner.generation
    }

    /// How many handles (clones) of this store are alive. The database closes when the last
    /// one is dropped; shutdown waits for its own to be the last.
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// This node's stable id.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The largest value this store accepts.
    pub fn max_value_bytes(&self) -> usize {
        self.inner.max_value_bytes
    }

    /// Writes a key. Validates names, size and codec on the caller's task, then waits for the
    /// durable commit.
    pub async fn put(&self, request: PutRequest) -> Result<Entry, StoreError> {
        validate_namespace(&request.namespace)?;
        validate_key(&request.key)?;
        if request.value.len() > self.inner.max_value_bytes {
            return Err(StoreError::ValueTooLarge {
                size: request.value.len(),
                limit: self.inner.max_value_bytes,
            });
        }
        request.codec.validate(&request.value)?;
        match self.inner.writer.submit(Mutation::Put(request)).await? {
            Applied::Put(entry) => Ok(entry),
            other => Err(unexpected(&other)),
        }
    }

    /// Deletes a key, optionally only if it is at `if_version`.
    pub async fn delete(&self, request: DeleteRequest) -> Result<Deleted, StoreError> {
        validate_namespace(&request.namespace)?;
        validate_key(&request.key)?;
        match self.inner.writer.submit(Mutation::Delete(request)).await? {
            Applied::Deleted(deleted) => Ok(deleted),
            other => Err(unexpected(&other)),
        }
    }

    /// Creates an alias. Re-creating the same alias with the same target succeeds without a
    /// new revision, so retries are safe.
    pub async fn put_alias(
        &self,
        namespace: &str,
        alias: &str,
        target: &str,
    ) -> Result<AliasPut, StoreError> {
        validate_namespace(namespace)?;
        validate_key(alias)?;
        validate_key(target)?;
        if alias == target {
            return Err(StoreError::Invalid(format!(
                "alias {alias:?} may not point at itself"
            )));
        }
        let mutation = Mutation::PutAlias {
            namespace: namespace.to_string(),
            alias: alias.to_string(),
            target: target.to_string(),
        };
        match self.inner.writer.submit(mutation).await? {
            Applied::AliasPut(put) => Ok(put),
            other => Err(unexpected(&other)),
        }
    }

    /// Removes an alias.
    pub async fn delete_alias(&self, namespace: &str, alias: &str) -> Result<Alias, StoreError> {
        validate_namespace(namespace)?;
        validate_key(alias)?;
        let mutation = Mutation::DeleteAlias {
            namespace: namespace.to_string(),
            alias: alias.to_string(),
        };
        match self.inner.writer.submit(mutation).await? {
            Applied::AliasDeleted(alias) => Ok(alias),
            other => Err(unexpected(&other)),
        }
    }

    /// Stores the node's last known cluster members (opaque bytes, serialized by the node), so
    /// a restarted node can rejoin without seeds.
    pub async fn save_cluster_members(&self, bytes: Vec<u8>) -> Result<(), StoreError> {
        match self
            .inner
            .writer
            .submit(Mutation::PutClusterMembers(bytes))
            .await?
        {
            Applied::ClusterMembers => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Upserts cluster facts (directory records, pins, claims), opaque to storage, in one
    /// durable commit.
    pub async fn save_cluster_records(
        &self,
        records: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        match self
            .inner
            .writer
            .submit(Mutation::PutClusterRecords(records))
            .await?
        {
            Applied::ClusterRecords => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Every cluster fact saved with [`Store::save_cluster_records`], in key order.
    pub fn cluster_records(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(CLUSTER)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Starts a full copy of `namespace` for a handoff, read at its current revision.
    pub fn export(&self, namespace: &str) -> Result<NamespaceExport, StoreError> {
        NamespaceExport::open(self.read()?, namespace)
    }

    /// The ops that bring a copy taken at revision `since` up to date, with the state they lead
    /// to; `None` when the log no longer reaches back to `since` (send a full copy instead).
    pub fn export_changes(
        &self,
        namespace: &str,
        since: Revision,
    ) -> Result<Option<(NamespaceState, Vec<TransferOp>)>, StoreError> {
        changes_since(&self.read()?, namespace, since)
    }

    /// Applies transfer ops to `namespace` in one durable commit (all checked first: a
    /// malformed op refuses the whole import and writes nothing).
    pub async fn import(&self, namespace: &str, ops: Vec<TransferOp>) -> Result<(), StoreError> {
        check_ops(namespace, &ops)?;
        let mutation = Mutation::Import {
            namespace: namespace.to_string(),
            ops,
        };
        match self.inner.writer.submit(mutation).await? {
            Applied::Imported => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Sets (`Some`) or removes (`None`) the attachment `name` of `namespace`: bytes owned by
    /// the node (webhooks and their cursors) that move with the namespace but are not part of
    /// its data (no revision, no log). Durable when this returns; the namespace must exist.
    pub async fn put_attachment(
        &self,
        namespace: &str,
        name: &str,
        bytes: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        validate_namespace(namespace)?;
        crate::model::validate_key(name)?;
        if let Some(b) = &bytes
            && b.len() > crate::transfer::MAX_ATTACHMENT_BYTES
        {
            return Err(StoreError::Invalid(format!(
                "attachment {name:?} is {} bytes, over the limit of {}",
                b.len(),
                crate::transfer::MAX_ATTACHMENT_BYTES
            )));
        }
        let mutation = Mutation::PutAttachment {
            namespace: namespace.to_string(),
            name: name.to_string(),
            bytes,
        };
        match self.inner.writer.submit(mutation).await? {
            Applied::Attachment => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// The attachments of `namespace` whose names start with `prefix`, in name order.
    pub fn attachments(
        &self,
        namespace: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        validate_namespace(namespace)?;
        let txn = self.read()?;
        let table = txn.open_table(crate::records::ATTACHMENTS)?;
        let upper = crate::transfer::upper_bound(namespace);
        let mut out = Vec::new();
        for item in table.range((namespace, prefix)..(upper.as_str(), ""))? {
            let (k, v) = item?;
            let name = k.value().1;
            if !name.starts_with(prefix) {
                break;
            }
            out.push((name.to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Removes every row of `namespace` (after it moved to another node).
    pub async fn drop_namespace(&self, namespace: &str) -> Result<(), StoreError> {
        self.import(namespace, vec![TransferOp::ClearNamespace])
            .await
    }

    /// The bytes last given to [`Store::save_cluster_members`], if any.
    pub fn cluster_members(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.read()?;
        let meta = txn.open_table(META)?;
        let found = meta.get(META_CLUSTER_MEMBERS)?;
        Ok(found.map(|v| v.value().to_vec()))
    }

    /// Looks `name` up as a key, then as an alias (following it to its target).
    pub fn lookup(&self, namespace: &str, name: &str) -> Result<Lookup, StoreError> {
        validate_namespace(namespace)?;
        validate_key(name)?;
        let txn = self.read()?;
        let entries = txn.open_table(ENTRIES)?;
        if let Some(entry) = get_entry(&entries, namespace, name)? {
            return Ok(Lookup::Entry(entry));
        }
        let aliases = txn.open_table(ALIASES)?;
        let Some(record) = aliases.get((namespace, name))? else {
            return Ok(Lookup::Missing);
        };
        let alias = to_alias(namespace, name, decode(record.value())?);
        let entry = get_entry(&entries, namespace, &alias.target)?;
        Ok(Lookup::Alias { alias, entry })
    }

    /// A page of live entries whose keys start with `prefix`, in key order, after `cursor`
    /// (the last key of the previous page).
    pub fn list_entries(
        &self,
        namespace: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<Entry>, StoreError> {
        validate_namespace(namespace)?;
        let txn = self.read()?;
        let entries = txn.open_table(ENTRIES)?;
        let start = match cursor {
            Some(after) if after >= prefix => Bound::Excluded((namespace, after)),
            _ => Bound::Included((namespace, prefix)),
        };
        let mut items = Vec::new();
        let mut more = false;
        for item in entries.range::<(&str, &str)>((start, Bound::Unbounded))? {
            let (k, v) = item?;
            let (ns, key) = k.value();
            if ns != namespace || !key.starts_with(prefix) {
                break;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(to_entry(ns, key, decode(v.value())?));
        }
        let next_cursor = more.then(|| items.last().map(|e| e.key.clone())).flatten();
        Ok(Page { items, next_cursor })
    }

    /// A page of a key's retained versions, newest first, older than `before` when given.
    pub fn versions(
        &self,
        namespace: &str,
        key: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Page<VersionEntry>, StoreError> {
        validate_namespace(namespace)?;
        validate_key(key)?;
        let txn = self.read()?;
        let history = txn.open_table(HISTORY)?;
        let upper = before.unwrap_or(u64::MAX);
        let mut items = Vec::new();
        let mut more = false;
        for item in history
            .range((namespace, key, 0)..(namespace, key, upper))?
            .rev()
        {
            let (k, v) = item?;
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(to_version(key, k.value().2, decode(v.value())?));
        }
        let next_cursor = more
            .then(|| items.last().map(|v| v.version.to_string()))
            .flatten();
        Ok(Page { items, next_cursor })
    }

    /// One retained version of a key.
    pub fn version(
        &self,
        namespace: &str,
        key: &str,
        version: u64,
    ) -> Result<Option<VersionEntry>, StoreError> {
        validate_namespace(namespace)?;
        validate_key(key)?;
        let txn = self.read()?;
        let history = txn.open_table(HISTORY)?;
        let found = history.get((namespace, key, version))?;
        found
            .map(|v| Ok(to_version(key, version, decode(v.value())?)))
            .transpose()
    }

    /// The newest retained version number of a key (deletes included), if it has any history.
    pub fn latest_version(&self, namespace: &str, key: &str) -> Result<Option<u64>, StoreError> {
        let page = self.versions(namespace, key, None, 1)?;
        Ok(page.items.first().map(|v| v.version))
    }

    /// A namespace's state, in O(1): revision, counts, ETag material.
    pub fn namespace(&self, namespace: &str) -> Result<Option<NamespaceState>, StoreError> {
        validate_namespace(namespace)?;
        let txn = self.read()?;
        read_namespace(&txn, namespace)
    }

    /// Every entry and alias of a namespace, read in one transaction so they share a revision.
    pub fn snapshot(&self, namespace: &str) -> Result<Option<Snapshot>, StoreError> {
        validate_namespace(namespace)?;
        let txn = self.read()?;
        let Some(state) = read_namespace(&txn, namespace)? else {
            return Ok(None);
        };
        let entries_table = txn.open_table(ENTRIES)?;
        let mut entries = Vec::with_capacity(usize::try_from(state.key_count).unwrap_or(0));
        for item in entries_table.range((namespace, "")..)? {
            let (k, v) = item?;
            let (ns, key) = k.value();
            if ns != namespace {
                break;
            }
            entries.push(to_entry(ns, key, decode(v.value())?));
        }
        let aliases = read_aliases(&txn, namespace, None, usize::MAX)?.items;
        Ok(Some(Snapshot {
            state,
            entries,
            aliases,
        }))
    }

    /// A page of namespaces that hold at least one key, by name, after `cursor`.
    pub fn list_namespaces(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<NamespaceState>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(NAMESPACES)?;
        let start = match cursor {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut items: Vec<NamespaceState> = Vec::new();
        let mut more = false;
        for item in table.range::<&str>((start, Bound::Unbounded))? {
            let (k, v) = item?;
            let name = k.value();
            if !name.starts_with(prefix) {
                break;
            }
            // System namespaces (`_...`) are the node's own business, not user data.
            if name.starts_with('_') {
                continue;
            }
            let state: NamespaceState = decode(v.value())?;
            if state.key_count == 0 {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(state);
        }
        let next_cursor = more.then(|| items.last().map(|s| s.name.clone())).flatten();
        Ok(Page { items, next_cursor })
    }

    /// One alias.
    pub fn alias(&self, namespace: &str, alias: &str) -> Result<Option<Alias>, StoreError> {
        validate_namespace(namespace)?;
        validate_key(alias)?;
        let txn = self.read()?;
        let table = txn.open_table(ALIASES)?;
        let found = table.get((namespace, alias))?;
        found
            .map(|v| {
                Ok(to_alias(
                    namespace,
                    alias,
                    decode::<AliasRecord>(v.value())?,
                ))
            })
            .transpose()
    }

    /// A page of a namespace's aliases, by name, after `cursor`.
    pub fn aliases(
        &self,
        namespace: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<Alias>, StoreError> {
        validate_namespace(namespace)?;
        let txn = self.read()?;
        read_aliases(&txn, namespace, cursor, limit)
    }

    /// Up to `limit` log events after revision `after`, in order, or [`LogRead::Compacted`] when
    /// some of them are no longer retained.
    pub fn events_since(
        &self,
        namespace: &str,
        after: Revision,
        limit: usize,
    ) -> Result<LogRead, StoreError> {
        validate_namespace(namespace)?;
        let txn = self.read()?;
        let Some(state) = read_namespace(&txn, namespace)? else {
            return Ok(LogRead::Events(Vec::new()));
        };
        if after.saturating_add(1) < state.log_start {
            return Ok(LogRead::Compacted {
                oldest_retained: state.log_start,
                current: state.revision,
            });
        }
        let log = txn.open_table(LOG)?;
        let mut events = Vec::new();
        for item in log.range((namespace, after.saturating_add(1))..=(namespace, u64::MAX))? {
            if events.len() == limit {
                break;
            }
            let (k, v) = item?;
            let record: EventRecord = decode(v.value())?;
            events.push(Event {
                namespace: namespace.to_string(),
                revision: k.value().1,
                at: record.at,
                kind: record.kind,
            });
        }
        Ok(LogRead::Events(events))
    }

    fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.inner.db.begin_read()?)
    }
}

/// Creates every table, checks the schema version, settles the node id and takes the next
/// generation (see [`Store::generation`]), in one durable commit.
fn init_schema(db: &Database, requested: Option<&str>) -> Result<(String, u64), StoreError> {
    // Fsynced before the store is handed out: no two opens can ever take the same
    // generation, even across a crash.
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    let node_id;
    let generation;
    {
        let mut meta = txn.open_table(META)?;
        let schema = meta.get(META_SCHEMA)?.map(|v| v.value().to_vec());
        match schema.as_deref() {
            None => {
                meta.insert(META_SCHEMA, [SCHEMA_VERSION].as_slice())?;
            }
            Some([SCHEMA_VERSION]) => {}
            Some(other) => {
                return Err(StoreError::Corrupt(format!(
                    "schema version {other:?}, this build understands {SCHEMA_VERSION}"
                )));
            }
        }
        let stored = meta
            .get(META_NODE_ID)?
            .map(|v| String::from_utf8_lossy(v.value()).into_owned());
        node_id = match (stored, requested) {
            (Some(stored), Some(requested)) if stored != requested => {
                return Err(StoreError::NodeIdMismatch {
                    stored,
                    requested: requested.to_string(),
                });
            }
            (Some(stored), _) => stored,
            (None, requested) => {
                let id = match requested {
                    Some(id) => id.to_string(),
                    None => random_node_id()?,
                };
                meta.insert(META_NODE_ID, id.as_bytes())?;
                id
            }
        };
        let last = meta
            .get(META_GENERATION)?
            .map(|v| decode::<GenerationRecord>(v.value()))
            .transpose()?;
        generation = next_generation(last.map(|r| r.last), crate::writer::now_millis())?;
        meta.insert(
            META_GENERATION,
            encode(&GenerationRecord { last: generation }).as_slice(),
        )?;
        txn.open_table(NAMESPACES)?;
        txn.open_table(ENTRIES)?;
        txn.open_table(HISTORY)?;
        txn.open_table(LOG)?;
        txn.open_table(ALIASES)?;
        txn.open_table(CLUSTER)?;
        txn.open_table(crate::records::ATTACHMENTS)?;
    }
    txn.commit()?;
    Ok((node_id, generation))
}

/// The generation after `last` (the counter's stored value, `None` when there is none yet),
/// with the wall clock at `now_millis`: see [`Store::generation`].
fn next_generation(last: Option<u64>, now_millis: u64) -> Result<u64, StoreError> {
    match last {
        None => Ok(now_millis.max(1)),
        Some(last) => last.checked_add(GENERATION_STEP).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "the generation counter is exhausted ({last}); it grows by {GENERATION_STEP} \
                 per start from the wall clock, so the meta table is damaged: restore the data \
                 dir from a backup"
            ))
        }),
    }
}

/// Checks a node id: the namespace name rules, at most 64 bytes.
pub fn validate_node_id(id: &str) -> Result<(), StoreError> {
    if id.len() > 64 || validate_namespace(id).is_err() {
        return Err(StoreError::Invalid(format!(
            "node id {id:?} must be 1-64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
        )));
    }
    Ok(())
}

fn random_node_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 5];
    getrandom::fill(&mut bytes)
        .map_err(|e| StoreError::Storage(format!("no randomness from the OS: {e}")))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("node-{hex}"))
}

fn read_namespace(
    txn: &ReadTransaction,
    namespace: &str,
) -> Result<Option<NamespaceState>, StoreError> {
    let table = txn.open_table(NAMESPACES)?;
    let found = table.get(namespace)?;
    found.map(|v| decode(v.value())).transpose()
}

fn read_aliases(
    txn: &ReadTransaction,
    namespace: &str,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Page<Alias>, StoreError> {
    let table = txn.open_table(ALIASES)?;
    let start = match cursor {
        Some(after) => Bound::Excluded((namespace, after)),
        None => Bound::Included((namespace, "")),
    };
    let mut items: Vec<Alias> = Vec::new();
    let mut more = false;
    for item in table.range::<(&str, &str)>((start, Bound::Unbounded))? {
        let (k, v) = item?;
        let (ns, alias) = k.value();
        if ns != namespace {
            break;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(to_alias(ns, alias, decode(v.value())?));
    }
    let next_cursor = more
        .then(|| items.last().map(|a| a.alias.clone()))
        .flatten();
    Ok(Page { items, next_cursor })
}

fn get_entry(
    entries: &ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
    namespace: &str,
    key: &str,
) -> Result<Option<Entry>, StoreError> {
    let found = entries.get((namespace, key))?;
    found
        .map(|v| Ok(to_entry(namespace, key, decode(v.value())?)))
        .transpose()
}

fn to_entry(namespace: &str, key: &str, record: EntryRecord) -> Entry {
    Entry {
        namespace: namespace.to_string(),
        key: key.to_string(),
        value: record.value,
        codec: record.codec,
        version: record.version,
        revision: record.revision,
        created_at: record.created_at,
        updated_at: record.updated_at,
    }
}

fn to_version(key: &str, version: u64, record: VersionRecord) -> VersionEntry {
    VersionEntry {
        key: key.to_string(),
        version,
        revision: record.revision,
        value: record.value,
        codec: record.codec,
        at: record.at,
    }
}

fn unexpected(applied: &Applied) -> StoreError {
    StoreError::Storage(format!(
        "writer answered with the wrong kind of result: {applied:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_start_at_the_wall_clock_then_step_up() {
        // No counter yet (new data dir, or one from when the wall clock was the generation).
        assert_eq!(
            next_generation(None, 1_764_577_800_000).ok(),
            Some(1_764_577_800_000)
        );
        assert_eq!(
            next_generation(None, 0).ok(),
            Some(1),
            "a clock at 0 still gives >= 1"
        );
        // A counter: the wall clock no longer matters, even when it went back.
        assert_eq!(
            next_generation(Some(5_000), 1).ok(),
            Some(5_000 + GENERATION_STEP)
        );
        assert!(matches!(
            next_generation(Some(u64::MAX - 1), 0),
            Err(StoreError::Corrupt(_))
        ));
    }
}
