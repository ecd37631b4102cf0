//! Applying one mutation inside the writer's transaction.
//!
//! Each mutation first reads and checks everything it needs, and only then writes. So a rejected
//! mutation (conflict, missing key) has written nothing and can fail alone inside a batch; only
//! a redb failure, which is the server's fault, aborts the whole batch.

use redb::{ReadableTable, Table, WriteTransaction};

use crate::error::StoreError;
use crate::mutation::{
    AliasPut, Applied, DeleteRequest, Deleted, Mutation, PutRequest, RecordDelete, RecordDeleted,
    RecordPut, RecordWrite, WriteMode,
};
use crate::records::{
    ALIASES, ATTACHMENTS, AliasRecord, CLUSTER, ENTRIES, EntryRecord, EventRecord, HISTORY, LOG,
    META, META_CLUSTER_MEMBERS, META_WAL_APPLIED, NAMESPACES, RECORDS, REPLICAS, RecordRow,
    VersionRecord, decode, encode,
};
use crate::replica::{self, LogPos, ReplicaAppend, ReplicaState, decode_record, encode_record};
use crate::transfer::{TransferOp, upper_bound};
use crate::types::{Alias, Entry, EventKind, Millis, NamespaceState, Record, Revision};

/// How much history and log a namespace keeps.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Retention {
    /// Versions kept per key (at least 1).
    pub history_per_key: u64,
    /// Events kept per namespace log (at least 1).
    pub log_per_namespace: u64,
}

type BytesTable<'t, K> = Table<'t, K, &'static [u8]>;

/// The tables a batch writes, opened once per transaction.
pub(crate) struct WriteTables<'t> {
    namespaces: BytesTable<'t, &'static str>,
    entries: BytesTable<'t, (&'static str, &'static str)>,
    history: BytesTable<'t, (&'static str, &'static str, u64)>,
    log: BytesTable<'t, (&'static str, u64)>,
    aliases: BytesTable<'t, (&'static str, &'static str)>,
    attachments: BytesTable<'t, (&'static str, &'static str)>,
    records: BytesTable<'t, (&'static str, &'static str, &'static str)>,
    meta: BytesTable<'t, &'static str>,
    cluster: BytesTable<'t, &'static str>,
    replicas: BytesTable<'t, &'static str>,
    /// The batch's random seed, from which a namespace created in it takes its uid: random
    /// per batch, and logged with it, so recovery recreates the same uid.
    pub(crate) uid_seed: u64,
}

impl<'t> crate::transfer::RowTables for WriteTables<'t> {
    type ByNamespace = BytesTable<'t, &'static str>;
    type ByName = BytesTable<'t, (&'static str, &'static str)>;
    type History = BytesTable<'t, (&'static str, &'static str, u64)>;
    type Log = BytesTable<'t, (&'static str, u64)>;
    type Records = BytesTable<'t, (&'static str, &'static str, &'static str)>;
    crate::transfer::row_table_fields!();
}

impl<'t> WriteTables<'t> {
    /// Opens (creating if needed) every table a mutation may touch, for a batch whose new
    /// namespaces take their uid from `uid_seed`.
    pub(crate) fn open(txn: &'t WriteTransaction, uid_seed: u64) -> Result<Self, StoreError> {
        Ok(WriteTables {
            uid_seed,
            namespaces: txn.open_table(NAMESPACES)?,
            entries: txn.open_table(ENTRIES)?,
            history: txn.open_table(HISTORY)?,
            log: txn.open_table(LOG)?,
            aliases: txn.open_table(ALIASES)?,
            attachments: txn.open_table(ATTACHMENTS)?,
            records: txn.open_table(RECORDS)?,
            meta: txn.open_table(META)?,
            cluster: txn.open_table(CLUSTER)?,
            replicas: txn.open_table(REPLICAS)?,
        })
    }

    /// Records that the tables now contain writer batch `seq` (see [`crate::wal`]).
    pub(crate) fn mark_applied(&mut self, seq: u64) -> Result<(), StoreError> {
        self.meta
            .insert(META_WAL_APPLIED, seq.to_le_bytes().as_slice())?;
        Ok(())
    }
}

