//! The follower's side of replication: [`Follower::on_append`], [`Follower::on_promise`],
//! [`Follower::on_state`].
//!
//! Storage enforces the fence and the position (`Store::append` refuses an append below the
//! promise or from another base, in the same transaction that applies it). What this layer
//! adds is what storage cannot know: who sent the append (the authenticated peer, which must be
//! the holder named first in the set), whether this node is in the set, whether this node holds
//! the namespace itself, and when it last heard from its holder (the lease a promise waits
//! out).
//!
//! Appends and promises of one namespace take turns (`turn`): each holds the namespace's turn
//! from its check to its durable answer. Without that, a promise could pass its lease check
//! while an append from the old holder was still queued in the writer; the writer would apply
//! the append first (the promise not yet taken), its answer would give the old holder a fresh
//! lease, and the promise, applied next, would let a new holder win while the old one still
//! served reads (a stale read the history test caught once commits got faster and a writer's
//! checkpoint could hold an append for tens of milliseconds).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cfgnode_ring::{HolderRecord, Lease};
use cfgnode_storage::{
    LogPos, MAX_REPLICAS, ReplicaAppend, ReplicaState, Store, StoreError, TransferOp,
    validate_namespace, validate_node_id,
};
use cfgnode_transport::{WireError, WireLogPosition, WireReplica, codes};

/// The most bytes of rows one append may carry (as a handoff chunk): a full copy of a large
/// namespace is sent as a handoff-style import first, then one append.
pub const MAX_APPEND_BYTES: usize = 15 * 1024 * 1024;

/// Why a replica request was refused; each carries the wire code the sender acts on.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaRefusal {
    /// This node is not in the set, the sender is not its holder, or this node holds the
    /// namespace itself at that epoch or later.
    #[error("namespace {namespace:?}: {why}")]
    NotAReplica {
        /// The namespace, named so the sender knows which stream failed.
        namespace: String,
        /// What did not fit.
        why: String,
    },
    /// The holder this node follows was heard from less than a lease ago.
    #[error(
        "namespace {namespace:?}: this replica heard from its holder {ms_ago} ms ago, less than the {lease_ms} ms lease; it promises no new epoch before the lease runs out (retry then)"
    )]
    HolderLeased {
        /// The namespace.
        namespace: String,
        /// How long ago the holder was heard from.
        ms_ago: u64,
        /// The lease.
        lease_ms: u64,
    },
    /// The request does not decode or names something invalid.
    #[error("{0}")]
    Malformed(String),
    /// Storage refused (fenced, not at the base, already promised, invalid append) or failed.
    #[error(transparent)]
    Storage(#[from] StoreError),
}

impl ReplicaRefusal {
    /// The stable wire code (`cfgnode_transport::codes`).
    pub fn code(&self) -> &'static str {
        match self {
            ReplicaRefusal::NotAReplica { .. } => codes::NOT_A_REPLICA,
            ReplicaRefusal::HolderLeased { .. } => codes::HOLDER_LEASED,
            ReplicaRefusal::Malformed(_) => codes::MALFORMED,
            ReplicaRefusal::Storage(e) => crate::error::error_code(e),
        }
    }
}

impl From<ReplicaRefusal> for WireError {
    fn from(refusal: ReplicaRefusal) -> Self {
        let code = refusal.code();
        if code == codes::INTERNAL {
            tracing::error!(error = %refusal, "internal error answering a replica request");
        }
        WireError::new(code, refusal.to_string())
    }
}

/// A follower's soft state: when it last took an append for each namespace (the lease), and
/// the store its durable state lives in.
#[derive(Debug)]
pub struct Follower {
    store: Store,
    lease: Lease,
    /// When this node started: a restarted node cannot know when it last heard from a holder
    /// (maybe just before it went down), so it counts its lease from its start.
    started: Instant,
    heard: Mutex<HashMap<String, Instant>>,
    /// Per namespace, the turn its appends and promises take (see the module doc).
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// This node's replicator, for the live set of namespaces it holds (`on_state`).
    replicator: std::sync::OnceLock<crate::replication::Replicator>,
    /// Per namespace, the last candidate other than this node it promised an epoch, and when
    /// ([`Follower::granted_recently`]).
    granted: Mutex<HashMap<String, (String, Instant)>>,
}

