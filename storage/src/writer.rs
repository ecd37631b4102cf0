//! The group-commit writer: one thread owns every redb write transaction.
//!
//! Callers queue a [`Mutation`] with a oneshot for the answer. The thread takes the first
//! request, then everything else already waiting (up to `max_batch`), applies them in order in
//! one transaction, commits once with `Durability::Immediate`, and only then answers each caller.
//! Under load many writes share one fsync; alone, a write pays one fsync and no added latency.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{Database, Durability};
use tokio::sync::{mpsc, oneshot};

use crate::apply::{Retention, WriteTables, apply};
use crate::error::StoreError;
use crate::mutation::{Applied, Mutation};
use crate::types::Millis;

/// What one commit looked like, for metrics.
#[derive(Clone, Copy, Debug)]
pub struct CommitStats {
    /// How many requests the transaction carried.
    pub batch_size: usize,
    /// How many of them were rejected (and so changed nothing).
    pub rejected: usize,
    /// Time from opening the transaction to the end of the durable commit.
    pub duration: Duration,
    /// Time the batch's oldest request waited in the queue before the batch started.
    pub queue_wait: Duration,
    /// False when the commit failed and every request in the batch got a storage error.
    pub committed: bool,
}

/// Receives a [`CommitStats`] after every transaction; the node turns these into metrics.
/// Called on the writer thread: implementations must be quick and must not block.
pub trait CommitObserver: Send + Sync {
    /// One transaction finished (committed or not).
    fn on_commit(&self, stats: &CommitStats);
}

pub(crate) struct WriteRequest {
    mutation: Mutation,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Applied, StoreError>>,
}

/// The handle callers use to reach the writer thread; dropping the last one stops the thread
/// after it has committed and answered everything already queued.
pub(crate) struct GroupCommitWriter {
    queue: Option<mpsc::Sender<WriteRequest>>,
    thread: Option<JoinHandle<()>>,
}

/// Settings of the writer thread.
pub(crate) struct WriterSettings {
    pub max_batch: usize,
    pub queue_depth: usize,
    pub retention: Retention,
    pub observer: Option<Arc<dyn CommitObserver>>,
}

impl GroupCommitWriter {
    /// Starts the writer thread over `db`.
    pub(crate) fn start(db: Arc<Database>, settings: WriterSettings) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel(settings.queue_depth.max(1));
        let thread = std::thread::Builder::new()
            .name("cfgnode-writer".to_string())
            .spawn(move || run(db, rx, settings))
            .map_err(|e| StoreError::Storage(format!("cannot start the writer thread: {e}")))?;
        Ok(GroupCommitWriter {
            queue: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues a mutation and waits for its durable commit.
    pub(crate) async fn submit(&self, mutation: Mutation) -> Result<Applied, StoreError> {
        let queue = self.queue.as_ref().ok_or(StoreError::WriterStopped)?;
        let (reply, answer) = oneshot::channel();
        let request = WriteRequest {
            mutation,
            enqueued: Instant::now(),
            reply,
        };
        queue
            .send(request)
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }
}

impl Drop for GroupCommitWriter {
    fn drop(&mut self) {
        // Closing the queue lets the thread drain what is queued and exit; joining makes "the
        // store is dropped" mean "every queued write is committed and answered".
        self.queue.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the storage writer thread panicked");
        }
    }
}

fn run(db: Arc<Database>, mut rx: mpsc::Receiver<WriteRequest>, settings: WriterSettings) {
    let max_batch = settings.max_batch.max(1);
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        commit_batch(
            &db,
            &mut batch,
            settings.retention,
            settings.observer.as_deref(),
        );
    }
    tracing::debug!("storage writer stopped: queue closed and drained");
}

/// Applies and commits one batch, tells the observer, then answers every request in it (so a
/// caller that saw its acknowledgement also sees the commit in the metrics).
fn commit_batch(
    db: &Database,
    batch: &mut Vec<WriteRequest>,
    retention: Retention,
    observer: Option<&dyn CommitObserver>,
) {
    let started = Instant::now();
    let queue_wait = batch
        .iter()
        .map(|r| started - r.enqueued)
        .max()
        .unwrap_or_default();
    let batch_size = batch.len();
    let (mutations, replies): (Vec<_>, Vec<_>) =
        batch.drain(..).map(|r| (r.mutation, r.reply)).unzip();
    let now = now_millis();
    let outcome = apply_batch(db, mutations, now, retention);
    let duration = started.elapsed();
    match outcome {
        Ok(results) => {
            let rejected = results.iter().filter(|r| r.is_err()).count();
            let stats = CommitStats {
                batch_size,
                rejected,
                duration,
                queue_wait,
                committed: true,
            };
            if let Some(observer) = observer {
                observer.on_commit(&stats);
            }
            for (reply, result) in replies.into_iter().zip(results) {
                // A caller that gave up (timeout, disconnect) has dropped its receiver; the
                // write is committed all the same.
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, batch_size, "commit failed; every write in the batch is refused");
            let stats = CommitStats {
                batch_size,
                rejected: batch_size,
                duration,
                queue_wait,
                committed: false,
            };
            if let Some(observer) = observer {
                observer.on_commit(&stats);
            }
            let failure = match &e {
                StoreError::Storage(message) => message.clone(),
                other => other.to_string(),
            };
            for reply in replies {
                let _ = reply.send(Err(StoreError::Storage(failure.clone())));
            }
        }
    }
}

/// Runs every mutation in one durable transaction. `Err` means nothing was committed.
fn apply_batch(
    db: &Database,
    mutations: Vec<Mutation>,
    now: Millis,
    retention: Retention,
) -> Result<Vec<Result<Applied, StoreError>>, StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let mut results = Vec::with_capacity(mutations.len());
    {
        let mut tables = WriteTables::open(&txn)?;
        for mutation in mutations {
            match apply(&mut tables, mutation, now, retention) {
                // Part of this mutation may be written: the transaction is dropped (aborted)
                // and the whole batch fails; nothing in it was acknowledged.
                Err(e) if e.is_internal() => return Err(e),
                result => results.push(result),
            }
        }
    }
    txn.commit()?;
    Ok(results)
}

/// The wall clock in milliseconds since the Unix epoch.
pub(crate) fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
