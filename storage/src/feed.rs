//! The changes feed: what each batch of a holder's own writes changed in a namespace, kept in
//! memory so that its replication streams do not read the store back.
//!
//! A holder used to build every append with a read transaction ([`crate::Store::export_changes`]:
//! the log since the follower's revision, then each changed key's entry and versions). That
//! read cost about an eighth of the holder's CPU, and it made the holder's own batches
//! impossible to leave uncommitted: a read transaction does not see an open transaction's
//! rows ([`crate::visibility`]).
//!
//! So for every namespace the node replicates as holder ([`Feed::watch`]), the writer computes
//! the batch's changes in the batch's own transaction, right after applying it, with the same
//! function the read uses (`transfer::changes_in`, from the revision the namespace had before
//! the batch), and publishes them here once the batch is durable in the write-ahead log. A
//! stream whose follower is at the start of a segment takes that segment and every later one,
//! already encoded: the append's rows are their concatenation.
//!
//! Applied in order, the segments of consecutive batches leave a copy exactly as one
//! `export_changes` over their whole range would (log events and versions are added, each
//! entry, alias, record, attachment set and state row is replaced by a later one, trims only
//! move forward), only with rows repeated when several batches touched the same key.
//!
//! The chain of segments must have no gap: a batch that changes a watched namespace in any
//! other way (an import, a replica state change) or that fails drops the chain, and a segment
//! that does not start where the last one ended starts a new one. A follower the chain does not
//! reach is served by the read, as before.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use redb::ReadableTable;

use crate::error::StoreError;
use crate::mutation::Mutation;
use crate::records::decode;
use crate::transfer::{RowTables, TransferOp, changes_in};
use crate::types::{NamespaceState, Revision};

/// Segments kept per namespace at most: a follower further behind gets a read.
const MAX_SEGMENTS: usize = 1024;

/// Bytes of encoded rows kept per namespace at most.
const MAX_BYTES: usize = 16 * 1024 * 1024;

/// The namespaces followed and their chains of segments; shared by the writer and the store.
#[derive(Default)]
pub(crate) struct Feed {
    chains: Mutex<HashMap<String, Chain>>,
    /// How many namespaces are followed: the writer's check without the lock.
    watched: AtomicUsize,
}

#[derive(Default)]
struct Chain {
    segments: VecDeque<Segment>,
    bytes: usize,
}

/// One batch's changes of one namespace.
struct Segment {
    /// The namespace's revision before the batch.
    from: Revision,
    /// Its revision after the batch.
    to: Revision,
    /// How many ops `ops` holds.
    count: u64,
    /// The ops, each encoded (bincode, standard), concatenated.
    ops: Vec<u8>,
}

/// One batch's changes of one namespace, computed by the writer before the batch is durable
/// and published by [`Feed::publish`] after.
pub(crate) struct Captured {
    pub namespace: String,
    pub from: Revision,
    pub to: Revision,
    pub ops: Vec<TransferOp>,
}

/// What the feed holds for a copy at some revision: the rows that bring it to `to`, encoded
/// as a `Vec<TransferOp>` is (bincode, standard), ready to send.
#[derive(Debug, PartialEq, Eq)]
pub struct FeedRows {
    /// The revision the rows lead to.
    pub to: Revision,
    /// The encoded `Vec<TransferOp>`.
    pub ops: Vec<u8>,
}

impl Feed {
    /// Starts following `namespace` (idempotent).
    pub(crate) fn watch(&self, namespace: &str) {
        let mut chains = self.lock();
        if !chains.contains_key(namespace) {
            chains.insert(namespace.to_string(), Chain::default());
            self.watched.store(chains.len(), Ordering::Release);
        }
    }

    /// Stops following `namespace` and forgets its segments.
    pub(crate) fn unwatch(&self, namespace: &str) {
        let mut chains = self.lock();
        if chains.remove(namespace).is_some() {
            self.watched.store(chains.len(), Ordering::Release);
        }
    }

    /// Whether `namespace` is followed.
    pub(crate) fn is_watched(&self, namespace: &str) -> bool {
        self.watched.load(Ordering::Acquire) > 0 && self.lock().contains_key(namespace)
    }

    /// Whether any namespace is followed (the writer's quick check).
    pub(crate) fn any(&self) -> bool {
        self.watched.load(Ordering::Acquire) > 0
    }

