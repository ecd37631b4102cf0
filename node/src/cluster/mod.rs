//! The cluster side of a node: the cluster map (holders, pins, claims), routing requests to a
//! namespace's holder, handoff, and anti-entropy. [`Cluster`] (here) is the handle every part
//! of the node shares; each file adds the methods of one concern:
//!
//! - `route`: where a request is served ([`Target`], `Permit`, [`RouteError`],
//!   [`Cluster::route`]).
//! - `create_check`: the question every member is asked before a new namespace is created,
//!   and its answer.
//! - `view`: [`View`], the membership as routing sees it (alive members, addresses, the ring).
//! - `admin`: the cluster-admin answers (members, placement, ring, claims, pins).
//! - `forward`: carrying a routed request out (serve it here through the caller's local
//!   server, forward it, or redirect).
//! - `state`: the map (`cfgnode-ring`'s [`ClusterMap`](cfgnode_ring::ClusterMap)) with its
//!   change feed, persistence and loading at start.
//! - `gossip`: foca custom broadcasts carrying map updates.
//! - `peers`: node-to-node requests over QUIC.
//! - `handoff`: moving a namespace's data to its desired owner, giving and receiving side.

//! - `reconcile`: the loop that starts handoffs and retries failed ones with backoff.
//! - `sync`: anti-entropy, a digest exchange with a random peer at join and periodically.
//! - `error`: [`ClusterError`], why a cluster answer failed (one wire code per variant).

//!
//! The decisions are pure and live in `cfgnode-ring` (`route`, `handoff_target`, `Handoff`,
//! the receiving rule); this module carries them out.

pub mod admin;
mod create_check;
mod error;
mod forward;
mod gossip;
pub mod handoff;
mod lease;
mod peers;
mod reconcile;
mod route;
mod state;
pub mod sync;
mod view;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cfgnode_ring::{HolderRecord, NodeId, Update};
use cfgnode_storage::{Store, StoreError};
use cfgnode_transport::WireRedirect;
use tokio::sync::{RwLock, mpsc, watch};

use crate::feeds::Feeds;
use crate::membership::{MemberView, Membership};
use crate::metrics::Metrics;
use lease::ReadLeases;

pub use admin::DirectiveKind;
pub use error::ClusterError;
pub use forward::{forward_hop, http_intent, http_namespace, intent_of, moving, serve_routed};
pub use gossip::GossipHandler;
pub use peers::{PeerError, Peers};
pub use route::{RouteError, Target};
pub use state::{MapState, load_map};
pub use view::View;

/// Most nodes a request is sent to before the caller gets a "namespace is moving" error.
pub const MAX_HOPS: u8 = 2;
/// How long a request waits for a namespace frozen by a handoff.
const GATE_WAIT: Duration = Duration::from_secs(10);
/// How long a forwarded request may take on the holder.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// The node's view of the cluster, and what it does about it. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("me", &self.inner.me)
            .finish_non_exhaustive()
    }
}

struct Inner {
    me: NodeId,
    store: Store,
    state: Arc<MapState>,
    membership: Membership,
    broadcasts: mpsc::Sender<Vec<u8>>,
    peers: Peers,
    gates: Mutex<HashMap<String, Arc<RwLock<()>>>>,
    /// Namespaces this node is receiving, with the accepted offer (the rule in `cfgnode_ring`).
    receiving: Mutex<cfgnode_ring::Receiving>,
    /// Namespaces this node is handing off right now.
    giving: Names,
    /// Set by tests only: refuse every handoff commit received.
    refuse_commits: std::sync::atomic::AtomicBool,
    /// Namespaces this node is checking or creating right now (see [`Cluster::route`]).
    creating: Names,
    /// True once this node has merged the cluster map from a peer (or is a cluster's first
    /// node): until then it cannot tell a new namespace from one it has not heard of yet.
    synced: watch::Sender<bool>,
    /// The member list as last seen, and the routing view built from it.
    view: Mutex<(watch::Receiver<Vec<MemberView>>, Arc<View>)>,
    metrics: Arc<Metrics>,
    feeds: Feeds,
    stop: watch::Receiver<bool>,
    /// Replica sets of three or more (`--replicas`): a down holder's namespaces fail over, so
    /// a request waits for the promotion instead of answering `holder_down` at once.
    failover: bool,
    /// Whether a read may be served from this node's copy of a namespace it holds.
    leases: ReadLeases,
    /// `--replicas`: the size of a namespace's replica set (placement views show it).
    replicas: usize,
    /// Handoffs from here to a node outside the namespace's replica set: the replicator makes
    /// the receiver a member first (`replication::holder`, "Handoff" in docs/replication.md).
    joining: Mutex<HashMap<String, NodeId>>,
    /// Per namespace replicated from here: the set the replicator streams to now, and the
    /// members that answered an append of it (so they hold that set in their records).
    live_sets: Mutex<HashMap<String, LiveSet>>,
    /// When a probe of a holder this node's view holds down last went unanswered, by node
    /// (`route::PROBE_BACKOFF`).
    unanswered: Mutex<HashMap<NodeId, std::time::Instant>>,
}

