//! Anti-entropy: gossip is best effort (a broadcast is retransmitted a bounded number of times,
//! and a node that was down missed it), so every node also compares map digests with a random
//! alive peer every few seconds and at once when a member comes up, and pulls the whole map
//! when they differ. Merging is idempotent, so pulling what is already known costs nothing.

use std::time::Duration;

use cfgnode_transport::{PeerRequest, PeerResponse, Response};
use tokio::sync::watch;

use super::state::{decode_updates, encode_updates};
use super::{Cluster, ClusterError};
use crate::membership::MemberState;

/// How often a node compares maps with a random peer.
const SYNC_EVERY: Duration = Duration::from_secs(3);
/// How long one exchange may take.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs until `stop`.
pub async fn anti_entropy(cluster: Cluster, mut stop: watch::Receiver<bool>) {
    let mut members = cluster.membership().subscribe();
    let mut tick = tokio::time::interval(SYNC_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut known_alive = alive_ids(&cluster);
    loop {
        let newcomer = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => None,
            changed = members.changed() => {
                if changed.is_err() {
                    break;
                }
                // A member that just came up: exchange with it first (it may have been
                // away while the map changed, or be new and know nothing).
                let now = alive_ids(&cluster);
                let fresh = now.iter().find(|id| !known_alive.contains(*id)).cloned();
                known_alive = now;
                match fresh {
                    Some(id) => Some(id),
                    None => continue,
                }
            }
        };
        let peer = newcomer.or_else(|| {
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes).ok()?;
            let pick = u64::from_le_bytes(bytes) as usize;
            (!known_alive.is_empty()).then(|| known_alive[pick % known_alive.len()].clone())
        });
        if let Some(peer) = peer {
            sync_with(&cluster, &peer).await;
        }
    }
}

fn alive_ids(cluster: &Cluster) -> Vec<String> {
    cluster
        .membership()
        .members()
        .into_iter()
        .filter(|m| m.state == MemberState::Alive && m.peer.id != cluster.me())
        .map(|m| m.peer.id)
        .collect()
}

/// One exchange with `peer`: send our digest, merge its map if it differs.
pub async fn sync_with(cluster: &Cluster, peer: &str) {
    let Some(addr) = cluster.addr_of(peer) else {
        return;
    };
    let digest = cluster.map_state().read(|m| m.digest());
    let answer = cluster
        .peers()
        .call(addr, PeerRequest::ClusterSync { digest }, SYNC_TIMEOUT)
        .await;
    match answer {
        Ok(Response::Peer(PeerResponse::ClusterInSync)) => cluster.mark_synced(),
        Ok(Response::Peer(PeerResponse::ClusterMap { updates })) => {
            match decode_updates(&updates) {
                Ok(updates) => {
                    let mut theirs = cfgnode_ring::ClusterMap::new();
                    let mut changed = 0usize;
                    for update in updates {
                        theirs.apply(update.clone());
                        if matches!(cluster.map_state().apply_from_peer(update, peer), Ok(true)) {
                            changed += 1;
                        }
                    }
                    if changed > 0 {
                        tracing::debug!(
                            peer,
                            changed,
                            "anti-entropy brought in cluster map changes"
                        );
                    }
                    cluster.mark_synced();
                    // They lack some of our facts: push our map (push-pull, so a fact known only
                    // here reaches them now rather than when they next pull from us).
                    let (ours, updates) = cluster.map_state().read(|m| (m.digest(), m.updates()));
                    if ours != theirs.digest() {
                        let push = PeerRequest::ClusterPush {
                            updates: encode_updates(&updates),
                        };
                        if let Err(e) = cluster.peers().call(addr, push, SYNC_TIMEOUT).await {
                            tracing::debug!(peer, error = ?e, "cluster push failed");
                        }
                    }
                }
                Err(e) => tracing::warn!(peer, error = %e, "peer sent a malformed cluster map"),
            }
        }
        Ok(other) => tracing::warn!(peer, answer = ?other, "unexpected answer to a cluster sync"),
        Err(e) => tracing::debug!(peer, error = ?e, "cluster sync failed"),
    }
}

/// Merges a peer's pushed map.
pub fn merge_pushed(cluster: &Cluster, updates: &[u8]) -> Result<Response, ClusterError> {
    let updates = decode_updates(updates).map_err(ClusterError::Malformed)?;
    for update in updates {
        // The pushing peer is not known here: refusals are logged under "push".
        let _ = cluster.map_state().apply_from_peer(update, "push");
    }
    Ok(Response::Ack)
}

/// Answers a peer's digest: the whole map when it differs.
pub fn answer(cluster: &Cluster, digest: u64) -> Response {
    let updates = cluster
        .map_state()
        .read(|m| (m.digest() != digest).then(|| m.updates()));
    match updates {
        None => Response::Peer(PeerResponse::ClusterInSync),
        Some(updates) => Response::Peer(PeerResponse::ClusterMap {
            updates: encode_updates(&updates),
        }),
    }
}