/// Applies one mutation at time `now`. A non-internal error means nothing was written.
pub(crate) fn apply(
    t: &mut WriteTables<'_>,
    mutation: Mutation,
    now: Millis,
    retention: Retention,
) -> Result<Applied, StoreError> {
    match mutation {
        Mutation::PutClusterMembers(bytes) => {
            t.meta.insert(META_CLUSTER_MEMBERS, bytes.as_slice())?;
            Ok(Applied::ClusterMembers)
        }
        Mutation::PutClusterRecords(records) => {
            for (key, bytes) in &records {
                t.cluster.insert(key.as_str(), bytes.as_slice())?;
            }
            Ok(Applied::ClusterRecords)
        }
        Mutation::Import { namespace, ops } => {
            import(t, &namespace, &ops).map(|()| Applied::Imported)
        }
        Mutation::PutAttachment {
            namespace,
            name,
            bytes,
        } => {
            // An attachment must be able to move with its namespace, and a handoff moves the
            // namespaces this node has state for: setting one on a namespace with no data yet
            // creates the namespace's state (revision 0, nothing in the log), so a subscriber
            // can be set up before the first write.
            match bytes {
                Some(bytes) => {
                    if t.namespaces.get(namespace.as_str())?.is_none() {
                        let state =
                            load_or_new_namespace(&t.namespaces, t.uid_seed, &namespace, now)?;
                        t.namespaces
                            .insert(namespace.as_str(), encode(&state).as_slice())?;
                    }
                    t.attachments
                        .insert((namespace.as_str(), name.as_str()), bytes.as_slice())?;
                }
                None => {
                    t.attachments.remove((namespace.as_str(), name.as_str()))?;
                }
            }
            Ok(Applied::Attachment)
        }
        Mutation::Put(req) => put(t, req, now, retention).map(Applied::Put),
        Mutation::Delete(req) => delete(t, req, now, retention).map(Applied::Deleted),
        Mutation::PutAlias {
            namespace,
            alias,
            target,
        } => put_alias(t, &namespace, &alias, &target, now, retention).map(Applied::AliasPut),
        Mutation::DeleteAlias { namespace, alias } => {
            delete_alias(t, &namespace, &alias, now, retention).map(Applied::AliasDeleted)
        }
        Mutation::PutRecord {
            put,
            skip_unchanged,
        } => put_record(t, put, skip_unchanged, now, retention).map(Applied::RecordPut),
        Mutation::DeleteRecord(req) => {
            delete_record(t, req, now, retention).map(Applied::RecordDeleted)
        }
        Mutation::DropNamespace { namespace } => {
            import(t, &namespace, &[TransferOp::ClearNamespace])?;
            t.replicas.remove(namespace.as_str())?;
            Ok(Applied::Dropped)
        }
        Mutation::Promise { namespace, epoch } => {
            let ns = namespace.as_str();
            let record = read_replica(&t.replicas, ns)?;
            let state = read_namespace(&t.namespaces, ns)?;
            let next = replica::promised(record.as_ref(), state.as_ref(), ns, epoch)?;
            t.replicas.insert(ns, encode_record(&next).as_slice())?;
            Ok(Applied::Replica(next))
        }
        Mutation::Append(append) => append_rows(t, &append).map(Applied::Replica),
        Mutation::AppendInSet {
            mut append,
            set_version,
        } => {
            append.set_version = set_version;
            append_rows(t, &append).map(Applied::Replica)
        }
        Mutation::Release {
            namespace,
            expected,
            revision,
        } => {
            let ns = namespace.as_str();
            let record = read_replica(&t.replicas, ns)?;
            let next = replica::released(record.as_ref(), &expected, ns)?;
            let now = read_namespace(&t.namespaces, ns)?.map_or(0, |s| s.revision);
            if now != revision {
                // Rows arrived since the caller looked (a handoff's copy, say): keep them.
                return Err(StoreError::NotReleased {
                    namespace: namespace.clone(),
                    why: format!("its revision moved from {revision} to {now}"),
                });
            }
            import(t, ns, &[TransferOp::ClearNamespace])?;
            t.replicas.insert(ns, encode_record(&next).as_slice())?;
            Ok(Applied::Replica(next))
        }
        Mutation::LabelCopy {
            namespace,
            epoch,
            giver,
        } => {
            let ns = namespace.as_str();
            let record = read_replica(&t.replicas, ns)?;
            let state = read_namespace(&t.namespaces, ns)?;
            let next = replica::labelled(record.as_ref(), state.as_ref(), epoch, &giver);
            t.replicas.insert(ns, encode_record(&next).as_slice())?;
            Ok(Applied::Replica(next))
        }
        Mutation::BeginEpoch {
            namespace,
            epoch,
            holder,
            replicas,
        } => begin_epoch(t, &namespace, epoch, &holder, replicas, LogPos::ZERO),
        Mutation::BeginEpochInSet {
            namespace,
            epoch,
            holder,
            replicas,
            set_version,
        } => begin_epoch(t, &namespace, epoch, &holder, replicas, set_version),
    }
}

