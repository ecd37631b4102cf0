//! Membership across restarts: the member list is saved in redb whenever it changes and read
//! back at start, so a node that restarts without `--join` finds its cluster again.

use std::time::Duration;

use cfgnode_storage::Store;
use tokio::sync::watch;

use super::peer::Peer;
use super::task::MemberView;

/// Saves at most this often: membership can flap during a partition, and every save is a
/// durable commit.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// The members saved by the previous run (empty on a first start or unreadable data).
pub fn restore_members(store: &Store) -> Vec<Peer> {
    let bytes = match store.cluster_members() {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Vec::new(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the saved cluster members; relying on --join");
            return Vec::new();
        }
    };
    match bincode::serde::decode_from_slice::<Vec<Peer>, _>(&bytes, bincode::config::standard()) {
        Ok((peers, _)) => peers,
        Err(e) => {
            tracing::warn!(error = %e, "saved cluster members are unreadable; relying on --join");
            Vec::new()
        }
    }
}

/// Saves the member list (other members only) whenever it changes, until `stop`.
pub async fn persist_members(
    store: Store,
    me: String,
    mut view: watch::Receiver<Vec<MemberView>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut saved: Vec<Peer> = Vec::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            changed = view.changed() => if changed.is_err() { return },
        }
        let peers: Vec<Peer> = view
            .borrow_and_update()
            .iter()
            .filter(|m| m.peer.id != me)
            .map(|m| m.peer.clone())
            .collect();
        if peers == saved {
            continue;
        }
        let bytes = match bincode::serde::encode_to_vec(&peers, bincode::config::standard()) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode the cluster members");
                continue;
            }
        };
        match store.save_cluster_members(bytes).await {
            Ok(()) => saved = peers,
            Err(e) => tracing::warn!(error = %e, "cannot save the cluster members"),
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(SAVE_EVERY) => {}
        }
    }
}
