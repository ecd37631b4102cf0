//! cfgnode-client: the Rust client library. Talks QUIC to any node.
//!
//! ```no_run
//! use cfgnode_client::{Client, PutOptions};
//!
//! # async fn demo() -> Result<(), cfgnode_client::ClientError> {
//! let client = Client::builder(["127.0.0.1:7000".parse().expect("address")])
//!     .token(std::fs::read_to_string("cfgnode-data/admin.token").unwrap_or_default().trim())
//!     .insecure() // the node runs with its self-signed certificate
//!     .build()?;
//! let options = PutOptions { codec: Some("json".into()), ..PutOptions::default() };
//! let written = client.put("shop", "db/config", br#"{"port":5432}"#.to_vec(), options).await?;
//! let entry = client.get("shop", "db/config").await?;
//! assert_eq!(entry.version, written.version);
//! # Ok(())
//! # }
//! ```
//!
//! The registry: an instance kept registered while the process lives, and a watch of a
//! service's healthy set.
//!
//! ```no_run
//! use cfgnode_client::{Check, Client, InstanceEndpoint, InstanceSpec};
//!
//! # async fn demo(client: Client) -> Result<(), cfgnode_client::ClientError> {
//! let spec = InstanceSpec {
//!     endpoints: vec![InstanceEndpoint {
//!         name: "http".into(),
//!         protocol: "http".into(),
//!         address: "10.0.0.5".into(),
//!         port: 8080,
//!     }],
//!     check: Some(Check::Ttl { ttl_ms: 10_000 }),
//!     ..InstanceSpec::default()
//! };
//! // Heartbeats every 3.3 s from a background task; deregistered when dropped.
//! let registration = client.register_with_keepalive("shop", "web", "w1", spec).await?;
//! let mut healthy = client.watch_healthy("shop", "web");
//! let now = healthy.next().await?; // the current set, then each change
//! println!("{} healthy", now.len());
//! registration.deregister().await?; // or drop it
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`Client`] / [`ClientBuilder`]: typed calls for every config operation; per-call deadline;
//!   failover along the node list; retries with exponential backoff and full jitter for
//!   idempotent calls only (a write whose answer was lost is reported, never resent blindly);
//!   a circuit breaker per node; connection-change callbacks; redirects to a namespace's
//!   holder followed (at most two) and holders remembered; cluster operations (members,
//!   placement, ring, claim/release, pin/unpin). In `client/`: `builder`, `connection`
//!   (connections, attempts, retries, breakers, deadline), `routing` (holders learned from
//!   redirects), and the typed operations per request family: `config`, `push`, `cluster`.
//! - Registry (`client/registry`): [`Client::register`], [`Client::deregister`],
//!   [`Client::heartbeat`], [`Client::services`], [`Client::service`] (and its long-poll
//!   [`Client::service_changed`]), [`Client::healthy_instances`], subscriptions. Heartbeats are
//!   retried like reads (a second one only renews the TTL again); the other registry writes are
//!   not resent once they may have arrived.
//! - Proxy routes (`client/proxy`): [`Client::put_route`], [`Client::route`],
//!   [`Client::routes`], [`Client::delete_route`]; a [`Route`] is the HTTP API's JSON, checked by
//!   the node (a bad one is [`ClientError::Invalid`] naming the field). Only the reads retry.
//! - [`Registration`]: [`Client::register_with_keepalive`], an instance kept alive by TTL
//!   heartbeats (every TTL / 3, in a tokio task) and deregistered when the handle is dropped or
//!   [`Registration::deregister`] is awaited.
//! - [`ServiceWatch`]: [`Client::watch_healthy`], a service's healthy set yielded whenever it
//!   changes (the `Service` long-poll, quiet on changes that leave the set alone).
//! - [`Watch`] / [`WatchOptions`]: change streams per namespace that resume from their
//!   cursors after any disconnect, node restart or namespace move.
//! - [`ClientError`]: typed errors (not found, conflict, invalid, unauthenticated, unavailable,
//!   timeout).
//! - [`Backoff`], [`CircuitBreaker`]: the pure retry and breaker logic.

mod backoff;
mod breaker;
mod client;
mod error;
mod registration;
mod service_watch;
mod watch;

pub use backoff::{Backoff, unit_random};
pub use breaker::{BreakerState, CircuitBreaker};
pub use client::{
    Access, Agent, AgentSeen, Alias, Check, Client, ClientBuilder, CodecInfo, ConnectionEvent,
    Deleted, Diff, Entry, EventsRead, Instance, InstanceEndpoint, InstanceFilter, InstanceSpec,
    InstanceStatus, MAX_SERVICE_WAIT, Member, Namespace, Page, Placement, Probe, ProbeTarget,
    PutOptions, RegisteredInstance, RetryPolicy, RingShare, Route, RoutePut, ServiceSummary,
    ServiceView, Services, Snapshot, SnapshotResult, Subscription, SubscriptionSpec, Version,
    WriteMode,
};
pub use error::ClientError;
pub use registration::Registration;
pub use service_watch::{
    DEFAULT_SERVICE_WAIT, MISSING_NAMESPACE_POLL, ServiceWatch, same_instances,
};
pub use watch::{Event, EventKind, Watch, WatchEvent, WatchOptions};
