//! [`MapState`]: this node's copy of the cluster map, shared by the gossip handler (inside the
//! membership task), the request router, the handoff driver and anti-entropy.
//!
//! Every change is validated, merged, queued for persistence and announced on a `watch`
//! counter (the reconcile loop and the persister wait on it).
//!
//! What peers send (gossip, anti-entropy, redirects) goes through
//! [`MapState::apply_from_peer`]: an update whose epoch no honest history reaches
//! ([`ClusterMap::check_plausible`]) changes nothing, is counted in
//! `cfgnode_cluster_updates_refused_total{reason}` and logged at warn once per sender and
//! namespace, so a faulty or hostile peer can neither freeze a fact nor flood the log.
//!
//! One task, the persister, writes every change to storage, in the order the changes were
//! merged; so storage always ends with the newest fact per key (two concurrent saves could
//! otherwise land out of order and leave an older record on disk). A change this node authors
//! waits until the persister has made it durable ([`MapState::apply_durably`]).

use std::collections::HashSet;
use std::sync::Mutex;

use cfgnode_ring::{ClusterMap, ImplausibleUpdate, Update};
use cfgnode_storage::{Store, validate_namespace, validate_node_id};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{Notify, watch};

use crate::metrics::RefusedLabels;

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
    /// Refused peer updates by reason (`cfgnode_cluster_updates_refused_total`).
    refused: Family<RefusedLabels, Counter>,
    /// The (sender, namespace) pairs already warned about: one warn each, so a peer that keeps
    /// sending refused updates does not flood the log (the counter still counts every one).
    warned: Mutex<HashSet<(String, String)>>,
}

/// Most (sender, namespace) pairs remembered for warnings; past it refusals log at debug, so
/// a peer inventing namespace names cannot grow this set without bound.
const MAX_WARNED: usize = 1024;

