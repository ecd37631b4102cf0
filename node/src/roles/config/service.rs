//! [`ConfigService`]: the config role's operations, independent of HTTP or QUIC.
//!
//! Both front ends call this: it resolves aliases, checks page limits and cursors, computes
//! diffs, answers conditional snapshots, and runs storage reads off the async workers. The front
//! ends only translate their own request and response shapes, so a rule (say, "an unknown
//! namespace is 404 on list") is written once.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cfgnode_storage::{
    Alias, AliasPut, Codec, DeleteRequest, Deleted, Entry, LogRead, Lookup, NamespaceState, Page,
    PutRequest, Revision, Snapshot, Store, StoreError, VersionEntry,
};

use super::json_diff::{self, JsonDiff};
use crate::feeds::Feeds;
use crate::replication::Replicator;

pub use cfgnode_transport::limits::{DEFAULT_PAGE, MAX_PAGE};

/// A key read by name, with the alias it was reached through.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The entry.
    pub entry: Entry,
    /// The alias the caller named, if the name was an alias.
    pub alias: Option<String>,
}

/// Two versions of a key compared.
#[derive(Debug)]
pub struct VersionDiff {
    /// The older version.
    pub old: VersionEntry,
    /// The newer version.
    pub new: VersionEntry,
    /// Whether value or codec differ.
    pub changed: bool,
    /// The structural diff, when both versions are JSON values.
    pub structural: Option<JsonDiff>,
}

/// The answer to a conditional snapshot.
#[derive(Debug)]
pub enum SnapshotOutcome {
    /// The namespace still has the ETag the caller holds.
    NotModified {
        /// That ETag.
        etag: String,
    },
    /// The namespace changed (or the caller had no ETag).
    Snapshot(Snapshot),
}

/// A page whose cursor is already opaque.
pub type OpaquePage<T> = Page<T>;

/// The config role over one [`Store`].
#[derive(Clone)]
pub struct ConfigService {
    store: Store,
    feeds: Feeds,
    replicator: Replicator,
}

impl std::fmt::Debug for ConfigService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigService")
            .field("node_id", &self.store.node_id())
            .finish()
    }
}

impl ConfigService {
    /// The service over `store`; every committed change is announced on `feeds`, and answered
    /// only once `replicator` has it on a quorum of the namespace's replicas.
    pub fn new(store: Store, feeds: Feeds, replicator: Replicator) -> Self {
        ConfigService {
            store,
            feeds,
            replicator,
        }
    }

    /// The namespaces' change feeds.
    pub fn feeds(&self) -> &Feeds {
        &self.feeds
    }

    /// A namespace's state (revision, ETag), `None` if it has no data here.
    pub async fn namespace_state(
        &self,
        namespace: &str,
    ) -> Result<Option<NamespaceState>, StoreError> {
        let ns = namespace.to_string();
        self.read_visible(namespace, move |s| s.namespace(&ns))
            .await
    }

    /// Up to `limit` log events after `after` and the namespace's revision read after them
    /// (0 when the namespace does not exist here). `after: None` reads only the revision.
    pub async fn events(
        &self,
        namespace: &str,
        after: Option<Revision>,
        limit: usize,
    ) -> Result<(LogRead, Revision), StoreError> {
        let ns = namespace.to_string();
        self.read_visible(namespace, move |s| {
            let read = match after {
                Some(after) => s.events_since(&ns, after, limit)?,
                None => LogRead::Events(Vec::new()),
            };
            let revision = s.namespace(&ns)?.map_or(0, |state| state.revision);
            Ok((read, revision))
        })
        .await
    }

    /// The store underneath (for health checks and identity).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs a read of `namespace`, answered once what it saw is on a quorum
    /// ([`Replicator::read_visible`]).
    pub(crate) async fn read_visible<T, F>(&self, namespace: &str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        self.replicator.read_visible(namespace, f).await
    }