    /// Adds durable batches' changes and drops the chains of `broken` namespaces (changed in a
    /// way the log does not describe, or by a batch that failed).
    pub(crate) fn publish(
        &self,
        captured: Vec<Captured>,
        broken: &[String],
    ) -> Result<(), StoreError> {
        let mut encoded = Vec::with_capacity(captured.len());
        for c in captured {
            let mut ops = Vec::new();
            for op in &c.ops {
                bincode::serde::encode_into_std_write(op, &mut ops, bincode::config::standard())
                    .map_err(|e| StoreError::Storage(format!("cannot encode a row: {e}")))?;
            }
            encoded.push((c.namespace, c.from, c.to, c.ops.len() as u64, ops));
        }
        let mut chains = self.lock();
        for namespace in broken {
            if let Some(chain) = chains.get_mut(namespace) {
                *chain = Chain::default();
            }
        }
        for (namespace, from, to, count, ops) in encoded {
            let Some(chain) = chains.get_mut(&namespace) else {
                continue;
            };
            chain.push(Segment {
                from,
                to,
                count,
                ops,
            });
        }
        Ok(())
    }

    /// Drops every chain (the writer failed a batch whose namespaces it did not sort out).
    pub(crate) fn break_all(&self) {
        for chain in self.lock().values_mut() {
            *chain = Chain::default();
        }
    }

