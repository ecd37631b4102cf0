//! The group-commit writer: one thread owns every redb write transaction.
//!
//! Callers queue a [`Mutation`] with a oneshot for the answer. The thread takes the first
//! request, then everything else already waiting (up to `max_batch`), applies them in order in
//! one transaction, makes the batch durable once, and only then answers each caller. Under load
//! many writes share one sync; alone, a write pays one sync and no added latency.
//!
//! A batch is made durable by the write-ahead log ([`crate::wal`]): its mutations are appended
//! and synced there, and the transaction commits without redb's own sync. At least every
//! [`CHECKPOINT_EVERY`] a batch is committed with `Durability::Immediate` instead (a
//! checkpoint), and the log starts over. Recovery ([`recover`]) applies the logged batches a
//! crash left out of redb again, before the writer starts.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use crate::apply::{Retention, WriteTables, apply};
use crate::error::StoreError;
use crate::feed::{BatchChanges, BatchWatch, Feed};
use crate::mutation::{Applied, Mutation};
use crate::types::Millis;
use crate::visibility::{Deferred, Scope};
use crate::wal::Wal;

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
    /// True when the batch was made durable by a durable redb commit (a checkpoint), false
    /// when by the write-ahead log (see [`crate::wal`]).
    pub checkpoint: bool,
    /// True when the batch (followers' appends and writes of namespaces replicated from here
    /// only) was logged and answered but left in the open transaction, to be committed with later ones (see [`crate::visibility`]).
    pub deferred: bool,
}

/// Receives a [`CommitStats`] after every transaction; the node turns these into metrics.
/// Called on the writer thread: implementations must be quick and must not block.
pub trait CommitObserver: Send + Sync {
    /// One transaction finished (committed or not).
    fn on_commit(&self, stats: &CommitStats);

    /// The open transaction of deferred appends was committed, `held` after its first batch,
    /// for the reason `why`. Not called for a batch that committed it along (its `on_commit`
    /// says so).
    fn on_open_commit(&self, why: Flush, held: Duration) {
        let _ = (why, held);
    }
}

pub(crate) struct WriteRequest {
    mutation: Mutation,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Applied, StoreError>>,
}

/// What the writer's queue carries.
enum Request {
    /// A mutation to apply and answer.
    Write(WriteRequest),
    /// A read waits for the open transaction's commit ([`crate::visibility`]): wakes the
    /// writer if it is waiting for requests.
    Wake,
}

/// The handle callers use to reach the writer thread; dropping the last one stops the thread
/// after it has committed and answered everything already queued.
pub(crate) struct GroupCommitWriter {
    queue: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    deferred: Arc<Deferred>,
}

/// Settings of the writer thread.
pub(crate) struct WriterSettings {
    pub max_batch: usize,
    pub queue_depth: usize,
    pub retention: Retention,
    pub observer: Option<Arc<dyn CommitObserver>>,
    /// The write-ahead log, recovered.
    pub log: LogState,
    /// The changes feed the writer fills for the namespaces it follows ([`crate::feed`]).
    pub feed: Arc<Feed>,
}

