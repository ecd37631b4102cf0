//! [`MapState`]: this node's copy of the cluster map, shared by the gossip handler (inside the
//! membership task), the request router, the handoff driver and anti-entropy.
//!
//! Every change is validated, merged, queued for persistence and announced on a `watch`
//! counter (the reconcile loop and the persister wait on it).
//!
//! One task, the persister, writes every change to storage, in the order the changes were
//! merged; so storage always ends with the newest fact per key (two concurrent saves could
//! otherwise land out of order and leave an older record on disk). A change this node authors
//! waits until the persister has made it durable ([`MapState::apply_durably`]).

use std::sync::Mutex;

use cfgnode_ring::{ClusterMap, Update};
use cfgnode_storage::{Store, validate_namespace, validate_node_id};
use tokio::sync::{Notify, watch};

/// Largest encoded update accepted from a peer (a namespace name and two node ids fit easily).
pub const MAX_UPDATE_BYTES: usize = 1024;

/// The cluster map and its change feed.
#[derive(Debug)]
pub struct MapState {
    map: Mutex<ClusterMap>,
    /// Changes not yet saved, and how many changes were ever queued.
    unsaved: Mutex<(Vec<Update>, u64)>,
    wake_persister: Notify,
    version: watch::Sender<u64>,
    /// How many queued changes are durable.
    saved: watch::Sender<u64>,
}

/// How long an authored change may wait for its durable save.
const SAVE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl MapState {
    /// A map loaded from storage (see [`load`]).
    pub fn new(map: ClusterMap) -> Self {
        MapState {
            map: Mutex::new(map),
            unsaved: Mutex::default(),
            wake_persister: Notify::new(),
            version: watch::channel(0).0,
            saved: watch::channel(0).0,
        }
    }

    /// Reads the map under its lock.
    pub fn read<T>(&self, f: impl FnOnce(&ClusterMap) -> T) -> T {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        f(&map)
    }

    /// Checks and merges one update. True when it changed the map; it is then queued for
    /// persistence and announced.
    pub fn apply(&self, update: Update) -> Result<bool, String> {
        check(&update)?;
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let changed = map.apply(update.clone());
        if changed {
            // Queued under the map lock, so the queue is in merge order.
            let mut unsaved = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
            unsaved.0.push(update);
            unsaved.1 += 1;
        }
        drop(map);
        if changed {
            self.wake_persister.notify_one();
            self.version.send_modify(|v| *v += 1);
        }
        Ok(changed)
    }

    /// Merges an update and waits until everything merged so far, this update included, is
    /// durable. For facts this node authors: they are acted on only once they survive a crash.
    pub async fn apply_durably(&self, update: Update) -> Result<bool, String> {
        let changed = self.apply(update)?;
        let queued = self.unsaved.lock().unwrap_or_else(|p| p.into_inner()).1;
        self.wake_persister.notify_one();
        let mut saved = self.saved.subscribe();
        tokio::time::timeout(SAVE_WAIT, saved.wait_for(|s| *s >= queued))
            .await
            .map_err(|_| {
                "the cluster record could not be saved in time (storage failing?)".to_string()
            })?
            .map_err(|_| "the node is shutting down".to_string())?;
        Ok(changed)
    }

    /// A receiver that sees a new value at every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Takes what is not yet saved, with the count of changes it brings storage up to.
    fn take_unsaved(&self) -> (Vec<Update>, u64) {
        let mut unsaved = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
        (std::mem::take(&mut unsaved.0), unsaved.1)
    }

    /// Puts back a batch whose save failed, ahead of anything queued since.
    fn requeue(&self, mut batch: Vec<Update>) {
        let mut unsaved = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
        batch.append(&mut unsaved.0);
        unsaved.0 = batch;
    }
}