/// Makes `holder` (this node) the namespace's holder at `epoch` with the set `replicas` of
/// version `set_version` (`replica::begun`).
fn begin_epoch(
    t: &mut WriteTables<'_>,
    ns: &str,
    epoch: u64,
    holder: &str,
    replicas: Vec<String>,
    set_version: LogPos,
) -> Result<Applied, StoreError> {
    let record = read_replica(&t.replicas, ns)?;
    let state = read_namespace(&t.namespaces, ns)?;
    let next = replica::begun(
        record.as_ref(),
        state.as_ref(),
        ns,
        epoch,
        holder,
        replicas,
        set_version,
    )?;
    t.replicas.insert(ns, encode_record(&next).as_slice())?;
    Ok(Applied::Replica(next))
}

/// Applies a follower's append: every check first (`check_append`: fence, base, the revision
/// the rows lead to, computed without writing), then the rows exactly as an import, then the
/// new replica record, all in the writer's transaction. A refused append has written nothing,
/// so the other mutations of its batch commit unaffected.
fn append_rows(
    t: &mut WriteTables<'_>,
    append: &ReplicaAppend,
) -> Result<ReplicaState, StoreError> {
    let ns = append.namespace.as_str();
    let record = read_replica(&t.replicas, ns)?;
    let state = read_namespace(&t.namespaces, ns)?;
    replica::check_append(record.as_ref(), state.as_ref(), append)?;
    import(t, ns, &append.ops)?;
    // `check_append` predicted the revision; should the rows ever disagree, this is a bug of
    // ours, and an internal error aborts the whole batch, so a wrong position is never stored.
    let after = read_namespace(&t.namespaces, ns)?.map_or(0, |s| s.revision);
    if after != append.to.revision {
        return Err(StoreError::Storage(format!(
            "append to namespace {ns:?} led to revision {after}, not the checked {}",
            append.to.revision
        )));
    }
    let next = replica::appended(record.as_ref(), append);
    t.replicas.insert(ns, encode_record(&next).as_slice())?;
    Ok(next)
}

fn read_replica(
    replicas: &BytesTable<'_, &'static str>,
    ns: &str,
) -> Result<Option<ReplicaState>, StoreError> {
    replicas
        .get(ns)?
        .map(|g| decode_record(g.value()))
        .transpose()
}

fn read_namespace(
    namespaces: &BytesTable<'_, &'static str>,
    ns: &str,
) -> Result<Option<NamespaceState>, StoreError> {
    namespaces.get(ns)?.map(|g| decode(g.value())).transpose()
}

