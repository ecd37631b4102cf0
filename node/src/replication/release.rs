//! Copies left behind by a change of the set (docs/replication.md, "Copies left behind").
//!
//! When a holder replaces a member of a namespace's replica set (the member was down and
//! another node took its place, or the ring changed), the member keeps its copy: nothing tells
//! it, and it may be down when the set switches. [`release_left_copies`] looks every
//! [`SWEEP_EVERY`] through this node's replica records for copies whose holder, alive and
//! silent towards this node for [`QUIET_FOR`], no longer streams to it, asks that holder for
//! its set ([`Follower::on_state`] answers a holder's live set), and if this node is not in it,
//! drops the copy's rows ([`Store::release_copy`]).
//!
//! The replica record stays, with its promise: dropping it would let a deposed holder of the
//! old set count this node again (a node with no record promised nothing). The release is a
//! compare-and-set on the record and the revision as they were before the holder was asked,
//! so an append that arrived since (the holder took this node back and may have counted it
//! towards a quorum) or a handoff's rows keep the copy; so does a handoff to this node under
//! way.

use std::time::Duration;

use cfgnode_storage::{LogPos, Store};
use cfgnode_transport::{PeerRequest, PeerResponse, Response};
use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::replication::Follower;
use crate::shutdown::until_stopped;

/// How often the replica records are looked through for copies left behind.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// How long a holder must have sent nothing to this node before its copy is looked at: a
/// member in the set gets a heartbeat every `cfgnode_ring::HEARTBEAT_MS`.
pub const QUIET_FOR: Duration = Duration::from_secs(3);
/// How long the holder may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Releases copies this node keeps for sets it is no longer in, until `stopped`.
pub async fn release_left_copies(
    store: Store,
    cluster: Cluster,
    follower: std::sync::Arc<Follower>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = until_stopped(&mut stopped) => return,
        }
        let records = match crate::blocking::read(&store, |s| s.replicas()).await {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the replica records");
                continue;
            }
        };
        for (namespace, _) in records {
            match release_if_left(&store, &cluster, &follower, &namespace).await {
                Ok(true) => {
                    tracing::info!(
                        namespace,
                        "released a copy its holder's replica set no longer has"
                    );
                    cluster.metrics().releases.inc();
                }
                Ok(false) => {}
                Err(e) => tracing::debug!(namespace, error = %e, "copy kept"),
            }
        }
    }
}

/// Releases this node's copy of `namespace` if its holder no longer replicates to it.
/// Answers whether it did.
async fn release_if_left(
    store: &Store,
    cluster: &Cluster,
    follower: &Follower,
    namespace: &str,
) -> Result<bool, String> {
    // The record and the revision as they are before the holder is asked: the release
    // happens only if both are unchanged by then.
    let ns = namespace.to_string();
    let (record, revision) = crate::blocking::read(store, move |s| {
        let record = s.replica(&ns)?;
        let revision = s.namespace(&ns)?.map_or(0, |state| state.revision);
        Ok::<_, cfgnode_storage::StoreError>((record, revision))
    })
    .await
    .map_err(|e| e.to_string())?;
    let Some(record) = record else {
        return Ok(false);
    };
    let me = cluster.me();
    let Some(map) = cluster.holder(namespace) else {
        return Ok(false);
    };
    let quiet = follower.last_heard(namespace).elapsed() >= QUIET_FOR;
    let candidate = record.epoch_start.is_none()
        && record.position != LogPos::ZERO
        && map.holder != me
        && record.holder == map.holder
        && cluster.view().alive.contains(&map.holder)
        && quiet
        && !cluster.receiving_handoff(namespace);
    if !candidate {
        return Ok(false);
    }
    let addr = cluster
        .addr_of(&map.holder)
        .ok_or_else(|| format!("no address for {}", map.holder))?;
    let answer = cluster
        .peers()
        .call(
            addr,
            PeerRequest::ReplicaState {
                namespace: namespace.to_string(),
            },
            ASK_TIMEOUT,
        )
        .await
        .map_err(|e| e.into_wire().message)?;
    let Response::Peer(PeerResponse::Replica(Some(theirs))) = answer else {
        return Ok(false);
    };
    // Only the holder's own word counts, at this copy's epoch or later: a node that is not
    // (or no longer) the holder answers the set it follows, not the one it streams to.
    let still_in = theirs.replicas.iter().any(|n| n == me);
    let speaks_as_holder = theirs.holder == map.holder
        && theirs.replicas.first() == Some(&map.holder)
        && theirs.position.epoch >= record.position.epoch;
    if still_in || !speaks_as_holder || cluster.receiving_handoff(namespace) {
        return Ok(false);
    }
    store
        .release_copy(namespace, record, revision)
        .await
        .map_err(|e| e.to_string())?;
    Ok(true)
}
