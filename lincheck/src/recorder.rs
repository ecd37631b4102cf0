//! A [`History`] that concurrent clients record into, stamped from one monotonic clock.
//!
//! The stamps are what make a history honest: an invocation must be stamped before the request
//! leaves, an answer after it arrived, both from the same clock. [`Recorder`] owns that clock
//! (an [`Instant`] taken when it was made) and stamps inside its lock, so a client calls
//! [`Recorder::invoke`] just before sending and [`Recorder::complete`] just after the answer,
//! and the intervals contain the real ones. The lock is held only to push or update one record,
//! never across an `.await`.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::history::{ClientId, History, OpId, RecordError};
use crate::model::{Op, Outcome};

/// A thread-safe history recorder; share it behind an `Arc` between client tasks.
#[derive(Debug)]
pub struct Recorder<K = String, V = String> {
    /// The clock's zero: stamps are nanoseconds since.
    start: Instant,
    history: Mutex<History<K, V>>,
}

impl<K, V> Default for Recorder<K, V>
where
    K: Clone + Eq + Hash + Debug,
    V: Clone + Eq + Hash + Debug,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> Recorder<K, V>
where
    K: Clone + Eq + Hash + Debug,
    V: Clone + Eq + Hash + Debug,
{
    /// An empty recorder whose clock starts now.
    pub fn new() -> Self {
        Recorder {
            start: Instant::now(),
            history: Mutex::new(History::new()),
        }
    }

    /// Nanoseconds since the recorder was made, on the monotonic clock every stamp uses.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records that `client` is about to send `op` on `key`; call it before sending.
    pub fn invoke(&self, client: ClientId, key: K, op: Op<V>) -> OpId {
        let mut history = self.lock();
        let at = self.now();
        history.invoke(client, key, op, at)
    }

    /// Records the answer to `id`; call it after the answer arrived.
    pub fn complete(&self, id: OpId, outcome: Outcome<V>) -> Result<(), RecordError> {
        let mut history = self.lock();
        let at = self.now();
        history.complete(id, outcome, at)
    }

    /// Records that `id` definitely did not take effect (see [`History::fail`]).
    pub fn fail(&self, id: OpId) -> Result<(), RecordError> {
        let mut history = self.lock();
        let at = self.now();
        history.fail(id, at)
    }

    /// Records that the outcome of `id` is indeterminate (see [`History::unknown`]).
    pub fn unknown(&self, id: OpId) -> Result<(), RecordError> {
        self.lock().unknown(id)
    }

    /// Records a final read of `key` (see [`History::final_read`]); call it after every
    /// client stopped.
    pub fn final_read(&self, key: K, observed: Option<V>) -> OpId {
        let mut history = self.lock();
        let at = self.now();
        history.final_read(key, observed, at)
    }

    /// A copy of the history so far.
    pub fn snapshot(&self) -> History<K, V> {
        self.lock().clone()
    }

    /// The history, once the clients are done.
    pub fn into_history(self) -> History<K, V> {
        self.history
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The history; a client that panicked while recording cannot leave it half-updated (each
    /// update is one push or one assignment), so a poisoned lock is still a sound history.
    fn lock(&self) -> MutexGuard<'_, History<K, V>> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
