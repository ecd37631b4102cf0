//! Writes that are durable but not yet visible, and the wait a read makes for them.
//!
//! A follower's appends are acknowledged once the write-ahead log has them ([`crate::wal`]).
//! The writer then keeps their transaction open for up to [`crate::writer`]'s `DEFER_FOR`
//! and applies further appends into it, committing many batches at once. redb copies,
//! checksums and frees each page a transaction dirties once per transaction, so the appends of
//! 100 ms share the leaf and branch pages that 14-write commits each paid for alone.
//!
//! Until that commit, a read transaction does not see those rows. Every read of this store
//! therefore says which namespace it is about ([`Scope`]), and waits here when that namespace
//! has rows in the open transaction: it asks the writer to commit now and waits for it. A
//! position a follower answers a candidate with, a stale read, an export for a catch-up: each
//! sees every append the node acknowledged, as before.
//!
//! A holder's own writes wait the same way, for the namespaces it replicates ([`crate::feed`]:
//! its streams take the batches' rows from memory, so no read needs them committed at once).
//! Their callers read right after the acknowledgement, and those reads wait here too. The
//! writes of namespaces it does not replicate are never deferred, and a batch that carries any
//! other mutation commits the open transaction with it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::StoreError;

/// What a read is about: what it must see committed first.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Scope<'a> {
    /// One namespace's rows (or its replica record).
    Namespace(&'a str),
    /// Rows of any namespace (a listing of namespaces or of replica records).
    AllNamespaces,
    /// Cluster facts and membership only, which appends never write.
    Cluster,
}

/// The namespaces with rows in the writer's open transaction, shared by the writer and the
/// store's reads.
#[derive(Default)]
pub(crate) struct Deferred {
    state: Mutex<State>,
    committed: Condvar,
    /// How many namespaces are pending: the read path's check without the lock.
    pending: AtomicUsize,
    /// A read is waiting: the writer commits the open transaction at its next turn.
    flush_wanted: AtomicBool,
}

#[derive(Default)]
struct State {
    namespaces: HashSet<String>,
    /// Set when the open transaction was lost (the writer failed): its rows are only in the
    /// log until a restart replays it, so a read of them has no true answer to give.
    failed: Option<String>,
}

/// How long a read waits for the writer's commit before it gives up with an error. A commit
/// takes milliseconds; this is only reached when the writer is stuck.
const WAIT_AT_MOST: Duration = Duration::from_secs(10);

/// A wait this long is logged: a commit takes milliseconds.
const SLOW_WAIT: Duration = Duration::from_secs(1);

impl Deferred {
    /// A read of `scope` is about to begin: returns once every acknowledged row it may touch is
    /// committed. `wake` nudges the writer (it may be waiting for its next request).
    pub(crate) fn wait_visible(&self, scope: Scope<'_>, wake: impl Fn()) -> Result<(), StoreError> {
        if matches!(scope, Scope::Cluster) || self.pending.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let mut state = self.lock();
        if !state.affects(scope) {
            return Ok(());
        }
        let started = Instant::now();
        let deadline = started + WAIT_AT_MOST;
        self.flush_wanted.store(true, Ordering::Release);
        wake();
        let mut warned = false;
        while state.affects(scope) {
            if !warned && started.elapsed() >= SLOW_WAIT {
                warned = true;
                tracing::warn!(
                    ?scope,
                    "a read has waited over a second for the storage writer to commit acknowledged appends"
                );
            }
            if let Some(reason) = &state.failed {
                return Err(StoreError::Storage(reason.clone()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::Storage(
                    "the storage writer did not commit acknowledged appends within 10 s; \
                     check the node's log for a stuck or failed writer"
                        .to_string(),
                ));
            }
            state = self
                .committed
                .wait_timeout(state, left.min(SLOW_WAIT))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }

    /// True when a read asked for the open transaction's commit.
    pub(crate) fn flush_wanted(&self) -> bool {
        self.flush_wanted.load(Ordering::Acquire)
    }

    /// The writer kept a transaction open with rows of `namespaces` (acknowledged, in the log).
    pub(crate) fn deferred<'a>(&self, namespaces: impl IntoIterator<Item = &'a str>) {
        let mut state = self.lock();
        for namespace in namespaces {
            if !state.namespaces.contains(namespace) {
                state.namespaces.insert(namespace.to_string());
            }
        }
        self.pending
            .store(state.namespaces.len(), Ordering::Release);
    }

    /// The writer committed its open transaction: every pending row is visible.
    pub(crate) fn committed(&self) {
        let mut state = self.lock();
        state.namespaces.clear();
        self.pending.store(0, Ordering::Release);
        self.flush_wanted.store(false, Ordering::Release);
        drop(state);
        self.committed.notify_all();
    }

    /// The open transaction was lost: reads of its namespaces fail with `reason` from now on
    /// (until a restart replays the log), instead of answering without acknowledged rows.
    pub(crate) fn lost(&self, reason: &str) {
        let mut state = self.lock();
        state.failed = Some(reason.to_string());
        drop(state);
        self.committed.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn affects(&self, scope: Scope<'_>) -> bool {
        match scope {
            Scope::Namespace(namespace) => self.namespaces.contains(namespace),
            Scope::AllNamespaces => !self.namespaces.is_empty(),
            Scope::Cluster => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_read_of_another_namespace_does_not_wait() {
        let deferred = Deferred::default();
        deferred.deferred(["a"]);
        deferred
            .wait_visible(Scope::Namespace("b"), || panic!("no wake for b"))
            .expect("b is visible");
        deferred
            .wait_visible(Scope::Cluster, || panic!("no wake for cluster reads"))
            .expect("cluster reads never wait");
        assert!(!deferred.flush_wanted());
    }

    #[test]
    fn a_read_of_a_pending_namespace_waits_for_the_commit() {
        let deferred = Arc::new(Deferred::default());
        deferred.deferred(["a", "b"]);
        let writer = Arc::clone(&deferred);
        let woken = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&woken);
        let commit = std::thread::spawn(move || {
            while !writer.flush_wanted() {
                std::thread::yield_now();
            }
            writer.committed();
        });
        deferred
            .wait_visible(Scope::AllNamespaces, || seen.store(true, Ordering::Release))
            .expect("committed");
        commit.join().expect("writer");
        assert!(woken.load(Ordering::Acquire), "the writer was woken");
        assert!(!deferred.flush_wanted(), "the commit cleared the request");
        deferred
            .wait_visible(Scope::Namespace("a"), || panic!("nothing pending"))
            .expect("visible");
    }

    #[test]
    fn a_lost_transaction_fails_reads_of_its_namespaces() {
        let deferred = Deferred::default();
        deferred.deferred(["a"]);
        deferred.lost("the commit failed");
        let error = deferred
            .wait_visible(Scope::Namespace("a"), || {})
            .expect_err("no answer without the acknowledged rows");
        assert!(error.to_string().contains("the commit failed"), "{error}");
        deferred
            .wait_visible(Scope::Namespace("b"), || {})
            .expect("other namespaces still read");
    }
}