/// Applies transfer ops in order. They were checked before they reached the writer
/// (`Store::import` and `Store::append` run `check_ops`; `Mutation` is crate-private, and
/// `DropNamespace` carries only `ClearNamespace`), so the one writer thread does not decode
/// every record of every append a second time.
fn import(t: &mut WriteTables<'_>, ns: &str, ops: &[TransferOp]) -> Result<(), StoreError> {
    let upper = upper_bound(ns);
    let upper = upper.as_str();
    for op in ops {
        match op {
            TransferOp::ClearNamespace => {
                t.namespaces.remove(ns)?;
                t.entries.retain_in((ns, "")..(upper, ""), |_, _| false)?;
                t.history
                    .retain_in((ns, "", 0)..(upper, "", 0), |_, _| false)?;
                t.log.retain_in((ns, 0)..=(ns, u64::MAX), |_, _| false)?;
                t.aliases.retain_in((ns, "")..(upper, ""), |_, _| false)?;
                t.attachments
                    .retain_in((ns, "")..(upper, ""), |_, _| false)?;
                t.records
                    .retain_in((ns, "", "")..(upper, "", ""), |_, _| false)?;
            }
            TransferOp::ClearAttachments => {
                t.attachments
                    .retain_in((ns, "")..(upper, ""), |_, _| false)?;
            }
            TransferOp::Attachment { name, record } => {
                t.attachments
                    .insert((ns, name.as_str()), record.as_slice())?;
            }
            TransferOp::ClearKey { key } => {
                let key = key.as_str();
                t.entries.remove((ns, key))?;
                t.history
                    .retain_in((ns, key, 0)..=(ns, key, u64::MAX), |_, _| false)?;
            }
            TransferOp::ClearAlias { alias } => {
                t.aliases.remove((ns, alias.as_str()))?;
            }
            TransferOp::ClearEntry { key } => {
                t.entries.remove((ns, key.as_str()))?;
            }
            TransferOp::TrimHistory { key, before } => {
                let key = key.as_str();
                let stale: Vec<u64> = t
                    .history
                    .range((ns, key, 0)..(ns, key, *before))?
                    .map(|item| item.map(|(k, _)| k.value().2))
                    .collect::<Result<_, _>>()?;
                for version in stale {
                    t.history.remove((ns, key, version))?;
                }
            }
            TransferOp::TrimLog { before } => {
                // Point removals of the few rows trimmed since the last catch-up: cheaper than
                // a `retain_in` pass, which every append of a follower would pay.
                let stale: Vec<u64> = t
                    .log
                    .range((ns, 0)..(ns, *before))?
                    .map(|item| item.map(|(k, _)| k.value().1))
                    .collect::<Result<_, _>>()?;
                for revision in stale {
                    t.log.remove((ns, revision))?;
                }
            }
            TransferOp::State { record } => {
                t.namespaces.insert(ns, record.as_slice())?;
            }
            TransferOp::Entry { key, record } => {
                t.entries.insert((ns, key.as_str()), record.as_slice())?;
            }
            TransferOp::History {
                key,
                version,
                record,
            } => {
                t.history
                    .insert((ns, key.as_str(), *version), record.as_slice())?;
            }
            TransferOp::Log { revision, record } => {
                t.log.insert((ns, *revision), record.as_slice())?;
            }
            TransferOp::Alias { alias, record } => {
                t.aliases.insert((ns, alias.as_str()), record.as_slice())?;
            }
            TransferOp::ClearRecord { kind, name } => {
                t.records.remove((ns, kind.as_str(), name.as_str()))?;
            }
            TransferOp::Record { kind, name, record } => {
                t.records
                    .insert((ns, kind.as_str(), name.as_str()), record.as_slice())?;
            }
        }
    }
    Ok(())
}

fn put(
    t: &mut WriteTables<'_>,
    req: PutRequest,
    now: Millis,
    retention: Retention,
) -> Result<Entry, StoreError> {
    let ns = req.namespace.as_str();
    let key = req.key.as_str();
    // Checks first: nothing below this block may fail for a reason that is the caller's.
    if t.aliases.get((ns, key))?.is_some() {
        return Err(StoreError::NameTaken(format!(
            "{key:?} is an alias in namespace {ns:?}: write to its target, or delete the alias first"
        )));
    }
    let current = read_entry(&t.entries, ns, key)?;
    let current_version = current.as_ref().map(|e| e.version);
    match (req.mode, current_version) {
        (WriteMode::Create, Some(version)) => {
            return Err(StoreError::AlreadyExists {
                key: req.key,
                version,
            });
        }
        (WriteMode::Update, None) => return Err(StoreError::DoesNotExist { key: req.key }),
        _ => {}
    }
    check_expected_version(key, req.if_version, current_version)?;

    let mut state = load_or_new_namespace(&t.namespaces, t.uid_seed, ns, now)?;
    let revision = state.revision + 1;
    let version = match current_version {
        Some(v) => v + 1,
        None => last_history_version(&t.history, ns, key)? + 1,
    };
    let created_at = current.as_ref().map_or(now, |e| e.created_at);
    let record = EntryRecord {
        value: req.value,
        codec: req.codec,
        version,
        revision,
        created_at,
        updated_at: now,
    };
    t.entries.insert((ns, key), encode(&record).as_slice())?;
    let history = VersionRecord {
        value: Some(record.value.clone()),
        codec: Some(record.codec.clone()),
        revision,
        at: now,
    };
    record_version(t, ns, key, version, &history, retention)?;
    if current.is_none() {
        state.key_count += 1;
    }
    let event = EventKind::Set {
        key: key.to_string(),
        version,
        value: record.value.clone(),
        codec: record.codec.clone(),
    };
    append_event(t, &mut state, revision, event, now, retention)?;
    Ok(Entry {
        namespace: req.namespace,
        key: req.key,
        value: record.value,
        codec: record.codec,
        version,
        revision,
        created_at,
        updated_at: now,
    })
}