impl Follower {
    /// A follower over `store` with the lease `lease`.
    pub fn new(store: Store, lease: Lease) -> Follower {
        Follower {
            store,
            lease,
            started: Instant::now(),
            heard: Mutex::default(),
            turns: Mutex::default(),
            replicator: std::sync::OnceLock::new(),
            granted: Mutex::default(),
        }
    }

    /// The namespace's turn (see the module doc): hold its guard from the check to the answer.
    fn turn(&self, namespace: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        match turns.get(namespace) {
            Some(turn) => Arc::clone(turn),
            None => Arc::clone(turns.entry(namespace.to_string()).or_default()),
        }
    }

    /// `ReplicaAppend` from `sender`: the set it told (members and version) is kept with the
    /// rows. `holding` is this node's own holder record of the namespace, if its map names it
    /// holder. Answers the state after the durable apply.
    #[allow(clippy::too_many_arguments)]
    pub async fn on_append(
        &self,
        sender: &str,
        holding: Option<HolderRecord>,
        namespace: &str,
        epoch: u64,
        (replicas, set_version): (Vec<String>, WireLogPosition),
        base: Option<WireLogPosition>,
        to: WireLogPosition,
        ops: &[u8],
    ) -> Result<WireReplica, ReplicaRefusal> {
        validate_namespace(namespace)?;
        check_set(self.store.node_id(), sender, namespace, &replicas)?;
        if let Some(record) = holding.filter(|r| r.holder == self.store.node_id())
            && record.epoch >= epoch
        {
            return Err(ReplicaRefusal::NotAReplica {
                namespace: namespace.to_string(),
                why: format!(
                    "this node holds the namespace at epoch {}; an append from {sender:?} at epoch {epoch} is not from its holder",
                    record.epoch
                ),
            });
        }
        let ops = decode_ops(ops)?;
        let turn = self.turn(namespace);
        let _turn = turn.lock().await;
        let state = self
            .store
            .append(ReplicaAppend {
                namespace: namespace.to_string(),
                epoch,
                holder: sender.to_string(),
                replicas,
                base: base.map(log_pos),
                to: log_pos(to),
                ops,
                set_version: log_pos(set_version),
            })
            .await?;
        self.heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(namespace.to_string(), Instant::now());
        let position = state.position;
        Ok(wire(state, position))
    }

