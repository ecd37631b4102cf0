//! [`Client`]: typed calls over QUIC with timeouts, retries, failover and circuit breakers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cfgnode_transport::{
    ClientTls, ClusterRequest, ClusterResponse, ConfigRequest, ConfigResponse, Identity,
    MAX_FRAME_BYTES, PushRequest, PushResponse, Request, RequestHeader, Response, ResponseEnvelope,
    SERVER_NAME, WireAccess, WireAlias, WireCodec, WireDeleted, WireDiff, WireEntry, WireError,
    WireMember, WireNamespace, WirePage, WirePlacement, WireRingShare, WireSnapshot, WireVersion,
    WireWatchRequest, WireWriteMode, bind_endpoint, decode_payload, encode_request, load_roots,
    read_frame,
};
use quinn::{Connection, Endpoint, RecvStream};

use crate::backoff::{Backoff, unit_random};
use crate::breaker::CircuitBreaker;
use crate::error::ClientError;

/// A live key as the client sees it.
pub type Entry = WireEntry;
/// One retained version of a key.
pub type Version = WireVersion;
/// The result of a delete.
pub type Deleted = WireDeleted;
/// A namespace summary.
pub type Namespace = WireNamespace;
/// An alias.
pub type Alias = WireAlias;
/// A page of a listing; pass `next_cursor` back for the next page.
pub type Page<T> = WirePage<T>;
/// Two versions and their differences.
pub type Diff = WireDiff;
/// Every entry and alias of a namespace at one revision.
pub type Snapshot = WireSnapshot;
/// A codec the node knows.
pub type CodecInfo = WireCodec;
/// What the caller may do in a namespace.
pub type Access = WireAccess;
/// How a write treats an existing key.
pub type WriteMode = WireWriteMode;
/// A cluster member.
pub type Member = WireMember;
/// Where a namespace is and should be.
pub type Placement = WirePlacement;
/// Namespaces per node.
pub type RingShare = WireRingShare;
/// An agent's heartbeat.
pub type Agent = cfgnode_transport::WireAgent;
/// An agent with when and where it was last heard from.
pub type AgentSeen = cfgnode_transport::WireAgentSeen;

/// The answer to [`Client::events`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventsRead {
    /// The events, in order with no gap, and the namespace's revision when they were read.
    Events {
        /// The namespace's revision.
        revision: u64,
        /// The events.
        events: Vec<cfgnode_transport::WireEvent>,
    },
    /// The events asked for are no longer in the log: read a snapshot instead.
    Compacted {
        /// The oldest revision the log holds.
        oldest_retained: u64,
        /// The namespace's revision.
        current: u64,
    },
}

/// The answer to a conditional snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotResult {
    /// The namespace changed since the given ETag (or none was given).
    Modified(Snapshot),
    /// The namespace still has the given ETag.
    NotModified {
        /// That ETag.
        etag: String,
    },
}

/// Options of a write.
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    /// The codec (`json`, `yaml`, `toml`, `text`, `bytes`, `client:<name>`); default `bytes`.
    pub codec: Option<String>,
    /// Create, update or either (default).
    pub mode: WriteMode,
    /// Compare-and-set: the version the key must be at (0 = absent).
    pub if_version: Option<u64>,
}

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

type ConnectionCallback = Arc<dyn Fn(&ConnectionEvent) + Send + Sync>;

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

struct NodeSlot {
    addr: SocketAddr,
    connection: tokio::sync::Mutex<Option<Connection>>,
    breaker: Mutex<CircuitBreaker>,
    /// When this node last answered anything: a call that times out drops connections that
    /// have been silent since before it (a node that died without closing them).
    last_answer: Mutex<Instant>,
}

struct Inner {
    endpoint: Endpoint,
    nodes: Vec<NodeSlot>,
    token: Option<String>,
    cluster_id: String,
    timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
    on_change: Option<ConnectionCallback>,
    next_id: AtomicU64,
    /// The node that answered last: tried first next time.
    preferred: AtomicUsize,
    follow_redirects: bool,
    breaker_threshold: u32,
    breaker_cooldown: Duration,
    /// Namespace -> the holder's address, learned from redirects.
    holders: Mutex<HashMap<String, SocketAddr>>,
    /// Connections to holders that are not in the address list.
    holder_slots: Mutex<HashMap<SocketAddr, Arc<NodeSlot>>>,
    /// Holder addresses this client could not reach directly, and since when: calls for their
    /// namespaces go through forwarding for a while.
    unreachable: Mutex<HashMap<SocketAddr, Instant>>,
}

