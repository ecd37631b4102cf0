//! [`ClientBuilder`]: the nodes, credentials, trust, deadlines, retry and breaker settings of
//! a [`Client`], checked once when it is built.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cfgnode_transport::{ClientTls, Identity, bind_endpoint, load_roots};

use crate::breaker::CircuitBreaker;
use crate::error::ClientError;

use super::{Client, Inner, NodeSlot};

/// Connection changes, for [`ClientBuilder::on_connection_change`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// A connection to `addr` was established.
    Connected {
        /// The node's address.
        addr: SocketAddr,
    },
    /// The connection to `addr` failed or was lost.
    Disconnected {
        /// The node's address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

pub(super) type ConnectionCallback = Arc<dyn Fn(&ConnectionEvent) + Send + Sync>;

/// Retry policy for idempotent calls.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Rounds over the node list before giving up (at least 1).
    pub max_rounds: u32,
    /// First backoff ceiling between rounds.
    pub base_delay: Duration,
    /// Largest backoff between rounds.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_rounds: 4,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

/// Builds a [`Client`].
pub struct ClientBuilder {
    addrs: Vec<SocketAddr>,
    token: Option<String>,
    tls: Option<ClientTls>,
    cluster_id: String,
    timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
    breaker_threshold: u32,
    breaker_cooldown: Duration,
    on_change: Option<ConnectionCallback>,
    follow_redirects: bool,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("addrs", &self.addrs)
            .field("cluster_id", &self.cluster_id)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// The nodes to talk to, in order of preference; the client fails over along the list.
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        ClientBuilder {
            addrs: addrs.into_iter().collect(),
            token: None,
            tls: None,
            cluster_id: "cfgnode".to_string(),
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            retry: RetryPolicy::default(),
            breaker_threshold: 3,
            follow_redirects: true,
            breaker_cooldown: Duration::from_secs(5),
            on_change: None,
        }
    }

    /// The bearer token (a node's admin token).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Verify nodes against this CA certificate file, presenting `identity` (certificate and
    /// key files) when the cluster runs mutual TLS.
    pub fn ca(mut self, ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, ClientError> {
        let roots = load_roots(ca).map_err(|e| ClientError::Config(e.to_string()))?;
        let identity = identity
            .map(|(cert, key)| Identity::load(cert, key))
            .transpose()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        self.tls = Some(ClientTls::Verified { roots, identity });
        Ok(self)
    }

    /// Encrypt but do not verify the node's certificate (nodes with self-signed
    /// certificates). An active attacker could impersonate the node: for development and
    /// loopback use.
    pub fn insecure(mut self) -> Self {
        self.tls = Some(ClientTls::Insecure { identity: None });
        self
    }

    /// The cluster id the nodes belong to (default `cfgnode`).
    pub fn cluster_id(mut self, id: impl Into<String>) -> Self {
        self.cluster_id = id.into();
        self
    }

    /// Deadline of one call, retries included (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Deadline of one connection attempt (default 3 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Retry policy for idempotent calls.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Open a node's breaker after `threshold` consecutive failures, for `cooldown`.
    pub fn circuit_breaker(mut self, threshold: u32, cooldown: Duration) -> Self {
        self.breaker_threshold = threshold;
        self.breaker_cooldown = cooldown;
        self
    }

    /// Called on every connection change (from the calling task; keep it quick).
    pub fn on_connection_change(
        mut self,
        callback: impl Fn(&ConnectionEvent) + Send + Sync + 'static,
    ) -> Self {
        self.on_change = Some(Arc::new(callback));
        self
    }

    /// Whether to go straight to a namespace's holder (default true): nodes answer with a
    /// redirect, the client follows it (at most two hops) and remembers the holder, so later
    /// calls take one hop. When a holder cannot be reached directly (another network, another
    /// certificate), the client falls back to having the node it reaches forward the call.
    pub fn follow_redirects(mut self, follow: bool) -> Self {
        self.follow_redirects = follow;
        self
    }

    /// Builds the client; no connection is made until the first call.
    pub fn build(self) -> Result<Client, ClientError> {
        if self.addrs.is_empty() {
            return Err(ClientError::Config("no node address given".to_string()));
        }
        let tls = self.tls.ok_or_else(|| {
            ClientError::Config(
                "choose how to trust nodes: ca(...) for a cluster CA, or insecure() for \
                 self-signed nodes"
                    .to_string(),
            )
        })?;
        let bind: SocketAddr = if self.addrs.iter().all(SocketAddr::is_ipv4) {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let endpoint =
            bind_endpoint(bind, None, &tls).map_err(|e| ClientError::Config(e.to_string()))?;
        let nodes = self
            .addrs
            .iter()
            .map(|addr| NodeSlot {
                addr: *addr,
                connection: tokio::sync::Mutex::new(None),
                last_answer: Mutex::new(Instant::now()),
                breaker: Mutex::new(CircuitBreaker::new(
                    self.breaker_threshold,
                    self.breaker_cooldown,
                )),
            })
            .collect();
        Ok(Client {
            inner: Arc::new(Inner {
                endpoint,
                nodes,
                token: self.token,
                cluster_id: self.cluster_id,
                timeout: self.timeout,
                connect_timeout: self.connect_timeout,
                retry: self.retry,
                on_change: self.on_change,
                next_id: AtomicU64::new(1),
                preferred: AtomicUsize::new(0),
                follow_redirects: self.follow_redirects,
                breaker_threshold: self.breaker_threshold,
                breaker_cooldown: self.breaker_cooldown,
                holders: Mutex::default(),
                holder_slots: Mutex::default(),
                unreachable: Mutex::default(),
            }),
        })
    }
}