    /// `ReplicaPromise` from `candidate`: take nothing below `epoch` from now on, once the
    /// lease from the holder this node follows has run out. Durable before the answer.
    ///
    /// The lease is waited out only for another candidate than that holder: it keeps a new
    /// holder from taking writes while the old one may still serve reads under its lease, and
    /// a candidate that is the old holder itself serves every read from the same copy it goes
    /// on writing (a holder that gave its namespace away and was left with it, when the
    /// receiver died before answering the commit: `CommitOutcome::Presumed`).
    ///
    /// Refused while this node's map names itself the holder (`holding`): a holder that has
    /// just won its election and is told about a rival candidacy would otherwise fence its own
    /// epoch, and the rival, finding the holder's log longer, leaves the next try to it, which
    /// never runs since it holds the namespace. Its writes then stalled for good (a five-node
    /// history run, session 25). A candidate needs a majority without the holder anyway.
    pub async fn on_promise(
        &self,
        candidate: &str,
        holding: Option<HolderRecord>,
        namespace: &str,
        epoch: u64,
    ) -> Result<WireReplica, ReplicaRefusal> {
        validate_namespace(namespace)?;
        if let Some(record) = holding.filter(|r| r.holder == self.store.node_id())
            && candidate != self.store.node_id()
        {
            return Err(ReplicaRefusal::NotAReplica {
                namespace: namespace.to_string(),
                why: format!(
                    "this node holds the namespace at epoch {}; it promises no other candidate a new epoch ({candidate:?} asked for {epoch}) while it does",
                    record.epoch
                ),
            });
        }
        let turn = self.turn(namespace);
        let _turn = turn.lock().await;
        let followed = self.store.replica(namespace)?.map(|r| r.holder);
        let heard = self.last_heard(namespace);
        let since = u64::try_from(heard.elapsed().as_millis()).unwrap_or(u64::MAX);
        // Millis on this node's monotonic clock, counted from `heard` (0): only the rate of the
        // clock matters.
        if followed.as_deref() != Some(candidate)
            && !self.lease.follower_may_promise(Some(0), since)
        {
            return Err(ReplicaRefusal::HolderLeased {
                namespace: namespace.to_string(),
                ms_ago: since,
                lease_ms: self.lease.duration_ms(),
            });
        }
        let state = self.store.promise(namespace, epoch).await?;
        if candidate != self.store.node_id() {
            self.granted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    namespace.to_string(),
                    (candidate.to_string(), Instant::now()),
                );
        }
        Ok(wire(state, self.store.position(namespace)?))
    }

    /// The candidate other than this node that this node promised an epoch of `namespace`
    /// less than `within` ago, if any: an election that may be winning right now
    /// (`promote::run` leaves it the time to).
    pub fn granted_recently(&self, namespace: &str, within: Duration) -> Option<String> {
        self.granted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(namespace)
            .filter(|(_, at)| at.elapsed() < within)
            .map(|(candidate, _)| candidate.clone())
    }

    /// `ReplicaState`: this node's durable replica state of `namespace`, if any, with the
    /// position of its copy (a former holder's is derived from its revision, not stored).
    ///
    /// While this node replicates the namespace as its holder, `replicas` is the set it
    /// streams to now (learners included), which may have changed since its epoch began: a
    /// member asking whether it is still in the set gets the truth (`replication::release`).
    pub fn on_state(&self, namespace: &str) -> Result<Option<WireReplica>, ReplicaRefusal> {
        validate_namespace(namespace)?;
        match self.store.replica(namespace)? {
            Some(mut state) => {
                if state.epoch_start.is_some()
                    && let Some(live) = self.replicator.get().and_then(|r| r.live_set(namespace))
                {
                    state.replicas = live;
                }
                Ok(Some(wire(state, self.store.position(namespace)?)))
            }
            None => Ok(None),
        }
    }

    /// Lets state queries answer the holder's live set (wired once the replicator exists).
    pub fn attach_replicator(&self, replicator: crate::replication::Replicator) {
        let _ = self.replicator.set(replicator);
    }

    /// The replicator wired by [`Follower::attach_replicator`], if any: the holder's side, which
    /// promotion asks for namespaces whose epoch a member refuses.
    pub fn replicator(&self) -> Option<&crate::replication::Replicator> {
        self.replicator.get()
    }

    /// When this node last took an append of `namespace` (or, if it never did since it
    /// started, when it started): how long its holder has been silent.
    pub fn last_heard(&self, namespace: &str) -> Instant {
        self.heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(namespace)
            .copied()
            .unwrap_or(self.started)
    }
}

