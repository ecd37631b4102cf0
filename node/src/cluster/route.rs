//! Routing a namespace request: where it is served ([`Target`]), the permit that keeps a
//! handoff from freezing the namespace under a request served here ([`Permit`]), and why a
//! request cannot be routed ([`RouteError`]). The decision itself is `cfgnode_ring::route`;
//! [`Cluster::route`] carries it out (waits for the map, takes the gate, creates a new
//! namespace after its create check).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cfgnode_ring::{HolderRecord, Intent, NodeId, Route, Update};
use cfgnode_storage::StoreError;
use cfgnode_transport::{PeerRequest, WireError, WireRedirect, codes};
use tokio::sync::OwnedRwLockReadGuard;

use super::create_check::CreatingMark;
use super::peers::PeerError;
use super::view::View;
use super::{Cluster, GATE_WAIT};

/// How long a request that depends on a namespace being absent (a creation, a read of an
/// unknown namespace) waits for a node that just started to merge the cluster map.
const SYNC_WAIT: Duration = Duration::from_secs(5);

/// How long a request for a namespace whose holder is down waits for its replica set to elect
/// a successor (failover on) before it answers `holder_down`.
const FAILOVER_WAIT: Duration = Duration::from_secs(5);

/// How long a request waits for a holder this node's view holds down to answer a probe
/// before it relies on failover alone ([`Cluster::await_down_holder`]).
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// After a probe of a node went unanswered, how long requests skip probing it (a dead holder
/// is not dialed once per waiting request).
const PROBE_BACKOFF: Duration = Duration::from_secs(1);

/// How long a read on the holder waits for its read lease (a heartbeat round answered by a
/// quorum) before it answers `no_quorum`.
const LEASE_WAIT: Duration = Duration::from_secs(3);

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

/// What became of a holder this node's view holds down ([`Cluster::await_down_holder`]).
enum DownHolder {
    /// It answered a probe at this address: its view here is stale, send the request there.
    Answers(SocketAddr),
    /// The namespace has another holder now: route again.
    Replaced,
    /// It did not answer, and no successor came within the wait.
    Gone,
}

/// Why a request cannot be routed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The holder is down; its data is on that node only.
    #[error(
        "namespace {namespace:?} is held by node {node:?}, which is down; it is served again as soon as {node} is back (check `cfgnode cluster members`)"
    )]
    HolderDown {
        /// The namespace, named in the message so the caller knows which one failed.
        namespace: String,
        /// The holder.
        node: NodeId,
    },
    /// This node holds the namespace but no quorum of its replica set confirmed it lately.
    #[error(
        "namespace {namespace:?}: this node cannot confirm it is still the holder (no majority of the replica set answered within the read lease), so it does not serve a read that may be stale; retry in a moment"
    )]
    NoLease {
        /// The namespace, named in the message so the caller knows which one failed.
        namespace: String,
    },
    /// The namespace is frozen by a handoff for longer than a request may wait.
    #[error("namespace {namespace:?} is moving to another node; retry in a moment")]
    Moving {
        /// The namespace, named in the message so the caller knows which one failed.
        namespace: String,
    },
    /// No member is alive to own a new namespace.
    #[error("no cluster member can own namespace {namespace:?}")]
    NoOwner {
        /// The namespace, named in the message so the caller knows which one failed.
        namespace: String,
    },
    /// The node cannot yet tell whether the namespace exists (or who creates it).
    #[error("namespace {namespace:?}: {why}; retry in a moment")]
    NotReady {
        /// The namespace, named in the message so the caller knows which one failed.
        namespace: String,
        /// What is missing.
        why: String,
    },
    /// Storage failed while recording a new namespace.
    #[error(transparent)]
    Storage(#[from] StoreError),
}

impl RouteError {
    /// The stable wire code of this error (`cfgnode_transport::codes`), shared by QUIC and HTTP.
    pub fn code(&self) -> &'static str {
        match self {
            RouteError::HolderDown { .. } => codes::HOLDER_DOWN,
            RouteError::Moving { .. } => codes::MOVING,
            RouteError::NoLease { .. } => codes::NO_QUORUM,
            RouteError::NoOwner { .. } => codes::UNAVAILABLE,
            RouteError::NotReady { .. } => codes::NOT_READY,
            RouteError::Storage(e) => crate::error::error_code(e),
        }
    }

    /// The error as the wire carries it.
    pub fn to_wire(&self) -> WireError {
        WireError::new(self.code(), self.to_string())
    }
}

impl Cluster {
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