/// A namespace's replica set as its holder streams it now, and who was told it.
#[derive(Debug, Default)]
struct LiveSet {
    set: Vec<NodeId>,
    told: HashSet<NodeId>,
}

/// A set of namespace names that tasks share (those being created here, those being handed
/// off). Never held across an `.await`; a task that panicked holding it leaves it usable.
#[derive(Debug, Default)]
struct Names(Mutex<HashSet<String>>);

impl Names {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `namespace`; false when it was there already.
    fn insert(&self, namespace: &str) -> bool {
        self.lock().insert(namespace.to_string())
    }

    fn remove(&self, namespace: &str) {
        self.lock().remove(namespace);
    }

    fn contains(&self, namespace: &str) -> bool {
        self.lock().contains(namespace)
    }
}

/// What the cluster role of a node is made of.
#[derive(Debug)]
pub struct ClusterParts {
    /// This node's id.
    pub me: NodeId,
    /// Its storage (handoffs read and write it; cluster records live in it).
    pub store: Store,
    /// The cluster map, shared with the gossip handler.
    pub state: Arc<MapState>,
    /// Who is alive.
    pub membership: Membership,
    /// Updates to gossip, read by the membership task.
    pub broadcasts: mpsc::Sender<Vec<u8>>,
    /// Node-to-node requests.
    pub peers: Peers,
    /// The node's metrics.
    pub metrics: Arc<Metrics>,
    /// The namespaces' change feeds.
    pub feeds: Feeds,
    /// Turns true when the node stops: long waits end early then.
    pub stop: watch::Receiver<bool>,
    /// True for the first node of a new cluster (no `--join`, no member known from an earlier
    /// run): its empty map is the whole truth, so it is synced from the start.
    pub synced: bool,
    /// `--replicas`: with 3 or more, namespaces fail over when their holder dies (requests for
    /// a down holder's namespace wait for its successor); above 1, reads on the holder need a
    /// lease.
    pub replicas: usize,
}

impl Cluster {
    /// The cluster role made of `parts`.
    pub fn new(parts: ClusterParts) -> Self {
        let ClusterParts {
            me,
            store,
            state,
            membership,
            broadcasts,
            peers,
            metrics,
            feeds,
            stop,
            synced,
            replicas,
        } = parts;
        let mut members = membership.subscribe();
        let view = Arc::new(View::new(&me, &members.borrow_and_update()));
        Cluster {
            inner: Arc::new(Inner {
                me,
                store,
                state,
                membership,
                broadcasts,
                peers,
                gates: Mutex::default(),
                receiving: Mutex::default(),
                giving: Names::default(),
                creating: Names::default(),
                refuse_commits: std::sync::atomic::AtomicBool::new(false),
                synced: watch::channel(synced).0,
                view: Mutex::new((members, view)),
                metrics,
                feeds,
                stop,
                failover: replicas >= 3,
                leases: ReadLeases::new(replicas),
                replicas,
                joining: Mutex::default(),
                live_sets: Mutex::default(),
                unanswered: Mutex::default(),
            }),
        }
    }

