//! cfgnode node: the process that stores and serves configuration.
//!
//! # Layout
//!
//! The path of a request, outside in:
//!
//! - Front ends: `quic_server` (the QUIC accept loop: client and peer connections, by ALPN)
//!   and `http` (the axum router and its hyper accept loop: auth, limits, metrics, errors;
//!   `http::replay` replays HTTP requests other nodes forward).
//! - `dispatch`: where an authenticated request goes: routed to its namespace's holder, then
//!   served by its role; node-to-node requests of authenticated peers too.
//! - `roles`: one room per role, each with its service, QUIC handlers and HTTP routes:
//!   `roles::config` (entries, history, aliases, snapshots), `roles::push` (event log,
//!   watches and the hub, SSE, long-polls, webhooks, agents) and `roles::registry` (services,
//!   instances, health checks on the holder, subscriptions) and `roles::proxy` (the reverse
//!   proxy: routes, the listener, hot reload through the hub). One [`Roles`](roles::Roles) value
//!   holds every role's handles for both front ends.
//! - `cluster`: the cluster map (directory, pins, claims), routing to holders (forward and
//!   redirect, with the local server injected by the caller), handoff, anti-entropy, and the
//!   cluster-admin answers.
//! - `replication`: a namespace kept on a replica set (docs/replication.md); so far the
//!   follower's side: fenced appends, promises and state queries from peers.
//! - `membership`: SWIM (foca) on QUIC datagrams: who is in the cluster and alive.
//! - Neutral helpers every layer may use: `auth` (tokens and principals), `cluster_key`,
//!   `blocking` (storage reads off the async workers), `metrics`, `feeds` (a change counter per namespace), `records` (namespace records that
//!   wake the feeds), `time`, `shutdown`, `error`.
//! - `node` ([`Node`]): start-up and shutdown: storage, tokens, QUIC endpoint, membership, the
//!   roles, both front ends; shutdown in the reverse order.
//!
//! Arrows run down only: front ends -> dispatch -> roles -> cluster -> membership.
//!
//! # Place in the map
//!
//! `cli -> node -> {storage, ring, transport}`. The node serves the config, push, registry and proxy
//! roles for the namespaces it holds, over QUIC and HTTP, and sends every other namespace's
//! requests to its holder; with `--proxy` it also answers proxied traffic itself. Modules are private: the crate's API is the `pub use` list below.

mod auth;
mod blocking;
mod cluster;
mod cluster_key;
mod dispatch;
mod error;
mod feeds;
mod http;
mod membership;
mod metrics;
mod node;
mod quic_server;
mod records;
mod replication;
mod roles;
mod shutdown;
mod time;

pub use error::NodeError;
pub use http::{
    ApiError, DEFAULT_BODY_TIMEOUT as HTTP_DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT as HTTP_DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS as HTTP_DEFAULT_MAX_CONNECTIONS,
};
pub use membership::{MemberState, MemberView};
pub use node::{DATABASE_FILE, DEFAULT_CLUSTER_ID, MAX_VALUE_LIMIT, Node, NodeConfig, TlsFiles};
pub use records::NamespaceRecords;
pub use roles::config::http::ENVELOPE_CONTENT_TYPE;
pub use roles::push::sse::event_json;
pub use roles::push::webhook_targets::{Cidr, CidrError};