/// Checks an update's names, whoever sent it.
pub fn check(update: &Update) -> Result<(), String> {
    validate_namespace(update.namespace()).map_err(|e| e.to_string())?;
    let nodes: Vec<&String> = match update {
        Update::Holder { record, .. } => vec![&record.holder],
        Update::Pin { directive, .. } | Update::Claim { directive, .. } => {
            directive.target.iter().chain([&directive.author]).collect()
        }
    };
    for node in nodes {
        validate_node_id(node).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Encodes an update for gossip, anti-entropy and storage (bincode 2).
pub fn encode_update(update: &Update) -> Vec<u8> {
    bincode::serde::encode_to_vec(update, bincode::config::standard())
        .expect("plain-data updates always encode")
}

/// Decodes one update, refusing oversized or trailing input.
pub fn decode_update(bytes: &[u8]) -> Result<Update, String> {
    if bytes.len() > MAX_UPDATE_BYTES {
        return Err(format!("update of {} bytes is too large", bytes.len()));
    }
    let config = bincode::config::standard().with_limit::<MAX_UPDATE_BYTES>();
    let (update, used): (Update, usize) = bincode::serde::decode_from_slice(bytes, config)
        .map_err(|e| format!("malformed update: {e}"))?;
    if used != bytes.len() {
        return Err("trailing bytes after an update".to_string());
    }
    check(&update)?;
    Ok(update)
}

/// Encodes a list of updates (anti-entropy answers).
pub fn encode_updates(updates: &[Update]) -> Vec<u8> {
    bincode::serde::encode_to_vec(updates, bincode::config::standard())
        .expect("plain-data updates always encode")
}

/// Decodes a list of updates from a peer, each checked.
pub fn decode_updates(bytes: &[u8]) -> Result<Vec<Update>, String> {
    let config = bincode::config::standard().with_limit::<{ 64 * 1024 * 1024 }>();
    let (updates, used): (Vec<Update>, usize) = bincode::serde::decode_from_slice(bytes, config)
        .map_err(|e| format!("malformed cluster map: {e}"))?;
    if used != bytes.len() {
        return Err("trailing bytes after a cluster map".to_string());
    }
    for update in &updates {
        check(update)?;
    }
    Ok(updates)
}

/// The storage key of an update: `kind/namespace`.
pub fn storage_key(update: &Update) -> String {
    format!("{}/{}", update.kind().name(), update.namespace())
}

/// Loads the map saved in storage. Records that do not decode are skipped with a warning.
pub fn load(store: &Store) -> Result<ClusterMap, cfgnode_storage::StoreError> {
    let mut map = ClusterMap::new();
    for (key, bytes) in store.cluster_records()? {
        match decode_update(&bytes) {
            Ok(update) => {
                map.apply(update);
            }
            Err(e) => tracing::warn!(%key, error = %e, "skipping an unreadable cluster record"),
        }
    }
    Ok(map)
}

/// Saves updates durably in one commit (the persister's batches, and the records a node
/// makes for its own data at its first clustered start, before anything runs).
pub async fn save_now(
    store: &Store,
    updates: &[Update],
) -> Result<(), cfgnode_storage::StoreError> {
    let records = updates
        .iter()
        .map(|u| (storage_key(u), encode_update(u)))
        .collect();
    store.save_cluster_records(records).await
}

/// The one writer of cluster records: saves merged changes in merge order, in batches, until
/// `stop`, then flushes once more. A failed save is retried (after 200 ms) before anything
/// queued later, so storage never goes back to an older fact.
pub async fn persist(
    state: std::sync::Arc<MapState>,
    store: Store,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let stopping = tokio::select! {
            _ = state.wake_persister.notified() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        loop {
            let (batch, upto) = state.take_unsaved();
            if batch.is_empty() {
                state.saved.send_if_modified(|s| {
                    let newer = *s < upto;
                    *s = (*s).max(upto);
                    newer
                });
                break;
            }
            match save_now(&store, &batch).await {
                Ok(()) => {
                    state.saved.send_modify(|s| *s = (*s).max(upto));
                }
                Err(e) => {
                    tracing::warn!(error = %e, records = batch.len(), "could not save cluster records; retrying");
                    state.requeue(batch);
                    if stopping {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
        if stopping {
            break;
        }
    }
}