    /// Runs a storage read off the async workers (reads are synchronous redb transactions).
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        crate::blocking::read(&self.store, f).await
    }

    /// Reads a key, following an alias to its target.
    pub async fn get(&self, namespace: &str, name: &str) -> Result<Resolved, StoreError> {
        let (ns, key) = (namespace.to_string(), name.to_string());
        let lookup = self
            .read_visible(namespace, move |s| s.lookup(&ns, &key))
            .await?;
        match lookup {
            Lookup::Entry(entry) => Ok(Resolved { entry, alias: None }),
            Lookup::Alias {
                alias,
                entry: Some(entry),
            } => Ok(Resolved {
                entry,
                alias: Some(alias.alias),
            }),
            Lookup::Alias { alias, entry: None } => Err(StoreError::DanglingAlias {
                namespace: namespace.to_string(),
                alias: alias.alias,
                target: alias.target,
            }),
            Lookup::Missing => Err(StoreError::KeyNotFound {
                namespace: namespace.to_string(),
                key: name.to_string(),
            }),
        }
    }

    /// Writes a key (validation, size and codec checks happen before queueing).
    pub async fn put(&self, request: PutRequest) -> Result<Entry, StoreError> {
        let namespace = request.namespace.clone();
        let ticket = self.replicator.ticket(&namespace).await?;
        let entry = match self.store.put(request).await {
            Ok(entry) => entry,
            Err(refused) => return Err(self.refusal(&namespace, refused).await),
        };
        self.feeds.changed(&entry.namespace);
        ticket.replicated(entry.revision).await?;
        Ok(entry)
    }

    /// A write refused by the namespace's state (a version mismatch, a key that exists or does
    /// not) tells the caller about that state: like a read, it is answered only once the state
    /// is on a quorum, or a refusal could name a write that a failover then loses. Answers
    /// `refused`, or `NoQuorum` when the quorum does not come.
    async fn refusal(&self, namespace: &str, refused: StoreError) -> StoreError {
        if matches!(refused, StoreError::NoQuorum { .. }) || namespace.is_empty() {
            return refused;
        }
        match self.read_visible(namespace, |_| Ok(())).await {
            Err(no_quorum @ StoreError::NoQuorum { .. }) => no_quorum,
            _ => refused,
        }
    }

    /// Deletes a key.
    pub async fn delete(&self, request: DeleteRequest) -> Result<Deleted, StoreError> {
        let namespace = request.namespace.clone();
        let ticket = self.replicator.ticket(&namespace).await?;
        let deleted = match self.store.delete(request).await {
            Ok(deleted) => deleted,
            Err(refused) => return Err(self.refusal(&namespace, refused).await),
        };
        self.feeds.changed(&deleted.namespace);
        ticket.replicated(deleted.revision).await?;
        Ok(deleted)
    }

    /// A page of a namespace's entries; an unknown namespace is `NamespaceNotFound`.
    pub async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: Option<usize>,
    ) -> Result<(NamespaceState, OpaquePage<Entry>), StoreError> {
        let limit = page_limit(limit)?;
        let after = decode_cursor(cursor)?;
        let (ns, prefix) = (namespace.to_string(), prefix.to_string());
        let (state, page) = self
            .read_visible(namespace, move |s| {
                let Some(state) = s.namespace(&ns)? else {
                    return Err(StoreError::NamespaceNotFound { namespace: ns });
                };
                let page = s.list_entries(&ns, &prefix, after.as_deref(), limit)?;
                Ok((state, page))
            })
            .await?;
        Ok((state, opaque(page)))
    }

    /// A page of a key's retained versions, newest first; a key without history is
    /// `KeyNotFound`.
    pub async fn versions(
        &self,
        namespace: &str,
        key: &str,
        cursor: Option<&str>,
        limit: Option<usize>,
    ) -> Result<OpaquePage<VersionEntry>, StoreError> {
        let limit = page_limit(limit)?;
        let before = decode_cursor(cursor)?
            .map(|c| {
                c.parse::<u64>()
                    .map_err(|_| StoreError::Invalid("cursor is not a version cursor".to_string()))
            })
            .transpose()?;
        let (ns, k) = (namespace.to_string(), key.to_string());
        let page = self
            .read_visible(namespace, move |s| s.versions(&ns, &k, before, limit))
            .await?;
        if page.items.is_empty() && before.is_none() {
            return Err(StoreError::KeyNotFound {
                namespace: namespace.to_string(),
                key: key.to_string(),
            });
        }
        Ok(opaque(page))
    }

    /// One retained version of a key.
    pub async fn version(
        &self,
        namespace: &str,
        key: &str,
        version: u64,
    ) -> Result<VersionEntry, StoreError> {
        let (ns, k) = (namespace.to_string(), key.to_string());
        self.read_visible(namespace, move |s| {
            s.version(&ns, &k, version)?
                .ok_or(StoreError::VersionNotFound { key: k, version })
        })
        .await
    }

    /// Compares two versions; defaults: `v2` the newest, `v1` the one before it.
    pub async fn diff(
        &self,
        namespace: &str,
        key: &str,
        v1: Option<u64>,
        v2: Option<u64>,
    ) -> Result<VersionDiff, StoreError> {
        let v2 = match v2 {
            Some(v) => v,
            None => {
                let (ns, k) = (namespace.to_string(), key.to_string());
                self.read_visible(namespace, move |s| s.latest_version(&ns, &k))
                    .await?
                    .ok_or_else(|| StoreError::KeyNotFound {
                        namespace: namespace.to_string(),
                        key: key.to_string(),
                    })?
            }
        };
        let v1 = match v1 {
            Some(v) => v,
            None => v2.checked_sub(1).filter(|v| *v > 0).ok_or_else(|| {
                StoreError::Invalid(format!(
                    "version {v2} has no predecessor: pass v1 explicitly"
                ))
            })?,
        };
        let old = self.version(namespace, key, v1).await?;
        let new = self.version(namespace, key, v2).await?;
        let changed = old.value != new.value || old.codec != new.codec;
        let structural = match (as_json(&old), as_json(&new)) {
            (Some(a), Some(b)) => Some(json_diff::diff(&a, &b)),
            _ => None,
        };
        Ok(VersionDiff {
            old,
            new,
            changed,
            structural,
        })
    }

    /// Every entry and alias at one revision, or `NotModified` when `if_none_match` (a list of
    /// ETags, or `*`) matches the current ETag. The check reads one record, never the entries.
    pub async fn snapshot(
        &self,
        namespace: &str,
        if_none_match: Option<&str>,
    ) -> Result<SnapshotOutcome, StoreError> {
        let not_found = || StoreError::NamespaceNotFound {
            namespace: namespace.to_string(),
        };
        if let Some(tags) = if_none_match {
            let ns = namespace.to_string();
            let state = self
                .read_visible(namespace, move |s| s.namespace(&ns))
                .await?
                .ok_or_else(not_found)?;
            let etag = state.etag();
            if etag_list_matches(tags, &etag) {
                return Ok(SnapshotOutcome::NotModified { etag });
            }
        }
        let ns = namespace.to_string();
        let snapshot = self
            .read_visible(namespace, move |s| s.snapshot(&ns))
            .await?
            .ok_or_else(not_found)?;
        Ok(SnapshotOutcome::Snapshot(snapshot))
    }

    /// A page of namespaces holding at least one key.
    pub async fn namespaces(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: Option<usize>,
    ) -> Result<OpaquePage<NamespaceState>, StoreError> {
        let limit = page_limit(limit)?;
        let after = decode_cursor(cursor)?;
        let prefix = prefix.to_string();
        let page = self
            .read(move |s| s.list_namespaces(&prefix, after.as_deref(), limit))
            .await?;
        Ok(opaque(page))
    }

    /// Creates an alias (idempotent for an identical alias).
    pub async fn put_alias(
        &self,
        namespace: &str,
        alias: &str,
        target: &str,
    ) -> Result<AliasPut, StoreError> {
        let ticket = self.replicator.ticket(namespace).await?;
        let put = self.store.put_alias(namespace, alias, target).await?;
        self.feeds.changed(namespace);
        ticket.replicated_now().await?;
        Ok(put)
    }

    /// Reads an alias.
    pub async fn get_alias(&self, namespace: &str, alias: &str) -> Result<Alias, StoreError> {
        let (ns, a) = (namespace.to_string(), alias.to_string());
        self.read_visible(namespace, move |s| {
            s.alias(&ns, &a)?.ok_or(StoreError::AliasNotFound {
                namespace: ns,
                alias: a,
            })
        })
        .await
    }

    /// Removes an alias.
    pub async fn delete_alias(&self, namespace: &str, alias: &str) -> Result<Alias, StoreError> {
        let ticket = self.replicator.ticket(namespace).await?;
        let deleted = self.store.delete_alias(namespace, alias).await?;
        self.feeds.changed(namespace);
        ticket.replicated_now().await?;
        Ok(deleted)
    }

    /// A page of a namespace's aliases.
    pub async fn aliases(
        &self,
        namespace: &str,
        cursor: Option<&str>,
        limit: Option<usize>,
    ) -> Result<OpaquePage<Alias>, StoreError> {
        let limit = page_limit(limit)?;
        let after = decode_cursor(cursor)?;
        let ns = namespace.to_string();
        let page = self
            .read_visible(namespace, move |s| s.aliases(&ns, after.as_deref(), limit))
            .await?;
        Ok(opaque(page))
    }

    /// The codecs this node knows.
    pub fn codecs(&self) -> &'static [Codec] {
        &Codec::KNOWN
    }
}