impl GroupCommitWriter {
    /// Starts the writer thread over `db`.
    pub(crate) fn start(db: Arc<Database>, settings: WriterSettings) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel(settings.queue_depth.max(1));
        let deferred = Arc::new(Deferred::default());
        let shared = Arc::clone(&deferred);
        // The writer's own clock, for its timed wait while a transaction is open: a
        // current-thread runtime with timers only, driven by this thread alone.
        let timer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| StoreError::Storage(format!("cannot start the writer's timer: {e}")))?;
        let thread = std::thread::Builder::new()
            .name("cfgnode-writer".to_string())
            .spawn(move || run(db, rx, settings, timer, &shared))
            .map_err(|e| StoreError::Storage(format!("cannot start the writer thread: {e}")))?;
        Ok(GroupCommitWriter {
            queue: Some(tx),
            thread: Some(thread),
            deferred,
        })
    }

    /// Returns once every acknowledged write a read of `scope` may touch is committed (see
    /// [`crate::visibility`]): call it before beginning the read transaction.
    pub(crate) fn wait_visible(&self, scope: Scope<'_>) -> Result<(), StoreError> {
        self.deferred.wait_visible(scope, || {
            // A full queue means the writer is busy: it looks for the request after its batch.
            if let Some(queue) = &self.queue {
                let _ = queue.try_send(Request::Wake);
            }
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
            .send(Request::Write(request))
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

fn run(
    db: Arc<Database>,
    mut rx: mpsc::Receiver<Request>,
    settings: WriterSettings,
    timer: tokio::runtime::Runtime,
    deferred: &Deferred,
) {
    let max_batch = settings.max_batch.max(1);
    let observer = settings.observer.as_deref();
    let mut batch = Vec::with_capacity(max_batch);
    let mut log = settings.log;
    let feed = &*settings.feed;
    let mut open: Option<Open> = None;
    // However the thread ends (a panic included), reads of rows it left uncommitted fail at
    // once instead of waiting for a commit that cannot come.
    let _stopped = Stopped(deferred);
    loop {
        let next = match &open {
            None => timer.block_on(rx.recv()),
            Some(held) => {
                let left = DEFER_FOR.saturating_sub(held.since.elapsed());
                // The timeout is made inside the runtime: its timer needs the runtime's clock.
                match timer.block_on(async { tokio::time::timeout(left, rx.recv()).await }) {
                    Ok(next) => next,
                    Err(_elapsed) => {
                        commit_open(&mut log, &mut open, deferred, observer, Flush::Age);
                        continue;
                    }
                }
            }
        };
        let Some(first) = next else { break };
        take_write(&mut batch, first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(request) => take_write(&mut batch, request),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit_batch(
                &db,
                &mut log,
                (&mut open, deferred, feed),
                &mut batch,
                settings.retention,
                observer,
            );
        }
        if let Some(held) = &open {
            let why = if deferred.flush_wanted() {
                Some(Flush::Read)
            } else if held.since.elapsed() >= DEFER_FOR {
                Some(Flush::Age)
            } else {
                None
            };
            if let Some(why) = why {
                commit_open(&mut log, &mut open, deferred, observer, why);
            }
        }
    }
    commit_open(&mut log, &mut open, deferred, observer, Flush::Stop);
    // A clean stop leaves nothing to replay: one durable commit makes the logged batches
    // durable in redb too.
    if log.unsynced > 0
        && log.failed.is_none()
        && let Err(e) = checkpoint(&db)
    {
        tracing::warn!(error = %e, "storage writer: the last checkpoint failed; the next start replays the log");
    }
    tracing::debug!("storage writer stopped: queue closed and drained");
}

/// Fails the reads of rows the writer left uncommitted, when the writer thread ends.
struct Stopped<'a>(&'a Deferred);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.0
            .lost("the storage writer stopped; restart the node, it replays its log");
    }
}

/// Adds a queued write to the batch; a wake-up carries none.
fn take_write(batch: &mut Vec<WriteRequest>, request: Request) {
    match request {
        Request::Write(write) => batch.push(write),
        Request::Wake => {}
    }
}

/// How long, at most, acknowledged appends and writes wait in the open transaction before
/// they are committed (see [`crate::visibility`]): the longer, the more batches share each
/// page a commit copies and checksums, and the longer a commit (and the wait of a read that
/// needs it) takes. Measured in docs/benchmarks.md.
const DEFER_FOR: Duration = Duration::from_millis(100);

/// A transaction the writer keeps open past its batch: it holds appends and writes that the
/// log has made durable and that were acknowledged (see [`crate::visibility`]).
struct Open {
    txn: WriteTransaction,
    /// When its first batch was applied.
    since: Instant,
}

/// Why an open transaction was committed, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// It was open for [`DEFER_FOR`].
    Age,
    /// A read of one of its namespaces was waiting.
    Read,
    /// A batch with another mutation than a follower's append (or a checkpoint) committed it.
    Write,
    /// The writer stopped.
    Stop,
}

