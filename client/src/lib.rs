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
//! - [`Watch`] / [`WatchOptions`]: change streams per namespace that resume from their
//!   cursors after any disconnect, node restart or namespace move.
//! - [`ClientError`]: typed errors (not found, conflict, invalid, unauthenticated, unavailable,
//!   timeout).
//! - [`Backoff`], [`CircuitBreaker`]: the pure retry and breaker logic.

mod backoff;
mod breaker;
mod client;
mod error;
mod watch;

pub use backoff::{Backoff, unit_random};
pub use breaker::{BreakerState, CircuitBreaker};
pub use client::{
    Access, Agent, AgentSeen, Alias, Client, ClientBuilder, CodecInfo, ConnectionEvent, Deleted,
    Diff, Entry, EventsRead, Member, Namespace, Page, Placement, PutOptions, RetryPolicy,
    RingShare, Snapshot, SnapshotResult, Version, WriteMode,
};
pub use error::ClientError;
pub use watch::{Event, EventKind, Watch, WatchEvent, WatchOptions};