fn delete(
    t: &mut WriteTables<'_>,
    req: DeleteRequest,
    now: Millis,
    retention: Retention,
) -> Result<Deleted, StoreError> {
    let ns = req.namespace.as_str();
    let key = req.key.as_str();
    if t.aliases.get((ns, key))?.is_some() {
        return Err(StoreError::NameTaken(format!(
            "{key:?} is an alias in namespace {ns:?}: delete it through the aliases API"
        )));
    }
    let Some(current) = read_entry(&t.entries, ns, key)? else {
        return Err(StoreError::KeyNotFound {
            namespace: req.namespace,
            key: req.key,
        });
    };
    check_expected_version(key, req.if_version, Some(current.version))?;

    let mut state = load_or_new_namespace(&t.namespaces, t.uid_seed, ns, now)?;
    let revision = state.revision + 1;
    let version = current.version + 1;
    t.entries.remove((ns, key))?;
    let tombstone = VersionRecord {
        value: None,
        codec: None,
        revision,
        at: now,
    };
    record_version(t, ns, key, version, &tombstone, retention)?;
    state.key_count = state.key_count.saturating_sub(1);
    let event = EventKind::Delete {
        key: key.to_string(),
        version,
    };
    append_event(t, &mut state, revision, event, now, retention)?;
    Ok(Deleted {
        namespace: req.namespace,
        key: req.key,
        version,
        revision,
    })
}

fn put_alias(
    t: &mut WriteTables<'_>,
    ns: &str,
    alias: &str,
    target: &str,
    now: Millis,
    retention: Retention,
) -> Result<AliasPut, StoreError> {
    if let Some(existing) = t.aliases.get((ns, alias))? {
        let existing: AliasRecord = decode(existing.value())?;
        if existing.target == target {
            let alias = to_alias(ns, alias, existing);
            return Ok(AliasPut {
                alias,
                created: false,
            });
        }
        return Err(StoreError::NameTaken(format!(
            "alias {alias:?} already points to {:?}: delete it before pointing it elsewhere",
            existing.target
        )));
    }
    if t.entries.get((ns, alias))?.is_some() {
        return Err(StoreError::NameTaken(format!(
            "{alias:?} is a key in namespace {ns:?}; an alias may not shadow a key"
        )));
    }
    if t.aliases.get((ns, target))?.is_some() {
        return Err(StoreError::Invalid(format!(
            "target {target:?} is itself an alias; aliases must point at keys"
        )));
    }
    if t.entries.get((ns, target))?.is_none() {
        return Err(StoreError::KeyNotFound {
            namespace: ns.to_string(),
            key: target.to_string(),
        });
    }

    let mut state = load_or_new_namespace(&t.namespaces, t.uid_seed, ns, now)?;
    let revision = state.revision + 1;
    let record = AliasRecord {
        target: target.to_string(),
        revision,
        created_at: now,
    };
    t.aliases.insert((ns, alias), encode(&record).as_slice())?;
    state.alias_count += 1;
    let event = EventKind::AliasSet {
        alias: alias.to_string(),
        target: target.to_string(),
    };
    append_event(t, &mut state, revision, event, now, retention)?;
    Ok(AliasPut {
        alias: to_alias(ns, alias, record),
        created: true,
    })
}

