//! cfgnode node: the process that stores and serves configuration.
//!
//! # Layout
//!
//! - [`node`](Node): start-up and shutdown: storage, admin token, HTTP listener.
//! - [`config_service`]: the config role's operations, shared by HTTP and QUIC.
//! - [`wire_api`]: QUIC requests to service calls; `quic_server`: the QUIC accept loop.
//! - `http`: the axum router: config API, health, readiness, metrics, auth, JSON errors.
//! - [`auth`]: the admin bearer token and what a principal may do.
//! - [`metrics`]: Prometheus metrics, fed by the HTTP layer and the storage writer.
//! - [`json_diff`]: structural diff of JSON documents (pure).
//!
//! # Place in the map
//!
//! `cli -> node -> storage`. The node serves the config role for the namespaces it holds. Later
//! stages add the QUIC transport, the cluster (directory, forwarding, handoff) and the push,
//! registry and proxy roles here.

pub mod auth;
pub mod config_service;
mod error;
mod http;
pub mod json_diff;
pub mod membership;
pub mod metrics;
mod node;
mod quic_server;
pub mod wire_api;

pub use error::NodeError;
pub use http::{ApiError, ENVELOPE_CONTENT_TYPE};
pub use node::{DATABASE_FILE, DEFAULT_CLUSTER_ID, MAX_VALUE_LIMIT, Node, NodeConfig, TlsFiles};
