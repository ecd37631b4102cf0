//! The config role's messages: versioned entries, history, diff, aliases, snapshots
//! (docs/http-api.md, Config). Requests of a namespace are served by its holder.

use serde::{Deserialize, Serialize};

use super::WirePage;

/// A config operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigRequest {
    /// Read a key (an alias resolves to its target).
    Get {
        /// The namespace (`[a-z0-9][a-z0-9._-]{0,127}`): the request is served by its holder.
        namespace: String,
        /// Key or alias name.
        key: String,
    },
    /// Write a key.
    Put {
        /// The namespace (`[a-z0-9][a-z0-9._-]{0,127}`): the request is served by its holder.
        namespace: String,
        /// The key: a `/`-separated path of 1..=512 bytes, no empty segment.
        key: String,
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// Codec name (`json`, `client:proto`, ...).
        codec: String,
        /// Create, update or either.
        mode: WireWriteMode,
        /// Compare-and-set on this version (0 = must be absent).
        if_version: Option<u64>,
    },
    /// Delete a key.
    Delete {
        /// The namespace (`[a-z0-9][a-z0-9._-]{0,127}`): the request is served by its holder.
        namespace: String,
        /// The key: a `/`-separated path of 1..=512 bytes, no empty segment.
        key: String,
        /// Only if at this version.
        if_version: Option<u64>,
    },
    /// A page of entries.
    List {
        /// The namespace (`[a-z0-9][a-z0-9._-]{0,127}`): the request is served by its holder.
        namespace: String,
        /// Only keys that start with this (empty: every key).
        prefix: String,
        /// Cursor from the previous page.
        cursor: Option<String>,
        /// Page size (1..=1000).
        limit: u32,
    },
    /// A page of a key's history, newest first.
    Versions {
        /// The namespace (`[a-z0-9][a-z0-9._-]{0,127}`): the request is served by its holder.
        namespace: String,
        /// The key: a `/`-separated path of 1..=512 bytes, no empty segment.
        key: String,
        /// Cursor from the previous page.
        cursor: Option<String>,
        /// Page size (1..=1000).
        limit: u32,
    },
    /// One version of a key.
    Version {
        /// The namespace (`[a-z0-9][a-z0-9._-]{0,127}`): the request is served by its holder.
        namespace: String,
        /// The key: a `/`-separated path of 1..=512 bytes, no empty segment.
        key: String,
        /// The version asked for (see `Versions` for the retained ones).
        version: u64,
    },
    /// Two versions and their differences.
    Diff {
        /// The namespace (`[a-z0-9][a-z0-9._-]{0,127}`): the request is served by its holder.
        namespace: String,
        /// The key: a `/`-separated path of 1..=512 bytes, no empty segment.
        key: String,
        /// Older version (default: `v2 - 1`).
        v1: Option<u64>,
        /// Newer version (default: the newest).
        v2: Option<u64>,
    },
    /// Every entry and alias at one revision.
    Snapshot {
        /// The namespace (`[a-z0-9][a-z0-9._-]{0,127}`): the request is served by its holder.
        namespace: String,
        /// Answer `NotModified` if the namespace ETag is still this.
        if_none_match: Option<String>,
    },
    /// Namespaces holding at least one key.
    Namespaces {
        /// Only namespaces whose name starts with this (empty: all).
        prefix: String,
        /// Cursor from the previous page.
        cursor: Option<String>,
        /// Page size (1..=1000).
        limit: u32,
    },
    /// What the caller may do in a namespace.
    Access {
        /// The namespace (`[a-z0-9][a-z0-9._-]{0,127}`): the request is served by its holder.
        namespace: String,
    },
    /// Create an alias.
    PutAlias {
        /// The namespace (`[a-z0-9][a-z0-9._-]{0,127}`): the request is served by its holder.
        namespace: String,
        /// The alias's name: the rules of a key, and no key may have it too.
        alias: String,
        /// The key the alias resolves to (it need not exist yet).
        target: String,
    },
    /// Read an alias.
    GetAlias {
        /// The namespace (`[a-z0-9][a-z0-9._-]{0,127}`): the request is served by its holder.
        namespace: String,
        /// The alias's name: the rules of a key, and no key may have it too.
        alias: String,
    },
    /// Remove an alias.
    DeleteAlias {
        /// The namespace (`[a-z0-9][a-z0-9._-]{0,127}`): the request is served by its holder.
        namespace: String,
        /// The alias's name: the rules of a key, and no key may have it too.
        alias: String,
    },
    /// A page of aliases.
    ListAliases {
        /// The namespace (`[a-z0-9][a-z0-9._-]{0,127}`): the request is served by its holder.
        namespace: String,
        /// Cursor from the previous page.
        cursor: Option<String>,
        /// Page size (1..=1000).
        limit: u32,
    },
    /// The codecs the node knows.
    Codecs,
    /// Read a key (following an alias) from the receiving node's own copy of the namespace,
    /// however far behind (a follower's, or the holder's), with no routing and no quorum wait:
    /// `?consistency=stale` over HTTP. Answered with [`ConfigResponse::StaleEntry`].
    GetStale {
        /// The namespace (`[a-z0-9][a-z0-9._-]{0,127}`).
        namespace: String,
        /// Key or alias name.
        key: String,
    },
}