/// Most redirects followed for one call.
const MAX_REDIRECTS: u32 = 2;
/// How long a holder this client could not reach directly is left alone.
const UNREACHABLE_FOR: Duration = Duration::from_secs(30);

/// A cfgnode client. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<SocketAddr> = self.inner.nodes.iter().map(|n| n.addr).collect();
        f.debug_struct("Client")
            .field("nodes", &addrs)
            .finish_non_exhaustive()
    }
}

/// How one attempt on one node failed.
enum AttemptError {
    /// The request never left: safe to retry anything elsewhere.
    NotSent(String),
    /// The request may have reached the node: only idempotent calls may be retried.
    MaybeApplied(String),
    /// The node answered with an error.
    Answered(WireError),
}

impl Client {
    /// A builder for nodes at `addrs`.
    pub fn builder(addrs: impl IntoIterator<Item = SocketAddr>) -> ClientBuilder {
        ClientBuilder::new(addrs)
    }

    /// Sends one request, with failover, retries (idempotent requests only) and the call
    /// deadline. The building block of every typed method.
    pub async fn call(&self, request: Request) -> Result<Response, ClientError> {
        let deadline = self.inner.timeout;
        let started = Instant::now();
        match tokio::time::timeout(deadline, self.route_call(request)).await {
            Ok(result) => result,
            Err(_) => {
                self.drop_silent_connections(started).await;
                Err(ClientError::Timeout(deadline))
            }
        }
    }

    /// Drops the connections of nodes that have not answered anything since `since`: after a
    /// timed-out call they are likely dead (a killed node never closes its connections, and
    /// QUIC would otherwise only notice at the idle timeout). The next call reconnects.
    async fn drop_silent_connections(&self, since: Instant) {
        let holders = self.holder_slots_now();
        for node in self.inner.nodes.iter().chain(holders.iter().map(|n| &**n)) {
            let silent = node.last_answer.lock().is_ok_and(|at| *at < since);
            if silent {
                self.forget(node, "no answer within the call deadline")
                    .await;
            }
        }
    }

    /// Sends a namespace request to its holder: the cached one, or where redirects lead.
    async fn route_call(&self, request: Request) -> Result<Response, ClientError> {
        let namespace = match request.routed_namespace() {
            Some(ns) if self.inner.follow_redirects => ns.to_string(),
            _ => return self.call_with_retries(request, false).await,
        };
        let mut target = self.cached_holder(&namespace);
        let mut redirects = 0;
        loop {
            let response = match target {
                None => self.call_with_retries(request.clone(), true).await?,
                Some(addr) => match self.direct(addr, &request).await {
                    Ok(response) => response,
                    Err(None) => {
                        // The holder cannot be reached from here: let a node forward.
                        self.forget_holder(&namespace, addr);
                        return self.call_with_retries(request, false).await;
                    }
                    Err(Some(error)) => return Err(error),
                },
            };
            let Response::Redirect(redirect) = response else {
                return Ok(response);
            };
            redirects += 1;
            let addr: Option<SocketAddr> = redirect.quic_addr.parse().ok();
            match addr {
                Some(addr) if redirects <= MAX_REDIRECTS && !self.is_unreachable(addr) => {
                    if let Ok(mut holders) = self.inner.holders.lock() {
                        holders.insert(namespace.clone(), addr);
                    }
                    target = Some(addr);
                }
                Some(_) if redirects <= MAX_REDIRECTS => {
                    return self.call_with_retries(request, false).await;
                }
                _ => {
                    return Err(ClientError::Server {
                        code: "namespace_moving".to_string(),
                        message: format!(
                            "namespace {namespace:?} is moving between nodes (redirected {redirects} times); retry"
                        ),
                    });
                }
            }
        }
    }

    fn cached_holder(&self, namespace: &str) -> Option<SocketAddr> {
        let addr = *self.inner.holders.lock().ok()?.get(namespace)?;
        (!self.is_unreachable(addr)).then_some(addr)
    }

