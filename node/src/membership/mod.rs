//! Cluster membership: foca SWIM carried on QUIC datagrams.
//!
//! - [`Peer`]: a member's identity (node id, QUIC and HTTP addresses, generation).
//! - `codec`: foca's wire items as bincode 2, behind a magic, version and cluster id.
//! - `task`: the one task that owns `Foca`; datagrams, timers and commands reach it over
//!   channels, and it sends through [`DatagramLinks`].
//! - [`DatagramLinks`]: one QUIC connection per peer, datagrams both ways.

mod codec;
mod links;
mod peer;
mod persist;
mod task;

pub use links::DatagramLinks;
pub use peer::Peer;
pub use persist::{persist_members, restore_members};
pub use task::{MemberState, MemberView, Membership, MembershipConfig};
