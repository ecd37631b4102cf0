//! [`Store`]: the node's one redb database, its writer and its reads.
//!
//! One room per concern:
//!
//! - `schema`: the tables created at open, the schema version, the node id and the generation
//!   counter (settled in one durable commit before the store is handed out).
//! - `writes`: every mutation: checked on the caller's task, then queued to the group-commit
//!   writer and answered after its durable commit.
//! - `reads`: synchronous read transactions and the record-to-type conversions they need.
//! - `replicas`: this node's replica state of a namespace (promise, position, set) and the
//!   follower's appends.

mod reads;
mod replicas;
mod schema;
mod writes;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::Database;

use crate::apply::Retention;
use crate::error::StoreError;
use crate::feed::Feed;
use crate::wal::{self, Wal};
use crate::writer::{CommitObserver, GroupCommitWriter, LogState, WriterSettings, recover};

pub use schema::{GENERATION_STEP, validate_node_id};
use schema::{Settled, applied_batch, init_schema};

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
/// Writes are `async` and resolve only after they are durable. Reads are synchronous redb
/// read transactions: call them from a blocking context (`spawn_blocking`) in async code. A
/// read of a namespace whose acknowledged appends still wait in the writer's open transaction
/// first waits for that commit (see [`crate::visibility`]), so it may block for a commit.
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
    /// Each batch's changes of the namespaces replicated from here ([`crate::feed`]).
    feed: Arc<Feed>,
}

impl Store {
    /// Opens (or creates) the database at `path` and its write-ahead log at `<path>.wal`
    /// (see [`crate::wal`]), applying the batches a crash left only in the log.
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
        let Settled {
            node_id,
            generation,
            database_uid,
        } = init_schema(&db, node_id)?;
        let wal = Wal::open(&wal::path_for(path), database_uid)?;
        let applied = recover(&db, &wal, applied_batch(&db)?)?;
        let log = LogState::new(wal, applied)?;
        let db = Arc::new(db);
        let retention = Retention {
            history_per_key: options.history_per_key.max(1),
            log_per_namespace: options.log_per_namespace.max(1),
        };
        let feed = Arc::new(Feed::default());
        let writer = GroupCommitWriter::start(
            Arc::clone(&db),
            WriterSettings {
                max_batch: options.max_batch,
                queue_depth: options.queue_depth,
                retention,
                observer: options.observer.clone(),
                log,
                feed: Arc::clone(&feed),
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
                feed,
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
}
