//! The cluster role of a node: the directory, pins and claims (the cluster map), routing
//! requests to a namespace's holder, handoff, and anti-entropy.
//!
//! - `state`: the map (`cfgnode-ring`'s [`ClusterMap`]) with its change feed and persistence.
//! - `gossip`: foca custom broadcasts carrying map updates.
//! - `peers`: node-to-node requests over QUIC.
//! - `forward`: routing a request to its holder (serve it here through the caller's local
//!   server, forward it, or redirect).
//! - `admin`: the cluster-admin answers (members, placement, ring, claims, pins).
//! - `handoff`: moving a namespace's data to its desired owner; the reconcile loop.
//! - `sync`: anti-entropy, a digest exchange with a random peer at join and periodically.
//!
//! The decisions are pure and live in `cfgnode-ring` (`route`, `handoff_target`, `Handoff`);
//! this module carries them out.

pub mod admin;
mod forward;
mod gossip;
pub mod handoff;
mod peers;
mod state;
pub mod sync;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cfgnode_ring::{
    ClusterMap, DEFAULT_VNODES, Directive, HolderRecord, Intent, NodeId, Placement, Reason, Ring,
    Route, Update, desired_owner,
};
use cfgnode_storage::{Store, StoreError, validate_namespace};
use cfgnode_transport::{WireError, WireMember, WirePlacement, WireRedirect, WireRingShare, codes};
use tokio::sync::{OwnedRwLockReadGuard, RwLock, mpsc, watch};

use crate::feeds::Feeds;
use crate::membership::{MemberState, MemberView, Membership};
use crate::metrics::Metrics;

pub use forward::{forward_hop, http_intent, http_namespace, intent_of, moving, serve_routed};
pub use gossip::GossipHandler;
pub use peers::{PeerError, Peers};
pub use state::MapState;

/// Most nodes a request is sent to before the caller gets a "namespace is moving" error.
pub const MAX_HOPS: u8 = 2;
/// How long a request waits for a namespace frozen by a handoff.
const GATE_WAIT: Duration = Duration::from_secs(10);
/// How long a forwarded request may take on the holder.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request that depends on a namespace being absent (a creation, a read of an
/// unknown namespace) waits for a node that just started to merge the cluster map.
const SYNC_WAIT: Duration = Duration::from_secs(5);
/// How long a member may take to answer a create check.
const CREATE_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Where a request for a namespace is served.
#[derive(Debug)]
pub enum Target {
    /// Here. Holding the permit keeps a handoff from freezing the namespace under the request.
    Local(Permit),
    /// On another node.
    Remote {
        /// Its id.
        node: NodeId,
        /// Its QUIC address.
        addr: SocketAddr,
        /// The holder epoch this is based on (0 when nobody holds the namespace yet).
        epoch: u64,
    },
}

impl Target {
    /// The redirect a caller that follows redirects gets for a remote target.
    pub fn redirect(&self, namespace: &str) -> Option<WireRedirect> {
        match self {
            Target::Local(_) => None,
            Target::Remote { node, addr, epoch } => Some(WireRedirect {
                namespace: namespace.to_string(),
                holder: node.clone(),
                quic_addr: addr.to_string(),
                epoch: *epoch,
            }),
        }
    }
}

/// Marks a namespace as being created here while it lives (create checks of other members
/// see it).
struct CreatingMark<'a> {
    cluster: &'a Cluster,
    namespace: String,
}

impl<'a> CreatingMark<'a> {
    fn new(cluster: &'a Cluster, namespace: &str) -> Self {
        cluster
            .inner
            .creating
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(namespace.to_string());
        CreatingMark {
            cluster,
            namespace: namespace.to_string(),
        }
    }
}

impl Drop for CreatingMark<'_> {
    fn drop(&mut self) {
        self.cluster
            .inner
            .creating
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.namespace);
    }
}

/// Permission to serve a request for a namespace here; a handoff waits until every permit is
/// dropped before it freezes the namespace.
#[derive(Debug)]
pub struct Permit(#[allow(dead_code)] OwnedRwLockReadGuard<()>);

impl Permit {
    /// Runs `work` (serving one request here) to its end in a task of its own that holds this
    /// permit until then, and waits for it.
    ///
    /// Why a task: a request future is dropped when its client hangs up. Dropped with it, the
    /// permit would let a handoff freeze and copy the namespace while the request's write still
    /// waits in the storage writer; that write would then commit on the old holder after the
    /// copy, and be lost. The task is not dropped with the caller, so the permit lasts until
    /// the write is committed and answered (nobody may be left to read the answer).
    pub async fn run_to_completion<F>(self, work: F) -> Result<F::Output, tokio::task::JoinError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tokio::spawn(async move {
            let output = work.await;
            drop(self);
            output
        })
        .await
    }
}