    /// Waits (up to [`LEASE_WAIT`]) until this node may serve reads of `namespace` at
    /// `epoch`, or the map changed (route again either way). A holder that cannot get a quorum
    /// of its replica set to answer within that time (cut off, or restarted and not yet told
    /// of its successor) answers `no_quorum` rather than read a copy that may be stale.
    async fn await_lease(&self, namespace: &str, epoch: u64) -> Result<(), RouteError> {
        let mut leases = self.inner.leases.subscribe();
        let mut map = self.inner.state.subscribe();
        let moved = || self.holder(namespace).is_none_or(|r| r.epoch != epoch);
        let waited = tokio::time::timeout(LEASE_WAIT, async {
            loop {
                if (self.solo() || self.inner.leases.may_serve(namespace, epoch)) || moved() {
                    return;
                }
                tokio::select! {
                    _ = leases.changed() => {}
                    _ = map.changed() => {}
                    // A lease can lapse and be renewed without a change being sent while
                    // nobody looked: look again now and then.
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        });
        waited.await.map_err(|_| RouteError::NoLease {
            namespace: namespace.to_string(),
        })
    }

    /// With failover on (the namespace's replica set has three or more members), waits up to [`FAILOVER_WAIT`] for
    /// `namespace` to get a holder other than `down` (its replica set elects one within a
    /// moment of SWIM declaring the holder down). True when it did: route again. False at
    /// once without failover, and for a namespace under a strict pin to `down` (it stays there).
    async fn await_failover(&self, namespace: &str, down: &str) -> bool {
        if !self.inner.failover
            || self
                .view()
                .replica_set(namespace, &down.to_string(), self.inner.replicas)
                .len()
                < 3
        {
            return false;
        }
        let pinned_there = self.inner.state.read(|map| {
            map.pin(namespace)
                .is_some_and(|pin| pin.strict && pin.target.as_deref() == Some(down))
        });
        if pinned_there {
            return false;
        }
        let mut changes = self.inner.state.subscribe();
        let moved = || self.holder(namespace).is_some_and(|r| r.holder != down);
        let waited = tokio::time::timeout(FAILOVER_WAIT, async {
            while !moved() {
                if changes.changed().await.is_err() {
                    return false;
                }
            }
            true
        });
        waited.await.unwrap_or(false)
    }

    /// For a request whose holder (or desired owner) `node` this node's view holds down: probes
    /// `node` while waiting for a failover, whichever settles first. A view can be stale (a
    /// partition healed while this node was rejoining, see docs/cluster.md), and a holder that
    /// answers serves the request: fencing, not this node's view, keeps a deposed holder from
    /// acknowledging (it checks its epoch and its quorum). Only a holder that does not answer
    /// leaves the request to wait for its successor.
    async fn await_down_holder(&self, namespace: &str, node: &NodeId, view: &View) -> DownHolder {
        let probe = self.probe(namespace, node, view);
        let failover = self.await_failover(namespace, node);
        tokio::pin!(probe, failover);
        tokio::select! {
            answered = &mut probe => match answered {
                Some(addr) => DownHolder::Answers(addr),
                None if failover.await => DownHolder::Replaced,
                None => DownHolder::Gone,
            },
            moved = &mut failover => match moved {
                true => DownHolder::Replaced,
                false => probe.await.map_or(DownHolder::Gone, DownHolder::Answers),
            },
        }
    }

    /// Asks `node` for its state of `namespace` (any answer, even a refusal, shows it is up
    /// and reachable): its address when it answered within [`PROBE_TIMEOUT`]. A node that did
    /// not is not probed again for [`PROBE_BACKOFF`].
    async fn probe(&self, namespace: &str, node: &NodeId, view: &View) -> Option<SocketAddr> {
        let addr = view.addr_of(node)?;
        let recent_failure = |failed: &Instant| failed.elapsed() < PROBE_BACKOFF;
        if self
            .inner
            .unanswered
            .lock()
            .ok()?
            .get(node)
            .is_some_and(recent_failure)
        {
            return None;
        }
        let request = PeerRequest::ReplicaState {
            namespace: namespace.to_string(),
        };
        match self.inner.peers.call(addr, request, PROBE_TIMEOUT).await {
            Ok(_) | Err(PeerError::Answered(_)) => {
                tracing::debug!(
                    namespace,
                    node,
                    "a holder this node's view holds down answers: serving through it"
                );
                Some(addr)
            }
            Err(PeerError::Unreachable(why)) => {
                tracing::debug!(
                    namespace,
                    node,
                    why,
                    "a holder this node's view holds down does not answer"
                );
                if let Ok(mut unanswered) = self.inner.unanswered.lock() {
                    unanswered.insert(node.clone(), Instant::now());
                }
                None
            }
        }
    }

    /// Where a request for `namespace` is served. Creates the namespace's holder record when
    /// this node is its desired owner and the request writes; waits (up to 10 s) while a
    /// handoff has the namespace frozen.
    pub async fn route(&self, namespace: &str, intent: Intent) -> Result<Target, RouteError> {
        // Frozen longer than a request may wait, or moved again each time this node looked.
        let moving = || RouteError::Moving {
            namespace: namespace.to_string(),
        };
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
                        .map_err(|_| moving())?;
                    // A handoff may have finished while this request waited.
                    let still = self.inner.state.read(|map| match map.holder(namespace) {
                        Some(r) => r.holder == self.inner.me,
                        None => decision == Route::ServeAbsent,
                    });
                    if still && intent == Intent::Read && decision == Route::Serve {
                        let epoch = self.holder(namespace).map_or(0, |r| r.epoch);
                        if self.solo() || self.inner.leases.may_serve(namespace, epoch) {
                            return Ok(Target::Local(Permit(guard)));
                        }
                        drop(guard);
                        self.await_lease(namespace, epoch).await?;
                        continue;
                    }
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
                        .map_err(|_| moving())?;
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
                        if self.await_failover(namespace, &to).await {
                            continue;
                        }
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
                    match self.await_down_holder(namespace, &node, &view).await {
                        DownHolder::Answers(addr) => {
                            // The epoch of the record the request goes by (0 for a new
                            // namespace's desired owner); moved meanwhile: route again.
                            let epoch = match self.holder(namespace) {
                                Some(r) if r.holder == node => r.epoch,
                                Some(_) => continue,
                                None => 0,
                            };
                            return Ok(Target::Remote { node, addr, epoch });
                        }
                        DownHolder::Replaced => continue,
                        DownHolder::Gone => {
                            return Err(RouteError::HolderDown {
                                namespace: namespace.to_string(),
                                node,
                            });
                        }
                    }
                }
                Route::NoOwner => {
                    return Err(RouteError::NoOwner {
                        namespace: namespace.to_string(),
                    });
                }
            }
        }
        Err(moving())
    }
}
