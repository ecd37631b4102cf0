//! The push role: every change of a namespace, delivered to whoever follows it.
//!
//! - [`longpoll`]: waiting until a namespace's ETag differs from the caller's (or its revision
//!   passes one), without holding the namespace's gate (so a wait never keeps a handoff from
//!   freezing the namespace).
//! - [`hub`]: one upstream subscription per watched namespace per node, its recent events
//!   shared by every watcher on the node.
//! - [`watch`]: a watch's followers, one per namespace, each with its own cursor.
//! - [`sse`]: the watch over HTTP as Server-Sent Events.
//! - [`webhooks`]: the holder POSTs each webhook's events in order, signed, from a durable
//!   cursor that moves with the namespace.
//! - [`webhook_targets`]: which addresses a webhook may reach (pure): public ones, plus the
//!   networks of `--webhook-allow`.
//! - [`agents`]: the registry of `cfgnode agent` sidecars (soft state, listed cluster-wide).
//! - [`quic`]: the push requests over QUIC (the event log, agents).
//! - [`http`]: the push role's HTTP routes (SSE watch, agents listing, webhooks).
//!
//! The namespace log (storage) is the source of every push: revisions are contiguous, the log
//! moves with the namespace, and a reader behind the retained log is told so.

pub mod agents;
pub mod http;
pub mod hub;
pub mod longpoll;
pub mod quic;
pub mod sse;
pub mod watch;
pub mod webhook_targets;
pub mod webhooks;

pub use agents::Agents;
pub use hub::Hub;

/// The push role's handles, shared by both front ends.
pub struct PushRole {
    /// One upstream subscription per watched namespace, fanned out to watchers.
    pub hub: Hub,
    /// The agents that heartbeat to this node.
    pub agents: Agents,
    /// Which webhook targets this node delivers to (`--webhook-allow`): refused literal IP
    /// targets get a 400 at creation.
    pub webhook_targets: webhook_targets::TargetPolicy,
}
