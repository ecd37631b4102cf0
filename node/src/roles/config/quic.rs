//! The config role over the QUIC protocol: turns a wire [`Request`] into a [`ConfigService`] call
//! and its result into a wire [`Response`]. Pure translation; no IO of its own.

use cfgnode_storage::{
    Alias, Codec, DeleteRequest, Entry, NamespaceState, Page, PutRequest, StoreError, VersionEntry,
    WriteMode,
};
use cfgnode_transport::{
    ConfigRequest, ConfigResponse, Response, WireAccess, WireAlias, WireCodec, WireDeleted,
    WireDiff, WireEntry, WireError, WireNamespace, WirePage, WireSnapshot, WireVersion,
    WireWriteMode,
};

use super::service::{ConfigService, SnapshotOutcome};
use crate::auth::Principal;
use crate::error::to_wire_error;

/// Serves one config request for an authenticated principal.
pub async fn handle(
    service: &ConfigService,
    principal: &Principal,
    request: ConfigRequest,
) -> Result<Response, WireError> {
    serve(service, principal, request)
        .await
        .map_err(to_wire_error)
}

fn limit(n: u32) -> Option<usize> {
    Some(n as usize)
}

async fn serve(
    service: &ConfigService,
    principal: &Principal,
    request: ConfigRequest,
) -> Result<Response, StoreError> {
    Ok(match request {
        ConfigRequest::Get { namespace, key } => {
            let resolved = service.get(&namespace, &key).await?;
            Response::Config(ConfigResponse::Entry(wire_entry(
                resolved.entry,
                resolved.alias,
            )))
        }
        ConfigRequest::Put {
            namespace,
            key,
            value,
            codec,
            mode,
            if_version,
        } => {
            let codec: Codec = codec.parse()?;
            let mode = match mode {
                WireWriteMode::Upsert => WriteMode::Upsert,
                WireWriteMode::Create => WriteMode::Create,
                WireWriteMode::Update => WriteMode::Update,
            };
            let entry = service
                .put(PutRequest {
                    namespace,
                    key,
                    value,
                    codec,
                    mode,
                    if_version,
                })
                .await?;
            let mut meta = wire_entry(entry, None);
            meta.value = Vec::new();
            Response::Config(ConfigResponse::Written(meta))
        }
        ConfigRequest::Delete {
            namespace,
            key,
            if_version,
        } => {
            let d = service
                .delete(DeleteRequest {
                    namespace,
                    key,
                    if_version,
                })
                .await?;
            Response::Config(ConfigResponse::Deleted(WireDeleted {
                namespace: d.namespace,
                key: d.key,
                version: d.version,
                revision: d.revision,
            }))
        }
        ConfigRequest::List {
            namespace,
            prefix,
            cursor,
            limit: n,
        } => {
            let (_, page) = service
                .list(&namespace, &prefix, cursor.as_deref(), limit(n))
                .await?;
            Response::Config(ConfigResponse::Entries(wire_page(page, |e| {
                wire_entry(e, None)
            })))
        }
        ConfigRequest::Versions {
            namespace,
            key,
            cursor,
            limit: n,
        } => {
            let page = service
                .versions(&namespace, &key, cursor.as_deref(), limit(n))
                .await?;
            Response::Config(ConfigResponse::Versions(wire_page(page, wire_version)))
        }
        ConfigRequest::Version {
            namespace,
            key,
            version,
        } => Response::Config(ConfigResponse::Version(wire_version(
            service.version(&namespace, &key, version).await?,
        ))),
        ConfigRequest::Diff {
            namespace,
            key,
            v1,
            v2,
        } => {
            let diff = service.diff(&namespace, &key, v1, v2).await?;
            let structural_json = diff
                .structural
                .as_ref()
                .map(|s| serde_json::to_string(s).unwrap_or_else(|_| "null".to_string()));
            Response::Config(ConfigResponse::Diff(WireDiff {
                v1: wire_version(diff.old),
                v2: wire_version(diff.new),
                changed: diff.changed,
                structural_json,
            }))
        }
        ConfigRequest::Snapshot {
            namespace,
            if_none_match,
        } => {
            match service
                .snapshot(&namespace, if_none_match.as_deref())
                .await?
            {
                SnapshotOutcome::NotModified { etag } => {
                    Response::Config(ConfigResponse::NotModified { etag })
                }
                SnapshotOutcome::Snapshot(s) => {
                    Response::Config(ConfigResponse::Snapshot(WireSnapshot {
                        namespace: s.state.name.clone(),
                        revision: s.state.revision,
                        etag: s.state.etag(),
                        entries: s.entries.into_iter().map(|e| wire_entry(e, None)).collect(),
                        aliases: s.aliases.into_iter().map(wire_alias).collect(),
                    }))
                }
            }
        }
        ConfigRequest::Namespaces {
            prefix,
            cursor,
            limit: n,
        } => {
            let page = service
                .namespaces(&prefix, cursor.as_deref(), limit(n))
                .await?;
            Response::Config(ConfigResponse::Namespaces(wire_page(page, wire_namespace)))
        }
        ConfigRequest::Access { namespace } => {
            cfgnode_storage::validate_namespace(&namespace)?;
            let access = principal.access(&namespace);
            Response::Config(ConfigResponse::Access(WireAccess {
                namespace,
                principal: principal.name().to_string(),
                read: access.read,
                write: access.write,
            }))
        }
        ConfigRequest::PutAlias {
            namespace,
            alias,
            target,
        } => {
            let put = service.put_alias(&namespace, &alias, &target).await?;
            Response::Config(ConfigResponse::Alias {
                alias: wire_alias(put.alias),
                created: put.created,
            })
        }
        ConfigRequest::GetAlias { namespace, alias } => {
            let alias = service.get_alias(&namespace, &alias).await?;
            Response::Config(ConfigResponse::Alias {
                alias: wire_alias(alias),
                created: false,
            })
        }
        ConfigRequest::DeleteAlias { namespace, alias } => {
            let alias = service.delete_alias(&namespace, &alias).await?;
            Response::Config(ConfigResponse::Alias {
                alias: wire_alias(alias),
                created: false,
            })
        }
        ConfigRequest::ListAliases {
            namespace,
            cursor,
            limit: n,
        } => {
            let page = service
                .aliases(&namespace, cursor.as_deref(), limit(n))
                .await?;
            Response::Config(ConfigResponse::Aliases(wire_page(page, wire_alias)))
        }
        ConfigRequest::GetStale { namespace, key } => {
            let resolved = crate::replication::holder::stale(service.get(&namespace, &key)).await?;
            let revision = crate::replication::holder::stale(service.namespace_state(&namespace))
                .await?
                .map_or(0, |state| state.revision);
            Response::Config(ConfigResponse::StaleEntry {
                entry: wire_entry(resolved.entry, resolved.alias),
                revision,
            })
        }
        ConfigRequest::Codecs => Response::Config(ConfigResponse::Codecs(
            service
                .codecs()
                .iter()
                .map(|c| WireCodec {
                    name: c.name().to_string(),
                    content_type: c.content_type().to_string(),
                    validated: !matches!(c, Codec::Bytes),
                    description: c.description().to_string(),
                })
                .collect(),
        )),
    })
}

