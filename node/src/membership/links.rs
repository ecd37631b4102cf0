//! [`DatagramLinks`]: one authenticated QUIC connection per peer, used for SWIM datagrams both
//! ways, and [`dial_peer`], the one way this node opens a connection to another node.
//!
//! Only connections that completed the cluster-key handshake are ever adopted: a datagram is
//! read from, or sent on, a connection whose other end proved the key (and, under mutual TLS,
//! presented a node certificate). Each link remembers the peer's claimed id and generation, so
//! links to a previous life of a restarted node can be dropped as soon as membership sees the
//! new one ([`DatagramLinks::forget_stale`]).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use cfgnode_transport::{
    PeerAuthError, PeerClaim, PeerCredentials, SERVER_NAME, dial_handshake, is_node_certificate,
};
use quinn::{Connection, Endpoint};
use tokio::sync::mpsc;

use crate::metrics::{Metrics, ReasonLabels};

/// How long dialing a peer may take before its datagrams are dropped (SWIM tolerates loss).
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// An authenticated peer connection and who is at its other end.
#[derive(Clone, Debug)]
pub struct PeerLink {
    /// The QUIC connection, authenticated both ways; requests and datagrams share it.
    pub connection: Connection,
    /// What the peer proved it is.
    pub claim: PeerClaim,
}

/// Dials `to` and proves the cluster key over the new connection (and checks the peer's
/// proof). Under mutual TLS the peer's certificate must also be a node's. Failures are counted
/// in `metrics` by reason.
pub async fn dial_peer(
    endpoint: &Endpoint,
    credentials: &PeerCredentials,
    metrics: &Metrics,
    to: SocketAddr,
    timeout: Duration,
) -> Result<PeerLink, String> {
    let connecting = endpoint
        .connect(to, SERVER_NAME)
        .map_err(|e| format!("cannot dial {to}: {e}"))?;
    let connection = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| format!("dialing {to} timed out after {timeout:?}"))?
        .map_err(|e| format!("cannot connect to {to}: {e}"))?;
    let checked = match check_node_certificate(&connection) {
        Ok(()) => dial_handshake(&connection, credentials).await,
        Err(e) => Err(e),
    };
    match checked {
        Ok(claim) => Ok(PeerLink { connection, claim }),
        Err(e) => {
            count_auth_failure(metrics, &e);
            tracing::warn!(peer = %to, error = %e, "peer refused: it did not prove the cluster key");
            connection.close(1u32.into(), b"peer authentication failed");
            Err(e.to_string())
        }
    }
}

/// Under mutual TLS, the other end's certificate must say it is a node (a client's certificate
/// from the same CA must not be able to join). Without mutual TLS there is no certificate to
/// check: the cluster key alone decides.
pub fn check_node_certificate(connection: &Connection) -> Result<(), PeerAuthError> {
    let Some(identity) = connection.peer_identity() else {
        return Ok(());
    };
    let leaf_is_node = identity
        .downcast::<Vec<cfgnode_transport::CertificateDer<'static>>>()
        .ok()
        .and_then(|chain| chain.first().map(is_node_certificate))
        .unwrap_or(false);
    if leaf_is_node {
        Ok(())
    } else {
        Err(PeerAuthError::NotANode(connection.remote_address()))
    }
}

/// Counts a failed peer handshake.
pub fn count_auth_failure(metrics: &Metrics, error: &PeerAuthError) {
    metrics
        .peer_auth_failures
        .get_or_create(&ReasonLabels {
            reason: error.reason(),
        })
        .inc();
}

