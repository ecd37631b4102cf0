//! Reads: synchronous redb read transactions (call them from a blocking context in async
//! code), each answering from one consistent view of the database.

use std::ops::Bound;

use redb::{ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable};

use crate::apply::{to_alias, to_record};
use crate::error::StoreError;
use crate::model::{validate_key, validate_namespace, validate_record_kind};
use crate::records::{
    ALIASES, AliasRecord, CLUSTER, ENTRIES, EntryRecord, EventRecord, HISTORY, LOG, META,
    META_CLUSTER_MEMBERS, NAMESPACES, RECORDS, VersionRecord, decode,
};
use crate::transfer::{NamespaceExport, TransferOp, changes_since};
use crate::types::{
    Alias, Entry, Event, LogRead, Lookup, NamespaceState, Page, Record, Revision, Snapshot,
    VersionEntry,
};

use super::Store;
use crate::visibility::Scope;

impl Store {
    /// Every cluster fact saved with [`Store::save_cluster_records`], in key order.
    pub fn cluster_records(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.read(Scope::Cluster)?;
        let table = txn.open_table(CLUSTER)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Starts a full copy of `namespace` for a handoff or a full-copy append, read at its
    /// current revision. The node's replica record is not part of it.
    pub fn export(&self, namespace: &str) -> Result<NamespaceExport, StoreError> {
        NamespaceExport::open(self.read(Scope::Namespace(namespace))?, namespace)
    }

    /// The ops that bring a copy taken at revision `since` up to date, with the state they lead
    /// to; `None` when the log no longer reaches back to `since` (send a full copy instead).
    /// The node's replica record is not part of them.
    pub fn export_changes(
        &self,
        namespace: &str,
        since: Revision,
    ) -> Result<Option<(NamespaceState, Vec<TransferOp>)>, StoreError> {
        changes_since(&self.read(Scope::Namespace(namespace))?, namespace, since)
    }

    /// The attachments of `namespace` whose names start with `prefix`, in name order.
    pub fn attachments(
        &self,
        namespace: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        validate_namespace(namespace)?;
        let txn = self.read(Scope::Namespace(namespace))?;
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

    /// The bytes last given to [`Store::save_cluster_members`], if any.
    pub fn cluster_members(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.read(Scope::Cluster)?;
        let meta = txn.open_table(META)?;
        let found = meta.get(META_CLUSTER_MEMBERS)?;
        Ok(found.map(|v| v.value().to_vec()))
    }

    /// Looks `name` up as a key, then as an alias (following it to its target).
    pub fn lookup(&self, namespace: &str, name: &str) -> Result<Lookup, StoreError> {
        validate_namespace(namespace)?;
        validate_key(name)?;
        let txn = self.read(Scope::Namespace(namespace))?;
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

    /// One record of `namespace`, or `None` when it does not exist.
    pub fn record(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
    ) -> Result<Option<Record>, StoreError> {
        validate_namespace(namespace)?;
        validate_record_kind(kind)?;
        validate_key(name)?;
        let txn = self.read(Scope::Namespace(namespace))?;
        let table = txn.open_table(RECORDS)?;
        let found = table.get((namespace, kind, name))?;
        found
            .map(|v| Ok(to_record(namespace, kind, name, decode(v.value())?)))
            .transpose()
    }

    /// A page of the records of one kind whose names start with `prefix`, in name order, after
    /// `cursor` (the last name of the previous page), read in one transaction.
    pub fn records(
        &self,
        namespace: &str,
        kind: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<Record>, StoreError> {
        validate_namespace(namespace)?;
        validate_record_kind(kind)?;
        let txn = self.read(Scope::Namespace(namespace))?;
        let table = txn.open_table(RECORDS)?;
        let start = match cursor {
            Some(after) if after >= prefix => Bound::Excluded((namespace, kind, after)),
            _ => Bound::Included((namespace, kind, prefix)),
        };
        let mut items = Vec::new();
        let mut more = false;
        for item in table.range::<(&str, &str, &str)>((start, Bound::Unbounded))? {
            let (k, v) = item?;
            let (ns, k_kind, name) = k.value();
            if ns != namespace || k_kind != kind || !name.starts_with(prefix) {
                break;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(to_record(ns, kind, name, decode(v.value())?));
        }
        let next_cursor = more.then(|| items.last().map(|r| r.name.clone())).flatten();
        Ok(Page { items, next_cursor })
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
        let txn = self.read(Scope::Namespace(namespace))?;
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
        let txn = self.read(Scope::Namespace(namespace))?;
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
        let txn = self.read(Scope::Namespace(namespace))?;
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
        let txn = self.read(Scope::Namespace(namespace))?;
        read_namespace(&txn, namespace)
    }

    /// Every entry and alias of a namespace, read in one transaction so they share a revision.
    /// Records are not included (see [`Snapshot`]), though their writes move the revision.
    pub fn snapshot(&self, namespace: &str) -> Result<Option<Snapshot>, StoreError> {
        validate_namespace(namespace)?;
        let txn = self.read(Scope::Namespace(namespace))?;
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

    /// A page of namespaces that hold at least one key or record (a registry-only or
    /// routes-only namespace is listed too), by name, after `cursor`.
    pub fn list_namespaces(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<NamespaceState>, StoreError> {
        let txn = self.read(Scope::AllNamespaces)?;
        let table = txn.open_table(NAMESPACES)?;
        let records = txn.open_table(RECORDS)?;
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
            if state.key_count == 0 && !has_records(&records, name)? {
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
        let txn = self.read(Scope::Namespace(namespace))?;
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
        let txn = self.read(Scope::Namespace(namespace))?;
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
        let txn = self.read(Scope::Namespace(namespace))?;
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

    /// A read transaction over `scope`: it sees every write this node acknowledged there,
    /// the followers' appends waiting in the writer's open transaction included (see
    /// [`crate::visibility`]).
    pub(super) fn read(&self, scope: Scope<'_>) -> Result<ReadTransaction, StoreError> {
        self.inner.writer.wait_visible(scope)?;
        Ok(self.inner.db.begin_read()?)
    }
}

pub(super) fn read_namespace(
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

/// Whether `namespace` has at least one record (of any kind): one seek in the records table.
fn has_records(
    records: &redb::ReadOnlyTable<(&str, &str, &str), &[u8]>,
    namespace: &str,
) -> Result<bool, StoreError> {
    let mut range = records.range::<(&str, &str, &str)>((namespace, "", "")..)?;
    match range.next() {
        Some(item) => Ok(item?.0.value().0 == namespace),
        None => Ok(false),
    }
}
