//! [`ReadLeases`]: whether this node, holder of a replicated namespace, may serve a read from
//! its own copy right now (docs/replication.md, "Reads").
//!
//! A holder serves linearizable reads alone only while less than [`cfgnode_ring::LEASE_MS`]
//! has passed since it *sent* an append that a quorum of its replica set (itself included) has
//! answered at its epoch. Followers promise a new epoch only a lease after they last *received*
//! an append, which is later; so by the time another node can be elected, this one has stopped
//! serving reads. Without the lease, a holder that was cut off, or restarted before it learned
//! of its successor, would answer reads with a stale copy.
//!
//! The replicator (`replication::holder`) extends a namespace's lease as appends are answered
//! and declares namespaces whose set is this node alone; the router waits here before it
//! serves a read locally.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// What this node knows about a namespace's lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lease {
    /// The replica set is this node alone: no other node can be elected, reads need no lease.
    Solo {
        /// The holder epoch this was decided at.
        epoch: u64,
    },
    /// Reads may be served until `until`, at `epoch`.
    Quorum {
        /// The holder epoch the answering appends were at.
        epoch: u64,
        /// Send time of the newest round a quorum answered, plus the lease.
        until: Instant,
    },
}

/// The read leases of the namespaces this node holds.
#[derive(Debug)]
pub struct ReadLeases {
    /// Whether replication is on at all (`--replicas` above 1); off, every read is served.
    required: bool,
    leases: Mutex<HashMap<String, Lease>>,
    /// Bumped at every change, so waiting reads look again.
    changed: watch::Sender<u64>,
}

impl ReadLeases {
    /// Leases for a node whose namespaces have `replicas` copies.
    pub fn new(replicas: usize) -> ReadLeases {
        ReadLeases {
            required: replicas > 1,
            leases: Mutex::default(),
            changed: watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lease>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// `namespace`'s set at `epoch` is this node alone.
    pub fn solo(&self, namespace: &str, epoch: u64) {
        self.lock()
            .insert(namespace.to_string(), Lease::Solo { epoch });
        self.bump();
    }

    /// A quorum answered appends of `namespace` at `epoch`, the oldest of them sent at `sent`.
    pub fn extend(&self, namespace: &str, epoch: u64, sent: Instant) {
        let until = sent + Duration::from_millis(cfgnode_ring::LEASE_MS);
        let mut leases = self.lock();
        let longer = match leases.get(namespace) {
            Some(Lease::Quorum { epoch: e, until: u }) => *e != epoch || until > *u,
            _ => true,
        };
        if longer {
            leases.insert(namespace.to_string(), Lease::Quorum { epoch, until });
            drop(leases);
            self.bump();
        }
    }

    /// Forgets `namespace` (it is not replicated from here any more).
    pub fn forget(&self, namespace: &str) {
        self.lock().remove(namespace);
    }

    /// Whether this node, holder of `namespace` at `epoch`, may serve a read from its copy now.
    pub fn may_serve(&self, namespace: &str, epoch: u64) -> bool {
        if !self.required || namespace.starts_with('_') {
            return true;
        }
        match self.lock().get(namespace) {
            Some(Lease::Solo { epoch: e }) => *e == epoch,
            Some(Lease::Quorum { epoch: e, until }) => *e == epoch && Instant::now() < *until,
            None => false,
        }
    }

    /// A receiver that changes whenever a lease does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_needs_a_live_lease_at_the_current_epoch() {
        let leases = ReadLeases::new(3);
        assert!(!leases.may_serve("app", 2), "no lease yet");
        leases.extend("app", 2, Instant::now());
        assert!(leases.may_serve("app", 2));
        assert!(!leases.may_serve("app", 3), "a lease of another epoch");
        let old = Instant::now() - Duration::from_millis(cfgnode_ring::LEASE_MS + 1);
        leases.extend("other", 2, old);
        assert!(!leases.may_serve("other", 2), "a lapsed lease");
        // An older round does not shorten a lease.
        leases.extend("app", 2, old);
        assert!(leases.may_serve("app", 2));
        leases.solo("app", 4);
        assert!(leases.may_serve("app", 4));
        leases.forget("app");
        assert!(!leases.may_serve("app", 4));
        assert!(
            leases.may_serve("_system", 1),
            "internal namespaces are not replicated"
        );
    }

    #[test]
    fn without_replication_every_read_is_served() {
        assert!(ReadLeases::new(1).may_serve("app", 1));
    }
}
