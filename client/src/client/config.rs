//! The typed config operations: keys, versions, diffs, snapshots, namespaces, aliases, codecs,
//! and the config types of the answers (the wire types, under the client's names).

use cfgnode_transport::{
    ConfigRequest, ConfigResponse, Request, Response, WireAccess, WireAlias, WireCodec,
    WireDeleted, WireDiff, WireEntry, WireNamespace, WirePage, WireSnapshot, WireVersion,
    WireWriteMode,
};

use crate::error::ClientError;

use super::Client;

/// A live key as the client sees it.
pub type Entry = WireEntry;
/// One retained version of a key.
pub type Version = WireVersion;
/// The result of a delete.
pub type Deleted = WireDeleted;
/// A namespace summary.
pub type Namespace = WireNamespace;
/// An alias.
pub type Alias = WireAlias;
/// A page of a listing; pass `next_cursor` back for the next page.
pub type Page<T> = WirePage<T>;
/// Two versions and their differences.
pub type Diff = WireDiff;
/// Every entry and alias of a namespace at one revision.
pub type Snapshot = WireSnapshot;
/// A codec the node knows.
pub type CodecInfo = WireCodec;
/// What the caller may do in a namespace.
pub type Access = WireAccess;
/// How a write treats an existing key.
pub type WriteMode = WireWriteMode;

/// The answer to a conditional snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotResult {
    /// The namespace changed since the given ETag (or none was given).
    Modified(Snapshot),
    /// The namespace still has the given ETag.
    NotModified {
        /// That ETag.
        etag: String,
    },
}

/// Options of a write.
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    /// The codec (`json`, `yaml`, `toml`, `text`, `bytes`, `client:<name>`); default `bytes`.
    pub codec: Option<String>,
    /// Create, update or either (default).
    pub mode: WriteMode,
    /// Compare-and-set: the version the key must be at (0 = absent).
    pub if_version: Option<u64>,
}