    /// A receiver that turns true when the node stops (long-polls answer early then).
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.inner.stop.clone()
    }

    /// Whether this node has merged the cluster map from a peer since it started (or is the
    /// first node of a new cluster). `/ready` answers 503 until it has.
    pub fn is_synced(&self) -> bool {
        *self.inner.synced.borrow()
    }

    /// Records that the map was merged from a peer (anti-entropy calls it).
    pub fn mark_synced(&self) {
        self.inner
            .synced
            .send_if_modified(|synced| !std::mem::replace(synced, true));
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.inner.me
    }

    /// The membership this node sees.
    pub fn membership(&self) -> &Membership {
        &self.inner.membership
    }

    /// Node-to-node requests.
    pub fn peers(&self) -> &Peers {
        &self.inner.peers
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The namespaces' change feeds (a handoff wakes a namespace's waiters).
    pub fn feeds(&self) -> &Feeds {
        &self.inner.feeds
    }

    /// The map's change feed.
    pub fn map_state(&self) -> &Arc<MapState> {
        &self.inner.state
    }

    /// True when every namespace's replica set is this one node ([`View::solo`]): no quorum
    /// on any path.
    ///
    /// Only once this node is synced ([`Cluster::is_synced`]: the first node of a new cluster,
    /// or one that merged the map from a peer): a node that knew other members before a
    /// restart is not synced until it hears from one, and by then its member list has them.
    /// Until then it must not take "alone" from a member list that may not show them yet,
    /// or it would read without a lease and write without a quorum with a stale copy.
    pub fn solo(&self) -> bool {
        self.view().solo(self.inner.replicas) && self.is_synced()
    }

    /// The membership as routing sees it, rebuilt only when the member list changes (so a
    /// request reads a shared snapshot instead of copying the member list and the ring).
    pub fn view(&self) -> Arc<View> {
        let mut cached = self.inner.view.lock().unwrap_or_else(|p| p.into_inner());
        let (members, view) = &mut *cached;
        if members.has_changed().unwrap_or(false) {
            *view = Arc::new(View::new(&self.inner.me, &members.borrow_and_update()));
        }
        Arc::clone(view)
    }

    /// The QUIC address of member `node`.
    pub fn addr_of(&self, node: &str) -> Option<SocketAddr> {
        self.view().addr_of(node)
    }

    /// Takes in what a redirect from node `from` says: the holder record it is based on
    /// (authored by that holder, so merging it is safe), unless its epoch is implausible.
    pub fn learn(&self, redirect: &WireRedirect, from: &str) {
        if redirect.epoch == 0 {
            return;
        }
        let update = Update::Holder {
            namespace: redirect.namespace.clone(),
            record: HolderRecord {
                holder: redirect.holder.clone(),
                epoch: redirect.epoch,
            },
        };
        if let Err(e) = self.inner.state.apply_from_peer(update, from) {
            tracing::debug!(error = %e, "ignoring a malformed redirect");
        }
    }

    /// Whether a handoff could freeze `namespace` right now: takes its gate exclusively and
    /// lets go at once; false while any request holds a [`Permit`]. For tests that check when
    /// permits are released.
    #[doc(hidden)]
    pub fn could_freeze(&self, namespace: &str) -> bool {
        self.gate(namespace).try_write().is_ok()
    }

    /// Fault injection for tests: while set, this node refuses every handoff commit it
    /// receives (as a receiver whose copy does not match would), so a test can show that the
    /// giver keeps its copy and goes on serving.
    #[doc(hidden)]
    pub fn refuse_handoff_commits(&self, refuse: bool) {
        self.inner
            .refuse_commits
            .store(refuse, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether [`Cluster::refuse_handoff_commits`] is set.
    fn refuses_commits(&self) -> bool {
        self.inner
            .refuse_commits
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The per-namespace gate: requests hold it shared, a handoff's freeze holds it exclusive.
    fn gate(&self, namespace: &str) -> Arc<RwLock<()>> {
        let mut gates = self.inner.gates.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(gates.entry(namespace.to_string()).or_default())
    }

    /// Records an update this node authored: merged, made durable (by the persister, in merge
    /// order), then gossiped if it changed the map.
    async fn author(&self, update: Update) -> Result<(), StoreError> {
        let changed = self
            .inner
            .state
            .apply_durably(update.clone())
            .await
            .map_err(StoreError::Storage)?;
        if changed {
            self.broadcast(&update);
        }
        Ok(())
    }

    /// The node a handoff from here is about to give `namespace` to, when it is outside the
    /// namespace's replica set: the replicator adds it to the set it should have.
    pub(crate) fn joining(&self, namespace: &str) -> Option<NodeId> {
        self.inner
            .joining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(namespace)
            .cloned()
    }

    /// Starts (`Some`) or ends (`None`) adding a handoff's receiver to `namespace`'s set.
    pub(crate) fn set_joining(&self, namespace: &str, node: Option<NodeId>) {
        let mut joining = self.inner.joining.lock().unwrap_or_else(|p| p.into_inner());
        match node {
            Some(node) => joining.insert(namespace.to_string(), node),
            None => joining.remove(namespace),
        };
    }

    /// The replicator streams `namespace` to `set` from now on (`None`: it stopped).
    pub(crate) fn publish_set(&self, namespace: &str, set: Option<Vec<NodeId>>) {
        let mut live = self
            .inner
            .live_sets
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match set {
            Some(set) => live.insert(
                namespace.to_string(),
                LiveSet {
                    set,
                    told: HashSet::new(),
                },
            ),
            None => live.remove(namespace),
        };
    }

    /// `member` answered an append that told it `set`.
    pub(crate) fn told(&self, namespace: &str, set: &[NodeId], member: &str) {
        let mut live = self
            .inner
            .live_sets
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(current) = live.get_mut(namespace).filter(|l| l.set == set) {
            current.told.insert(member.to_string());
        }
    }

    /// Whether `node` is a member of the set `namespace` is streamed to from here and every
    /// alive member has answered an append of that set: each then holds it in its record, so
    /// if `node` takes the namespace and dies before its first append, they can elect without
    /// it (`promote.rs`, `handed_to_a_member`).
    pub(crate) fn member_and_told(&self, namespace: &str, node: &str) -> bool {
        let alive = self.view().alive.clone();
        let live = self
            .inner
            .live_sets
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        live.get(namespace).is_some_and(|l| {
            l.set.iter().any(|n| n == node)
                && l.set
                    .iter()
                    .filter(|n| *n != &self.inner.me && alive.contains(*n))
                    .all(|n| l.told.contains(n))
        })
    }

    /// Whether a handoff of `namespace` to this node is under way (an offer accepted and not
    /// committed yet): its rows are arriving, and nothing may drop them.
    pub fn receiving_handoff(&self, namespace: &str) -> bool {
        self.inner
            .receiving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .accepted(namespace)
            .is_some()
    }

    /// The read leases of the namespaces held here (the replicator extends them).
    pub(crate) fn leases(&self) -> &ReadLeases {
        &self.inner.leases
    }

    /// Makes this node the holder of `namespace` at `epoch`, replacing `replaced` (a holder
    /// that is down, whose replica set elected this node): durable, then gossiped. False when
    /// the map moved on meanwhile (another record superseded `replaced`), and nothing changed.
    pub(crate) async fn take_over(
        &self,
        namespace: &str,
        replaced: &HolderRecord,
        epoch: u64,
    ) -> Result<bool, StoreError> {
        let gate = self.gate(namespace);
        let _frozen = gate.write_owned().await;
        if self.holder(namespace).as_ref() != Some(replaced) || epoch <= replaced.epoch {
            return Ok(false);
        }
        let update = Update::Holder {
            namespace: namespace.to_string(),
            record: HolderRecord {
                holder: self.inner.me.clone(),
                epoch,
            },
        };
        self.author(update).await?;
        Ok(self
            .holder(namespace)
            .is_some_and(|r| r.holder == self.inner.me && r.epoch == epoch))
    }

    /// Hands an update to SWIM for dissemination (dropped when the queue is full: anti-entropy
    /// repairs it).
    fn broadcast(&self, update: &Update) {
        if self
            .inner
            .broadcasts
            .try_send(state::encode_update(update))
            .is_err()
        {
            tracing::debug!("broadcast queue full; anti-entropy will spread the update");
        }
    }

    /// Namespaces this node holds (for listings and the reconcile loop).
    pub fn held(&self) -> Vec<String> {
        self.inner.state.read(|map| {
            map.holders()
                .filter(|(_, r)| r.holder == self.inner.me)
                .map(|(ns, _)| ns.clone())
                .collect()
        })
    }

    /// The holder record of `namespace`.
    pub fn holder(&self, namespace: &str) -> Option<HolderRecord> {
        self.inner.state.read(|map| map.holder(namespace).cloned())
    }

    /// The store (handoff reads and writes it).
    fn store(&self) -> &Store {
        &self.inner.store
    }
}

/// Starts the background work: the persister, the reconcile (handoff) loop and anti-entropy.
pub fn spawn_background(
    cluster: &Cluster,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(state::persist(
            Arc::clone(&cluster.inner.state),
            cluster.inner.store.clone(),
            stop.clone(),
        )),
        tokio::spawn(reconcile::reconcile(cluster.clone(), stop.clone())),
        tokio::spawn(peers::drop_stale_connections(cluster.clone(), stop.clone())),
        tokio::spawn(sync::anti_entropy(cluster.clone(), stop)),
    ]
}
