//! The JSON shapes of the HTTP API, and the cursor and time encodings they use.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cfgnode_storage::{Alias, Entry, NamespaceState, Page, VersionEntry};
use serde::Serialize;

pub use crate::time::rfc3339;

/// A key with its value (base64) and metadata.
#[derive(Debug, Serialize)]
pub struct EntryView {
    /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
    pub namespace: String,
    /// The key: a `/`-separated path of 1..=512 bytes, no empty segment.
    pub key: String,
    /// The value, base64 (standard alphabet, padded).
    pub value: String,
    /// Its codec: `json`, `yaml`, `toml`, `text`, `bytes` (checked) or `client:...` (opaque).
    pub codec: String,
    /// The key's version: 1 at its first write, +1 at each (compare-and-set matches it).
    pub version: u64,
    /// The namespace revision of this version.
    pub revision: u64,
    /// When the key was created.
    pub created_at: String,
    /// When this version was written.
    pub updated_at: String,
    /// The alias the request named, when it was resolved through one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
}

impl EntryView {
    /// The view of `entry`, reached through `alias` if given.
    pub fn new(entry: Entry, alias: Option<String>) -> Self {
        EntryView {
            value: STANDARD.encode(&entry.value),
            codec: entry.codec.to_string(),
            version: entry.version,
            revision: entry.revision,
            created_at: rfc3339(entry.created_at),
            updated_at: rfc3339(entry.updated_at),
            namespace: entry.namespace,
            key: entry.key,
            alias,
        }
    }
}

/// A key's metadata without its value: the answer to a write.
#[derive(Debug, Serialize)]
pub struct EntryMetaView {
    /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
    pub namespace: String,
    /// The key: a `/`-separated path of 1..=512 bytes, no empty segment.
    pub key: String,
    /// Its codec: `json`, `yaml`, `toml`, `text`, `bytes` (checked) or `client:...` (opaque).
    pub codec: String,
    /// The key's new version.
    pub version: u64,
    /// The namespace revision of the write.
    pub revision: u64,
    /// When the key was created.
    pub created_at: String,
    /// When this version was written.
    pub updated_at: String,
}

impl From<&Entry> for EntryMetaView {
    fn from(entry: &Entry) -> Self {
        EntryMetaView {
            namespace: entry.namespace.clone(),
            key: entry.key.clone(),
            codec: entry.codec.to_string(),
            version: entry.version,
            revision: entry.revision,
            created_at: rfc3339(entry.created_at),
            updated_at: rfc3339(entry.updated_at),
        }
    }
}

/// One retained version of a key.
#[derive(Debug, Serialize)]
pub struct VersionView {
    /// The key: a `/`-separated path of 1..=512 bytes, no empty segment.
    pub key: String,
    /// The key's version: 1 at its first write, +1 at each (compare-and-set matches it).
    pub version: u64,
    /// The namespace revision of the write.
    pub revision: u64,
    /// The value (base64), or null for a delete.
    pub value: Option<String>,
    /// The codec, or null for a delete.
    pub codec: Option<String>,
    /// True when this version is a delete.
    pub deleted: bool,
    /// When the version was written.
    pub at: String,
}

impl From<&VersionEntry> for VersionView {
    fn from(v: &VersionEntry) -> Self {
        VersionView {
            key: v.key.clone(),
            version: v.version,
            revision: v.revision,
            value: v.value.as_ref().map(|bytes| STANDARD.encode(bytes)),
            codec: v.codec.as_ref().map(ToString::to_string),
            deleted: v.value.is_none(),
            at: rfc3339(v.at),
        }
    }
}

/// A namespace's summary.
#[derive(Debug, Serialize)]
pub struct NamespaceView {
    /// Its name: `[a-z0-9][a-z0-9._-]{0,127}`.
    pub name: String,
    /// Live keys.
    pub key_count: u64,
    /// Aliases.
    pub alias_count: u64,
    /// The namespace revision: one more at every change of the namespace; watches resume from it.
    pub revision: u64,
    /// The namespace ETag (as the snapshot endpoint sends it).
    pub etag: String,
    /// When it was first written.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
}

impl From<&cfgnode_transport::WireNamespace> for NamespaceView {
    fn from(n: &cfgnode_transport::WireNamespace) -> Self {
        NamespaceView {
            name: n.name.clone(),
            key_count: n.key_count,
            alias_count: n.alias_count,
            revision: n.revision,
            etag: n.etag.clone(),
            created_at: rfc3339(n.created_at),
            updated_at: rfc3339(n.updated_at),
        }
    }
}

impl From<&NamespaceState> for NamespaceView {
    fn from(s: &NamespaceState) -> Self {
        NamespaceView {
            name: s.name.clone(),
            key_count: s.key_count,
            alias_count: s.alias_count,
            revision: s.revision,
            etag: s.etag(),
            created_at: rfc3339(s.created_at),
            updated_at: rfc3339(s.updated_at),
        }
    }
}

/// An alias.
#[derive(Debug, Serialize)]
pub struct AliasView {
    /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
    pub namespace: String,
    /// The alias's name: the rules of a key, and no key may have it too.
    pub alias: String,
    /// The key it points to.
    pub target: String,
    /// The revision that created it.
    pub revision: u64,
    /// When it was created.
    pub created_at: String,
}

impl From<&Alias> for AliasView {
    fn from(a: &Alias) -> Self {
        AliasView {
            namespace: a.namespace.clone(),
            alias: a.alias.clone(),
            target: a.target.clone(),
            revision: a.revision,
            created_at: rfc3339(a.created_at),
        }
    }
}

/// A page of a listing.
#[derive(Debug, Serialize)]
pub struct PageView<T> {
    /// This page's items, in the listing's order (continue with the next cursor).
    pub items: Vec<T>,
    /// Opaque cursor for the next page; null when the listing is complete.
    pub next_cursor: Option<String>,
}

impl<T> PageView<T> {
    /// Converts a service page (its cursor is already opaque).
    pub fn from_page<U>(page: Page<U>, view: impl FnMut(U) -> T) -> Self {
        PageView {
            items: page.items.into_iter().map(view).collect(),
            next_cursor: page.next_cursor,
        }
    }

    /// Converts a page merged from several nodes.
    pub fn from_wire_page<U>(
        page: cfgnode_transport::WirePage<U>,
        view: impl FnMut(U) -> T,
    ) -> Self {
        PageView {
            items: page.items.into_iter().map(view).collect(),
            next_cursor: page.next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc_millis() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
