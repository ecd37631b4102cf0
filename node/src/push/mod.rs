//! The push role: every change of a namespace, delivered to whoever follows it.
//!
//! - [`Feeds`]: a counter per namespace that moves at every committed change (and when the
//!   namespace moves to another node), for waiters to wake on.
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
//!
//! The namespace log (storage) is the source of every push: revisions are contiguous, the log
//! moves with the namespace, and a reader behind the retained log is told so.

pub mod agents;
mod feeds;
pub mod hub;
pub mod longpoll;
pub mod sse;
pub mod watch;
pub mod webhook_targets;
pub mod webhooks;

pub use agents::Agents;
pub use feeds::Feeds;
pub use hub::Hub;

/// Resolves once `stop` turns true (or its sender is gone). Holds no borrow of the channel
/// when it returns, so it can sit in a `select!` next to branches that await.
pub async fn until_stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
