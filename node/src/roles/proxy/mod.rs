//! The proxy role: an HTTP reverse proxy on every node started with `--proxy`, routed by host
//! to registry instances or static targets, round robin over healthy backends, with failover,
//! rate limits and hot reload (docs/proxy.md).
//!
//! - [`route`]: route records, parsed and checked field by field (pure).
//! - [`table`]: which route answers a host and path; round robin with local down marks (pure).
//! - [`limiter`]: a token bucket per client IP (pure, clock passed in).
//! - [`follow`]: every proxied namespace's routes and instances followed through the hub, the
//!   table rebuilt on each change.
//! - [`server`]: the listener and the forwarding of one request; [`tls`]: TLS termination.
//! - [`hit`]: seed 000's `/hit`, one request to a URL the namespace's `allow` key lists.
//! - [`service`] and [`http`]: the routes' API (`/v1/namespaces/{ns}/routes/{name}`), served
//!   by the namespace's holder like any namespace write.
//! - [`quic`]: the same operations over the QUIC protocol (`Request::Proxy`).
//!
//! Routes are namespace records (kind `route`), so they move with the namespace and reach every
//! proxying node as events; proxied traffic itself is answered by the node that received it.

pub mod backend;
pub mod follow;
pub mod hit;
pub mod http;
pub mod limiter;
pub mod quic;
pub mod route;
pub mod server;
pub mod service;
pub mod table;
pub mod tls;

pub use service::ProxyService;
