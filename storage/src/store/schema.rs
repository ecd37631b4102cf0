//! The schema: the tables every open creates, the schema version, the node id and the
//! generation counter, all settled in one durable commit at open.

use redb::{Database, ReadableTable};

use crate::error::StoreError;
use crate::model::validate_namespace;
use crate::records::{
    ALIASES, ATTACHMENTS, CLUSTER, ENTRIES, GenerationRecord, HISTORY, LOG, META,
    META_DATABASE_UID, META_GENERATION, META_NODE_ID, META_SCHEMA, META_WAL_APPLIED, NAMESPACES,
    RECORDS, REPLICAS, decode, encode,
};

/// The schema this build creates and understands.
const SCHEMA_VERSION: u8 = 1;

/// How far the generation counter moves at each open. The node's SWIM identity takes the
/// generation, and foca renews an identity declared down within one life by adding 1
/// (`Identity::renew`): leaving 1024 values per life keeps the next start above every renewal
/// of the previous one, so a restarted node never comes back as an identity its peers already
/// saw (and may hold as down).
pub const GENERATION_STEP: u64 = 1024;

/// Creates every table, checks the schema version, settles the node id and takes the next
/// generation (see [`Store::generation`](super::Store::generation)), in one durable commit.
/// What [`init_schema`] settled: the node id, this open's generation, and the database's uid
/// (random, made once with the database; the write-ahead log is bound to it).
pub(super) struct Settled {
    pub node_id: String,
    pub generation: u64,
    pub database_uid: u64,
}

pub(super) fn init_schema(db: &Database, requested: Option<&str>) -> Result<Settled, StoreError> {
    // Fsynced before the store is handed out: no two opens can ever take the same
    // generation, even across a crash.
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    let node_id;
    let generation;
    let database_uid;
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
        let stored_uid = meta
            .get(META_DATABASE_UID)?
            .map(|v| <[u8; 8]>::try_from(v.value()).map(u64::from_le_bytes));
        database_uid = match stored_uid {
            Some(Ok(uid)) => uid,
            Some(Err(_)) => {
                return Err(StoreError::Corrupt(
                    "the database uid is not 8 bytes".to_string(),
                ));
            }
            None => {
                let uid = crate::writer::random_u64()?;
                meta.insert(META_DATABASE_UID, uid.to_le_bytes().as_slice())?;
                uid
            }
        };
        txn.open_table(NAMESPACES)?;
        txn.open_table(ENTRIES)?;
        txn.open_table(HISTORY)?;
        txn.open_table(LOG)?;
        txn.open_table(ALIASES)?;
        txn.open_table(CLUSTER)?;
        txn.open_table(ATTACHMENTS)?;
        // Added after schema 1 shipped: older data dirs simply get the (empty) table here.
        txn.open_table(RECORDS)?;
        txn.open_table(REPLICAS)?;
    }
    txn.commit()?;
    Ok(Settled {
        node_id,
        generation,
        database_uid,
    })
}

/// The generation after `last` (the counter's stored value, `None` when there is none yet),
/// with the wall clock at `now_millis`: see [`Store::generation`](super::Store::generation).
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

/// The last writer batch the tables contain (0 before the first; see [`crate::wal`]).
pub(super) fn applied_batch(db: &Database) -> Result<u64, StoreError> {
    let txn = redb::ReadableDatabase::begin_read(db)?;
    let meta = txn.open_table(META)?;
    match meta.get(META_WAL_APPLIED)? {
        None => Ok(0),
        Some(bytes) => bytes
            .value()
            .try_into()
            .map(u64::from_le_bytes)
            .map_err(|_| StoreError::Corrupt("the applied-batch mark is not 8 bytes".to_string())),
    }
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
