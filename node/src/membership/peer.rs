//! [`Peer`]: who a member is, as SWIM knows it.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A member's identity. The generation grows at every start, so a restarted node is a new
/// incarnation that wins over the stale record of its previous life (foca `renew`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Peer {
    /// The stable node id.
    pub id: String,
    /// Where it listens for QUIC (requests and SWIM datagrams).
    pub quic: SocketAddr,
    /// Its HTTP admin address (for operators and `GET /v1/cluster/members`).
    pub http: SocketAddr,
    /// Grows at every start.
    pub generation: u64,
}

impl foca::Identity for Peer {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Peer {
            generation: self.generation.checked_add(1)?,
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.quic
    }

    /// Two identities on one address: the newer generation (a restart) wins; ties by id so
    /// every member decides the same way.
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.generation, &self.id) > (adversary.generation, &adversary.id)
    }
}

#[cfg(test)]
mod tests {
    use foca::Identity;

    use super::*;

    #[test]
    fn renewal_and_conflicts_favour_the_newer_generation() {
        let addr: SocketAddr = "127.0.0.1:7000".parse().expect("addr");
        let old = Peer {
            id: "a".into(),
            quic: addr,
            http: addr,
            generation: 3,
        };
        let new = old.renew().expect("renewable");
        assert_eq!(new.generation, 4);
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
    }
}
