//! The holder's side of replication (docs/replication.md, "Writes"): a [`Replicator`] keeps,
//! for every namespace this node holds, one stream per follower that ships the rows the
//! follower lacks, and lets a write wait until a quorum of the replica set has it (a
//! [`Ticket`] taken before the write's local commit, [`Ticket::replicated`] after it).
//!
//! Reads wait the same way ([`Replicator::read_visible`]), and each answered round extends the
//! holder's read lease (`cluster::lease`). A member joining the set learns first
//! (`cfgnode_ring::next_set`). Each set is told with its version (the holder's position when
//! it began replicating to it), which orders the sets for elections (docs/replication.md, "Set
//! versions"). Promotion when the holder dies is `replication::promote`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cfgnode_ring::{LogPosition, NodeId, Progress, SyncPlan, sync_plan};
use cfgnode_storage::{Store, StoreError, TransferOp};
use cfgnode_transport::{PeerRequest, PeerResponse, Response, WireLogPosition, codes};
use tokio::sync::watch;

use crate::cluster::{Cluster, PeerError};
use crate::replication::follower::MAX_APPEND_BYTES;
use crate::shutdown::until_stopped;

const OK: crate::metrics::OutcomeLabels = crate::metrics::OutcomeLabels { outcome: "ok" };
const FAILED: crate::metrics::OutcomeLabels = crate::metrics::OutcomeLabels { outcome: "failed" };

/// How long a write waits for a quorum before it answers `no_quorum`.
pub const QUORUM_WAIT: Duration = Duration::from_secs(5);
/// How long one append may take to be answered.
const APPEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the supervisor looks for namespaces to start, change or stop replicating.
const SUPERVISE_EVERY: Duration = Duration::from_millis(500);
/// The pause after a failed append, doubling up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

tokio::task_local! {
    /// Set while a `?consistency=stale` read runs: its reads take the local copy as it is.
    static STALE_READ: ();
}

/// Runs `read` as a stale read: [`Replicator::read_visible`] inside it does not wait for a
/// quorum (the caller asked for this node's copy, however far behind).
pub async fn stale<F: Future>(read: F) -> F::Output {
    STALE_READ.scope((), read).await
}

/// The holder's replication of every namespace it holds. Cheap to clone.
#[derive(Clone)]
pub struct Replicator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator")
            .field("replicas", &self.inner.replicas)
            .finish_non_exhaustive()
    }
}

/// What a write waits on after its local commit (see [`Replicator::ticket`]): nothing
/// (`--replicas 1`, or a replica set of this node alone), or the replication of the epoch the
/// write is committed at.
pub struct Ticket {
    epoch: Option<(Replicator, Arc<Replicated>)>,
}

impl Ticket {
    /// A ticket that waits for nothing.
    const UNREPLICATED: Ticket = Ticket { epoch: None };

    /// After a local commit at `revision`: waits until a quorum of the ticket's epoch has it,
    /// or answers `NoQuorum` after [`QUORUM_WAIT`]. A change of the set at the same epoch
    /// (same log, new streams) is followed, also while the write waits: the replication it
    /// waits on stops, and the newest one of that epoch counts from then on. A change of
    /// epoch is not: the old epoch's streams have stopped, so the write answers `NoQuorum`, as
    /// it must (it may be in no quorum's log).
    ///
    /// Until session 25 a write followed only the change made before it started waiting. One
    /// made during its wait left it on the stopped streams until `QUORUM_WAIT` ran out. It then
    /// answered `no_quorum` for a write its quorum had, and held its namespace's gate all that
    /// time, so a handoff waiting to freeze held every other request too: a five-node history
    /// run lost 4.5 s of writes so (a claim right after a failover, while the set kept changing).
    pub async fn replicated(self, revision: u64) -> Result<(), StoreError> {
        let Some((replicator, replicated)) = self.epoch else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + QUORUM_WAIT;
        let mut replicated = replicator
            .current(&replicated.namespace)
            .filter(|r| r.epoch == replicated.epoch)
            .unwrap_or(replicated);
        loop {
            replicated.local_commit(revision);
            let mut committed = replicated.committed.subscribe();
            let mut stopped = replicated.stop.subscribe();
            tokio::select! {
                biased;
                reached = tokio::time::timeout_at(deadline, committed.wait_for(|c| *c >= revision)) => {
                    return match reached {
                        Ok(Ok(_)) => Ok(()),
                        _ => Err(replicated.no_quorum()),
                    };
                }
                _ = stopped.wait_for(|stop| *stop) => {
                    if *replicated.committed.borrow() >= revision {
                        return Ok(());
                    }
                    // The set changed (its successor is registered before this one stops)
                    // or the epoch ended.
                    match replicator
                        .current(&replicated.namespace)
                        .filter(|r| r.epoch == replicated.epoch && !Arc::ptr_eq(r, &replicated))
                    {
                        Some(next) => replicated = next,
                        None => return Err(replicated.no_quorum()),
                    }
                }
            }
        }
    }

    /// [`Ticket::replicated`] at the namespace's current revision (for writes whose answer
    /// does not carry their revision, such as alias changes).
    pub async fn replicated_now(self) -> Result<(), StoreError> {
        let Some((replicator, replicated)) = &self.epoch else {
            return Ok(());
        };
        let ns = replicated.namespace.clone();
        let revision = crate::blocking::read(&replicator.inner.store, move |s| s.namespace(&ns))
            .await?
            .map_or(0, |s| s.revision);
        self.replicated(revision).await
    }
}

