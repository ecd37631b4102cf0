//! Replication (docs/replication.md): a namespace kept on a replica set, its holder first.
//!
//! [`Replicator`] is the holder's side: one stream per follower, and the quorum wait on the
//! write path (`--replicas`). [`Follower`] answers a holder's appends, a candidate's promise
//! requests and state queries, over the peer connection the sender proved the cluster key on. The pure rules are in `cfgnode_ring` (`check_append`, `Lease`, ...), the
//! durable, fenced state in `cfgnode_storage` (`Store::append`, `Store::promise`). Promotion,
//! leases and a new epoch per change of the set come next (docs/replication.md, "Node
//! integration plan").

pub mod follower;
pub mod holder;
pub mod promote;

pub use follower::Follower;
pub use holder::Replicator;
