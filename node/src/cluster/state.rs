//! [`MapState`]: this node's copy of the cluster map, shared by the gossip handler (inside the
//! membership task), the request router, the handoff driver and anti-entropy.
//!
//! Every change is validated, merged, queued for persistence and announced on a `watch`
//! counter (the reconcile loop and the persister wait on it).

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
    unsaved: Mutex<Vec<Update>>,
    wake_persister: Notify,
    version: watch::Sender<u64>,
}

impl MapState {
    /// A map loaded from storage (see [`load`]).
    pub fn new(map: ClusterMap) -> Self {
        MapState {
            map: Mutex::new(map),
            unsaved: Mutex::default(),
            wake_persister: Notify::new(),
            version: watch::channel(0).0,
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
        let changed = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.apply(update.clone())
        };
        if changed {
            self.unsaved
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(update);
            self.wake_persister.notify_one();
            self.version.send_modify(|v| *v += 1);
        }
        Ok(changed)
    }

    /// A receiver that sees a new value at every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Takes what is not yet saved.
    fn take_unsaved(&self) -> Vec<Update> {
        std::mem::take(&mut *self.unsaved.lock().unwrap_or_else(|p| p.into_inner()))
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

/// Saves durably, now, updates this node authored (a record it creates or passes on, a
/// directive an operator set) before they are acted on or acknowledged.
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

/// Saves what gossip and anti-entropy merged, in batches, until `stop`; flushes once more at
/// the end. The map on disk may lag by a moment; anti-entropy repairs what a crash lost.
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
        let batch = state.take_unsaved();
        if let Err(e) = save_now(&store, &batch).await {
            tracing::warn!(error = %e, records = batch.len(), "could not save cluster records; anti-entropy will bring them back");
        }
        if stopping {
            break;
        }
    }
}