fn delete_alias(
    t: &mut WriteTables<'_>,
    ns: &str,
    alias: &str,
    now: Millis,
    retention: Retention,
) -> Result<Alias, StoreError> {
    let Some(existing) = t.aliases.get((ns, alias))?.map(|g| g.value().to_vec()) else {
        return Err(StoreError::AliasNotFound {
            namespace: ns.to_string(),
            alias: alias.to_string(),
        });
    };
    let existing: AliasRecord = decode(&existing)?;
    let mut state = load_or_new_namespace(&t.namespaces, t.uid_seed, ns, now)?;
    let revision = state.revision + 1;
    t.aliases.remove((ns, alias))?;
    state.alias_count = state.alias_count.saturating_sub(1);
    let event = EventKind::AliasDelete {
        alias: alias.to_string(),
    };
    append_event(t, &mut state, revision, event, now, retention)?;
    Ok(to_alias(ns, alias, existing))
}

fn put_record(
    t: &mut WriteTables<'_>,
    req: RecordPut,
    skip_unchanged: bool,
    now: Millis,
    retention: Retention,
) -> Result<RecordWrite, StoreError> {
    let ns = req.namespace.as_str();
    let (kind, name) = (req.kind.as_str(), req.name.as_str());
    // Checks first: nothing below this block may fail for a reason that is the caller's.
    let current = read_record(&t.records, ns, kind, name)?;
    check_record_version(
        kind,
        name,
        req.if_version,
        current.as_ref().map(|r| r.version),
    )?;
    let current = match current {
        Some(row) if skip_unchanged && row.value == req.value => {
            return Ok(RecordWrite {
                record: to_record(ns, kind, name, row),
                written: false,
            });
        }
        other => other,
    };

    let mut state = load_or_new_namespace(&t.namespaces, t.uid_seed, ns, now)?;
    let revision = state.revision + 1;
    let row = RecordRow {
        value: req.value,
        version: current.as_ref().map_or(1, |r| r.version + 1),
        revision,
        created_at: current.as_ref().map_or(now, |r| r.created_at),
        updated_at: now,
    };
    t.records
        .insert((ns, kind, name), encode(&row).as_slice())?;
    let event = EventKind::RecordSet {
        kind: kind.to_string(),
        name: name.to_string(),
        version: row.version,
        value: row.value.clone(),
    };
    append_event(t, &mut state, revision, event, now, retention)?;
    Ok(RecordWrite {
        record: to_record(ns, kind, name, row),
        written: true,
    })
}

fn delete_record(
    t: &mut WriteTables<'_>,
    req: RecordDelete,
    now: Millis,
    retention: Retention,
) -> Result<RecordDeleted, StoreError> {
    let ns = req.namespace.as_str();
    let (kind, name) = (req.kind.as_str(), req.name.as_str());
    let Some(current) = read_record(&t.records, ns, kind, name)? else {
        return Err(StoreError::RecordNotFound {
            namespace: req.namespace,
            kind: req.kind,
            name: req.name,
        });
    };
    check_record_version(kind, name, req.if_version, Some(current.version))?;

    let mut state = load_or_new_namespace(&t.namespaces, t.uid_seed, ns, now)?;
    let revision = state.revision + 1;
    t.records.remove((ns, kind, name))?;
    let event = EventKind::RecordDelete {
        kind: kind.to_string(),
        name: name.to_string(),
        version: current.version,
    };
    append_event(t, &mut state, revision, event, now, retention)?;
    Ok(RecordDeleted {
        namespace: req.namespace,
        kind: req.kind,
        name: req.name,
        version: current.version,
        revision,
    })
}

fn check_record_version(
    kind: &str,
    name: &str,
    expected: Option<u64>,
    actual: Option<u64>,
) -> Result<(), StoreError> {
    match check_expected_version(name, expected, actual) {
        Err(StoreError::VersionMismatch {
            expected, actual, ..
        }) => Err(StoreError::RecordVersionMismatch {
            kind: kind.to_string(),
            name: name.to_string(),
            expected,
            actual,
        }),
        other => other,
    }
}

