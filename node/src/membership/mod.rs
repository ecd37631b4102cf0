//! Cluster membership: foca SWIM carried on QUIC datagrams.
//!
//! - [`Peer`]: a member's identity (node id, QUIC and HTTP addresses, generation).
//! - `codec`: foca's wire items as bincode 2, behind a magic, version and cluster id.
//! - `task`: the one task that owns `Foca`; datagrams, timers and commands reach it over
//!   channels, and it sends through [`DatagramLinks`].
//! - [`DatagramLinks`]: one authenticated QUIC connection per peer, datagrams both ways;
//!   [`dial_peer`], the one way a node connects to another (with the cluster-key handshake).

mod codec;
mod links;
mod peer;
mod persist;
mod task;

pub use links::{DatagramLinks, PeerLink, check_node_certificate, count_auth_failure, dial_peer};
pub use peer::Peer;
pub use persist::{persist_members, restore_members};
pub use task::{MemberState, MemberView, Membership, MembershipConfig};