impl Client {
    /// Checks that a node answers; returns nothing but proves the path works.
    pub async fn ping(&self) -> Result<(), ClientError> {
        match self.call(Request::Ping).await? {
            Response::Pong => Ok(()),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Reads a key (an alias resolves to its target; `alias` in the answer says so).
    pub async fn get(&self, namespace: &str, key: &str) -> Result<Entry, ClientError> {
        let request = Request::Config(ConfigRequest::Get {
            namespace: namespace.into(),
            key: key.into(),
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Entry(entry)) => Ok(entry),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Reads a key from the copy of the node this client is connected to, however far behind
    /// (a follower's copy under `--replicas`), without routing to the holder or waiting for a
    /// quorum: answers the entry and the copy's revision. For reads that prefer an answer now
    /// over the newest one (a dashboard, a fallback while the holder is unreachable).
    pub async fn get_stale(&self, namespace: &str, key: &str) -> Result<(Entry, u64), ClientError> {
        let request = Request::Config(ConfigRequest::GetStale {
            namespace: namespace.into(),
            key: key.into(),
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::StaleEntry { entry, revision }) => {
                Ok((entry, revision))
            }
            other => Err(Self::unexpected(other)),
        }
    }

    /// Writes a key (upsert, codec `bytes` unless `options` say otherwise). Returns the new
    /// metadata (`value` is left empty). Not retried after the request may have been sent.
    pub async fn put(
        &self,
        namespace: &str,
        key: &str,
        value: impl Into<Vec<u8>>,
        options: PutOptions,
    ) -> Result<Entry, ClientError> {
        let request = Request::Config(ConfigRequest::Put {
            namespace: namespace.into(),
            key: key.into(),
            value: value.into(),
            codec: options.codec.unwrap_or_else(|| "bytes".to_string()),
            mode: options.mode,
            if_version: options.if_version,
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Written(entry)) => Ok(entry),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Deletes a key, only if it is at `if_version` when given.
    pub async fn delete(
        &self,
        namespace: &str,
        key: &str,
        if_version: Option<u64>,
    ) -> Result<Deleted, ClientError> {
        let request = Request::Config(ConfigRequest::Delete {
            namespace: namespace.into(),
            key: key.into(),
            if_version,
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Deleted(deleted)) => Ok(deleted),
            other => Err(Self::unexpected(other)),
        }
    }

    /// A page of entries whose keys start with `prefix` (limit 1..=1000, default 100).
    pub async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<Entry>, ClientError> {
        let request = Request::Config(ConfigRequest::List {
            namespace: namespace.into(),
            prefix: prefix.into(),
            cursor: cursor.map(Into::into),
            limit: limit.unwrap_or(100),
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Entries(page)) => Ok(page),
            other => Err(Self::unexpected(other)),
        }
    }

    /// A page of a key's retained versions, newest first.
    pub async fn versions(
        &self,
        namespace: &str,
        key: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<Version>, ClientError> {
        let request = Request::Config(ConfigRequest::Versions {
            namespace: namespace.into(),
            key: key.into(),
            cursor: cursor.map(Into::into),
            limit: limit.unwrap_or(100),
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Versions(page)) => Ok(page),
            other => Err(Self::unexpected(other)),
        }
    }

    /// One retained version of a key.
    pub async fn version(
        &self,
        namespace: &str,
        key: &str,
        version: u64,
    ) -> Result<Version, ClientError> {
        let request = Request::Config(ConfigRequest::Version {
            namespace: namespace.into(),
            key: key.into(),
            version,
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Version(v)) => Ok(v),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Two versions of a key and their differences (defaults: the newest and the one before).
    pub async fn diff(
        &self,
        namespace: &str,
        key: &str,
        v1: Option<u64>,
        v2: Option<u64>,
    ) -> Result<Diff, ClientError> {
        let request = Request::Config(ConfigRequest::Diff {
            namespace: namespace.into(),
            key: key.into(),
            v1,
            v2,
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Diff(diff)) => Ok(diff),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Every entry and alias at one revision, or `NotModified` while the namespace still has
    /// the ETag given.
    pub async fn snapshot(
        &self,
        namespace: &str,
        if_none_match: Option<&str>,
    ) -> Result<SnapshotResult, ClientError> {
        let request = Request::Config(ConfigRequest::Snapshot {
            namespace: namespace.into(),
            if_none_match: if_none_match.map(Into::into),
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Snapshot(snapshot)) => {
                Ok(SnapshotResult::Modified(snapshot))
            }
            Response::Config(ConfigResponse::NotModified { etag }) => {
                Ok(SnapshotResult::NotModified { etag })
            }
            other => Err(Self::unexpected(other)),
        }
    }

    /// A page of namespaces holding at least one key.
    pub async fn namespaces(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<Namespace>, ClientError> {
        let request = Request::Config(ConfigRequest::Namespaces {
            prefix: prefix.into(),
            cursor: cursor.map(Into::into),
            limit: limit.unwrap_or(100),
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Namespaces(page)) => Ok(page),
            other => Err(Self::unexpected(other)),
        }
    }

    /// What this client's token may do in a namespace.
    pub async fn access(&self, namespace: &str) -> Result<Access, ClientError> {
        match self
            .call(Request::Config(ConfigRequest::Access {
                namespace: namespace.into(),
            }))
            .await?
        {
            Response::Config(ConfigResponse::Access(access)) => Ok(access),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Creates an alias; `Ok((alias, false))` when an identical one already existed.
    pub async fn put_alias(
        &self,
        namespace: &str,
        alias: &str,
        target: &str,
    ) -> Result<(Alias, bool), ClientError> {
        let request = Request::Config(ConfigRequest::PutAlias {
            namespace: namespace.into(),
            alias: alias.into(),
            target: target.into(),
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Alias { alias, created }) => Ok((alias, created)),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Reads an alias.
    pub async fn get_alias(&self, namespace: &str, alias: &str) -> Result<Alias, ClientError> {
        let request = Request::Config(ConfigRequest::GetAlias {
            namespace: namespace.into(),
            alias: alias.into(),
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Alias { alias, .. }) => Ok(alias),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Removes an alias.
    pub async fn delete_alias(&self, namespace: &str, alias: &str) -> Result<Alias, ClientError> {
        let request = Request::Config(ConfigRequest::DeleteAlias {
            namespace: namespace.into(),
            alias: alias.into(),
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Alias { alias, .. }) => Ok(alias),
            other => Err(Self::unexpected(other)),
        }
    }

    /// A page of aliases.
    pub async fn list_aliases(
        &self,
        namespace: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<Alias>, ClientError> {
        let request = Request::Config(ConfigRequest::ListAliases {
            namespace: namespace.into(),
            cursor: cursor.map(Into::into),
            limit: limit.unwrap_or(100),
        });
        match self.call(request).await? {
            Response::Config(ConfigResponse::Aliases(page)) => Ok(page),
            other => Err(Self::unexpected(other)),
        }
    }

    /// The codecs the node knows.
    pub async fn codecs(&self) -> Result<Vec<CodecInfo>, ClientError> {
        match self.call(Request::Config(ConfigRequest::Codecs)).await? {
            Response::Config(ConfigResponse::Codecs(codecs)) => Ok(codecs),
            other => Err(Self::unexpected(other)),
        }
    }
}