impl ConfigRequest {
    /// True for the requests that change a namespace (they may create it).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            ConfigRequest::Put { .. }
                | ConfigRequest::Delete { .. }
                | ConfigRequest::PutAlias { .. }
                | ConfigRequest::DeleteAlias { .. }
        )
    }

    /// The namespace whose holder must serve this request; `None` for requests any node
    /// answers itself (namespace listing, codecs, access).
    pub fn routed_namespace(&self) -> Option<&str> {
        match self {
            ConfigRequest::Get { namespace, .. }
            | ConfigRequest::Put { namespace, .. }
            | ConfigRequest::Delete { namespace, .. }
            | ConfigRequest::List { namespace, .. }
            | ConfigRequest::Versions { namespace, .. }
            | ConfigRequest::Version { namespace, .. }
            | ConfigRequest::Diff { namespace, .. }
            | ConfigRequest::Snapshot { namespace, .. }
            | ConfigRequest::PutAlias { namespace, .. }
            | ConfigRequest::GetAlias { namespace, .. }
            | ConfigRequest::DeleteAlias { namespace, .. }
            | ConfigRequest::ListAliases { namespace, .. } => Some(namespace),
            ConfigRequest::Namespaces { .. }
            | ConfigRequest::Access { .. }
            | ConfigRequest::Codecs
            | ConfigRequest::GetStale { .. } => None,
        }
    }

    /// The operation's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            ConfigRequest::Get { .. } => "get",
            ConfigRequest::Put { .. } => "put",
            ConfigRequest::Delete { .. } => "delete",
            ConfigRequest::List { .. } => "list",
            ConfigRequest::Versions { .. } => "versions",
            ConfigRequest::Version { .. } => "version",
            ConfigRequest::Diff { .. } => "diff",
            ConfigRequest::Snapshot { .. } => "snapshot",
            ConfigRequest::Namespaces { .. } => "namespaces",
            ConfigRequest::Access { .. } => "access",
            ConfigRequest::PutAlias { .. } => "put_alias",
            ConfigRequest::GetAlias { .. } => "get_alias",
            ConfigRequest::DeleteAlias { .. } => "delete_alias",
            ConfigRequest::ListAliases { .. } => "list_aliases",
            ConfigRequest::Codecs => "codecs",
            ConfigRequest::GetStale { .. } => "get_stale",
        }
    }
}

/// A config operation's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigResponse {
    /// Answer to `Get`.
    Entry(WireEntry),
    /// Answer to `Put`: the new metadata (the value is left out).
    Written(WireEntry),
    /// Answer to `Delete`.
    Deleted(WireDeleted),
    /// Answer to `List`.
    Entries(WirePage<WireEntry>),
    /// Answer to `Versions`.
    Versions(WirePage<WireVersion>),
    /// Answer to `Version`.
    Version(WireVersion),
    /// Answer to `Diff`.
    Diff(WireDiff),
    /// Answer to `Snapshot`.
    Snapshot(WireSnapshot),
    /// Answer to `Snapshot` when `if_none_match` still matches.
    NotModified {
        /// The unchanged ETag.
        etag: String,
    },
    /// Answer to `Namespaces`.
    Namespaces(WirePage<WireNamespace>),
    /// Answer to `Access`.
    Access(WireAccess),
    /// Answer to `PutAlias` (`created` false for an identical retry), `GetAlias`, `DeleteAlias`.
    Alias {
        /// The alias.
        alias: WireAlias,
        /// Whether this request created it.
        created: bool,
    },
    /// Answer to `ListAliases`.
    Aliases(WirePage<WireAlias>),
    /// Answer to `Codecs`.
    Codecs(Vec<WireCodec>),
    /// Answer to `GetStale`: the entry as this node's copy has it, and the copy's revision.
    StaleEntry {
        /// The entry.
        entry: WireEntry,
        /// The namespace's revision in the copy that answered.
        revision: u64,
    },
}

