//! Replication (docs/replication.md): a namespace kept on a replica set, its holder first.
//!
//! [`Replicator`] is the holder's side: one stream per follower (and per learner joining the
//! set), the quorum wait on the write path and on reads (`--replicas`). [`Follower`] answers a
//! holder's appends, a candidate's promise requests and state queries, over the peer connection
//! the sender proved the cluster key on. [`promote`] runs elections when a holder is down
//! (`deferral` keeps the clock of a member that leaves an election to another); [`release`]
//! drops copies a change of the set left behind. The pure rules are in `cfgnode_ring`
//! (`check_append`, `Election`, `Lease`, `next_set`, ...), the durable, fenced state in
//! `cfgnode_storage` (`Store::append`, `Store::promise`), the read leases in `cluster::lease`. A
//! handoff to a node outside the set makes it a member first (`cluster::handoff`); the sets of
//! a namespace are ordered by their version, so an election counts members told an older set
//! (docs/replication.md, "Set versions").

mod deferral;
pub mod follower;
pub mod holder;
pub mod promote;
pub mod release;

pub use follower::Follower;
pub use holder::Replicator;