    fn is_unreachable(&self, addr: SocketAddr) -> bool {
        self.inner.unreachable.lock().is_ok_and(|mut map| {
            map.retain(|_, since| since.elapsed() < UNREACHABLE_FOR);
            map.contains_key(&addr)
        })
    }

    fn forget_holder(&self, namespace: &str, addr: SocketAddr) {
        if let Ok(mut holders) = self.inner.holders.lock() {
            holders.remove(namespace);
        }
        if let Ok(mut map) = self.inner.unreachable.lock() {
            map.insert(addr, Instant::now());
        }
    }

    /// One attempt straight at a holder. `Err(None)`: it could not be reached (nothing was
    /// applied, or the call is a read): fall back to forwarding. `Err(Some(e))`: final.
    async fn direct(
        &self,
        addr: SocketAddr,
        request: &Request,
    ) -> Result<Response, Option<ClientError>> {
        let slot = self.holder_slot(addr);
        let payload = self.encode(request, true).map_err(Some)?;
        match self.attempt(&slot, &payload).await {
            Ok(response) => response.result.map_err(|e| Some(ClientError::from_wire(e))),
            Err(AttemptError::Answered(error)) if error.code == "unavailable" => Err(None),
            Err(AttemptError::Answered(error)) => Err(Some(ClientError::from_wire(error))),
            Err(AttemptError::NotSent(_)) => Err(None),
            Err(AttemptError::MaybeApplied(reason)) if !request.is_idempotent() => {
                Err(Some(ClientError::Unavailable(format!(
                    "{addr}: {reason}; the write may or may not have been applied: read before \
                     writing again"
                ))))
            }
            Err(AttemptError::MaybeApplied(_)) => Err(None),
        }
    }

    /// The slot of a node: one of the configured ones, or one made for a holder.
    fn holder_slot(&self, addr: SocketAddr) -> Arc<NodeSlot> {
        let mut slots = self
            .inner
            .holder_slots
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Arc::clone(slots.entry(addr).or_insert_with(|| {
            Arc::new(NodeSlot {
                addr,
                connection: tokio::sync::Mutex::new(None),
                last_answer: Mutex::new(Instant::now()),
                breaker: Mutex::new(CircuitBreaker::new(
                    self.inner.breaker_threshold,
                    self.inner.breaker_cooldown,
                )),
            })
        }))
    }

    /// The two frames of a request (header with the token, then the request itself).
    fn encode(&self, request: &Request, follow_redirects: bool) -> Result<Vec<u8>, ClientError> {
        let header = RequestHeader {
            cluster_id: self.inner.cluster_id.clone(),
            request_id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            token: self.inner.token.clone(),
            follow_redirects,
        };
        encode_request(&header, request).map_err(|e| {
            ClientError::Invalid {
                code: "frame_too_large".to_string(),
                message: format!(
                    "the request cannot be sent ({e}); values must fit the node's limit and tokens are short"
                ),
            }
        })
    }

    async fn call_with_retries(
        &self,
        request: Request,
        follow_redirects: bool,
    ) -> Result<Response, ClientError> {
        let idempotent = request.is_idempotent();
        let payload = self.encode(&request, follow_redirects)?;
        let mut backoff = Backoff::new(self.inner.retry.base_delay, self.inner.retry.max_delay);
        let mut last_error = String::from("every node's circuit breaker is open");
        let count = self.inner.nodes.len();
        for round in 0..self.inner.retry.max_rounds.max(1) {
            if round > 0 {
                tokio::time::sleep(backoff.next_delay(unit_random())).await;
            }
            let first = self.inner.preferred.load(Ordering::Relaxed) % count;
            for offset in 0..count {
                let index = (first + offset) % count;
                let node = &self.inner.nodes[index];
                let allowed = node
                    .breaker
                    .lock()
                    .map(|mut b| b.try_acquire(Instant::now()));
                if !allowed.unwrap_or(true) {
                    continue;
                }
                match self.attempt(node, &payload).await {
                    Ok(response) => {
                        self.record(node, true);
                        self.inner.preferred.store(index, Ordering::Relaxed);
                        return response.result.map_err(ClientError::from_wire);
                    }
                    Err(AttemptError::Answered(error)) => {
                        self.record(node, true);
                        let retryable = error.code == "unavailable";
                        if !retryable {
                            return Err(ClientError::from_wire(error));
                        }
                        last_error = format!("{}: {}", node.addr, error.message);
                    }
                    Err(AttemptError::NotSent(reason)) => {
                        self.record(node, false);
                        last_error = format!("{}: {reason}", node.addr);
                    }
                    Err(AttemptError::MaybeApplied(reason)) => {
                        self.record(node, false);
                        if !idempotent {
                            return Err(ClientError::Unavailable(format!(
                                "{}: {reason}; the write may or may not have been applied: read \
                                 before writing again",
                                node.addr
                            )));
                        }
                        last_error = format!("{}: {reason}", node.addr);
                    }
                }
            }
        }
        Err(ClientError::Unavailable(last_error))
    }