/// How a write treats an existing key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireWriteMode {
    /// Create or replace.
    #[default]
    Upsert,
    /// Create only.
    Create,
    /// Replace only.
    Update,
}

/// A live key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
    pub namespace: String,
    /// The key: a `/`-separated path of 1..=512 bytes, no empty segment.
    pub key: String,
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Its codec: `json`, `yaml`, `toml`, `text`, `bytes` (checked) or `client:...` (opaque).
    pub codec: String,
    /// The key's version: 1 at its first write, +1 at each (compare-and-set matches it).
    pub version: u64,
    /// The namespace revision of this version.
    pub revision: u64,
    /// When the key was created (ms).
    pub created_at: u64,
    /// When this version was written (ms).
    pub updated_at: u64,
    /// The alias the request named, when resolved through one.
    pub alias: Option<String>,
}

/// One retained version of a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireVersion {
    /// The key: a `/`-separated path of 1..=512 bytes, no empty segment.
    pub key: String,
    /// The key's version: 1 at its first write, +1 at each (compare-and-set matches it).
    pub version: u64,
    /// The namespace revision: one more at every change of the namespace; watches resume from it.
    pub revision: u64,
    /// The value, or `None` for a delete.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// The codec, or `None` for a delete.
    pub codec: Option<String>,
    /// When it was written (ms).
    pub at: u64,
}

/// The result of a delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireDeleted {
    /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
    pub namespace: String,
    /// The key: a `/`-separated path of 1..=512 bytes, no empty segment.
    pub key: String,
    /// The version the delete took.
    pub version: u64,
    /// The namespace revision of the delete.
    pub revision: u64,
}

/// A namespace summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireNamespace {
    /// Name.
    pub name: String,
    /// Live keys.
    pub key_count: u64,
    /// Aliases.
    pub alias_count: u64,
    /// The namespace revision: one more at every change of the namespace; watches resume from it.
    pub revision: u64,
    /// Namespace ETag.
    pub etag: String,
    /// First written (ms).
    pub created_at: u64,
    /// Last changed (ms).
    pub updated_at: u64,
}

/// An alias.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireAlias {
    /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
    pub namespace: String,
    /// The alias's name: the rules of a key, and no key may have it too.
    pub alias: String,
    /// The key the alias resolves to (it need not exist yet).
    pub target: String,
    /// Revision that created it.
    pub revision: u64,
    /// When (ms).
    pub created_at: u64,
}

/// A namespace snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireSnapshot {
    /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
    pub namespace: String,
    /// The revision it was read at.
    pub revision: u64,
    /// The namespace ETag at that revision.
    pub etag: String,
    /// Every entry.
    pub entries: Vec<WireEntry>,
    /// Every alias.
    pub aliases: Vec<WireAlias>,
}

/// Two versions and their differences.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireDiff {
    /// The older version.
    pub v1: WireVersion,
    /// The newer version.
    pub v2: WireVersion,
    /// Whether value or codec differ.
    pub changed: bool,
    /// For two JSON values, the structural diff as JSON text (`{"added","removed","changed"}`,
    /// as in the HTTP API). JSON text because bincode cannot carry a self-describing value.
    pub structural_json: Option<String>,
}

/// A codec the node knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireCodec {
    /// Name.
    pub name: String,
    /// Content type of raw values.
    pub content_type: String,
    /// Whether values are validated on write.
    pub validated: bool,
    /// Description.
    pub description: String,
}

/// What the caller may do in a namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireAccess {
    /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
    pub namespace: String,
    /// Who the token authenticates as.
    pub principal: String,
    /// Whether the principal may read the namespace (get, list, watch).
    pub read: bool,
    /// Whether the principal may change the namespace (put, delete, aliases, webhooks).
    pub write: bool,
}