    /// The rows that bring a copy of `namespace` at revision `from` up to the newest segment,
    /// at most `max_bytes` of them (fewer segments when all would not fit); `None` when the
    /// chain does not start a segment at `from` or has nothing after it.
    pub(crate) fn since(
        &self,
        namespace: &str,
        from: Revision,
        max_bytes: usize,
    ) -> Option<FeedRows> {
        let chains = self.lock();
        let chain = chains.get(namespace)?;
        let first = chain
            .segments
            .binary_search_by_key(&from, |s| s.from)
            .ok()?;
        let mut count = 0u64;
        let mut bytes = 0usize;
        let mut last = first;
        for (i, segment) in chain.segments.iter().enumerate().skip(first) {
            if i > first && bytes + segment.ops.len() > max_bytes {
                break;
            }
            count += segment.count;
            bytes += segment.ops.len();
            last = i;
        }
        let mut ops = bincode::serde::encode_to_vec(count, bincode::config::standard()).ok()?;
        ops.reserve(bytes);
        for segment in chain.segments.range(first..=last) {
            ops.extend_from_slice(&segment.ops);
        }
        Some(FeedRows {
            to: chain.segments[last].to,
            ops,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Chain>> {
        self.chains.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Chain {
    /// Appends a segment; one that does not start where the chain ends starts the chain anew.
    fn push(&mut self, segment: Segment) {
        if self
            .segments
            .back()
            .is_some_and(|last| last.to != segment.from)
        {
            *self = Chain::default();
        }
        self.bytes += segment.ops.len();
        self.segments.push_back(segment);
        while self.segments.len() > MAX_SEGMENTS || self.bytes > MAX_BYTES {
            let Some(old) = self.segments.pop_front() else {
                break;
            };
            self.bytes -= old.ops.len();
        }
    }
}

/// The writer's view of one batch for the feed: the revision each watched namespace had
/// before it, and the watched namespaces it changed otherwise.
pub(crate) struct BatchWatch {
    before: Vec<(String, Revision)>,
    broken: Vec<String>,
}

/// What a batch did to the watched namespaces: [`Feed::publish`]'s arguments.
#[derive(Default)]
pub(crate) struct BatchChanges {
    pub captured: Vec<Captured>,
    pub broken: Vec<String>,
}

impl BatchWatch {
    /// Reads, before the batch is applied, where each watched namespace it writes stands.
    pub(crate) fn before(t: &impl RowTables, mutations: &[Mutation], feed: &Feed) -> BatchWatch {
        let mut watch = BatchWatch {
            before: Vec::new(),
            broken: Vec::new(),
        };
        if !feed.any() {
            return watch;
        }
        for mutation in mutations {
            if let Some(ns) = mutation.namespace_other() {
                if !watch.broken.iter().any(|b| b == ns) && feed.is_watched(ns) {
                    watch.broken.push(ns.to_string());
                }
            } else if let Some(ns) = mutation.namespace_write()
                && !watch.before.iter().any(|(b, _)| b == ns)
                && !watch.broken.iter().any(|b| b == ns)
                && feed.is_watched(ns)
            {
                match revision_of(t, ns) {
                    Some(revision) => watch.before.push((ns.to_string(), revision)),
                    None => watch.broken.push(ns.to_string()),
                }
            }
        }
        watch
    }

    /// Computes, after the batch was applied (in its transaction), the changes of each watched
    /// namespace it wrote.
    pub(crate) fn after(self, t: &impl RowTables) -> BatchChanges {
        let mut changes = BatchChanges {
            captured: Vec::new(),
            broken: self.broken,
        };
        for (namespace, from) in self.before {
            if changes.broken.contains(&namespace) {
                continue;
            }
            match changes_in(t, &namespace, from) {
                Ok(Some((state, _))) if state.revision == from => {}
                Ok(Some((state, ops))) => changes.captured.push(Captured {
                    namespace,
                    from,
                    to: state.revision,
                    ops,
                }),
                Ok(None) | Err(_) => changes.broken.push(namespace),
            }
        }
        changes
    }
}

/// The namespace's revision in `t`, `None` when it has no state (or it does not decode).
fn revision_of(t: &impl RowTables, namespace: &str) -> Option<Revision> {
    let row = t.namespaces().get(namespace).ok()??;
    let state: NamespaceState = decode(row.value()).ok()?;
    Some(state.revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(revision: Revision) -> TransferOp {
        TransferOp::Log {
            revision,
            record: vec![revision as u8; 3],
        }
    }

    fn captured(from: Revision, to: Revision) -> Captured {
        Captured {
            namespace: "ns".to_string(),
            from,
            to,
            ops: (from + 1..=to).map(log).collect(),
        }
    }

    fn decode(rows: &FeedRows) -> Vec<TransferOp> {
        bincode::serde::decode_from_slice(&rows.ops, bincode::config::standard())
            .expect("the concatenation decodes as a Vec<TransferOp>")
            .0
    }

    #[test]
    fn consecutive_segments_concatenate_into_one_vec() {
        let feed = Feed::default();
        feed.watch("ns");
        feed.publish(vec![captured(0, 2), captured(2, 3)], &[])
            .expect("publish");
        let rows = feed.since("ns", 0, usize::MAX).expect("rows");
        assert_eq!(rows.to, 3);
        assert_eq!(decode(&rows), vec![log(1), log(2), log(3)]);
        let rows = feed.since("ns", 2, usize::MAX).expect("rows");
        assert_eq!((rows.to, decode(&rows)), (3, vec![log(3)]));
    }

    #[test]
    fn a_revision_inside_a_segment_or_past_the_chain_gets_nothing() {
        let feed = Feed::default();
        feed.watch("ns");
        feed.publish(vec![captured(0, 2)], &[]).expect("publish");
        assert_eq!(feed.since("ns", 1, usize::MAX), None);
        assert_eq!(feed.since("ns", 2, usize::MAX), None);
        assert_eq!(feed.since("other", 0, usize::MAX), None);
    }

    #[test]
    fn a_gap_or_a_break_starts_the_chain_anew() {
        let feed = Feed::default();
        feed.watch("ns");
        feed.publish(vec![captured(0, 2), captured(5, 6)], &[])
            .expect("publish");
        assert_eq!(feed.since("ns", 0, usize::MAX), None);
        assert_eq!(feed.since("ns", 5, usize::MAX).expect("rows").to, 6);
        feed.publish(vec![], &["ns".to_string()]).expect("publish");
        assert_eq!(feed.since("ns", 5, usize::MAX), None);
    }

    #[test]
    fn unwatched_namespaces_keep_nothing() {
        let feed = Feed::default();
        feed.publish(vec![captured(0, 1)], &[]).expect("publish");
        assert!(!feed.is_watched("ns"));
        assert_eq!(feed.since("ns", 0, usize::MAX), None);
        feed.watch("ns");
        assert!(feed.is_watched("ns") && feed.any());
        feed.unwatch("ns");
        assert!(!feed.any());
    }

    #[test]
    fn rows_over_the_limit_stop_at_a_segment_boundary() {
        let feed = Feed::default();
        feed.watch("ns");
        feed.publish(vec![captured(0, 1), captured(1, 2), captured(2, 3)], &[])
            .expect("publish");
        let one = feed.since("ns", 0, 1).expect("rows");
        assert_eq!((one.to, decode(&one)), (1, vec![log(1)]));
    }
}
