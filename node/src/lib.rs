//! cfgnode node: the process that stores and serves configuration.
//!
//! # Layout
//!
//! - [`node`](Node): start-up and shutdown: storage, admin token, QUIC endpoint, membership,
//!   HTTP listener; shutdown in the reverse order (leave, drain QUIC and HTTP, close storage).
//! - [`config_service`]: the config role's operations, shared by HTTP and QUIC.
//! - [`wire_api`]: QUIC requests to service calls; `quic_server`: the QUIC accept loop.
//! - `http`: the axum router: config API, health, readiness, metrics, auth, JSON errors.
//! - [`auth`]: the admin bearer token and what a principal may do.
//! - [`cluster_key`]: the cluster's shared secret, which every node proves to its peers.
//! - [`metrics`]: Prometheus metrics, fed by the HTTP layer and the storage writer.
//! - [`json_diff`]: structural diff of JSON documents (pure).
//! - [`membership`]: SWIM (foca) on QUIC datagrams: who is in the cluster and alive.
//! - [`push`]: change feeds per namespace and snapshot long-polling (the push role's start).
//! - [`cluster`]: the directory, pins and claims; routing requests to holders (forwarding and
//!   redirects); handoff; anti-entropy.
//!
//! # Place in the map
//!
//! `cli -> node -> {storage, ring, transport}`. The node serves the config role for the
//! namespaces it holds, over QUIC and HTTP, and sends every other namespace's requests to its
//! holder. Later stages add the push, registry and proxy roles here.

pub mod auth;
pub mod cluster;
pub mod cluster_key;
pub mod config_service;
mod error;
mod http;
pub mod json_diff;
pub mod membership;
pub mod metrics;
mod node;
pub mod push;
mod quic_server;
pub mod wire_api;

pub use error::NodeError;
pub use http::{
    ApiError, DEFAULT_BODY_TIMEOUT as HTTP_DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT as HTTP_DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS as HTTP_DEFAULT_MAX_CONNECTIONS, ENVELOPE_CONTENT_TYPE,
};
pub use node::{DATABASE_FILE, DEFAULT_CLUSTER_ID, MAX_VALUE_LIMIT, Node, NodeConfig, TlsFiles};
pub use push::webhook_targets::{Cidr, CidrError};