fn wire_page<T, U>(page: Page<T>, f: impl FnMut(T) -> U) -> WirePage<U> {
    WirePage {
        items: page.items.into_iter().map(f).collect(),
        next_cursor: page.next_cursor,
    }
}

fn wire_entry(e: Entry, alias: Option<String>) -> WireEntry {
    WireEntry {
        namespace: e.namespace,
        key: e.key,
        value: e.value,
        codec: e.codec.to_string(),
        version: e.version,
        revision: e.revision,
        created_at: e.created_at,
        updated_at: e.updated_at,
        alias,
    }
}

fn wire_version(v: VersionEntry) -> WireVersion {
    WireVersion {
        key: v.key,
        version: v.version,
        revision: v.revision,
        value: v.value,
        codec: v.codec.map(|c| c.to_string()),
        at: v.at,
    }
}

fn wire_alias(a: Alias) -> WireAlias {
    WireAlias {
        namespace: a.namespace,
        alias: a.alias,
        target: a.target,
        revision: a.revision,
        created_at: a.created_at,
    }
}

/// A namespace state as the wire carries it.
pub fn wire_namespace(s: NamespaceState) -> WireNamespace {
    WireNamespace {
        etag: s.etag(),
        name: s.name,
        key_count: s.key_count,
        alias_count: s.alias_count,
        revision: s.revision,
        created_at: s.created_at,
        updated_at: s.updated_at,
    }
}