    fn record(&self, node: &NodeSlot, reached: bool) {
        if let Ok(mut breaker) = node.breaker.lock() {
            if reached {
                breaker.on_success();
            } else {
                breaker.on_failure(Instant::now());
            }
        }
    }

    fn notify(&self, event: ConnectionEvent) {
        tracing::debug!(?event, "cfgnode client connection change");
        if let Some(callback) = &self.inner.on_change {
            callback(&event);
        }
    }

    /// A live connection to `node`, reusing the cached one.
    async fn connection(&self, node: &NodeSlot) -> Result<Connection, String> {
        let mut cached = node.connection.lock().await;
        if let Some(connection) = cached.as_ref()
            && connection.close_reason().is_none()
        {
            return Ok(connection.clone());
        }
        if let Some(old) = cached.take() {
            let reason = old
                .close_reason()
                .map(|r| r.to_string())
                .unwrap_or_default();
            self.notify(ConnectionEvent::Disconnected {
                addr: node.addr,
                reason,
            });
        }
        let connecting = self
            .inner
            .endpoint
            .connect(node.addr, SERVER_NAME)
            .map_err(|e| format!("cannot connect: {e}"))?;
        let connection = tokio::time::timeout(self.inner.connect_timeout, connecting)
            .await
            .map_err(|_| format!("no handshake within {:?}", self.inner.connect_timeout))?
            .map_err(|e| format!("handshake failed: {e}"))?;
        *cached = Some(connection.clone());
        self.notify(ConnectionEvent::Connected { addr: node.addr });
        Ok(connection)
    }

    async fn forget(&self, node: &NodeSlot, reason: &str) {
        if node.connection.lock().await.take().is_some() {
            self.notify(ConnectionEvent::Disconnected {
                addr: node.addr,
                reason: reason.to_string(),
            });
        }
    }

