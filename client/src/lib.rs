//! cfgnode-client: the Rust client library (in progress: the connection layer lands with the
//! transport's TLS endpoints).
//!
//! # Layout
//!
//! - [`ClientError`]: typed errors (not found, conflict, invalid, unauthenticated, unavailable,
//!   timeout).
//! - [`Backoff`]: exponential backoff with full jitter for retries of idempotent calls.
//! - [`CircuitBreaker`]: per-address breaker so a dead node costs one timeout per cooldown.

mod backoff;
mod breaker;
mod error;

pub use backoff::{Backoff, unit_random};
pub use breaker::{BreakerState, CircuitBreaker};
pub use error::ClientError;
