//! On-disk records and redb table definitions.
//!
//! Every record value is one format-version byte followed by a bincode 2 (serde) body, so a
//! future format can be told apart and migrated instead of misread.

use redb::TableDefinition;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::model::Codec;
use crate::types::{EventKind, Millis, Revision};

/// The record format this build writes and reads.
pub(crate) const FORMAT_VERSION: u8 = 1;

/// Node-wide facts: schema version, node id, generation counter, cluster members.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// namespace -> [`crate::types::NamespaceState`].
pub(crate) const NAMESPACES: TableDefinition<&str, &[u8]> = TableDefinition::new("namespaces");
/// (namespace, key) -> [`EntryRecord`].
pub(crate) const ENTRIES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("entries");
/// (namespace, key, version) -> [`VersionRecord`].
pub(crate) const HISTORY: TableDefinition<(&str, &str, u64), &[u8]> =
    TableDefinition::new("history");
/// (namespace, revision) -> [`EventRecord`].
pub(crate) const LOG: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("log");
/// (namespace, alias) -> [`AliasRecord`].
pub(crate) const ALIASES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("aliases");

/// (namespace, kind, name) -> [`RecordRow`]: the namespace's records (registry instances, routes,
/// ...), data of the namespace like entries (revision, log) but with no per-record history.
pub(crate) const RECORDS: TableDefinition<(&str, &str, &str), &[u8]> =
    TableDefinition::new("records");

/// (namespace, name) -> bytes owned by the node (webhooks and their delivery cursors): they
/// live and move with the namespace but are not part of its data (no revision, no log).
pub(crate) const ATTACHMENTS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("attachments");

/// namespace -> [`crate::ReplicaState`]: this node's own replica state of the namespace
/// (promise, position, holder, set). Per node: never exported, imported or cleared by a copy.
pub(crate) const REPLICAS: TableDefinition<&str, &[u8]> = TableDefinition::new("replicas");

/// Cluster facts kept for the node (directory records, pins, claims): opaque key -> bytes.
pub(crate) const CLUSTER: TableDefinition<&str, &[u8]> = TableDefinition::new("cluster");

/// Meta key holding the schema version (one byte).
pub(crate) const META_SCHEMA: &str = "schema";
/// Meta key holding the node id (UTF-8).
pub(crate) const META_NODE_ID: &str = "node_id";
/// Meta key holding the last known cluster members (opaque bytes owned by the node).
pub(crate) const META_CLUSTER_MEMBERS: &str = "cluster_members";
/// Meta key holding the node's generation counter ([`GenerationRecord`]).
pub(crate) const META_GENERATION: &str = "generation";
/// Meta key holding the database's uid (8 random bytes, made with the database): the
/// write-ahead log's checksums include it, so a log left by another database is never replayed.
pub(crate) const META_DATABASE_UID: &str = "database_uid";
/// Meta key holding the sequence number of the last writer batch the tables contain (u64 LE),
/// written by every batch: recovery replays the write-ahead log's batches after it.
pub(crate) const META_WAL_APPLIED: &str = "wal_applied";

/// The generation the node took at its last start: the next start takes a higher one (see
/// `Store::generation`).
#[derive(Serialize, Deserialize)]
pub(crate) struct GenerationRecord {
    pub last: u64,
}

/// A live key's current version.
#[derive(Serialize, Deserialize)]
pub(crate) struct EntryRecord {
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub codec: Codec,
    pub version: u64,
    pub revision: Revision,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// One retained version of a key; `value: None` records a delete.
#[derive(Serialize, Deserialize)]
pub(crate) struct VersionRecord {
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    pub codec: Option<Codec>,
    pub revision: Revision,
    pub at: Millis,
}

/// An alias's target.
#[derive(Serialize, Deserialize)]
pub(crate) struct AliasRecord {
    pub target: String,
    pub revision: Revision,
    pub created_at: Millis,
}

/// A record's current value (see [`crate::Record`]). No history: the namespace log is the only
/// trace of earlier values.
#[derive(Serialize, Deserialize)]
pub(crate) struct RecordRow {
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub version: u64,
    pub revision: Revision,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// One log entry.
#[derive(Serialize, Deserialize)]
pub(crate) struct EventRecord {
    pub at: Millis,
    pub kind: EventKind,
}

/// Encodes a record: the format byte, then bincode.
pub(crate) fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    // Encoding into a Vec only fails for types serde cannot represent; ours are plain data.
    bincode::serde::encode_into_std_write(record, &mut out, bincode::config::standard())
        .expect("plain-data records always encode into a Vec");
    out
}

/// Decodes a record written by [`encode`], refusing other format versions.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, body)) => {
            let (record, _) = bincode::serde::decode_from_slice(body, bincode::config::standard())
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Ok(record)
        }
        Some((other, _)) => Err(StoreError::Corrupt(format!(
            "record format {other}, this build reads format {FORMAT_VERSION}"
        ))),
        None => Err(StoreError::Corrupt("empty record".to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_check() {
        let rec = AliasRecord {
            target: "a/b".into(),
            revision: 7,
            created_at: 9,
        };
        let bytes = encode(&rec);
        let back: AliasRecord = decode(&bytes).expect("decodes");
        assert_eq!(back.target, "a/b");
        assert_eq!(back.revision, 7);
        let mut wrong = bytes.clone();
        wrong[0] = 99;
        assert!(matches!(
            decode::<AliasRecord>(&wrong),
            Err(StoreError::Corrupt(_))
        ));
        assert!(decode::<AliasRecord>(&[]).is_err());
        assert!(decode::<AliasRecord>(&[FORMAT_VERSION, 0xff, 0xff]).is_err());
    }
}