/// Whether an `If-None-Match` style list (`"a", "b"`, or `*`) matches `etag`.
pub fn etag_list_matches(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

fn as_json(version: &VersionEntry) -> Option<serde_json::Value> {
    match (&version.codec, &version.value) {
        (Some(Codec::Json), Some(bytes)) => serde_json::from_slice(bytes).ok(),
        _ => None,
    }
}

fn page_limit(limit: Option<usize>) -> Result<usize, StoreError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(StoreError::Invalid(format!(
            "limit {n} is out of range: use 1..={MAX_PAGE}"
        ))),
    }
}

/// Turns a storage cursor into an opaque URL-safe token.
/// Makes a listing cursor from the last name of a page (opaque to callers).
pub fn encode_cursor(raw: &str) -> String {
    URL_SAFE_NO_PAD.encode(raw.as_bytes())
}

/// Reverses [`encode_cursor`]; an empty token means "from the start".
fn decode_cursor(token: Option<&str>) -> Result<Option<String>, StoreError> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    URL_SAFE_NO_PAD
        .decode(token.as_bytes())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .map(Some)
        .ok_or_else(|| {
            StoreError::Invalid(
                "cursor is not one this API handed out; pass next_cursor as given".to_string(),
            )
        })
}

fn opaque<T>(page: Page<T>) -> Page<T> {
    Page {
        items: page.items,
        next_cursor: page.next_cursor.as_deref().map(encode_cursor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let token = encode_cursor("app/db url");
        assert_eq!(
            decode_cursor(Some(&token)).ok().flatten().as_deref(),
            Some("app/db url")
        );
        assert!(decode_cursor(Some("!!!")).is_err());
        assert_eq!(decode_cursor(Some("")).ok().flatten(), None);
    }

    #[test]
    fn etag_lists() {
        assert!(etag_list_matches("\"a\", \"b\"", "\"b\""));
        assert!(etag_list_matches("*", "\"x\""));
        assert!(etag_list_matches("W/\"x\"", "\"x\""));
        assert!(!etag_list_matches("\"a\"", "\"b\""));
    }

    #[test]
    fn page_limits() {
        assert_eq!(page_limit(None).ok(), Some(DEFAULT_PAGE));
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(MAX_PAGE + 1)).is_err());
    }
}
