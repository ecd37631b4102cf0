//! The config role: versioned entries, history, diff, aliases, snapshots with ETags, write
//! modes and compare-and-set.
//!
//! - [`service`](ConfigService): the operations, independent of HTTP or QUIC.
//! - [`quic`]: wire requests to service calls.
//! - [`http`]: the HTTP handlers and their routes.
//! - [`listing`]: the cluster-wide namespace listing (every member's held namespaces).
//! - `json_diff`: the structural diff of two JSON documents (pure).

pub mod http;
mod json_diff;
pub mod listing;
pub mod quic;
mod service;

pub use service::{
    ConfigService, DEFAULT_PAGE, MAX_PAGE, SnapshotOutcome, encode_cursor, etag_list_matches,
};