/// Why a request cannot be routed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The holder is down; its data is on that node only.
    #[error(
        "namespace {namespace:?} is held by node {node:?}, which is down; it is served again as soon as {node} is back (check `cfgnode cluster members`)"
    )]
    HolderDown {
        /// The namespace.
        namespace: String,
        /// The holder.
        node: NodeId,
    },
    /// The namespace is frozen by a handoff for longer than a request may wait.
    #[error("namespace {namespace:?} is moving to another node; retry in a moment")]
    Moving {
        /// The namespace.
        namespace: String,
    },
    /// No member is alive to own a new namespace.
    #[error("no cluster member can own namespace {namespace:?}")]
    NoOwner {
        /// The namespace.
        namespace: String,
    },
    /// The node cannot yet tell whether the namespace exists (or who creates it).
    #[error("namespace {namespace:?}: {why}; retry in a moment")]
    NotReady {
        /// The namespace.
        namespace: String,
        /// What is missing.
        why: String,
    },
    /// Storage failed while recording a new namespace.
    #[error(transparent)]
    Storage(#[from] StoreError),
}

impl RouteError {
    /// The error as the wire carries it.
    pub fn to_wire(&self) -> WireError {
        let code = match self {
            RouteError::HolderDown { .. } => codes::HOLDER_DOWN,
            RouteError::Moving { .. } => codes::MOVING,
            RouteError::NoOwner { .. } => codes::UNAVAILABLE,
            RouteError::NotReady { .. } => codes::NOT_READY,
            RouteError::Storage(e) => crate::error::error_code(e),
        };
        WireError::new(code, self.to_string())
    }
}

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
    giving: Mutex<HashSet<String>>,
    /// Set by tests only: refuse every handoff commit received.
    refuse_commits: std::sync::atomic::AtomicBool,
    /// Namespaces this node is checking or creating right now (see [`Cluster::route`]).
    creating: Mutex<HashSet<String>>,
    /// True once this node has merged the cluster map from a peer (or is a cluster's first
    /// node): until then it cannot tell a new namespace from one it has not heard of yet.
    synced: watch::Sender<bool>,
    /// The member list as last seen, and the routing view built from it.
    view: Mutex<(watch::Receiver<Vec<MemberView>>, Arc<View>)>,
    metrics: Arc<Metrics>,
    feeds: Feeds,
    stop: watch::Receiver<bool>,
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
                giving: Mutex::default(),
                creating: Mutex::default(),
                refuse_commits: std::sync::atomic::AtomicBool::new(false),
                synced: watch::channel(synced).0,
                view: Mutex::new((members, view)),
                metrics,
                feeds,
                stop,
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

    /// Waits (up to [`SYNC_WAIT`]) until the map was merged from a peer.
    async fn wait_synced(&self, namespace: &str) -> Result<(), RouteError> {
        let mut synced = self.inner.synced.subscribe();
        match tokio::time::timeout(SYNC_WAIT, synced.wait_for(|s| *s)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(RouteError::NotReady {
                namespace: namespace.to_string(),
                why: "this node has not yet merged the cluster map from a peer since it started (is any member reachable?)".to_string(),
            }),
        }
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

    /// Where a request for `namespace` is served. Creates the namespace's holder record when
    /// this node is its desired owner and the request writes; waits (up to 10 s) while a
    /// handoff has the namespace frozen.
    pub async fn route(&self, namespace: &str, intent: Intent) -> Result<Target, RouteError> {
        for _ in 0..4 {
            let view = self.view();
            let decision = self.inner.state.read(|map| {
                let placement = view.desired(namespace, map);
                cfgnode_ring::route(
                    &self.inner.me,
                    namespace,
                    map,
                    placement.as_ref(),
                    &view.alive,
                    intent,
                )
            });
            if matches!(decision, Route::ServeAbsent | Route::Create) && !self.is_synced() {
                // Absence means nothing before the map was merged from a peer: wait, then
                // decide again.
                self.wait_synced(namespace).await?;
                continue;
            }
            match decision {
                Route::Serve | Route::ServeAbsent => {
                    let gate = self.gate(namespace);
                    let guard = tokio::time::timeout(GATE_WAIT, gate.read_owned())
                        .await
                        .map_err(|_| RouteError::Moving {
                            namespace: namespace.to_string(),
                        })?;
                    // A handoff may have finished while this request waited.
                    let still = self.inner.state.read(|map| match map.holder(namespace) {
                        Some(r) => r.holder == self.inner.me,
                        None => decision == Route::ServeAbsent,
                    });
                    if still {
                        return Ok(Target::Local(Permit(guard)));
                    }
                }
                Route::Create => {
                    // Created under the gate: a request that sees the new record waits until
                    // it is durable (no write is acknowledged under a record a crash could
                    // lose).
                    let gate = self.gate(namespace);
                    let _creating = tokio::time::timeout(GATE_WAIT, gate.write_owned())
                        .await
                        .map_err(|_| RouteError::Moving {
                            namespace: namespace.to_string(),
                        })?;
                    if self.holder(namespace).is_none() {
                        let _mark = CreatingMark::new(self, namespace);
                        if !self.check_creation(namespace, &view).await? {
                            // A member knew a holder: it is merged now; route again.
                            continue;
                        }
                        let update = Update::Holder {
                            namespace: namespace.to_string(),
                            record: HolderRecord {
                                holder: self.inner.me.clone(),
                                epoch: 1,
                            },
                        };
                        self.author(update).await?;
                        tracing::info!(namespace, "namespace created here (holder epoch 1)");
                    }
                }
                Route::Forward { to, epoch } => {
                    let Some(addr) = view.addr_of(&to) else {
                        return Err(RouteError::HolderDown {
                            namespace: namespace.to_string(),
                            node: to,
                        });
                    };
                    return Ok(Target::Remote {
                        node: to,
                        addr,
                        epoch,
                    });
                }
                Route::Unavailable { node } => {
                    return Err(RouteError::HolderDown {
                        namespace: namespace.to_string(),
                        node,
                    });
                }
                Route::NoOwner => {
                    return Err(RouteError::NoOwner {
                        namespace: namespace.to_string(),
                    });
                }
            }
        }
        Err(RouteError::Moving {
            namespace: namespace.to_string(),
        })
    }

    /// Before creating `namespace`, asks every other alive member whether it knows a holder,
    /// has merged the map, is creating it too, and agrees that this node is its desired owner.
    /// `Ok(false)`: a member knew a holder (now merged here; route again). `Ok(true)`: every
    /// member agrees, create. An error: they do not agree yet (views differ for a moment while
    /// membership changes), so nobody creates now and the caller retries.
    ///
    /// With this, a new namespace is created by the one node every member sees as its owner,
    /// never by two nodes whose records would then be settled by a tie-break that hides one
    /// side's acknowledged writes (docs/cluster.md, Creation).
    async fn check_creation(&self, namespace: &str, view: &View) -> Result<bool, RouteError> {
        let me = self.inner.me.clone();
        let mut asks = tokio::task::JoinSet::new();
        for id in view.alive.iter().filter(|id| **id != me) {
            let Some(addr) = view.addr_of(id) else {
                continue;
            };
            let cluster = self.clone();
            let id = id.clone();
            let request = cfgnode_transport::PeerRequest::CreateCheck {
                namespace: namespace.to_string(),
            };
            asks.spawn(async move {
                let answer = cluster
                    .peers()
                    .call(addr, request, CREATE_CHECK_TIMEOUT)
                    .await;
                (id, answer)
            });
        }
        let mut known = false;
        let mut problem: Option<String> = None;
        while let Some(joined) = asks.join_next().await {
            let Ok((id, answer)) = joined else {
                problem = Some("a create check task failed".to_string());
                continue;
            };
            match answer {
                Ok(cfgnode_transport::Response::Peer(
                    cfgnode_transport::PeerResponse::CreateCheck(check),
                )) => {
                    if let Some((holder, epoch)) = check.holder {
                        let update = Update::Holder {
                            namespace: namespace.to_string(),
                            record: HolderRecord { holder, epoch },
                        };
                        known |= self.inner.state.apply_from_peer(update, &id).is_ok();
                    } else if !check.synced {
                        problem = Some(format!("member {id} has not merged the cluster map yet"));
                    } else if check.creating {
                        problem = Some(format!("member {id} is creating it at the same time"));
                    } else if check.desired_owner.as_deref() != Some(me.as_str()) {
                        problem = Some(format!(
                            "member {id} sees {:?} as its owner, not {me} (membership is changing)",
                            check.desired_owner
                        ));
                    }
                }
                Ok(other) => {
                    problem = Some(format!(
                        "member {id} answered a create check with {other:?}"
                    ))
                }
                Err(e) => {
                    problem = Some(format!(
                        "member {id} could not confirm it is new ({})",
                        e.into_wire().message
                    ))
                }
            }
        }
        if known {
            return Ok(false);
        }
        match problem {
            Some(why) => Err(RouteError::NotReady {
                namespace: namespace.to_string(),
                why: format!("cannot create it yet: {why}"),
            }),
            None => Ok(true),
        }
    }

    /// Answers another member's create check for `namespace` (see [`Cluster::check_creation`]).
    pub fn answer_create_check(
        &self,
        namespace: &str,
    ) -> Result<cfgnode_transport::WireCreateCheck, WireError> {
        validate_namespace(namespace).map_err(crate::error::to_wire_error)?;
        let view = self.view();
        let (holder, desired_owner) = self.inner.state.read(|map| {
            (
                map.holder(namespace).map(|r| (r.holder.clone(), r.epoch)),
                view.desired(namespace, map).map(|p| p.owner),
            )
        });
        let creating = self
            .inner
            .creating
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(namespace);
        Ok(cfgnode_transport::WireCreateCheck {
            holder,
            desired_owner,
            synced: self.is_synced(),
            creating,
        })
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

    /// Where `namespace` is and should be.
    pub fn placement(&self, namespace: &str) -> Result<WirePlacement, WireError> {
        validate_namespace(namespace).map_err(crate::error::to_wire_error)?;
        let view = self.view();
        Ok(self.inner.state.read(|map| {
            let placement = view.desired(namespace, map);
            let record = map.holder(namespace);
            WirePlacement {
                namespace: namespace.to_string(),
                desired_owner: placement.as_ref().map(|p| p.owner.clone()),
                holder: record.map(|r| r.holder.clone()),
                epoch: record.map_or(0, |r| r.epoch),
                reason: placement.map(|p| reason_name(p.reason).to_string()),
            }
        }))
    }

    /// Every member this node knows.
    pub fn members(&self) -> Vec<WireMember> {
        self.inner
            .membership
            .members()
            .into_iter()
            .map(|m: MemberView| WireMember {
                id: m.peer.id,
                quic_addr: m.peer.quic.to_string(),
                http_addr: m.peer.http.to_string(),
                state: state_name(m.state).to_string(),
                generation: m.peer.generation,
            })
            .collect()
    }

    /// Namespaces per member: how many each holds and how many it should hold.
    pub fn ring_shares(&self) -> Vec<WireRingShare> {
        let view = self.view();
        let members = self.inner.membership.members();
        let mut shares: Vec<WireRingShare> = members
            .iter()
            .map(|m| WireRingShare {
                node: m.peer.id.clone(),
                state: state_name(m.state).to_string(),
                holds: 0,
                desired: 0,
            })
            .collect();
        self.inner.state.read(|map| {
            for (namespace, record) in map.holders() {
                if let Some(s) = shares.iter_mut().find(|s| s.node == record.holder) {
                    s.holds += 1;
                }
                if let Some(p) = view.desired(namespace, map)
                    && let Some(s) = shares.iter_mut().find(|s| s.node == p.owner)
                {
                    s.desired += 1;
                }
            }
        });
        shares
    }

    /// Sets (`Some`) or removes (`None`) a pin or claim, authored by this node with the next
    /// epoch, and answers the resulting placement. The namespace then moves in the background.
    pub async fn set_directive(
        &self,
        kind: DirectiveKind,
        namespace: &str,
        target: Option<String>,
    ) -> Result<WirePlacement, WireError> {
        validate_namespace(namespace).map_err(crate::error::to_wire_error)?;
        if let Some(node) = &target {
            let known = self
                .inner
                .membership
                .members()
                .iter()
                .any(|m| &m.peer.id == node);
            if !known {
                return Err(WireError::new(
                    codes::UNKNOWN_NODE,
                    format!(
                        "node {node:?} is not a member of this cluster; `cfgnode cluster members` lists them"
                    ),
                ));
            }
        }
        let update = self.inner.state.read(|map| {
            let current = match kind {
                DirectiveKind::Pin => map.pin(namespace),
                DirectiveKind::Claim => map.claim(namespace),
            };
            let directive = Directive::next(current, target, self.inner.me.clone())
                .map_err(|e| WireError::new(codes::INTERNAL, format!("{namespace:?}: {e}")))?;
            Ok(match kind {
                DirectiveKind::Pin => Update::Pin {
                    namespace: namespace.to_string(),
                    directive,
                },
                DirectiveKind::Claim => Update::Claim {
                    namespace: namespace.to_string(),
                    directive,
                },
            })
        })?;
        self.author(update)
            .await
            .map_err(crate::error::to_wire_error)?;
        self.placement(namespace)
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

/// Who is alive, where members are, and the ring over the alive ones: everything routing
/// needs from the membership, built once per membership change.
#[derive(Debug)]
pub struct View {
    /// Members that count as alive for placement and routing (alive or suspect: a suspect
    /// may well refute, and moving namespaces away from it at once would be churn), this node
    /// included.
    pub alive: BTreeSet<NodeId>,
    addrs: HashMap<NodeId, SocketAddr>,
    ring: Ring,
}

impl View {
    fn new(me: &str, members: &[MemberView]) -> View {
        let mut alive: BTreeSet<NodeId> = members
            .iter()
            .filter(|m| m.state != MemberState::Down)
            .map(|m| m.peer.id.clone())
            .collect();
        alive.insert(me.to_string());
        let addrs = members
            .iter()
            .map(|m| (m.peer.id.clone(), m.peer.quic))
            .collect();
        let ring = Ring::new(&alive, DEFAULT_VNODES);
        View { alive, addrs, ring }
    }

    /// The QUIC address of member `node`.
    pub fn addr_of(&self, node: &str) -> Option<SocketAddr> {
        self.addrs.get(node).copied()
    }

    /// The desired owner of `namespace` under `map`.
    pub fn desired(&self, namespace: &str, map: &ClusterMap) -> Option<Placement> {
        desired_owner(
            namespace,
            &self.ring,
            &self.alive,
            map.pin(namespace),
            map.claim(namespace),
        )
    }
}

/// Which directive an operator sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectiveKind {
    /// A pin.
    Pin,
    /// A claim.
    Claim,
}

fn reason_name(reason: Reason) -> &'static str {
    match reason {
        Reason::Pin => "pin",
        Reason::Claim => "claim",
        Reason::Ring => "ring",
    }
}

fn state_name(state: MemberState) -> &'static str {
    match state {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Down => "down",
    }
}