/// How long an authored change may wait for its durable save.
const SAVE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl MapState {
    /// A map loaded from storage (see [`load`]); refused peer updates are counted in
    /// `refused` (the node's `Metrics::cluster_updates_refused`).
    pub fn new(map: ClusterMap, refused: Family<RefusedLabels, Counter>) -> Self {
        MapState {
            map: Mutex::new(map),
            unsaved: Mutex::default(),
            wake_persister: Notify::new(),
            version: watch::channel(0).0,
            saved: watch::channel(0).0,
            refused,
            warned: Mutex::default(),
        }
    }

    /// Reads the map under its lock.
    pub fn read<T>(&self, f: impl FnOnce(&ClusterMap) -> T) -> T {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        f(&map)
    }

    /// Checks and merges one update this node wrote or vouches for. True when it changed the
    /// map; it is then queued for persistence and announced. An implausible epoch is an error
    /// here (this node's own writes never carry one: see `cfgnode_ring::next_epoch`).
    pub fn apply(&self, update: Update) -> Result<bool, String> {
        check(&update)?;
        self.merge(update).map_err(|refusal| refusal.to_string())
    }

    /// Checks and merges one update received from `peer` (a node id, or what carried it when
    /// the sender is unknown). As [`MapState::apply`], except that an update with an
    /// implausible epoch is refused: it changes nothing, is counted and logged (see the
    /// module docs), and reads as "no change" (`Ok(false)`), so it is not passed on. Malformed
    /// names are still an error.
    pub fn apply_from_peer(&self, update: Update, peer: &str) -> Result<bool, String> {
        check(&update)?;
        match self.merge(update) {
            Ok(changed) => Ok(changed),
            Err(refusal) => {
                self.record_refusal(peer, &refusal);
                Ok(false)
            }
        }
    }

    /// Counts a refusal, and warns about it once per (sender, namespace).
    fn record_refusal(&self, peer: &str, refusal: &ImplausibleUpdate) {
        self.refused
            .get_or_create(&RefusedLabels {
                reason: refusal.reason(),
            })
            .inc();
        let first = {
            let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
            let pair = (peer.to_string(), refusal.namespace().to_string());
            warned.len() < MAX_WARNED && warned.insert(pair)
        };
        if first {
            tracing::warn!(
                peer,
                namespace = refusal.namespace(),
                reason = refusal.reason(),
                "{refusal}; further refusals from this peer for this namespace are only counted \
                 (cfgnode_cluster_updates_refused_total)"
            );
        } else {
            tracing::debug!(peer, %refusal, "refused a cluster map update");
        }
    }

    /// Merges a checked update if its epoch is plausible; queues and announces a change.
    fn merge(&self, update: Update) -> Result<bool, ImplausibleUpdate> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let changed = map.apply_plausible(update.clone())?;
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

/// Loads the map saved in storage. Records that do not decode are skipped with a warning, and
/// so are records with an implausible epoch (saved by a build that did not check epochs, from
/// a faulty or hostile peer).
pub fn load(store: &Store) -> Result<ClusterMap, cfgnode_storage::StoreError> {
    let mut map = ClusterMap::new();
    for (key, bytes) in store.cluster_records()? {
        match decode_update(&bytes).or_else(|e| legacy::decode(&bytes).ok_or(e)) {
            Ok(update) => {
                if let Err(refusal) = map.apply_plausible(update) {
                    tracing::warn!(%key, %refusal, "skipping a saved cluster record");
                }
            }
            Err(e) => tracing::warn!(%key, error = %e, "skipping an unreadable cluster record"),
        }
    }
    Ok(map)
}

/// Cluster records as data dirs written before pins had `strict` keep them (protocol 5 and
/// older): a pin then was always strict, so it loads as a strict pin.
mod legacy {
    use cfgnode_ring::{Directive, Epoch, HolderRecord, NodeId, Update};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct OldDirective {
        target: Option<NodeId>,
        epoch: Epoch,
        author: NodeId,
    }

    #[derive(Serialize, Deserialize)]
    enum OldUpdate {
        Holder {
            namespace: String,
            record: HolderRecord,
        },
        Pin {
            namespace: String,
            directive: OldDirective,
        },
        Claim {
            namespace: String,
            directive: OldDirective,
        },
    }

    fn directive(old: OldDirective, strict: bool) -> Directive {
        Directive {
            target: old.target,
            epoch: old.epoch,
            author: old.author,
            strict,
        }
    }

    /// `bytes` as a record of the old shape, or `None`.
    pub(super) fn decode(bytes: &[u8]) -> Option<Update> {
        let config = bincode::config::standard().with_limit::<{ super::MAX_UPDATE_BYTES }>();
        let (old, used): (OldUpdate, usize) =
            bincode::serde::decode_from_slice(bytes, config).ok()?;
        if used != bytes.len() {
            return None;
        }
        let update = match old {
            OldUpdate::Holder { namespace, record } => Update::Holder { namespace, record },
            OldUpdate::Pin {
                namespace,
                directive: d,
            } => Update::Pin {
                namespace,
                // Every pin was strict then.
                directive: directive(d, true),
            },
            OldUpdate::Claim {
                namespace,
                directive: d,
            } => Update::Claim {
                namespace,
                directive: directive(d, false),
            },
        };
        super::check(&update).ok()?;
        Some(update)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn an_old_pin_loads_as_a_strict_pin_and_an_old_claim_as_a_claim() {
            let old = |pin: bool| {
                let d = OldDirective {
                    target: Some("n2".into()),
                    epoch: 3,
                    author: "n1".into(),
                };
                let namespace = "app".to_string();
                let update = if pin {
                    OldUpdate::Pin {
                        namespace,
                        directive: d,
                    }
                } else {
                    OldUpdate::Claim {
                        namespace,
                        directive: d,
                    }
                };
                bincode::serde::encode_to_vec(update, bincode::config::standard()).expect("encode")
            };
            // The current decoder refuses the old shape; the fallback reads it.
            assert!(super::super::decode_update(&old(true)).is_err());
            match decode(&old(true)) {
                Some(Update::Pin { directive, .. }) => {
                    assert!(directive.strict);
                    assert_eq!(directive.target.as_deref(), Some("n2"));
                }
                other => panic!("{other:?}"),
            }
            match decode(&old(false)) {
                Some(Update::Claim { directive, .. }) => assert!(!directive.strict),
                other => panic!("{other:?}"),
            }
            assert!(decode(b"garbage").is_none());
        }
    }
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

/// Loads the cluster map at start. A data dir from before clustering (namespaces but no
/// cluster records) gets a holder record `{me, 1}` for each of its namespaces, so its data
/// stays served. Records are never invented otherwise: a namespace's data found without a
/// record naming this node is a partial copy from an interrupted handoff and is not served.
pub async fn load_map(store: &Store) -> Result<ClusterMap, cfgnode_storage::StoreError> {
    let loaded = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            let map = load(&store)?;
            let mut local = Vec::new();
            if map.is_empty() {
                let mut cursor: Option<String> = None;
                loop {
                    let page = store.list_namespaces("", cursor.as_deref(), 1000)?;
                    local.extend(page.items.into_iter().map(|s| s.name));
                    match page.next_cursor {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
            }
            Ok::<_, cfgnode_storage::StoreError>((map, local))
        })
        .await
        .map_err(|e| {
            cfgnode_storage::StoreError::Storage(format!("cluster map load task failed: {e}"))
        })??
    };
    let (mut map, legacy) = loaded;
    if !legacy.is_empty() {
        let updates: Vec<Update> = legacy
            .into_iter()
            .map(|namespace| Update::Holder {
                namespace,
                record: cfgnode_ring::HolderRecord {
                    holder: store.node_id().to_string(),
                    epoch: 1,
                },
            })
            .collect();
        save_now(store, &updates).await?;
        tracing::info!(
            namespaces = updates.len(),
            "data dir from before clustering: this node holds its namespaces"
        );
        for update in updates {
            map.apply(update);
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use cfgnode_ring::{HolderRecord, MAX_EPOCH, MAX_EPOCH_JUMP};

    use super::*;
    use crate::metrics::Metrics;

    fn holder(epoch: u64) -> Update {
        Update::Holder {
            namespace: "ns".into(),
            record: HolderRecord {
                holder: "n2".into(),
                epoch,
            },
        }
    }

    #[test]
    fn implausible_peer_updates_change_nothing_and_are_counted_and_warned_once() {
        let metrics = Metrics::new("n1");
        let state = MapState::new(ClusterMap::new(), metrics.cluster_updates_refused.clone());
        assert_eq!(state.apply_from_peer(holder(3), "n2"), Ok(true));
        let before = state.read(|m| m.clone());
        assert_eq!(state.take_unsaved().0, vec![holder(3)]);
        let changes = state.subscribe();
        for _ in 0..3 {
            assert_eq!(state.apply_from_peer(holder(u64::MAX), "n2"), Ok(false));
        }
        assert_eq!(
            state.apply_from_peer(holder(MAX_EPOCH_JUMP + 4), "n3"),
            Ok(false)
        );
        assert_eq!(
            state.read(|m| m.clone()),
            before,
            "a refusal changed the map"
        );
        assert!(
            !changes.has_changed().expect("open"),
            "a refusal was announced"
        );
        assert!(
            state.take_unsaved().0.is_empty(),
            "a refusal was queued for saving"
        );

        let text = metrics.render();
        assert!(
            text.contains(
                "cfgnode_cluster_updates_refused_total{node=\"n1\",reason=\"above_maximum\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "cfgnode_cluster_updates_refused_total{node=\"n1\",reason=\"too_far_ahead\"} 1"
            ),
            "{text}"
        );
        // One warning per (sender, namespace), however many refusals.
        let warned = state.warned.lock().expect("not poisoned").clone();
        let expected: HashSet<(String, String)> =
            [("n2".into(), "ns".into()), ("n3".into(), "ns".into())].into();
        assert_eq!(warned, expected);
        // A plausible update still goes through afterwards.
        assert_eq!(state.apply_from_peer(holder(4), "n2"), Ok(true));
    }

    #[test]
    fn this_nodes_own_implausible_update_is_an_error() {
        let state = MapState::new(ClusterMap::new(), Family::default());
        let refused = state.apply(holder(MAX_EPOCH + 1));
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("above the maximum")),
            "{refused:?}"
        );
        assert!(state.read(|m| m.is_empty()));
    }

    #[test]
    fn the_warned_set_is_bounded() {
        let state = MapState::new(ClusterMap::new(), Family::default());
        for i in 0..MAX_WARNED + 10 {
            let update = Update::Holder {
                namespace: format!("ns{i}"),
                record: HolderRecord {
                    holder: "n2".into(),
                    epoch: u64::MAX,
                },
            };
            assert_eq!(state.apply_from_peer(update, "n2"), Ok(false));
        }
        assert_eq!(state.warned.lock().expect("not poisoned").len(), MAX_WARNED);
    }
}
