//! [`Client`]: typed calls over QUIC with timeouts, retries, failover and circuit breakers.
//!
//! One room per concern:
//!
//! - `builder`: [`ClientBuilder`] and its settings ([`RetryPolicy`], [`ConnectionEvent`]
//!   callbacks); `build` binds the endpoint.
//! - `connection`: cached connections, one attempt per stream, failover, retries and
//!   breakers, the call deadline; the raw watch stream for `crate::watch`.
//! - `routing`: namespace requests sent straight to their holder, learned from redirects.
//! - `config`, `push`, `cluster`, `registry`, `proxy`: the typed operations of each request family
//!   (as in transport's messages), with the types of their answers.

mod builder;
mod cluster;
mod config;
mod connection;
mod proxy;
mod push;
mod registry;
mod routing;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cfgnode_transport::Response;
use quinn::{Connection, Endpoint};

use crate::breaker::CircuitBreaker;
use crate::error::ClientError;

use builder::ConnectionCallback;
pub use builder::{ClientBuilder, ConnectionEvent, RetryPolicy};
pub use cluster::{Member, Placement, RingShare};
pub use config::{
    Access, Alias, CodecInfo, Deleted, Diff, Entry, Namespace, Page, PutOptions, Snapshot,
    SnapshotResult, Version, WriteMode,
};
pub use proxy::{Route, RoutePut};
pub use push::{Agent, AgentSeen, EventsRead};
pub use registry::{
    Check, Instance, InstanceEndpoint, InstanceFilter, InstanceSpec, InstanceStatus,
    MAX_SERVICE_WAIT, Probe, ProbeTarget, RegisteredInstance, ServiceSummary, ServiceView,
    Services, Subscription, SubscriptionSpec,
};

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

impl Client {
    /// A builder for nodes at `addrs`.
    pub fn builder(addrs: impl IntoIterator<Item = SocketAddr>) -> ClientBuilder {
        ClientBuilder::new(addrs)
    }

    pub(crate) fn unexpected(response: Response) -> ClientError {
        ClientError::Server {
            code: "unexpected_response".to_string(),
            message: format!("the node answered with {response:?}"),
        }
    }
}