/// Connections to peers, keyed by the peer's QUIC address. Accepted connections are adopted
/// too (after their handshake): a node's one endpoint dials from its listening port, so the
/// remote address of an accepted connection is the peer's own address.
#[derive(Clone)]
pub struct DatagramLinks {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    /// Behind a lock only for [`DatagramLinks::renew_claim`].
    credentials: RwLock<PeerCredentials>,
    metrics: Arc<Metrics>,
    connections: Mutex<HashMap<SocketAddr, PeerLink>>,
    dialing: Mutex<HashSet<SocketAddr>>,
    inbox: mpsc::Sender<Vec<u8>>,
    /// Fault injection for tests ([`DatagramLinks::cut`]): nodes this one neither sends to nor
    /// hears from, as if the network between them were down.
    cut: Mutex<HashSet<String>>,
    /// Fault injection for tests ([`DatagramLinks::mute`]): nodes whose SWIM datagrams this
    /// one drops both ways while peer requests still pass, so its view of them goes stale.
    muted: Mutex<HashSet<String>>,
    /// Fault injection for tests ([`DatagramLinks::block`]): nodes whose peer requests this one
    /// drops both ways while SWIM datagrams still pass, so its view holds them alive although
    /// nothing else gets through.
    blocked: Mutex<HashSet<String>>,
}

impl Inner {
    /// Whether SWIM datagrams with `node` are dropped: cut ([`DatagramLinks::cut`]) or muted
    /// ([`DatagramLinks::mute`]).
    fn datagrams_dropped(&self, node: &str) -> bool {
        holds(&self.cut, node) || holds(&self.muted, node)
    }
}

/// Whether a fault-injection set names `node`.
fn holds(set: &Mutex<HashSet<String>>, node: &str) -> bool {
    set.lock().unwrap_or_else(|p| p.into_inner()).contains(node)
}

/// Replaces a fault-injection set with `nodes`.
fn replace(set: &Mutex<HashSet<String>>, nodes: &[String]) {
    *set.lock().unwrap_or_else(|p| p.into_inner()) = nodes.iter().cloned().collect();
}

impl std::fmt::Debug for DatagramLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatagramLinks { .. }")
    }
}

impl DatagramLinks {
    /// Links over `endpoint`, dialing with `credentials`; every datagram received goes to
    /// `inbox` (dropped when it is full: a SWIM packet is worth nothing late).
    pub fn new(
        endpoint: Endpoint,
        credentials: PeerCredentials,
        metrics: Arc<Metrics>,
        inbox: mpsc::Sender<Vec<u8>>,
    ) -> Self {
        DatagramLinks {
            inner: Arc::new(Inner {
                endpoint,
                credentials: RwLock::new(credentials),
                metrics,
                connections: Mutex::default(),
                dialing: Mutex::default(),
                inbox,
                cut: Mutex::default(),
                muted: Mutex::default(),
                blocked: Mutex::default(),
            }),
        }
    }

