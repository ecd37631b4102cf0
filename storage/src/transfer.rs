//! Moving a namespace between nodes (handoff): export its rows, import them elsewhere.
//!
//! The unit of transfer is the stored row, record bytes and all, so the receiver ends up with
//! exactly the giver's namespace: the same revision counter, versions, history, aliases,
//! records and log.
//! A handoff sends a full export read at one revision (one read transaction, so it is
//! consistent while writes go on), then, with writes held, the rows changed since
//! ([`Store::export_changes`]), computed from the log.
//!
//! This node's replica record of the namespace (promise, position: `crate::replica`) is not
//! part of a transfer: it is per-node state, never exported, and an import, even one starting
//! with [`TransferOp::ClearNamespace`], leaves it as it is.
//!
//! Imported records come from another node, so every record is decoded and every name checked
//! before anything is written: a peer that sends garbage gets an error and changes nothing.

use std::collections::BTreeSet;
use std::ops::Bound;

use redb::{ReadTransaction, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::model::{validate_key, validate_namespace, validate_record_kind};
use crate::records::{
    ALIASES, ATTACHMENTS, AliasRecord, ENTRIES, EntryRecord, EventRecord, HISTORY, LOG, NAMESPACES,
    RECORDS, RecordRow, VersionRecord, decode,
};
use crate::types::{EventKind, NamespaceState, Revision};

/// One instruction of a namespace transfer, applied in order by [`crate::Store::import`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferOp {
    /// Remove every row of the namespace (the start of a full copy).
    ClearNamespace,
    /// Remove a key's entry and history (before its current rows are sent again).
    ClearKey {
        /// The key.
        key: String,
    },
    /// Remove an alias (before it is sent again, if it still exists).
    ClearAlias {
        /// The alias.
        alias: String,
    },
    /// Remove log rows older than `before` (the giver compacted them).
    TrimLog {
        /// The oldest revision the giver still has.
        before: Revision,
    },
    /// The namespace's state row.
    State {
        /// The stored record.
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
    /// A live key's row.
    Entry {
        /// The key.
        key: String,
        /// The stored record.
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
    /// One retained version of a key.
    History {
        /// The key.
        key: String,
        /// The version.
        version: u64,
        /// The stored record.
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
    /// One log event.
    Log {
        /// The event's revision.
        revision: Revision,
        /// The stored record.
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
    /// An alias row.
    Alias {
        /// The alias.
        alias: String,
        /// The stored record.
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
    /// Remove every attachment of the namespace (before they are all sent again).
    ClearAttachments,
    /// An attachment row (opaque to storage).
    Attachment {
        /// The attachment's name.
        name: String,
        /// Its bytes.
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
    /// Remove a record (before it is sent again, if it still exists).
    ClearRecord {
        /// The record's kind.
        kind: String,
        /// The record's name.
        name: String,
    },
    /// A record row.
    Record {
        /// The record's kind.
        kind: String,
        /// The record's name.
        name: String,
        /// The stored record.
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
    /// Remove a key's entry but not its history (the key was deleted since the copy's
    /// revision; its tombstone arrives as a [`TransferOp::History`] row).
    ClearEntry {
        /// The key.
        key: String,
    },
    /// Remove a key's history versions below `before` (the giver's oldest retained version):
    /// with the versions written since, this leaves the copy's history exactly the giver's,
    /// without resending the versions the copy already has.
    TrimHistory {
        /// The key.
        key: String,
        /// The oldest version the giver still keeps.
        before: u64,
    },
}

/// Largest attachment (a webhook with its cursor and last error fits many times over).
pub const MAX_ATTACHMENT_BYTES: usize = 64 * 1024;

impl TransferOp {
    /// Roughly how many bytes the op takes on the wire (for chunking).
    pub fn size(&self) -> usize {
        16 + match self {
            TransferOp::ClearNamespace
            | TransferOp::TrimLog { .. }
            | TransferOp::ClearAttachments => 0,
            TransferOp::ClearKey { key }
            | TransferOp::ClearEntry { key }
            | TransferOp::TrimHistory { key, .. } => key.len(),
            TransferOp::ClearAlias { alias } => alias.len(),
            TransferOp::State { record } | TransferOp::Log { record, .. } => record.len(),
            TransferOp::Entry { key, record } | TransferOp::History { key, record, .. } => {
                key.len() + record.len()
            }
            TransferOp::Alias { alias, record } => alias.len() + record.len(),
            TransferOp::Attachment { name, record } => name.len() + record.len(),
            TransferOp::ClearRecord { kind, name } => kind.len() + name.len(),
            TransferOp::Record { kind, name, record } => kind.len() + name.len() + record.len(),
        }
    }
}

/// Where an export is: which table, and the last row sent from it.
#[derive(Clone, Debug)]
enum Position {
    Start,
    Entries(Option<String>),
    History(Option<(String, u64)>),
    Log(Option<Revision>),
    Aliases(Option<String>),
    Records(Option<(String, String)>),
    Attachments(Option<String>),
    Done,
}

/// A full copy of one namespace, read at one revision, handed out in chunks.
///
/// Holds a read transaction: every chunk comes from the same consistent view however long the
/// transfer takes, while writes go on. Dropping it ends the transaction.
pub struct NamespaceExport {
    txn: ReadTransaction,
    namespace: String,
    state: NamespaceState,
    position: Position,
}

impl std::fmt::Debug for NamespaceExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamespaceExport")
            .field("namespace", &self.namespace)
            .field("revision", &self.state.revision)
            .field("position", &self.position)
            .finish()
    }
}

impl NamespaceExport {
    pub(crate) fn open(txn: ReadTransaction, namespace: &str) -> Result<Self, StoreError> {
        validate_namespace(namespace)?;
        let state = read_state(&txn, namespace)?;
        Ok(NamespaceExport {
            txn,
            namespace: namespace.to_string(),
            state,
            position: Position::Start,
        })
    }

    /// The namespace state the copy was read at.
    pub fn state(&self) -> &NamespaceState {
        &self.state
    }

    /// The next chunk of about `max_bytes` (at least one row), or `None` when the copy is
    /// complete. The first chunk starts with [`TransferOp::ClearNamespace`] and the state row.
    pub fn next_chunk(&mut self, max_bytes: usize) -> Result<Option<Vec<TransferOp>>, StoreError> {
        let mut chunk = Vec::new();
        let mut bytes = 0usize;
        let ns = self.namespace.clone();
        let ns = ns.as_str();
        let upper = upper_bound(ns);
        let full = |bytes: usize, chunk: &Vec<TransferOp>| !chunk.is_empty() && bytes >= max_bytes;
        loop {
            match self.position.clone() {
                Position::Start => {
                    let table = self.txn.open_table(NAMESPACES)?;
                    let record = table.get(ns)?.map(|v| v.value().to_vec()).ok_or_else(|| {
                        StoreError::NamespaceNotFound {
                            namespace: ns.to_string(),
                        }
                    })?;
                    chunk.push(TransferOp::ClearNamespace);
                    let op = TransferOp::State { record };
                    bytes += op.size();
                    chunk.push(op);
                    self.position = Position::Entries(None);
                }
                Position::Entries(after) => {
                    let (last, finished) = copy_named_rows(
                        &self.txn,
                        ENTRIES,
                        ns,
                        after,
                        (&mut chunk, &mut bytes, max_bytes),
                        |key, record| TransferOp::Entry { key, record },
                    )?;
                    self.position = if finished {
                        Position::History(None)
                    } else {
                        Position::Entries(last)
                    };
                }
                Position::History(after) => {
                    let table = self.txn.open_table(HISTORY)?;
                    let start = match &after {
                        Some((k, v)) => Bound::Excluded((ns, k.as_str(), *v)),
                        None => Bound::Included((ns, "", 0)),
                    };
                    let mut last = after.clone();
                    let mut finished = true;
                    for item in table.range::<(&str, &str, u64)>((
                        start,
                        Bound::Excluded((upper.as_str(), "", 0)),
                    ))? {
                        if full(bytes, &chunk) {
                            finished = false;
                            break;
                        }
                        let (k, v) = item?;
                        let (_, key, version) = k.value();
                        let op = TransferOp::History {
                            key: key.to_string(),
                            version,
                            record: v.value().to_vec(),
                        };
                        bytes += op.size();
                        chunk.push(op);
                        last = Some((key.to_string(), version));
                    }
                    self.position = if finished {
                        Position::Log(None)
                    } else {
                        Position::History(last)
                    };
                }
                Position::Log(after) => {
                    let table = self.txn.open_table(LOG)?;
                    let from = after.map_or(0, |r| r.saturating_add(1));
                    let mut last = after;
                    let mut finished = true;
                    for item in table.range((ns, from)..=(ns, u64::MAX))? {
                        if full(bytes, &chunk) {
                            finished = false;
                            break;
                        }
                        let (k, v) = item?;
                        let revision = k.value().1;
                        let op = TransferOp::Log {
                            revision,
                            record: v.value().to_vec(),
                        };
                        bytes += op.size();
                        chunk.push(op);
                        last = Some(revision);
                    }
                    self.position = if finished {
                        Position::Aliases(None)
                    } else {
                        Position::Log(last)
                    };
                }
                Position::Aliases(after) => {
                    let (last, finished) = copy_named_rows(
                        &self.txn,
                        ALIASES,
                        ns,
                        after,
                        (&mut chunk, &mut bytes, max_bytes),
                        |alias, record| TransferOp::Alias { alias, record },
                    )?;
                    self.position = if finished {
                        Position::Records(None)
                    } else {
                        Position::Aliases(last)
                    };
                }
                Position::Records(after) => {
                    let table = self.txn.open_table(RECORDS)?;
                    let start = match &after {
                        Some((kind, name)) => Bound::Excluded((ns, kind.as_str(), name.as_str())),
                        None => Bound::Included((ns, "", "")),
                    };
                    let mut last = after.clone();
                    let mut finished = true;
                    for item in table.range::<(&str, &str, &str)>((
                        start,
                        Bound::Excluded((upper.as_str(), "", "")),
                    ))? {
                        if full(bytes, &chunk) {
                            finished = false;
                            break;
                        }
                        let (k, v) = item?;
                        let (_, kind, name) = k.value();
                        let op = TransferOp::Record {
                            kind: kind.to_string(),
                            name: name.to_string(),
                            record: v.value().to_vec(),
                        };
                        bytes += op.size();
                        chunk.push(op);
                        last = Some((kind.to_string(), name.to_string()));
                    }
                    self.position = if finished {
                        Position::Attachments(None)
                    } else {
                        Position::Records(last)
                    };
                }
                Position::Attachments(after) => {
                    let (last, finished) = copy_named_rows(
                        &self.txn,
                        ATTACHMENTS,
                        ns,
                        after,
                        (&mut chunk, &mut bytes, max_bytes),
                        |name, record| TransferOp::Attachment { name, record },
                    )?;
                    self.position = if finished {
                        Position::Done
                    } else {
                        Position::Attachments(last)
                    };
                }
                Position::Done => {
                    return Ok(if chunk.is_empty() { None } else { Some(chunk) });
                }
            }
            if full(bytes, &chunk) {
                return Ok(Some(chunk));
            }
        }
    }
}

/// The namespace's state row, decoded; `NamespaceNotFound` when it has none.
fn read_state(txn: &ReadTransaction, namespace: &str) -> Result<NamespaceState, StoreError> {
    let table = txn.open_table(NAMESPACES)?;
    let found = table.get(namespace)?;
    match found {
        Some(bytes) => decode(bytes.value()),
        None => Err(StoreError::NamespaceNotFound {
            namespace: namespace.to_string(),
        }),
    }
}

/// Copies the rows of a `(namespace, name)` table that come after `after` into the chunk
/// until it holds `max_bytes` (at least one row); returns the last name copied and whether the
/// table is finished.
fn copy_named_rows(
    txn: &ReadTransaction,
    table: TableDefinition<(&str, &str), &[u8]>,
    ns: &str,
    after: Option<String>,
    (chunk, bytes, max_bytes): (&mut Vec<TransferOp>, &mut usize, usize),
    op: fn(String, Vec<u8>) -> TransferOp,
) -> Result<(Option<String>, bool), StoreError> {
    let table = txn.open_table(table)?;
    let upper = upper_bound(ns);
    let start = match &after {
        Some(name) => Bound::Excluded((ns, name.as_str())),
        None => Bound::Included((ns, "")),
    };
    let mut last = after.clone();
    for item in table.range::<(&str, &str)>((start, Bound::Excluded((upper.as_str(), ""))))? {
        if !chunk.is_empty() && *bytes >= max_bytes {
            return Ok((last, false));
        }
        let (k, v) = item?;
        let name = k.value().1.to_string();
        let row = op(name.clone(), v.value().to_vec());
        *bytes += row.size();
        chunk.push(row);
        last = Some(name);
    }
    Ok((last, true))
}

/// The rows of `namespace` changed after revision `since`, as ops that bring a copy taken at
/// `since` up to date. `None` when the log no longer reaches back to `since` (send a full copy
/// instead).
pub(crate) fn changes_since(
    txn: &ReadTransaction,
    namespace: &str,
    since: Revision,
) -> Result<Option<(NamespaceState, Vec<TransferOp>)>, StoreError> {
    changes_in(&ReadTables::open(txn)?, namespace, since)
}

/// The tables [`changes_in`] reads. A read transaction's tables ([`ReadTables`]) and the
/// writer's own (`crate::apply::WriteTables`, for the changes feed, before the batch commits)
/// both are.
pub(crate) trait RowTables {
    /// A table keyed by namespace.
    type ByNamespace: ReadableTable<&'static str, &'static [u8]>;
    /// A table keyed by namespace and name.
    type ByName: ReadableTable<(&'static str, &'static str), &'static [u8]>;
    /// The history table (namespace, key, version).
    type History: ReadableTable<(&'static str, &'static str, u64), &'static [u8]>;
    /// The log table (namespace, revision).
    type Log: ReadableTable<(&'static str, u64), &'static [u8]>;
    /// The records table (namespace, kind, name).
    type Records: ReadableTable<(&'static str, &'static str, &'static str), &'static [u8]>;
    /// Namespace state rows.
    fn namespaces(&self) -> &Self::ByNamespace;
    /// Live entries.
    fn entries(&self) -> &Self::ByName;
    /// Retained versions.
    fn history(&self) -> &Self::History;
    /// Log events.
    fn log(&self) -> &Self::Log;
    /// Aliases.
    fn aliases(&self) -> &Self::ByName;
    /// Attachments.
    fn attachments(&self) -> &Self::ByName;
    /// Records.
    fn records(&self) -> &Self::Records;
}

/// The accessors of [`RowTables`] for a struct whose fields are named after them.
macro_rules! row_table_fields {
    () => {
        fn namespaces(&self) -> &Self::ByNamespace {
            &self.namespaces
        }
        fn entries(&self) -> &Self::ByName {
            &self.entries
        }
        fn history(&self) -> &Self::History {
            &self.history
        }
        fn log(&self) -> &Self::Log {
            &self.log
        }
        fn aliases(&self) -> &Self::ByName {
            &self.aliases
        }
        fn attachments(&self) -> &Self::ByName {
            &self.attachments
        }
        fn records(&self) -> &Self::Records {
            &self.records
        }
    };
}
pub(crate) use row_table_fields;

type ReadOnly<K> = redb::ReadOnlyTable<K, &'static [u8]>;

/// A read transaction's tables, as [`changes_in`] reads them.
pub(crate) struct ReadTables {
    namespaces: ReadOnly<&'static str>,
    entries: ReadOnly<(&'static str, &'static str)>,
    history: ReadOnly<(&'static str, &'static str, u64)>,
    log: ReadOnly<(&'static str, u64)>,
    aliases: ReadOnly<(&'static str, &'static str)>,
    attachments: ReadOnly<(&'static str, &'static str)>,
    records: ReadOnly<(&'static str, &'static str, &'static str)>,
}

impl ReadTables {
    fn open(txn: &ReadTransaction) -> Result<ReadTables, StoreError> {
        Ok(ReadTables {
            namespaces: txn.open_table(NAMESPACES)?,
            entries: txn.open_table(ENTRIES)?,
            history: txn.open_table(HISTORY)?,
            log: txn.open_table(LOG)?,
            aliases: txn.open_table(ALIASES)?,
            attachments: txn.open_table(ATTACHMENTS)?,
            records: txn.open_table(RECORDS)?,
        })
    }
}

impl RowTables for ReadTables {
    type ByNamespace = ReadOnly<&'static str>;
    type ByName = ReadOnly<(&'static str, &'static str)>;
    type History = ReadOnly<(&'static str, &'static str, u64)>;
    type Log = ReadOnly<(&'static str, u64)>;
    type Records = ReadOnly<(&'static str, &'static str, &'static str)>;
    row_table_fields!();
}

/// [`changes_since`] over any [`RowTables`].
pub(crate) fn changes_in(
    t: &impl RowTables,
    namespace: &str,
    since: Revision,
) -> Result<Option<(NamespaceState, Vec<TransferOp>)>, StoreError> {
    validate_namespace(namespace)?;
    let ns = namespace;
    let state: NamespaceState = match t.namespaces().get(ns)? {
        Some(bytes) => decode(bytes.value())?,
        None => {
            return Err(StoreError::NamespaceNotFound {
                namespace: namespace.to_string(),
            });
        }
    };
    if state.revision < since || since.saturating_add(1) < state.log_start {
        return Ok(None);
    }
    let mut ops = Vec::new();
    let mut keys = BTreeSet::new();
    let mut aliases = BTreeSet::new();
    let mut records = BTreeSet::new();
    for item in t
        .log()
        .range((ns, since.saturating_add(1))..=(ns, u64::MAX))?
    {
        let (k, v) = item?;
        let record: EventRecord = decode(v.value())?;
        match record.kind {
            EventKind::Set { key, .. } | EventKind::Delete { key, .. } => {
                keys.insert(key);
            }
            EventKind::AliasSet { alias, .. } | EventKind::AliasDelete { alias } => {
                aliases.insert(alias);
            }
            EventKind::RecordSet { kind, name, .. }
            | EventKind::RecordDelete { kind, name, .. } => {
                records.insert((kind, name));
            }
        }
        ops.push(TransferOp::Log {
            revision: k.value().1,
            record: v.value().to_vec(),
        });
    }
    for key in &keys {
        key_changes(t.entries(), t.history(), ns, key, since, &mut ops)?;
    }
    for alias in &aliases {
        ops.push(TransferOp::ClearAlias {
            alias: alias.clone(),
        });
        if let Some(v) = t.aliases().get((ns, alias.as_str()))? {
            ops.push(TransferOp::Alias {
                alias: alias.clone(),
                record: v.value().to_vec(),
            });
        }
    }
    for (kind, name) in &records {
        ops.push(TransferOp::ClearRecord {
            kind: kind.clone(),
            name: name.clone(),
        });
        if let Some(v) = t.records().get((ns, kind.as_str(), name.as_str()))? {
            ops.push(TransferOp::Record {
                kind: kind.clone(),
                name: name.clone(),
                record: v.value().to_vec(),
            });
        }
    }
    // Attachments change without log entries (a webhook's cursor): send them all.
    ops.push(TransferOp::ClearAttachments);
    let upper = upper_bound(ns);
    for item in t.attachments().range((ns, "")..(upper.as_str(), ""))? {
        let (k, v) = item?;
        ops.push(TransferOp::Attachment {
            name: k.value().1.to_string(),
            record: v.value().to_vec(),
        });
    }
    ops.push(TransferOp::TrimLog {
        before: state.log_start,
    });
    if let Some(v) = t.namespaces().get(ns)? {
        ops.push(TransferOp::State {
            record: v.value().to_vec(),
        });
    }
    Ok(Some((state, ops)))
}

/// The ops that bring one key of a copy taken at `since` up to date: its entry (or its
/// removal), the history versions written after `since`, and a trim to the giver's oldest
/// retained version. Only what changed travels: resending a key's whole history (up to the
/// retention, 10 versions by default) on every write made a replicated write cost ten history
/// rows on the wire and on every follower.
fn key_changes(
    entries: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    history: &impl ReadableTable<(&'static str, &'static str, u64), &'static [u8]>,
    ns: &str,
    key: &str,
    since: Revision,
    ops: &mut Vec<TransferOp>,
) -> Result<(), StoreError> {
    let versions = (ns, key, 0)..=(ns, key, u64::MAX);
    let oldest = history.range(versions.clone())?.next().transpose()?;
    let Some(oldest) = oldest.map(|(k, _)| k.value().2) else {
        // No history at all (not something a write leaves): replace the key whole.
        ops.push(TransferOp::ClearKey {
            key: key.to_string(),
        });
        if let Some(v) = entries.get((ns, key))? {
            ops.push(TransferOp::Entry {
                key: key.to_string(),
                record: v.value().to_vec(),
            });
        }
        return Ok(());
    };
    match entries.get((ns, key))? {
        Some(v) => ops.push(TransferOp::Entry {
            key: key.to_string(),
            record: v.value().to_vec(),
        }),
        None => ops.push(TransferOp::ClearEntry {
            key: key.to_string(),
        }),
    }
    ops.push(TransferOp::TrimHistory {
        key: key.to_string(),
        before: oldest,
    });
    let mut fresh = Vec::new();
    for item in history.range(versions)?.rev() {
        let (k, v) = item?;
        let record: VersionRecord = decode(v.value())?;
        if record.revision <= since {
            break;
        }
        fresh.push(TransferOp::History {
            key: key.to_string(),
            version: k.value().2,
            record: v.value().to_vec(),
        });
    }
    ops.extend(fresh.into_iter().rev());
    Ok(())
}

/// The smallest namespace name sorting after every row of `namespace`: names never contain a
/// NUL byte, so `namespace + "\0"` is below every other name that starts with `namespace`.
pub(crate) fn upper_bound(namespace: &str) -> String {
    format!("{namespace}\0")
}

/// Checks every op of an import before anything is written: names valid, records decodable,
/// state record naming the namespace. A peer's garbage is refused as invalid input.
pub(crate) fn check_ops(namespace: &str, ops: &[TransferOp]) -> Result<(), StoreError> {
    validate_namespace(namespace)?;
    let bad = |what: &str, e: StoreError| {
        StoreError::Invalid(format!(
            "transfer of namespace {namespace:?}: malformed {what} record: {e}"
        ))
    };
    for op in ops {
        match op {
            TransferOp::ClearNamespace
            | TransferOp::TrimLog { .. }
            | TransferOp::ClearAttachments => {}
            TransferOp::Attachment { name, record } => {
                validate_key(name)?;
                if record.len() > MAX_ATTACHMENT_BYTES {
                    return Err(StoreError::Invalid(format!(
                        "transfer of namespace {namespace:?}: attachment {name:?} is over {MAX_ATTACHMENT_BYTES} bytes"
                    )));
                }
            }
            TransferOp::ClearKey { key }
            | TransferOp::ClearEntry { key }
            | TransferOp::TrimHistory { key, .. } => validate_key(key)?,
            TransferOp::ClearAlias { alias } => validate_key(alias)?,
            TransferOp::State { record } => {
                let state: NamespaceState = decode(record).map_err(|e| bad("state", e))?;
                if state.name != namespace {
                    return Err(StoreError::Invalid(format!(
                        "transfer of namespace {namespace:?} carries the state of {:?}",
                        state.name
                    )));
                }
            }
            TransferOp::Entry { key, record } => {
                validate_key(key)?;
                decode::<EntryRecord>(record).map_err(|e| bad("entry", e))?;
            }
            TransferOp::History { key, record, .. } => {
                validate_key(key)?;
                decode::<VersionRecord>(record).map_err(|e| bad("history", e))?;
            }
            TransferOp::Log { record, .. } => {
                decode::<EventRecord>(record).map_err(|e| bad("log", e))?;
            }
            TransferOp::Alias { alias, record } => {
                validate_key(alias)?;
                decode::<AliasRecord>(record).map_err(|e| bad("alias", e))?;
            }
            TransferOp::ClearRecord { kind, name } => {
                validate_record_kind(kind)?;
                validate_key(name)?;
            }
            TransferOp::Record { kind, name, record } => {
                validate_record_kind(kind)?;
                validate_key(name)?;
                decode::<RecordRow>(record).map_err(|e| bad("record", e))?;
            }
        }
    }
    Ok(())
}