struct Inner {
    store: Store,
    /// Set once the cluster exists (the services that write are built before it is wired).
    cluster: std::sync::OnceLock<Cluster>,
    /// `--replicas`: the size of a replica set, the holder included.
    replicas: usize,
    namespaces: Mutex<HashMap<String, Arc<Replicated>>>,
    /// Setting a namespace up (its epoch begun, its streams started) happens once at a time.
    setup: tokio::sync::Mutex<()>,
    /// Epochs this holder is leaving for a newer one of its own ([`Replicator::close_epoch`]):
    /// nothing may start replicating them again, nor wait on them.
    closing: Mutex<HashSet<(String, u64)>>,
}

/// While alive, the epoch it names is closed on this holder ([`Replicator::close_epoch`]).
pub struct ClosingEpoch {
    replicator: Replicator,
    key: (String, u64),
}

impl Drop for ClosingEpoch {
    fn drop(&mut self) {
        self.replicator
            .inner
            .closing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// A namespace this node holds whose epoch a member of its set refuses ([`Replicator::fenced`]).
#[derive(Clone, Debug)]
pub struct FencedHold {
    /// The namespace.
    pub namespace: String,
    /// The epoch this node holds it at (fenced on that member).
    pub epoch: u64,
    /// The set it replicates to, this node first.
    pub set: Vec<NodeId>,
    /// That set's version.
    pub set_version: LogPosition,
}

/// One namespace replicated from here: its epoch, its set and what each member has.
struct Replicated {
    namespace: String,
    epoch: u64,
    set: Vec<NodeId>,
    /// The set's version, told with it in every append (`ReplicaState::set_version`): this
    /// epoch's n-th set.
    set_version: LogPosition,
    /// Members joining the set, fed but not counted until they caught up
    /// (`cfgnode_ring::next_set`).
    learners: Vec<NodeId>,
    /// Learners that hold the set's committed writes: the next set may count them.
    caught_up: Mutex<BTreeSet<NodeId>>,
    /// The committed revision when the learners started: one that reached it has caught up
    /// (under a steady load the committed revision moves on, and a learner one append behind
    /// would otherwise never count as caught up).
    learn_target: u64,
    progress: Mutex<Progress>,
    /// While learners join: the positions in the set being moved to (`desired`). A write is
    /// acknowledged only once a majority of both sets has it (joint consensus), so whenever
    /// the switch happens, every acknowledged write is on a majority of the new set too.
    joint: Option<Mutex<Progress>>,
    /// The highest revision a quorum has.
    committed: watch::Sender<u64>,
    /// The holder's own newest revision, which wakes the streams.
    local: watch::Sender<u64>,
    /// Turned true to end the streams (the namespace moved, the set changed, shutdown).
    stop: watch::Sender<bool>,
    /// Per follower, when the newest append it answered at this epoch was sent: the read
    /// lease runs from the send time of the round a quorum answered.
    acked_sent: Mutex<HashMap<NodeId, Instant>>,
    /// Per member, since when it has refused this epoch's appends as fenced (it promised a
    /// newer epoch): removed at its next answer at this epoch ([`Replicator::fenced`]).
    fenced: Mutex<HashMap<NodeId, Instant>>,
    /// After a switch that removed members: the set before it, counted too until enough of it
    /// was told of this one (`cfgnode_ring::old_set_outvoted`).
    leaving: Option<Leaving>,
    /// The last rows built, by the position they start from: followers at the same position
    /// (the usual case, every follower caught up to the previous batch) share one read and
    /// one encoding instead of each building the same append.
    built: Mutex<Option<Built>>,
    /// Where this epoch's log starts on this node (its replica record's `epoch_start`, read
    /// once the epoch began): what a build from the changes feed checks a follower's log
    /// against without a read.
    start: Option<LogPosition>,
}

/// The set a switch left, still counted: members removed by the switch are never told of the
/// new set, and one that stayed may not have answered an append of it yet; until those who
/// were not told can no longer make up a quorum of the old set, a write is acknowledged only
/// once a majority of the old set has it too, so no election in the old set can lose it
/// (docs/replication.md, "Set versions").
struct Leaving {
    old: Vec<NodeId>,
    progress: Mutex<Progress>,
    told: Mutex<BTreeSet<NodeId>>,
    done: std::sync::atomic::AtomicBool,
}

impl Leaving {
    fn new(old: Vec<NodeId>, me: &str, epoch: u64, own: LogPosition) -> Leaving {
        Leaving {
            progress: Mutex::new(Progress::new(me.to_string(), &old, epoch, own)),
            old,
            told: Mutex::default(),
            done: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn done(&self) -> bool {
        self.done.load(std::sync::atomic::Ordering::Acquire)
    }

    /// `node` answered at `position`; `told` when that answer was to an append of the new set.
    /// Answers the old set's committed revision while it still counts.
    fn record(
        &self,
        namespace: &str,
        node: &str,
        position: LogPosition,
        told: bool,
    ) -> Option<u64> {
        if self.done() {
            return None;
        }
        let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        progress.record(node, position);
        if told && self.old.iter().any(|n| n == node) {
            let mut told = self.told.lock().unwrap_or_else(|p| p.into_inner());
            told.insert(node.to_string());
            if cfgnode_ring::old_set_outvoted(&self.old, &told) {
                self.done.store(true, std::sync::atomic::Ordering::Release);
                tracing::info!(namespace, old = ?self.old, "the set left behind can no longer elect; counting the new set alone");
                return None;
            }
        }
        Some(progress.committed())
    }

    /// The holder committed `own` locally; the old set's committed revision while it counts.
    fn own(&self, own: LogPosition) -> Option<u64> {
        if self.done() {
            return None;
        }
        let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        progress.own(own);
        Some(progress.committed())
    }
}

/// An append ready to send: the base (`None`: a full copy), the position it leads to, and the
/// encoded rows.
type Encoded = (Option<LogPosition>, LogPosition, Arc<Vec<u8>>);

/// One append's rows, encoded, with the positions they lead from and to.
struct Built {
    base: LogPosition,
    to: LogPosition,
    ops: Arc<Vec<u8>>,
}

impl Replicated {
    /// The set `node` is told in appends: the set, and a learner itself among the members (it
    /// refuses appends from a set it is not in; told a set one larger, it cannot be elected
    /// with the members it is joining alone).
    fn advertised(&self, node: &str) -> Vec<NodeId> {
        let mut set = self.set.clone();
        if self.learners.iter().any(|l| l == node) {
            set.extend(self.learners.iter().cloned());
        }
        set
    }

    fn is_learner(&self, node: &str) -> bool {
        self.learners.iter().any(|l| l == node)
    }

    /// A learner answered at `position`: caught up once it holds the committed writes.
    fn learned(&self, node: &str, position: LogPosition) {
        if position.epoch == self.epoch && position.revision >= self.learn_target {
            let mut caught_up = self.caught_up.lock().unwrap_or_else(|p| p.into_inner());
            if caught_up.insert(node.to_string()) {
                tracing::info!(namespace = %self.namespace, learner = node, "a joining replica caught up");
            }
        }
    }

    /// Records that `node` answered, at this epoch, an append sent at `sent`, and returns
    /// the send time a quorum (this node included) has answered since, if any: the start of the
    /// read lease.
    fn acked(&self, node: &str, sent: Instant) -> Option<Instant> {
        let mut acked = self.acked_sent.lock().unwrap_or_else(|p| p.into_inner());
        let newest = acked.entry(node.to_string()).or_insert(sent);
        *newest = (*newest).max(sent);
        // The holder is one of the quorum; the other members are the newest answers.
        let lease_of = |members: &[NodeId]| {
            let mut times: Vec<Instant> = acked
                .iter()
                .filter(|(node, _)| members.contains(node))
                .map(|(_, at)| *at)
                .collect();
            times.sort_unstable_by(|a, b| b.cmp(a));
            match cfgnode_ring::quorum(members.len()).saturating_sub(1) {
                0 => Some(sent),
                n => times.get(n - 1).copied(),
            }
        };
        let lease = lease_of(&self.set);
        // While the set left behind could still elect (`Leaving`), a majority of it must have
        // answered too: its members promise nothing to a candidate until a lease after they
        // last heard from this holder.
        match self.leaving.as_ref().filter(|l| !l.done()) {
            Some(leaving) => lease.zip(lease_of(&leaving.old)).map(|(a, b)| a.min(b)),
            None => lease,
        }
    }

    /// Records `node` at `position` and publishes the new committed revision.
    fn record(&self, node: &str, position: LogPosition) {
        let committed = {
            let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
            progress.record(node, position);
            let mut committed = progress.committed();
            if let Some(joint) = &self.joint {
                let mut joint = joint.lock().unwrap_or_else(|p| p.into_inner());
                joint.record(node, position);
                committed = committed.min(joint.committed());
            }
            if let Some(leaving) = &self.leaving {
                // An answer at this epoch from a member (not a learner) was to an append that
                // told it this set.
                let told = position.epoch == self.epoch && !self.is_learner(node);
                if let Some(old) = leaving.record(&self.namespace, node, position, told) {
                    committed = committed.min(old);
                }
            }
            committed
        };
        raise(&self.committed, committed);
    }

    /// The holder committed `revision` locally.
    fn local_commit(&self, revision: u64) {
        let own = LogPosition::new(self.epoch, revision);
        let committed = {
            let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
            progress.own(own);
            let mut committed = progress.committed();
            if let Some(joint) = &self.joint {
                let mut joint = joint.lock().unwrap_or_else(|p| p.into_inner());
                joint.own(own);
                committed = committed.min(joint.committed());
            }
            if let Some(old) = self.leaving.as_ref().and_then(|l| l.own(own)) {
                committed = committed.min(old);
            }
            committed
        };
        raise(&self.local, revision);
        raise(&self.committed, committed);
    }

    /// The `no_quorum` answer of a write this replication did not bring to a quorum, naming
    /// the followers that lag.
    fn no_quorum(&self) -> StoreError {
        StoreError::NoQuorum {
            namespace: self.namespace.clone(),
            detail: self.lagging(),
        }
    }

    /// Which followers lag, for the `no_quorum` message.
    fn lagging(&self) -> String {
        let progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        let lagging: Vec<String> = progress
            .lagging()
            .into_iter()
            .map(|(node, behind)| format!("{node} {behind} behind"))
            .collect();
        format!("replica set {:?}; {}", self.set, lagging.join(", "))
    }
}

/// Raises a revision published on `channel` to `to`, waking its waiters only when it moved.
fn raise(channel: &watch::Sender<u64>, to: u64) {
    channel.send_if_modified(|current| {
        let moved = to > *current;
        *current = (*current).max(to);
        moved
    });
}

impl Replicator {
    /// A replicator for replica sets of `replicas` nodes (1: no replication).
    pub fn new(store: Store, replicas: usize) -> Replicator {
        Replicator {
            inner: Arc::new(Inner {
                store,
                cluster: std::sync::OnceLock::new(),
                replicas: replicas.max(1),
                namespaces: Mutex::default(),
                setup: tokio::sync::Mutex::new(()),
                closing: Mutex::default(),
            }),
        }
    }

    /// True when every replica set is this node alone (no cluster attached yet counts as
    /// solo): nothing to wait for.
    fn solo(&self) -> bool {
        self.inner.cluster.get().is_none_or(Cluster::solo)
    }

    /// Wires the cluster in (routing, membership, peer connections).
    pub fn attach(&self, cluster: Cluster) {
        let _ = self.inner.cluster.set(cluster);
    }

    /// Whether writes and reads wait for a quorum at all (`--replicas` above 1).
    pub fn replicates(&self) -> bool {
        self.inner.replicas > 1
    }

    /// Runs a read of `namespace` off the async workers, and answers it only once the state it
    /// saw is durable on a quorum of the namespace's replica set (at once without replication,
    /// or on a node that does not hold it). A holder's own writes are in its store before a
    /// quorum has them; a read that showed one could show a write that a failover then loses,
    /// which is not linearizable. Answers `NoQuorum` when the quorum does not come.
    pub async fn read_visible<T, F>(&self, namespace: &str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        if !self.replicates() || self.solo() || STALE_READ.try_with(|_| ()).is_ok() {
            return crate::blocking::read(&self.inner.store, f).await;
        }
        let ticket = self.ticket(namespace).await?;
        let ns = namespace.to_string();
        let (value, revision) = crate::blocking::read(&self.inner.store, move |s| {
            let value = f(s)?;
            // Read after `f`, so at least as new as what it saw.
            let revision = s.namespace(&ns)?.map_or(0, |state| state.revision);
            Ok((value, revision))
        })
        .await?;
        ticket.replicated(revision).await?;
        Ok(value)
    }

    /// What a write (or a read) of `namespace` will wait on, taken **before** it touches the
    /// store: the replication of the epoch this node holds the namespace at now. After the
    /// local commit, [`Ticket::replicated`] waits for a quorum of that epoch's set.
    ///
    /// Why before: a node that holds the namespace by its (stale) map commits a write
    /// locally; if it learns meanwhile that another node holds it at a newer epoch, or takes
    /// the namespace back at a newer epoch with another copy of the log, the write is in no
    /// quorum's log. Looking up the replication only after the commit, as this did until
    /// session 24, found no replication at the write's epoch and acknowledged the write
    /// without a quorum: a restarted holder's first write was lost that way
    /// (`cli/tests/failover.rs`, about one round in fifty). A ticket keeps the epoch the write
    /// was committed at, so such a write answers `NoQuorum` instead.
    ///
    /// `NoQuorum` at once when this node does not hold the namespace (any more).
    pub async fn ticket(&self, namespace: &str) -> Result<Ticket, StoreError> {
        if self.inner.replicas <= 1 || self.solo() {
            return Ok(Ticket::UNREPLICATED);
        }
        // The supervisor follows changes of the set; a write only needs the epoch to match.
        let current = self.current(namespace).filter(|r| {
            self.inner
                .cluster
                .get()
                .and_then(|c| c.holder(namespace))
                .is_some_and(|record| record.epoch == r.epoch)
        });
        if let Some(current) = current {
            return Ok(Ticket {
                epoch: Some((self.clone(), current)),
            });
        }
        match self.ensure(namespace).await? {
            Some(replicated) => Ok(Ticket {
                epoch: Some((self.clone(), replicated)),
            }),
            None if self.holds(namespace) => Ok(Ticket::UNREPLICATED),
            None => Err(StoreError::NoQuorum {
                namespace: namespace.to_string(),
                detail: "this node no longer holds the namespace by the cluster map, so no \
                         quorum of its replica set can confirm this request here; retry: it \
                         goes to the holder"
                    .to_string(),
            }),
        }
    }

    /// Whether the cluster map names this node the namespace's holder (or no cluster is
    /// attached yet).
    fn holds(&self, namespace: &str) -> bool {
        self.inner
            .cluster
            .get()
            .is_none_or(|c| c.holder(namespace).is_some_and(|r| r.holder == c.me()))
    }

    /// The namespace's replication, started (or restarted with a new set or epoch) if this
    /// node holds it; `None` when it does not, or when its set is this node alone.
    async fn ensure(&self, namespace: &str) -> Result<Option<Arc<Replicated>>, StoreError> {
        let Some(cluster) = self.inner.cluster.get() else {
            return Ok(None);
        };
        let Some(record) = cluster
            .holder(namespace)
            .filter(|r| r.holder == cluster.me())
        else {
            self.stop(namespace);
            return Ok(None);
        };
        self.refuse_closing(namespace, record.epoch)?;
        let me = cluster.me().to_string();
        let mut desired = cluster
            .view()
            .replica_set(namespace, &me, self.inner.replicas);
        // A handoff to a node outside the set makes it a member first: it learns, then the
        // set grows by it, and only then does the handoff go on (docs/replication.md,
        // "Handoff"), so the members know it before it holds the namespace.
        if let Some(receiver) = cluster.joining(namespace)
            && desired.len() > 1
            && !desired.contains(&receiver)
        {
            desired.push(receiver);
        }
        let running = self.current(namespace);
        let (current_set, caught_up) = match &running {
            Some(r) if r.epoch == record.epoch => (
                r.set.clone(),
                r.caught_up
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            ),
            // A new epoch (a handoff or a promotion made this node holder again): the set its
            // voters were last told is the stored one, not what this node replicated to at an
            // older epoch.
            _ => (self.stored_set(namespace, &me)?, BTreeSet::new()),
        };
        let (set, learners) = cfgnode_ring::next_set(&current_set, &desired, &caught_up);
        let same =
            |r: &Replicated| r.epoch == record.epoch && r.set == set && r.learners == learners;
        if let Some(current) = running.filter(|r| same(r)) {
            return Ok(Some(current));
        }
        if set.len() <= 1 && learners.is_empty() {
            self.stop(namespace);
            cluster.leases().solo(namespace, record.epoch);
            return Ok(None);
        }
        let _setup = self.inner.setup.lock().await;
        self.refuse_closing(namespace, record.epoch)?;
        if let Some(current) = self.current(namespace).filter(|r| same(r)) {
            return Ok(Some(current));
        }
        // The set's version: the next after the one this node's record holds for this epoch
        // (`begin_epoch` stores it before any append tells it, so a restart goes on counting),
        // so the versions of this holder's sets come in the order of its switches
        // (docs/replication.md, "Set versions").
        let stored = self
            .inner
            .store
            .replica(namespace)?
            .map_or(cfgnode_storage::LogPos::ZERO, |r| r.set_version);
        let set_version = LogPosition::new(
            record.epoch,
            if stored.epoch == record.epoch {
                stored.revision + 1
            } else {
                1
            },
        );
        self.inner
            .store
            .begin_epoch(
                namespace,
                record.epoch,
                set.clone(),
                cfgnode_storage::LogPos::new(set_version.epoch, set_version.revision),
            )
            .await?;
        let revision = self
            .inner
            .store
            .namespace(namespace)?
            .map_or(0, |s| s.revision);
        let own = LogPosition::new(record.epoch, revision);
        let start = self
            .inner
            .store
            .replica(namespace)?
            .and_then(|r| r.epoch_start)
            .map(|p| LogPosition::new(p.epoch, p.revision));
        // From here each batch's changes are kept for the streams (and the namespace's writes
        // may wait uncommitted): `begin_epoch` above started the feed's chain anew.
        self.inner.store.follow_changes(namespace);
        // A switch that removes members keeps counting the set it leaves until enough of it was
        // told (`Leaving`); one that removes none carries over a previous switch's wait that
        // has not ended.
        let removes = !current_set.is_empty()
            && learners.is_empty()
            && current_set.iter().any(|n| !set.contains(n));
        let leaving = if removes {
            Some(Leaving::new(current_set.clone(), &me, record.epoch, own))
        } else {
            self.current(namespace)
                .filter(|r| r.epoch == record.epoch)
                .and_then(|r| {
                    r.leaving
                        .as_ref()
                        .filter(|l| !l.done())
                        .map(|l| Leaving::new(l.old.clone(), &me, record.epoch, own))
                })
        };
        let (stop, _) = watch::channel(false);
        let replicated = Arc::new(Replicated {
            namespace: namespace.to_string(),
            epoch: record.epoch,
            set: set.clone(),
            set_version,
            progress: Mutex::new(Progress::new(me.clone(), &set, record.epoch, own)),
            joint: (!learners.is_empty())
                .then(|| Mutex::new(Progress::new(me.clone(), &desired, record.epoch, own))),
            committed: watch::channel(0).0,
            local: watch::channel(revision).0,
            stop,
            acked_sent: Mutex::default(),
            fenced: Mutex::default(),
            built: Mutex::default(),
            leaving,
            learners: learners.clone(),
            caught_up: Mutex::new(caught_up),
            learn_target: revision,
            start,
        });
        let previous = self
            .inner
            .namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(namespace.to_string(), Arc::clone(&replicated));
        if let Some(previous) = previous {
            let _ = previous.stop.send(true);
        }
        cluster.publish_set(namespace, Some(set.clone()));
        tracing::info!(namespace, epoch = record.epoch, replicas = ?set, ?learners, "replicating");
        for follower in set.iter().skip(1).chain(learners.iter()) {
            tokio::spawn(stream(
                self.inner.store.clone(),
                cluster.clone(),
                Arc::clone(&replicated),
                follower.clone(),
            ));
        }
        Ok(Some(replicated))
    }

    /// The set this node's replica record names (the one its voters were last told of), this
    /// node first; empty when it names none.
    fn stored_set(&self, namespace: &str, me: &str) -> Result<Vec<NodeId>, StoreError> {
        let stored = self
            .inner
            .store
            .replica(namespace)?
            .map(|r| r.replicas)
            .unwrap_or_default();
        if stored.is_empty() {
            return Ok(stored);
        }
        Ok(std::iter::once(me.to_string())
            .chain(stored.into_iter().filter(|n| n != me))
            .collect())
    }

    /// The members this node replicates `namespace` to right now, learners included, holder
    /// first; `None` when it does not replicate it (not the holder, a set of one, or not set
    /// up yet). What a state query to the holder answers as its set: a copy outside it was
    /// left behind by a change of the set (`replication::release`).
    pub fn live_set(&self, namespace: &str) -> Option<Vec<NodeId>> {
        let replicated = self.current(namespace)?;
        let mut set = replicated.set.clone();
        set.extend(replicated.learners.iter().cloned());
        Some(set)
    }

    /// The namespaces replicated from here with a member of the set that has refused their
    /// epoch as fenced for at least `since` (it promised a newer epoch to a candidate that has
    /// not taken the namespace, or not yet). Each one reported starts counting again, so a
    /// namespace is reported at most once per `since` while the refusals go on
    /// (`promote::watch_holders` runs the holder's own election for it).
    pub fn fenced(&self, since: Duration) -> Vec<FencedHold> {
        let now = Instant::now();
        let namespaces = self
            .inner
            .namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        namespaces
            .values()
            .filter_map(|replicated| {
                let mut fenced = replicated.fenced.lock().unwrap_or_else(|p| p.into_inner());
                let mut long = fenced
                    .iter_mut()
                    .filter(|(node, _)| replicated.set.contains(*node))
                    .filter(|(_, from)| now.duration_since(**from) >= since)
                    .peekable();
                long.peek()?;
                for (_, from) in long {
                    *from = now;
                }
                Some(FencedHold {
                    namespace: replicated.namespace.clone(),
                    epoch: replicated.epoch,
                    set: replicated.set.clone(),
                    set_version: replicated.set_version,
                })
            })
            .collect()
    }

    /// Closes `namespace`'s `epoch` on this holder, which has won a newer epoch of its own (a
    /// leftover fence, `promote::take_newer_epoch`) and is about to record it: its replication
    /// stops, so the requests waiting on it answer `no_quorum` at once, and until the guard is
    /// dropped no request can start it again (each answers `no_quorum`).
    ///
    /// Why: the take-over waits for the requests that hold the namespace's gate, and those
    /// wait for a quorum of the old epoch, which a fence may keep from ever coming (its other
    /// follower dead): they held the take-over for up to `QUORUM_WAIT` (1.15 s in a history
    /// run, until a restart stopped the streams). Those writes are in this holder's log, which
    /// the new epoch starts from, so they may still reach a quorum; like any `no_quorum`
    /// answer, theirs says to read back.
    pub async fn close_epoch(&self, namespace: &str, epoch: u64) -> ClosingEpoch {
        let key = (namespace.to_string(), epoch);
        let _setup = self.inner.setup.lock().await;
        self.inner
            .closing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        if self.current(namespace).is_some_and(|r| r.epoch == epoch) {
            self.stop(namespace);
        }
        ClosingEpoch {
            replicator: self.clone(),
            key,
        }
    }

    /// `NoQuorum` when `namespace`'s `epoch` is closing ([`Replicator::close_epoch`]).
    fn refuse_closing(&self, namespace: &str, epoch: u64) -> Result<(), StoreError> {
        let closing = self
            .inner
            .closing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(namespace.to_string(), epoch));
        if closing {
            return Err(StoreError::NoQuorum {
                namespace: namespace.to_string(),
                detail: format!(
                    "this holder is leaving epoch {epoch} for a newer one (members promised \
                     an epoch nobody took); retry in a moment"
                ),
            });
        }
        Ok(())
    }

    fn current(&self, namespace: &str) -> Option<Arc<Replicated>> {
        self.inner
            .namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(namespace)
            .cloned()
    }

    fn stop(&self, namespace: &str) {
        let gone = self
            .inner
            .namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(namespace);
        if let Some(gone) = gone {
            let _ = gone.stop.send(true);
        }
        self.inner.store.unfollow_changes(namespace);
        if let Some(cluster) = self.inner.cluster.get() {
            cluster.leases().forget(namespace);
            cluster.publish_set(namespace, None);
        }
    }

    /// Keeps replication in step with the map and the membership until `stopped`: starts it
    /// for every namespace held here (so followers catch up with no new write), restarts it
    /// when the set or the epoch changes, stops it for namespaces that moved away.
    pub async fn supervise(self, mut stopped: watch::Receiver<bool>) {
        if self.inner.replicas <= 1 {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SUPERVISE_EVERY) => {}
                _ = until_stopped(&mut stopped) => break,
            }
            let Some(cluster) = self.inner.cluster.get() else {
                continue;
            };
            let held = cluster.held();
            for namespace in self.running().iter().filter(|ns| !held.contains(ns)) {
                self.stop(namespace);
            }
            for namespace in held.iter().filter(|ns| !ns.starts_with('_')) {
                match self.ensure(namespace).await {
                    Ok(_) => {}
                    // Held from its creation on, written a moment later: nothing to ship yet.
                    Err(StoreError::NamespaceNotFound { .. }) => {}
                    // Its epoch is closing: the newer one starts once it is recorded.
                    Err(StoreError::NoQuorum { .. }) => {}
                    Err(e) => {
                        tracing::warn!(namespace, error = %e, "cannot replicate the namespace");
                    }
                }
            }
        }
        for namespace in self.running() {
            self.stop(&namespace);
        }
    }

    /// The namespaces replicated from here now.
    fn running(&self) -> Vec<String> {
        self.inner
            .namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }
}

/// Ships to `follower` what it lacks of `replicated`'s namespace, for as long as the stream
/// is not stopped: one append in flight, the next one built when it is answered, so writes that
/// commit meanwhile go out as one batch; an empty append (a heartbeat) every
/// [`cfgnode_ring::HEARTBEAT_MS`] when there is nothing new.
async fn stream(store: Store, cluster: Cluster, replicated: Arc<Replicated>, follower: NodeId) {
    let namespace = replicated.namespace.clone();
    let mut stop = replicated.stop.subscribe();
    let mut local = replicated.local.subscribe();
    let heartbeat = Duration::from_millis(cfgnode_ring::HEARTBEAT_MS);
    let mut known: Option<LogPosition> = None;
    let mut retry = RETRY_FIRST;
    loop {
        if *stop.borrow() {
            return;
        }
        let sent = Instant::now();
        // An append to a follower that hangs (killed, its connection not closed yet) can take
        // `APPEND_TIMEOUT`, as long as a node's shutdown waits for the store to be let go: the
        // stream ends at once when it is stopped (the append is then as good as lost, which
        // every append may be).
        let outcome = tokio::select! {
            outcome = append_once(&store, &cluster, &replicated, &follower, known) => outcome,
            _ = until_stopped(&mut stop) => return,
        };
        match outcome {
            Ok(position) => {
                retry = RETRY_FIRST;
                known = Some(position);
                if position.epoch == replicated.epoch {
                    replicated
                        .fenced
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&follower);
                }
                if replicated.is_learner(&follower) {
                    replicated.learned(&follower, position);
                } else if position.epoch == replicated.epoch {
                    cluster.told(&namespace, &replicated.set, &follower);
                }
                replicated.record(&follower, position);
                let metrics = cluster.metrics();
                metrics.appends.get_or_create(&OK).inc();
                let behind = local.borrow().saturating_sub(position.revision);
                metrics.replication_lag.observe(behind as f64);
                if position.epoch == replicated.epoch
                    && !replicated.is_learner(&follower)
                    && let Some(lease_start) = replicated.acked(&follower, sent)
                {
                    cluster
                        .leases()
                        .extend(&namespace, replicated.epoch, lease_start);
                }
                // Caught up with what the holder has: wait for a new commit or the heartbeat.
                // `borrow_and_update`: a commit this append already carried must not wake the
                // wait (an append with nothing in it, which reads the store for its
                // attachments, went out after every batch so).
                if position.epoch == replicated.epoch
                    && position.revision >= *local.borrow_and_update()
                {
                    tokio::select! {
                        _ = local.changed() => {}
                        _ = tokio::time::sleep(heartbeat) => {}
                        _ = until_stopped(&mut stop) => return,
                    }
                }
            }
            Err(failure) => {
                cluster.metrics().appends.get_or_create(&FAILED).inc();
                if failure.fenced {
                    replicated
                        .fenced
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(follower.clone())
                        .or_insert_with(Instant::now);
                }
                if failure.resync {
                    known = None;
                }
                tracing::debug!(namespace, follower, error = %failure.message, "append failed");
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = until_stopped(&mut stop) => return,
                }
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Why an append did not go through, and whether the follower's position must be asked again.
struct Failure {
    message: String,
    resync: bool,
    /// The follower refused the epoch itself (`fenced`: it promised a newer one).
    fenced: bool,
}

impl Failure {
    fn new(message: impl Into<String>, resync: bool) -> Failure {
        Failure {
            message: message.into(),
            resync,
            fenced: false,
        }
    }
}

/// One append to `follower`: asks its position first when unknown, builds the rows per
/// `sync_plan`, sends them, and answers the follower's new position.
async fn append_once(
    store: &Store,
    cluster: &Cluster,
    replicated: &Arc<Replicated>,
    follower: &str,
    known: Option<LogPosition>,
) -> Result<LogPosition, Failure> {
    let namespace = replicated.namespace.as_str();
    let addr = cluster
        .addr_of(follower)
        .ok_or_else(|| Failure::new(format!("no address for {follower}"), false))?;
    let call = |request: PeerRequest| async move {
        cluster.peers().call(addr, request, APPEND_TIMEOUT).await
    };
    let base = match known {
        Some(position) => position,
        None => {
            let answer = call(PeerRequest::ReplicaState {
                namespace: namespace.to_string(),
            })
            .await
            .map_err(|e| Failure::new(e.into_wire().message, true))?;
            match answer {
                Response::Peer(PeerResponse::Replica(state)) => {
                    state.map_or(LogPosition::ZERO, |s| ring_position(s.position))
                }
                other => {
                    return Err(Failure::new(
                        format!("unexpected answer to a state query: {other:?}"),
                        true,
                    ));
                }
            }
        }
    };
    let (base_sent, to, ops) =
        match reuse(replicated, base).or_else(|| from_feed(store, replicated, base)) {
            Some(built) => built,
            None => {
                let (store, replicated) = (store.clone(), Arc::clone(replicated));
                tokio::task::spawn_blocking(move || build_encoded(&store, &replicated, base))
                    .await
                    .map_err(|e| Failure::new(format!("the read task failed: {e}"), true))?
                    .map_err(|e| Failure::new(e, true))?
            }
        };
    let answer = call(PeerRequest::ReplicaAppend {
        namespace: namespace.to_string(),
        epoch: replicated.epoch,
        replicas: replicated.advertised(follower),
        base: base_sent.map(wire_position),
        to: wire_position(to),
        ops: ops.as_ref().clone(),
        set_version: wire_position(replicated.set_version),
    })
    .await;
    match answer {
        Ok(Response::Peer(PeerResponse::Replica(Some(state)))) => Ok(ring_position(state.position)),
        Ok(other) => Err(Failure::new(format!("unexpected answer: {other:?}"), true)),
        // A network failure leaves the follower's position probably unchanged (or moved to
        // `to`, which the next append's refusal will tell); any refusal means "ask again".
        Err(PeerError::Unreachable(why)) => Err(Failure::new(why, false)),
        Err(PeerError::Answered(e)) => {
            let level_warn = matches!(e.code.as_str(), codes::FENCED | codes::NOT_A_REPLICA);
            if level_warn {
                tracing::warn!(namespace, follower, code = %e.code, error = %e.message, "a follower refuses this holder's appends");
            }
            let mut failure = Failure::new(format!("{}: {}", e.code, e.message), true);
            failure.fenced = e.code == codes::FENCED;
            Err(failure)
        }
    }
}

/// The rows built last for a follower at `base`, if they still reach the newest revision
/// this holder has committed (a follower that got them lacks nothing the rows leave out).
fn reuse(replicated: &Replicated, base: LogPosition) -> Option<Encoded> {
    let newest = *replicated.local.borrow();
    let built = replicated.built.lock().unwrap_or_else(|p| p.into_inner());
    built
        .as_ref()
        .filter(|b| b.base == base && b.to.revision >= newest)
        .map(|b| (Some(b.base), b.to, Arc::clone(&b.ops)))
}

/// The rows for a follower at `base` from the store's changes feed (the batches committed
/// since its revision, kept in memory by the writer), with no read and no blocking: `None`
/// when the feed does not reach back to it or has nothing newer, or its log is not a prefix
/// of this one's (then [`build`] reads the store).
fn from_feed(store: &Store, replicated: &Replicated, base: LogPosition) -> Option<Encoded> {
    let start = replicated.start?;
    let rows = store.feed_rows(&replicated.namespace, base.revision, MAX_APPEND_BYTES)?;
    if rows.ops.len() > MAX_APPEND_BYTES {
        return None;
    }
    let to = LogPosition::new(replicated.epoch, rows.to);
    match sync_plan(start, to, base) {
        SyncPlan::Rows { from_revision } if from_revision == base.revision => {}
        _ => return None,
    }
    let ops = Arc::new(rows.ops);
    keep_built(replicated, base, to, &ops);
    Some((Some(base), to, ops))
}

/// Keeps rows that start at `base` for the next follower at the same position.
fn keep_built(replicated: &Replicated, base: LogPosition, to: LogPosition, ops: &Arc<Vec<u8>>) {
    *replicated.built.lock().unwrap_or_else(|p| p.into_inner()) = Some(Built {
        base,
        to,
        ops: Arc::clone(ops),
    });
}

/// [`build`], encoded and checked against [`MAX_APPEND_BYTES`]; new rows (not a full copy,
/// not a heartbeat) are kept for the next follower at the same position.
fn build_encoded(
    store: &Store,
    replicated: &Replicated,
    base: LogPosition,
) -> Result<Encoded, String> {
    let (base_sent, to, ops) = build(store, replicated, base)?;
    let ops = bincode::serde::encode_to_vec(&ops, bincode::config::standard())
        .map_err(|e| format!("cannot encode rows: {e}"))?;
    if ops.len() > MAX_APPEND_BYTES {
        return Err(format!(
            "the rows are {} bytes, over the {MAX_APPEND_BYTES} a single append may carry",
            ops.len()
        ));
    }
    let ops = Arc::new(ops);
    // Heartbeats are not kept: each carries the attachments as they are now (they change
    // without a revision), so a follower that is caught up still gets new cursors.
    if let Some(base) = base_sent.filter(|b| to.revision > b.revision) {
        keep_built(replicated, base, to, &ops);
    }
    Ok((base_sent, to, ops))
}

/// The rows that bring a follower at `follower` up to the holder's newest revision: the changes
/// since its revision when its log is a prefix of the holder's, else a full copy. Answers the
/// base to send (`None`: a full copy), the position the follower will be at, and the rows.
fn build(
    store: &Store,
    replicated: &Replicated,
    follower: LogPosition,
) -> Result<(Option<LogPosition>, LogPosition, Vec<TransferOp>), String> {
    let namespace = replicated.namespace.as_str();
    let record = store
        .replica(namespace)
        .map_err(|e| e.to_string())?
        .ok_or("the namespace has no replica record here")?;
    let start = record
        .epoch_start
        .map(|p| LogPosition::new(p.epoch, p.revision))
        .ok_or("this node does not hold the namespace any more")?;
    let now_revision = store
        .namespace(namespace)
        .map_err(|e| e.to_string())?
        .map_or(0, |s| s.revision);
    let now = LogPosition::new(replicated.epoch, now_revision);
    if let SyncPlan::Rows { from_revision } = sync_plan(start, now, follower)
        && let Some((state, ops)) = store
            .export_changes(namespace, from_revision)
            .map_err(|e| e.to_string())?
    {
        let to = LogPosition::new(replicated.epoch, state.revision);
        return Ok((Some(follower), to, ops));
    }
    let mut export = store.export(namespace).map_err(|e| e.to_string())?;
    let to = LogPosition::new(replicated.epoch, export.state().revision);
    let mut ops = Vec::new();
    while let Some(chunk) = export.next_chunk(1 << 20).map_err(|e| e.to_string())? {
        ops.extend(chunk);
    }
    Ok((None, to, ops))
}

fn ring_position(position: WireLogPosition) -> LogPosition {
    LogPosition::new(position.epoch, position.revision)
}

fn wire_position(position: LogPosition) -> WireLogPosition {
    WireLogPosition {
        epoch: position.epoch,
        revision: position.revision,
    }
}