    /// This node's credentials (the QUIC front end checks accepted peers with them).
    pub fn credentials(&self) -> PeerCredentials {
        match self.inner.credentials.read() {
            Ok(credentials) => credentials.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Claims `generation` in every handshake from now on: SWIM renewed this node's identity
    /// (it was declared down and rejoined), and peers drop connections that claim an older one.
    pub fn renew_claim(&self, generation: u64) {
        let mut credentials = match self.inner.credentials.write() {
            Ok(credentials) => credentials,
            Err(poisoned) => poisoned.into_inner(),
        };
        credentials.claim.generation = generation;
    }

    /// The endpoint links dial from.
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// The node's metrics (handshake failures are counted there).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Fault injection for tests: from now on, drop every datagram and peer request to or from
    /// the nodes in `nodes` (replacing the previous set; empty heals), as a network partition
    /// would. Client connections are not affected.
    pub fn cut(&self, nodes: &[String]) {
        replace(&self.inner.cut, nodes);
    }

    /// Whether peer requests with `node` are dropped: cut ([`DatagramLinks::cut`]) or blocked
    /// ([`DatagramLinks::block`]).
    pub fn requests_dropped(&self, node: &str) -> bool {
        holds(&self.inner.cut, node) || holds(&self.inner.blocked, node)
    }

    /// Fault injection for tests: from now on, drop every SWIM datagram to or from the nodes in
    /// `nodes` (replacing the previous set; empty heals) while peer requests still pass. This
    /// node's membership then declares them down although they answer: the stale view a
    /// partition can leave behind, made on purpose.
    pub fn mute(&self, nodes: &[String]) {
        replace(&self.inner.muted, nodes);
    }

    /// Fault injection for tests: from now on, drop every peer request to or from the nodes in
    /// `nodes` (replacing the previous set; empty heals) while SWIM datagrams still pass. This
    /// node's membership then holds them alive although no append, promise or forwarded
    /// request gets through: a partial failure (a firewall that passes datagrams only), and the
    /// way a test lets a holder's read leases run out without its followers declaring it down.
    pub fn block(&self, nodes: &[String]) {
        replace(&self.inner.blocked, nodes);
    }

    /// Uses an authenticated connection for this peer from now on and reads its datagrams.
    pub fn adopt(&self, link: PeerLink) {
        let connection = link.connection.clone();
        let remote = connection.remote_address();
        let from = link.claim.node_id.clone();
        if let Ok(mut map) = self.inner.connections.lock() {
            map.insert(remote, link);
        }
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            while let Ok(datagram) = connection.read_datagram().await {
                if !inner.datagrams_dropped(&from) {
                    let _ = inner.inbox.try_send(datagram.to_vec());
                }
            }
            if let Ok(mut map) = inner.connections.lock()
                && map
                    .get(&remote)
                    .is_some_and(|l| l.connection.stable_id() == connection.stable_id())
            {
                map.remove(&remote);
            }
        });
    }

    /// Closes every link to an earlier life of `node` than `generation` (or, with `None`, every
    /// link to `node`: it is down). The next datagram dials afresh.
    pub fn forget_stale(&self, node: &str, generation: Option<u64>) {
        let Ok(mut map) = self.inner.connections.lock() else {
            return;
        };
        map.retain(|_, link| {
            let stale = link.claim.node_id == node
                && generation.is_none_or(|current| link.claim.generation < current);
            if stale {
                link.connection
                    .close(0u32.into(), b"peer restarted or down");
            }
            !stale
        });
    }

    /// Sends a datagram to `to`, dialing first when there is no live connection. Never blocks;
    /// a datagram that cannot go now is dropped.
    pub fn send(&self, to: SocketAddr, datagram: Vec<u8>) {
        let live = self.inner.connections.lock().ok().and_then(|map| {
            map.get(&to)
                .filter(|l| l.connection.close_reason().is_none())
                .map(|l| (l.connection.clone(), l.claim.node_id.clone()))
        });
        if let Some((connection, node)) = live {
            if self.inner.datagrams_dropped(&node) {
                return;
            }
            if let Err(e) = connection.send_datagram(Bytes::from(datagram)) {
                tracing::debug!(%to, error = %e, "SWIM datagram not sent");
            }
            return;
        }
        let first = self
            .inner
            .dialing
            .lock()
            .map(|mut d| d.insert(to))
            .unwrap_or(false);
        if !first {
            return;
        }
        let links = self.clone();
        tokio::spawn(async move {
            let inner = &links.inner;
            let dialed = dial_peer(
                &inner.endpoint,
                &links.credentials(),
                &inner.metrics,
                to,
                DIAL_TIMEOUT,
            )
            .await;
            if let Ok(mut dialing) = inner.dialing.lock() {
                dialing.remove(&to);
            }
            match dialed {
                Ok(link) => {
                    if !links.inner.datagrams_dropped(&link.claim.node_id) {
                        let _ = link.connection.send_datagram(Bytes::from(datagram));
                    }
                    links.adopt(link);
                }
                Err(e) => tracing::debug!(%to, error = %e, "SWIM peer unreachable"),
            }
        });
    }

    /// Closes every link (at shutdown).
    pub fn close(&self) {
        if let Ok(mut map) = self.inner.connections.lock() {
            for (_, link) in map.drain() {
                link.connection.close(0u32.into(), b"leaving");
            }
        }
    }
}
