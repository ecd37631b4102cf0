//! The push role, as far as it is built: change feeds per namespace, and long-polling a
//! snapshot with its ETag (`GET /v1/namespaces/{ns}/snapshot?wait=30s` + `If-None-Match`).
//!
//! - [`Feeds`]: a counter per namespace that moves at every committed change (and when the
//!   namespace moves to another node), for waiters to wake on.
//! - [`longpoll`]: waiting until a namespace's ETag differs from the caller's, without holding
//!   the namespace's gate (so a long-poll never keeps a handoff from freezing the namespace).

mod feeds;
pub mod longpoll;

pub use feeds::Feeds;
