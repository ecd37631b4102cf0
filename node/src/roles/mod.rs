//! The roles a namespace's holder serves, one room each: [`config`], [`push`], [`registry`]
//! and [`proxy`].
//!
//! Each role's room has its service (the operations, independent of transport), its QUIC
//! handlers (`quic`) and its HTTP handlers and routes (`http`). The front ends (`quic_server`,
//! `http`) authenticate and route a request to its namespace's holder (`cluster`), then hand it
//! to its role here: [`serve_local`] for QUIC, each role's `routes()` for HTTP. A new role adds a
//! room, a variant of [`Request`], one arm in [`serve_local`] and one `merge` in the router.

pub mod config;
pub mod proxy;
pub mod push;
pub mod registry;

use std::sync::Arc;
use std::time::Duration;

use cfgnode_transport::{ConfigRequest, ConfigResponse, PushRequest, Request, Response, WireError};

use crate::auth::{Principal, TokenVerifier};
use crate::cluster::Cluster;
use crate::metrics::Metrics;

/// Everything the front ends share to serve requests: one handle per role, the cluster, and
/// what authentication and limits need. Cheap to share (`Arc<Roles>`); built once at start-up.
pub struct Roles {
    /// The config role: entries, history, aliases, snapshots.
    pub config: config::ConfigService,
    /// The push role: the watch hub, agents, webhook target policy.
    pub push: push::PushRole,
    /// The registry role: services, instances, checks' soft state, subscriptions.
    pub registry: registry::RegistryService,
    /// The proxy role's routes API (the listener itself runs apart, see `proxy::server`).
    pub proxy: proxy::ProxyService,
    /// Routing to holders, placement, pins and claims.
    pub cluster: Cluster,
    /// The follower's side of replication: appends, promises and state queries from peers.
    pub replication: Arc<crate::replication::Follower>,
    /// Checks bearer tokens (HTTP and QUIC).
    pub verifier: TokenVerifier,
    /// The node's metrics.
    pub metrics: Arc<Metrics>,
    /// Largest HTTP request body accepted.
    pub body_limit: usize,
    /// How long an HTTP request body may take to arrive in full (a client that trickles it
    /// would otherwise hold its connection, and its buffer, for as long as it likes).
    pub body_timeout: Duration,
}

impl std::fmt::Debug for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Roles")
            .field("node", &self.cluster.me())
            .finish_non_exhaustive()
    }
}

/// Serves a client request that routing has placed on this node (it holds the namespace, or
/// the request is one any node answers for itself), by role.
pub async fn serve_local(
    roles: &Roles,
    principal: &Principal,
    request: Request,
) -> Result<Response, WireError> {
    match request {
        Request::Ping => Ok(Response::Pong),
        Request::Config(ConfigRequest::Namespaces {
            prefix,
            cursor,
            limit,
        }) => config::listing::namespaces(&roles.cluster, &roles.config, &prefix, cursor, limit)
            .await
            .map(|answer| Response::Config(ConfigResponse::Namespaces(answer))),
        Request::Config(request) => config::quic::handle(&roles.config, principal, request).await,
        Request::Push(
            request @ (PushRequest::AgentHeartbeat(_)
            | PushRequest::AgentLeave { .. }
            | PushRequest::Agents { .. }),
        ) => push::agents::serve(&roles.cluster, &roles.push.agents, request).await,
        Request::Push(request) => push::quic::handle_routed(&roles.config, request).await,
        Request::Cluster(request) => crate::cluster::admin::serve(&roles.cluster, request).await,
        Request::Registry(request) => registry::quic::handle(&roles.registry, request).await,
        Request::Proxy(request) => proxy::quic::handle(&roles.proxy, request).await,
    }
}