    async fn attempt(
        &self,
        node: &NodeSlot,
        payload: &[u8],
    ) -> Result<ResponseEnvelope, AttemptError> {
        let connection = self.connection(node).await.map_err(AttemptError::NotSent)?;
        let (mut send, mut recv) = match connection.open_bi().await {
            Ok(streams) => streams,
            Err(e) => {
                let reason = format!("cannot open a stream: {e}");
                self.forget(node, &reason).await;
                return Err(AttemptError::NotSent(reason));
            }
        };
        let exchange = async {
            send.write_all(payload).await.map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            read_frame(&mut recv, MAX_FRAME_BYTES)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "the node closed the stream without answering".to_string())
        };
        let frame = match exchange.await {
            Ok(frame) => frame,
            Err(reason) => {
                self.forget(node, &reason).await;
                return Err(AttemptError::MaybeApplied(reason));
            }
        };
        if let Ok(mut at) = node.last_answer.lock() {
            *at = Instant::now();
        }
        let envelope: ResponseEnvelope = decode_payload(&frame)
            .map_err(|e| AttemptError::MaybeApplied(format!("unreadable answer: {e}")))?;
        match envelope.result {
            Err(error) => Err(AttemptError::Answered(error)),
            Ok(_) => Ok(envelope),
        }
    }

    /// Opens a watch stream on the `turn`-th node after the preferred one: sends the request
    /// and hands back the stream to read frames from, with the node's address.
    pub(crate) async fn open_watch_stream(
        &self,
        turn: usize,
        request: WireWatchRequest,
    ) -> Result<(SocketAddr, RecvStream), String> {
        let count = self.inner.nodes.len();
        let first = self.inner.preferred.load(Ordering::Relaxed);
        let node = &self.inner.nodes[(first + turn) % count];
        let connection = self.connection(node).await?;
        let (mut send, recv) = match connection.open_bi().await {
            Ok(streams) => streams,
            Err(e) => {
                let reason = format!("cannot open a stream: {e}");
                self.forget(node, &reason).await;
                return Err(reason);
            }
        };
        let payload = self
            .encode(&Request::Push(PushRequest::Watch(request)), false)
            .map_err(|e| e.to_string())?;
        send.write_all(&payload)
            .await
            .map_err(|e| format!("{}: {e}", node.addr))?;
        send.finish().map_err(|e| format!("{}: {e}", node.addr))?;
        Ok((node.addr, recv))
    }

    /// Closes every open connection (calls and watches reconnect on their own). For a client
    /// that knows its network changed, and for tests that cut connections.
    pub async fn close_connections(&self) {
        let holders = self.holder_slots_now();
        for node in self.inner.nodes.iter().chain(holders.iter().map(|n| &**n)) {
            if let Some(connection) = node.connection.lock().await.take() {
                connection.close(0u32.into(), b"closed by the client");
                self.notify(ConnectionEvent::Disconnected {
                    addr: node.addr,
                    reason: "closed by the client".to_string(),
                });
            }
        }
    }

    /// The slots made for holders outside the address list, as they are now.
    fn holder_slots_now(&self) -> Vec<Arc<NodeSlot>> {
        self.inner
            .holder_slots
            .lock()
            .map(|slots| slots.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets the connection to `addr` (a watch found it broken).
    pub(crate) async fn forget_addr(&self, addr: SocketAddr, reason: &str) {
        if let Some(node) = self.inner.nodes.iter().find(|n| n.addr == addr) {
            self.forget(node, reason).await;
        }
    }

    pub(crate) fn unexpected(response: Response) -> ClientError {
        ClientError::Server {
            code: "unexpected_response".to_string(),
            message: format!("the node answered with {response:?}"),
        }
    }

    /// Checks that a node answers; returns nothing but proves the path works.
    pub async fn ping(&self) -> Result<(), ClientError> {
        match self.call(Request::Ping).await? {
            Response::Pong => Ok(()),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Reads a key (an alias resolves to its target; `alias` in the answer says so).
    pub async fn get(&self, namespace: &str, key: &str) -> Result<Entry, ClientError> {
        let request = Request::Config(ConfigRequest::Get {
            namespace: namespace.into(),
            key: key.into(),
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Entry(entry)) => Ok(entry),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Writes a key (upsert, codec `bytes` unless `options` say otherwise). Returns the new
    /// metadata (`value` is left empty). Not retried after the request may have been sent.
    pub async fn put(
        &self,
        namespace: &str,
        key: &str,
        value: impl Into<Vec<u8>>,
        options: PutOptions,
    ) -> Result<Entry, ClientError> {
        let request = Request::Config(ConfigRequest::Put {
            namespace: namespace.into(),
            key: key.into(),
            value: value.into(),
            codec: options.codec.unwrap_or_else(|| "bytes".to_string()),
            mode: options.mode,
            if_version: options.if_version,
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Written(entry)) => Ok(entry),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Deletes a key, only if it is at `if_version` when given.
    pub async fn delete(
        &self,
        namespace: &str,
        key: &str,
        if_version: Option<u64>,
    ) -> Result<Deleted, ClientError> {
        let request = Request::Config(ConfigRequest::Delete {
            namespace: namespace.into(),
            key: key.into(),
            if_version,
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Deleted(deleted)) => Ok(deleted),
            other => Err(Self::unexpected(other)),
        }
    }

    /// A page of entries whose keys start with `prefix` (limit 1..=1000, default 100).
    pub async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<Entry>, ClientError> {
        let request = Request::Config(ConfigRequest::List {
            namespace: namespace.into(),
            prefix: prefix.into(),
            cursor: cursor.map(Into::into),
            limit: limit.unwrap_or(100),
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Entries(page)) => Ok(page),
            other => Err(Self::unexpected(other)),
        }
    }

    /// A page of a key's retained versions, newest first.
    pub async fn versions(
        &self,
        namespace: &str,
        key: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<Version>, ClientError> {
        let request = Request::Config(ConfigRequest::Versions {
            namespace: namespace.into(),
            key: key.into(),
            cursor: cursor.map(Into::into),
            limit: limit.unwrap_or(100),
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Versions(page)) => Ok(page),
            other => Err(Self::unexpected(other)),
        }
    }

    /// One retained version of a key.
    pub async fn version(
        &self,
        namespace: &str,
        key: &str,
        version: u64,
    ) -> Result<Version, ClientError> {
        let request = Request::Config(ConfigRequest::Version {
            namespace: namespace.into(),
            key: key.into(),
            version,
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Version(v)) => Ok(v),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Two versions of a key and their differences (defaults: the newest and the one before).
    pub async fn diff(
        &self,
        namespace: &str,
        key: &str,
        v1: Option<u64>,
        v2: Option<u64>,
    ) -> Result<Diff, ClientError> {
        let request = Request::Config(ConfigRequest::Diff {
            namespace: namespace.into(),
            key: key.into(),
            v1,
            v2,
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Diff(diff)) => Ok(diff),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Every entry and alias at one revision, or `NotModified` while the namespace still has
    /// the ETag given.
    pub async fn snapshot(
        &self,
        namespace: &str,
        if_none_match: Option<&str>,
    ) -> Result<SnapshotResult, ClientError> {
        let request = Request::Config(ConfigRequest::Snapshot {
            namespace: namespace.into(),
            if_none_match: if_none_match.map(Into::into),
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Snapshot(snapshot)) => {
                Ok(SnapshotResult::Modified(snapshot))
            }
            Response::Config(ConfigResponse::NotModified { etag }) => {
                Ok(SnapshotResult::NotModified { etag })
            }
            other => Err(Self::unexpected(other)),
        }
    }

    /// Up to `limit` log events of `namespace` after revision `after` (the log a watch reads),
    /// or [`EventsRead::Compacted`] when the log no longer reaches back that far.
    pub async fn events(
        &self,
        namespace: &str,
        after: u64,
        limit: u32,
    ) -> Result<EventsRead, ClientError> {
        let request = Request::Push(PushRequest::Events {
            namespace: namespace.into(),
            after: Some(after),
            limit,
            wait_ms: 0,
        });
        match self.call(request).await? {
            Response::Push(PushResponse::Events {
                revision, events, ..
            }) => Ok(EventsRead::Events { revision, events }),
            Response::Push(PushResponse::Compacted {
                oldest_retained,
                current,
                ..
            }) => Ok(EventsRead::Compacted {
                oldest_retained,
                current,
            }),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Tells the node this agent is alive and what it has applied (`cfgnode agent` does it
    /// every few seconds).
    pub async fn agent_heartbeat(&self, agent: Agent) -> Result<(), ClientError> {
        match self
            .call(Request::Push(PushRequest::AgentHeartbeat(agent)))
            .await?
        {
            Response::Ack => Ok(()),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Tells the node this agent stops (it disappears from the list at once).
    pub async fn agent_leave(&self, id: &str) -> Result<(), ClientError> {
        match self
            .call(Request::Push(PushRequest::AgentLeave { id: id.into() }))
            .await?
        {
            Response::Ack => Ok(()),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Every agent of the cluster, and the members that could not be asked.
    pub async fn agents(&self) -> Result<(Vec<AgentSeen>, Vec<String>), ClientError> {
        match self
            .call(Request::Push(PushRequest::Agents { local_only: false }))
            .await?
        {
            Response::Push(PushResponse::Agents { agents, missing }) => Ok((agents, missing)),
            other => Err(Self::unexpected(other)),
        }
    }

    /// A page of namespaces holding at least one key.
    pub async fn namespaces(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<Namespace>, ClientError> {
        let request = Request::Config(ConfigRequest::Namespaces {
            prefix: prefix.into(),
            cursor: cursor.map(Into::into),
            limit: limit.unwrap_or(100),
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Namespaces(page)) => Ok(page),
            other => Err(Self::unexpected(other)),
        }
    }

    /// What this client's token may do in a namespace.
    pub async fn access(&self, namespace: &str) -> Result<Access, ClientError> {
        match self
            .call(Request::Config(ConfigRequest::Access {
                namespace: namespace.into(),
            }))
            .await?
        {
            Response::Config(ConfigResponse::Access(access)) => Ok(access),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Creates an alias; `Ok((alias, false))` when an identical one already existed.
    pub async fn put_alias(
        &self,
        namespace: &str,
        alias: &str,
        target: &str,
    ) -> Result<(Alias, bool), ClientError> {
        let request = Request::Config(ConfigRequest::PutAlias {
            namespace: namespace.into(),
            alias: alias.into(),
            target: target.into(),
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Alias { alias, created }) => Ok((alias, created)),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Reads an alias.
    pub async fn get_alias(&self, namespace: &str, alias: &str) -> Result<Alias, ClientError> {
        let request = Request::Config(ConfigRequest::GetAlias {
            namespace: namespace.into(),
            alias: alias.into(),
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Alias { alias, .. }) => Ok(alias),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Removes an alias.
    pub async fn delete_alias(&self, namespace: &str, alias: &str) -> Result<Alias, ClientError> {
        let request = Request::Config(ConfigRequest::DeleteAlias {
            namespace: namespace.into(),
            alias: alias.into(),
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Alias { alias, .. }) => Ok(alias),
            other => Err(Self::unexpected(other)),
        }
    }

    /// A page of aliases.
    pub async fn list_aliases(
        &self,
        namespace: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<Alias>, ClientError> {
        let request = Request::Config(ConfigRequest::ListAliases {
            namespace: namespace.into(),
            cursor: cursor.map(Into::into),
            limit: limit.unwrap_or(100),
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Aliases(page)) => Ok(page),
            other => Err(Self::unexpected(other)),
        }
    }

    /// The codecs the node knows.
    pub async fn codecs(&self) -> Result<Vec<CodecInfo>, ClientError> {
        match self.call(Request::Config(ConfigRequest::Codecs)).await? {
            Response::Config(ConfigResponse::Codecs(codecs)) => Ok(codecs),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Every member the answering node knows.
    pub async fn members(&self) -> Result<Vec<Member>, ClientError> {
        match self.call(Request::Cluster(ClusterRequest::Members)).await? {
            Response::Cluster(ClusterResponse::Members(members)) => Ok(members),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Where `namespace` is (holder, epoch) and should be (desired owner, and why).
    pub async fn placement(&self, namespace: &str) -> Result<Placement, ClientError> {
        self.placement_call(Request::Cluster(ClusterRequest::Placement {
            namespace: namespace.into(),
        }))
        .await
    }

    /// How many namespaces each node holds and should hold.
    pub async fn ring(&self) -> Result<Vec<RingShare>, ClientError> {
        match self.call(Request::Cluster(ClusterRequest::Ring)).await? {
            Response::Cluster(ClusterResponse::Ring(shares)) => Ok(shares),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Claims `namespace` for `node` (`None`: the node that answers). The data moves in the
    /// background; poll [`Client::placement`] until `holder` is the claimant.
    pub async fn claim(
        &self,
        namespace: &str,
        node: Option<&str>,
    ) -> Result<Placement, ClientError> {
        self.placement_call(Request::Cluster(ClusterRequest::Claim {
            namespace: namespace.into(),
            node: node.map(str::to_string),
        }))
        .await
    }

    /// Drops the claim on `namespace`.
    pub async fn release(&self, namespace: &str) -> Result<Placement, ClientError> {
        self.placement_call(Request::Cluster(ClusterRequest::Release {
            namespace: namespace.into(),
        }))
        .await
    }

    /// Pins `namespace` to `node`.
    pub async fn pin(&self, namespace: &str, node: &str) -> Result<Placement, ClientError> {
        self.placement_call(Request::Cluster(ClusterRequest::Pin {
            namespace: namespace.into(),
            node: node.into(),
        }))
        .await
    }

    /// Drops the pin on `namespace`.
    pub async fn unpin(&self, namespace: &str) -> Result<Placement, ClientError> {
        self.placement_call(Request::Cluster(ClusterRequest::Unpin {
            namespace: namespace.into(),
        }))
        .await
    }

    async fn placement_call(&self, request: Request) -> Result<Placement, ClientError> {
        match self.call(request).await? {
            Response::Cluster(ClusterResponse::Placement(placement)) => Ok(placement),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Closes every connection; later calls reconnect.
    pub async fn close(&self) {
        for node in &self.inner.nodes {
            if let Some(connection) = node.connection.lock().await.take() {
                connection.close(0u32.into(), b"client closed");
            }
        }
    }
}
