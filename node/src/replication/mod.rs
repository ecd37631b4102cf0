//! Replication (docs/replication.md): a namespace kept on a replica set, its holder first.
//!
//! What is here so far is the follower's side: [`Follower`] answers a holder's appends, a
//! candidate's promise requests and state queries, over the peer connection the sender proved
//! the cluster key on. The pure rules are in `cfgnode_ring` (`check_append`, `Lease`, ...), the
//! durable, fenced state in `cfgnode_storage` (`Store::append`, `Store::promise`). The holder's
//! streams, the quorum wait on the write path and promotion come next (docs/replication.md,
//! "Node integration plan").

pub mod follower;

pub use follower::Follower;