fn read_record(
    records: &impl ReadableTable<(&'static str, &'static str, &'static str), &'static [u8]>,
    ns: &str,
    kind: &str,
    name: &str,
) -> Result<Option<RecordRow>, StoreError> {
    records
        .get((ns, kind, name))?
        .map(|g| decode(g.value()))
        .transpose()
}

pub(crate) fn to_record(ns: &str, kind: &str, name: &str, row: RecordRow) -> Record {
    Record {
        namespace: ns.to_string(),
        kind: kind.to_string(),
        name: name.to_string(),
        value: row.value,
        version: row.version,
        revision: row.revision,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

fn check_expected_version(
    key: &str,
    expected: Option<u64>,
    actual: Option<u64>,
) -> Result<(), StoreError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let matches = match actual {
        Some(v) => v == expected,
        None => expected == 0,
    };
    if matches {
        Ok(())
    } else {
        Err(StoreError::VersionMismatch {
            key: key.to_string(),
            expected,
            actual,
        })
    }
}

pub(crate) fn to_alias(ns: &str, alias: &str, record: AliasRecord) -> Alias {
    Alias {
        namespace: ns.to_string(),
        alias: alias.to_string(),
        target: record.target,
        revision: record.revision,
        created_at: record.created_at,
    }
}

fn read_entry(
    entries: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    ns: &str,
    key: &str,
) -> Result<Option<EntryRecord>, StoreError> {
    entries
        .get((ns, key))?
        .map(|g| decode(g.value()))
        .transpose()
}

fn load_or_new_namespace(
    namespaces: &BytesTable<'_, &'static str>,
    uid_seed: u64,
    ns: &str,
    now: Millis,
) -> Result<NamespaceState, StoreError> {
    if let Some(bytes) = namespaces.get(ns)? {
        return decode(bytes.value());
    }
    Ok(NamespaceState {
        name: ns.to_string(),
        uid: namespace_uid(uid_seed, ns),
        epoch: 1,
        revision: 0,
        key_count: 0,
        alias_count: 0,
        log_start: 1,
        created_at: now,
        updated_at: now,
    })
}

/// A new namespace's uid: the batch's random seed mixed with the name (FNV-1a, then
/// SplitMix64's finalizer), so two namespaces created in one batch differ, and applying the
/// batch again in recovery gives the same uid.
fn namespace_uid(seed: u64, ns: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in ns.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    crate::writer::mix(seed ^ hash)
}

fn last_history_version(
    history: &BytesTable<'_, (&'static str, &'static str, u64)>,
    ns: &str,
    key: &str,
) -> Result<u64, StoreError> {
    let last = history
        .range((ns, key, 0)..=(ns, key, u64::MAX))?
        .next_back()
        .transpose()?;
    Ok(last.map_or(0, |(k, _)| k.value().2))
}

/// Stores `version` of a key and drops versions beyond the retention.
fn record_version(
    t: &mut WriteTables<'_>,
    ns: &str,
    key: &str,
    version: u64,
    record: &VersionRecord,
    retention: Retention,
) -> Result<(), StoreError> {
    t.history
        .insert((ns, key, version), encode(record).as_slice())?;
    let keep = retention.history_per_key.max(1);
    if version > keep {
        let oldest_kept = version - keep + 1;
        let stale: Vec<u64> = t
            .history
            .range((ns, key, 0)..(ns, key, oldest_kept))?
            .map(|item| item.map(|(k, _)| k.value().2))
            .collect::<Result<_, _>>()?;
        for v in stale {
            t.history.remove((ns, key, v))?;
        }
    }
    Ok(())
}

/// Appends the event for `revision`, compacts the log to its retention, and saves the state.
fn append_event(
    t: &mut WriteTables<'_>,
    state: &mut NamespaceState,
    revision: Revision,
    kind: EventKind,
    now: Millis,
    retention: Retention,
) -> Result<(), StoreError> {
    let ns = state.name.clone();
    let ns = ns.as_str();
    debug_assert_eq!(revision, state.revision + 1, "revisions have no gaps");
    t.log.insert(
        (ns, revision),
        encode(&EventRecord { at: now, kind }).as_slice(),
    )?;
    state.revision = revision;
    state.updated_at = now;
    let keep = retention.log_per_namespace.max(1);
    if revision - state.log_start + 1 > keep {
        let new_start = revision - keep + 1;
        for r in state.log_start..new_start {
            t.log.remove((ns, r))?;
        }
        state.log_start = new_start;
    }
    t.namespaces.insert(ns, encode(state).as_slice())?;
    Ok(())
}