impl Flush {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Flush::Age => "age",
            Flush::Read => "read",
            Flush::Write => "write",
            Flush::Stop => "stop",
        }
    }
}

/// Commits the open transaction, if any, without redb's sync (its batches are in the log).
/// A failure loses its rows from the tables (not from the log): the writer then stops taking
/// writes, and reads of its namespaces fail, until a restart replays the log.
fn commit_open(
    log: &mut LogState,
    open: &mut Option<Open>,
    deferred: &Deferred,
    observer: Option<&dyn CommitObserver>,
    why: Flush,
) {
    let Some(Open { txn, since }) = open.take() else {
        return;
    };
    match commit_as(txn, Durability::None) {
        Ok(()) => {
            // Told first, so that a reader woken by the commit also sees it in the metrics.
            if let Some(observer) = observer {
                observer.on_open_commit(why, since.elapsed());
            }
            deferred.committed();
        }
        Err(e) => {
            fail_open(log, deferred, open_lost(&e));
        }
    }
}

/// Commits `txn` with `durability`.
fn commit_as(mut txn: WriteTransaction, durability: Durability) -> Result<(), StoreError> {
    txn.set_durability(durability)?;
    txn.commit()?;
    Ok(())
}

/// Why the writer fails when the open transaction was dropped uncommitted after `e`.
fn open_lost(e: &StoreError) -> String {
    format!("a transaction holding acknowledged appends could not be committed: {e}")
}

/// Fails the writer for `what` while the open transaction's rows are lost from the tables
/// (not from the log): the reads of those rows fail too, until a restart replays the log.
fn fail_open(log: &mut LogState, deferred: &Deferred, what: String) -> StoreError {
    let failed = log.fail(what);
    deferred.lost(&failed.to_string());
    failed
}

/// The writer's side of the write-ahead log ([`crate::wal`]): the file, the batch numbering and
/// when the next checkpoint is due.
pub(crate) struct LogState {
    wal: Wal,
    /// The next batch's sequence number.
    next_seq: u64,
    /// Batches logged (not checkpointed) since the last checkpoint.
    unsynced: u64,
    last_checkpoint: Instant,
    /// Set when a log write or a commit after one failed: the log and the tables may disagree,
    /// so no further write is taken until a restart recovers from the log.
    failed: Option<String>,
    /// A random value the batches' uid seeds are derived from (see [`WriteTables::uid_seed`]).
    salt: u64,
    /// One encoded batch, kept to avoid an allocation per batch.
    record: Vec<u8>,
}

impl LogState {
    /// The log after recovery: the next batch is `applied + 1`.
    pub(crate) fn new(wal: Wal, applied: u64) -> Result<LogState, StoreError> {
        Ok(LogState {
            wal,
            next_seq: applied + 1,
            unsynced: 0,
            last_checkpoint: Instant::now(),
            failed: None,
            salt: random_u64()?,
            record: Vec::new(),
        })
    }

    /// Stops the writer taking writes (see [`LogState::failed`]) and says why.
    fn fail(&mut self, what: String) -> StoreError {
        let reason = format!(
            "{what} ({}); this node takes no more writes: restart it, it recovers from its log",
            self.wal.path().display()
        );
        tracing::error!("{reason}");
        self.failed = Some(reason.clone());
        StoreError::Storage(reason)
    }
}

/// How often, at least, a batch is committed durably in redb (a checkpoint) instead of being
/// logged: it bounds the log a restart replays, and how long redb keeps the pages it freed
/// meanwhile (it reuses them only after a durable commit).
///
/// Why a second and not etcd's 100 ms: a checkpoint's cost is mostly fixed (redb writes out and
/// processes the freed-page records of every commit since the last one, and syncs), and it
/// stalls the writer while it runs. Measured with three replicas at 64 connections
/// (docs/benchmarks.md): 100 ms gave 4 830 to 4 920 puts/s, 250 ms 5 670, 500 ms 5 270 to
/// 5 330, 1 s 6 140 (p99 25 ms), 2 s 6 020 with p99 46 ms (each stall grows).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// A checkpoint also comes once the log holds this much, whatever the time: it bounds the
/// replay at open and the log file's size.
const CHECKPOINT_BYTES: u64 = 32 * 1024 * 1024;