/// The set must name the sender first (the holder) and this node among the others.
fn check_set(
    me: &str,
    sender: &str,
    namespace: &str,
    replicas: &[String],
) -> Result<(), ReplicaRefusal> {
    if replicas.len() > MAX_REPLICAS {
        return Err(ReplicaRefusal::Malformed(format!(
            "a replica set of {} nodes; at most {MAX_REPLICAS}",
            replicas.len()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for node in replicas {
        validate_node_id(node)?;
        if !seen.insert(node.as_str()) {
            return Err(ReplicaRefusal::Malformed(format!(
                "node {node:?} is twice in the replica set {replicas:?}"
            )));
        }
    }
    let not_a_replica = |why: String| ReplicaRefusal::NotAReplica {
        namespace: namespace.to_string(),
        why,
    };
    if replicas.first().map(String::as_str) != Some(sender) {
        return Err(not_a_replica(format!(
            "the sender {sender:?} is not the first member (the holder) of the replica set it sent"
        )));
    }
    if sender == me || !replicas[1..].iter().any(|node| node == me) {
        return Err(not_a_replica(format!(
            "this node ({me}) is not a follower in the replica set {replicas:?}"
        )));
    }
    Ok(())
}

/// The rows of an append: node-defined bincode of transfer ops, as in a handoff chunk.
fn decode_ops(bytes: &[u8]) -> Result<Vec<TransferOp>, ReplicaRefusal> {
    let config = bincode::config::standard().with_limit::<MAX_APPEND_BYTES>();
    let (ops, used): (Vec<TransferOp>, usize) = bincode::serde::decode_from_slice(bytes, config)
        .map_err(|e| ReplicaRefusal::Malformed(format!("malformed append rows: {e}")))?;
    if used != bytes.len() {
        return Err(ReplicaRefusal::Malformed(
            "trailing bytes after an append's rows".to_string(),
        ));
    }
    Ok(ops)
}

fn log_pos(position: WireLogPosition) -> LogPos {
    LogPos::new(position.epoch, position.revision)
}

/// A replica record as the wire carries it, at `position` (its copy's, see `Store::position`).
fn wire(state: ReplicaState, position: LogPos) -> WireReplica {
    WireReplica {
        promised: state.promised,
        position: WireLogPosition {
            epoch: position.epoch,
            revision: position.revision,
        },
        holder: state.holder,
        replicas: state.replicas,
        set_version: WireLogPosition {
            epoch: state.set_version.epoch,
            revision: state.set_version.revision,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nodes: &[&str]) -> Vec<String> {
        nodes.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn the_set_must_name_the_sender_first_and_this_node_after_it() {
        assert!(check_set("b", "a", "ns", &set(&["a", "b", "c"])).is_ok());
        for (sender, replicas) in [
            ("a", set(&["b", "a", "c"])), // the sender is not the holder
            ("a", set(&["a", "c"])),      // this node is not in the set
            ("a", set(&["a"])),           // a set of one has no follower
            ("a", set(&[])),
            ("b", set(&["b", "b"])), // this node as its own holder and follower
        ] {
            let refused = check_set("b", sender, "ns", &replicas);
            assert!(
                matches!(
                    refused,
                    Err(ReplicaRefusal::NotAReplica { .. })
                        | Err(ReplicaRefusal::Storage(_))
                        | Err(ReplicaRefusal::Malformed(_))
                ),
                "{sender} {replicas:?}: {refused:?}"
            );
        }
        let huge: Vec<String> = (0..=MAX_REPLICAS).map(|i| format!("n{i}")).collect();
        assert!(matches!(
            check_set("n1", "n0", "ns", &huge),
            Err(ReplicaRefusal::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn a_promise_to_another_candidate_is_remembered_for_a_while() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(
            &dir.path().join("db"),
            Some("n2"),
            cfgnode_storage::StoreOptions::default(),
        )
        .expect("open");
        // A lease of 0: this node may promise at once.
        let follower = Follower::new(store, Lease::new(0));
        assert_eq!(follower.granted_recently("app", DEFER_FOR_TEST), None);
        follower
            .on_promise("n2", None, "app", 3)
            .await
            .expect("a promise to itself");
        assert_eq!(
            follower.granted_recently("app", DEFER_FOR_TEST),
            None,
            "its own promise is no other candidate's election"
        );
        follower
            .on_promise("n1", None, "app", 4)
            .await
            .expect("a promise to n1");
        assert_eq!(
            follower.granted_recently("app", DEFER_FOR_TEST),
            Some("n1".to_string())
        );
        assert_eq!(follower.granted_recently("other", DEFER_FOR_TEST), None);
        assert_eq!(
            follower.granted_recently("app", Duration::ZERO),
            None,
            "only for a while"
        );
    }

    /// Long enough for the test's steps.
    const DEFER_FOR_TEST: Duration = Duration::from_secs(60);

    #[test]
    fn garbage_rows_are_refused() {
        assert!(matches!(
            decode_ops(&[0xff, 0xff, 0xff]),
            Err(ReplicaRefusal::Malformed(_))
        ));
        let ops = bincode::serde::encode_to_vec(
            vec![TransferOp::ClearNamespace],
            bincode::config::standard(),
        )
        .expect("encode");
        let mut trailing = ops.clone();
        trailing.push(0);
        assert!(decode_ops(&ops).is_ok());
        assert!(matches!(
            decode_ops(&trailing),
            Err(ReplicaRefusal::Malformed(_))
        ));
    }
}