/// Loads the cluster map at start. A data dir from before clustering (namespaces but no
/// cluster records) gets a holder record `{me, 1}` for each of its namespaces, so its data
/// stays served. Records are never invented otherwise: a namespace's data found without a
/// record naming this node is a partial copy from an interrupted handoff and is not served.
pub async fn load_map(store: &Store) -> Result<ClusterMap, StoreError> {
    let loaded = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            let map = state::load(&store)?;
            let mut local = Vec::new();
            if map.is_empty() {
                let mut cursor: Option<String> = None;
                loop {
                    let page = store.list_namespaces("", cursor.as_deref(), 1000)?;
                    local.extend(page.items.into_iter().map(|s| s.name));
                    match page.next_cursor {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
            }
            Ok::<_, StoreError>((map, local))
        })
        .await
        .map_err(|e| StoreError::Storage(format!("cluster map load task failed: {e}")))??
    };
    let (mut map, legacy) = loaded;
    if !legacy.is_empty() {
        let updates: Vec<Update> = legacy
            .into_iter()
            .map(|namespace| Update::Holder {
                namespace,
                record: HolderRecord {
                    holder: store.node_id().to_string(),
                    epoch: 1,
                },
            })
            .collect();
        state::save_now(store, &updates).await?;
        tracing::info!(
            namespaces = updates.len(),
            "data dir from before clustering: this node holds its namespaces"
        );
        for update in updates {
            map.apply(update);
        }
    }
    Ok(map)
}

/// Starts the background work: the persister, the reconcile (handoff) loop and anti-entropy.
pub fn spawn_background(
    cluster: &Cluster,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(state::persist(
            Arc::clone(&cluster.inner.state),
            cluster.inner.store.clone(),
            stop.clone(),
        )),
        tokio::spawn(handoff::reconcile(cluster.clone(), stop.clone())),
        tokio::spawn(peers::drop_stale_connections(cluster.clone(), stop.clone())),
        tokio::spawn(sync::anti_entropy(cluster.clone(), stop)),
    ]
}