/// One batch as the log holds it (the owned form, for recovery).
#[derive(serde::Deserialize)]
pub(crate) struct LoggedBatch {
    pub now: Millis,
    pub uid_seed: u64,
    pub retention: Retention,
    pub mutations: Vec<Mutation>,
}

/// One batch as the writer logs it: the same fields as [`LoggedBatch`], borrowed.
#[derive(serde::Serialize)]
struct BatchToLog<'a> {
    now: Millis,
    uid_seed: u64,
    retention: Retention,
    mutations: &'a [Mutation],
}

/// Applies and commits one batch, tells the observer, then answers every request in it (so a
/// caller that saw its acknowledgement also sees the commit in the metrics).
fn commit_batch(
    db: &Database,
    log: &mut LogState,
    (open, deferred, feed): (&mut Option<Open>, &Deferred, &Feed),
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
    let outcome = match &log.failed {
        Some(reason) => Err(StoreError::Storage(reason.clone())),
        None => apply_batch(
            db,
            log,
            (open, deferred, feed),
            mutations,
            now,
            retention,
            started,
        ),
    };
    let duration = started.elapsed();
    match outcome {
        Ok(BatchOutcome {
            results,
            checkpoint: checkpointed,
            deferred,
            closed_open,
        }) => {
            if let (Some(since), Some(observer)) = (closed_open, observer) {
                observer.on_open_commit(Flush::Write, since.elapsed());
            }
            let rejected = results.iter().filter(|r| r.is_err()).count();
            let stats = CommitStats {
                batch_size,
                rejected,
                duration,
                queue_wait,
                committed: true,
                checkpoint: checkpointed,
                deferred,
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
            // Some namespace's chain may now miss this batch's rows, or hold rows it lost.
            feed.break_all();
            tracing::error!(error = %e, batch_size, "commit failed; every write in the batch is refused");
            let stats = CommitStats {
                batch_size,
                rejected: batch_size,
                duration,
                queue_wait,
                committed: false,
                checkpoint: false,
                deferred: false,
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

/// Runs every mutation in one transaction and makes it durable: by logging the batch and
/// committing without redb's sync, or, when a checkpoint is due (or the batch does not fit in
/// the log), by a durable commit. A batch of followers' appends and writes of namespaces the
/// feed follows (this node replicates them as holder) only is logged and left in the open
/// transaction instead of committed (see [`crate::visibility`]); any other batch is applied
/// into the open transaction, if there is one, and commits it. What the batch changed in the
/// followed namespaces goes to the feed once it is durable. `Err` means nothing of
/// this batch was acknowledged. `Ok` carries each mutation's answer, whether this batch was a
/// checkpoint, and whether it was left open.
fn apply_batch(
    db: &Database,
    log: &mut LogState,
    (open, deferred, feed): (&mut Option<Open>, &Deferred, &Feed),
    mutations: Vec<Mutation>,
    now: Millis,
    retention: Retention,
    started: Instant,
) -> Result<BatchOutcome, StoreError> {
    let seq = log.next_seq;
    let uid_seed = mix(log.salt ^ seq);
    let mut checkpoint = started.saturating_duration_since(log.last_checkpoint) >= CHECKPOINT_EVERY
        || log.wal.written() >= CHECKPOINT_BYTES;
    if !checkpoint {
        log.record.clear();
        let record = BatchToLog {
            now,
            uid_seed,
            retention,
            mutations: &mutations,
        };
        bincode::serde::encode_into_std_write(
            &record,
            &mut log.record,
            bincode::config::standard(),
        )
        .map_err(|e| StoreError::Storage(format!("cannot encode a batch for the log: {e}")))?;
        checkpoint = !log.wal.fits(log.record.len());
    }
    let appended: Option<Vec<String>> = (!checkpoint && !deferred.flush_wanted())
        .then(|| deferrable_namespaces(&mutations, feed))
        .flatten();
    let (txn, held) = match open.take() {
        Some(Open { txn, since }) => (txn, Some(since)),
        None => (db.begin_write()?, None),
    };
    // From here, an error with `held` set drops rows that were acknowledged: the writer then
    // fails (and with it the reads of those rows) until a restart replays the log.
    let fail = |log: &mut LogState, what: String| match held {
        Some(_) => fail_open(log, deferred, what),
        None => log.fail(what),
    };
    let lose = |log: &mut LogState, e: StoreError| match held {
        Some(_) => fail_open(log, deferred, open_lost(&e)),
        None => e,
    };
    let (results, changes) = match apply_all(&txn, (mutations, feed), uid_seed, now, retention, seq)
    {
        Ok(applied) => applied,
        Err(e) => return Err(lose(log, e)),
    };
    if checkpoint {
        if let Err(e) = commit_as(txn, Durability::Immediate) {
            return Err(lose(log, e));
        }
        log.wal.restart();
        log.unsynced = 0;
        log.last_checkpoint = started;
        if held.is_some() {
            deferred.committed();
        }
        log.next_seq += 1;
        publish(feed, changes);
        return Ok(BatchOutcome {
            results,
            checkpoint: true,
            deferred: false,
            closed_open: held,
        });
    }
    // Logged and synced before the commit makes the batch visible: a reader never sees a
    // write that a crash could take back.
    if let Err(e) = log.wal.append(seq, &log.record) {
        return Err(fail(log, format!("cannot write the write-ahead log: {e}")));
    }
    log.unsynced += 1;
    log.next_seq += 1;
    // Durable from here (a crash replays the log): the streams may ship it.
    publish(feed, changes);
    if let Some(namespaces) = appended {
        // Durable in the log: answered now, visible at the open transaction's commit (a read
        // of these namespaces waits for it).
        deferred.deferred(namespaces.iter().map(String::as_str));
        *open = Some(Open {
            txn,
            since: held.unwrap_or(started),
        });
        return Ok(BatchOutcome {
            results,
            checkpoint: false,
            deferred: true,
            closed_open: None,
        });
    }
    if let Err(e) = commit_as(txn, Durability::None) {
        return Err(fail(
            log,
            format!("a commit after its batch was logged failed: {e}"),
        ));
    }
    if held.is_some() {
        deferred.committed();
    }
    Ok(BatchOutcome {
        results,
        checkpoint: false,
        deferred: false,
        closed_open: held,
    })
}

/// What [`apply_batch`] did with a batch.
struct BatchOutcome {
    /// Each mutation's answer, in order.
    results: Vec<Result<Applied, StoreError>>,
    /// The batch was made durable by a durable redb commit.
    checkpoint: bool,
    /// The batch was logged and left in the open transaction.
    deferred: bool,
    /// The batch's commit also committed the open transaction, opened at this instant.
    closed_open: Option<Instant>,
}

/// The namespaces of a batch that may wait in the open transaction, `None` for any other
/// batch: one made only of followers' appends and of writes of namespaces the feed follows.
/// Their readers find the batch's rows through the visibility wait; the holder's streams find
/// them in the feed, so nothing needs them committed at once.
fn deferrable_namespaces(mutations: &[Mutation], feed: &Feed) -> Option<Vec<String>> {
    let mut namespaces: Vec<String> = Vec::new();
    for mutation in mutations {
        let namespace = match mutation {
            Mutation::AppendInSet { append, .. } => append.namespace.as_str(),
            other => other.namespace_write().filter(|ns| feed.is_watched(ns))?,
        };
        if !namespaces.iter().any(|ns| ns == namespace) {
            namespaces.push(namespace.to_string());
        }
    }
    Some(namespaces)
}

/// Hands a durable batch's changes to the feed; a failure to encode them drops every chain
/// (the streams then read the store).
fn publish(feed: &Feed, changes: BatchChanges) {
    if changes.captured.is_empty() && changes.broken.is_empty() {
        return;
    }
    if let Err(e) = feed.publish(changes.captured, &changes.broken) {
        tracing::warn!(error = %e, "storage writer: the changes feed is dropped; appends read the store");
        feed.break_all();
    }
}

/// Applies a batch's mutations into `txn`, records the batch as applied, and computes what it
/// changed in the namespaces the feed follows (published once the batch is durable). An
/// internal error (part of a mutation may be written) fails the whole batch: nothing in it is
/// acknowledged.
fn apply_all(
    txn: &WriteTransaction,
    (mutations, feed): (Vec<Mutation>, &Feed),
    uid_seed: u64,
    now: Millis,
    retention: Retention,
    seq: u64,
) -> Result<(Vec<Result<Applied, StoreError>>, BatchChanges), StoreError> {
    let mut results = Vec::with_capacity(mutations.len());
    let mut tables = WriteTables::open(txn, uid_seed)?;
    let watch = BatchWatch::before(&tables, &mutations, feed);
    for mutation in mutations {
        match apply(&mut tables, mutation, now, retention) {
            Err(e) if e.is_internal() => return Err(e),
            result => results.push(result),
        }
    }
    let changes = watch.after(&tables);
    tables.mark_applied(seq)?;
    Ok((results, changes))
}

/// An empty durable commit: everything committed before it becomes durable in redb.
fn checkpoint(db: &Database) -> Result<(), StoreError> {
    commit_as(db.begin_write()?, Durability::Immediate)
}

/// Applies the batches a crash left only in the log, after the tables' last batch `applied`,
/// in one durable commit. Returns the last batch the tables now contain.
pub(crate) fn recover(db: &Database, wal: &Wal, applied: u64) -> Result<u64, StoreError> {
    let logged: Vec<_> = wal
        .read()?
        .into_iter()
        .filter(|record| record.seq > applied)
        .collect();
    let Some(first) = logged.first() else {
        return Ok(applied);
    };
    if first.seq != applied + 1 {
        return Err(StoreError::Corrupt(format!(
            "the write-ahead log {} starts at batch {} but the database holds batches up to {applied}: \
             batches in between are missing; restore the data dir from a backup or let the node \
             get its namespaces from its replicas with an empty data dir",
            wal.path().display(),
            first.seq
        )));
    }
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let mut last = applied;
    let mut writes = 0usize;
    {
        let mut tables = WriteTables::open(&txn, 0)?;
        for record in &logged {
            let (batch, _): (LoggedBatch, _) =
                bincode::serde::decode_from_slice(&record.payload, bincode::config::standard())
                    .map_err(|e| {
                        StoreError::Corrupt(format!(
                            "batch {} of the write-ahead log {} does not decode: {e}",
                            record.seq,
                            wal.path().display()
                        ))
                    })?;
            tables.uid_seed = batch.uid_seed;
            writes += batch.mutations.len();
            for mutation in batch.mutations {
                if let Err(e) = apply(&mut tables, mutation, batch.now, batch.retention)
                    && e.is_internal()
                {
                    return Err(e);
                }
            }
            tables.mark_applied(record.seq)?;
            last = record.seq;
        }
    }
    txn.commit()?;
    tracing::info!(
        batches = logged.len(),
        writes,
        last,
        log = %wal.path().display(),
        "storage: replayed the write-ahead log"
    );
    Ok(last)
}

/// SplitMix64's finalizer: spreads a counter (or a hash) over all 64 bits.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Eight random bytes from the OS.
pub(crate) fn random_u64() -> Result<u64, StoreError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|e| StoreError::Storage(format!("no randomness from the OS: {e}")))?;
    Ok(u64::from_le_bytes(bytes))
}

/// The wall clock in milliseconds since the Unix epoch.
pub(crate) fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
