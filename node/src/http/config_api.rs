//! The config role's HTTP handlers: keys, versions, diff, snapshot, namespaces, access, aliases,
//! codecs.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cfgnode_storage::{
    Codec, DeleteRequest, Entry, Lookup, PutRequest, Store, StoreError, VersionEntry, WriteMode,
    validate_key, validate_namespace,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiBody, ApiPath, ApiQuery, json_body};
use super::views::{
    AliasView, EntryMetaView, EntryView, NamespaceView, PageView, VersionView, decode_cursor,
};
use crate::auth::Principal;
use crate::json_diff;

/// The media type that marks a write body as the JSON envelope rather than a raw JSON value.
pub const ENVELOPE_CONTENT_TYPE: &str = "application/vnd.cfgnode.entry+json";

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// Runs a synchronous storage read off the async workers.
async fn read<T, F>(state: &AppState, f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
{
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ApiError::internal(format!("storage read task failed: {e}")))?
        .map_err(ApiError::from)
}

fn page_limit(limit: Option<usize>) -> ApiResult<usize> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit {n} is out of range: use 1..={MAX_PAGE}"
        ))),
    }
}

fn cursor(token: Option<&str>) -> ApiResult<Option<String>> {
    token
        .filter(|t| !t.is_empty())
        .map(decode_cursor)
        .transpose()
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> ApiResult<Option<&str>> {
    headers
        .get(&name)
        .map(|v| {
            v.to_str()
                .map(str::trim)
                .map_err(|_| ApiError::bad_request(format!("header {name} is not visible ASCII")))
        })
        .transpose()
}

fn version_etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits and quotes are a valid header")
}

/// Whether an `If-None-Match` header matches `etag` (a list, or `*`).
fn if_none_match_hits(headers: &HeaderMap, etag: &str) -> ApiResult<bool> {
    let Some(value) = header_str(headers, header::IF_NONE_MATCH)? else {
        return Ok(false);
    };
    Ok(value
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag))
}

fn not_modified(etag: HeaderValue) -> Response {
    (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response()
}

// ---------------------------------------------------------------------------------------------
// Keys

/// Query of `GET .../keys/{key}`.
#[derive(Debug, Deserialize)]
pub struct GetQuery {
    raw: Option<bool>,
}

/// `GET /v1/namespaces/{ns}/keys/{key}`: the entry as JSON, or the bare value.
pub async fn get_key(
    State(state): State<Arc<AppState>>,
    ApiPath((ns, key)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<GetQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (n, k) = (ns.clone(), key.clone());
    let lookup = read(&state, move |s| s.lookup(&n, &k)).await?;
    let (entry, alias) = match lookup {
        Lookup::Entry(entry) => (entry, None),
        Lookup::Alias {
            alias,
            entry: Some(entry),
        } => (entry, Some(alias.alias)),
        Lookup::Alias { alias, entry: None } => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "key_not_found",
                format!(
                    "alias {:?} points to key {:?}, which does not exist in namespace {ns:?}",
                    alias.alias, alias.target
                ),
            ));
        }
        Lookup::Missing => return Err(StoreError::KeyNotFound { namespace: ns, key }.into()),
    };
    let etag = version_etag(entry.version);
    if if_none_match_hits(&headers, etag.to_str().unwrap_or_default())? {
        return Ok(not_modified(etag));
    }
    let wants_raw = query.raw.unwrap_or(false)
        || header_str(&headers, header::ACCEPT)?
            .is_some_and(|accept| accept.contains("application/octet-stream"));
    if wants_raw {
        return Ok(raw_value_response(entry, etag));
    }
    Ok((
        StatusCode::OK,
        [(header::ETAG, etag)],
        Json(EntryView::new(entry, alias)),
    )
        .into_response())
}

fn raw_value_response(entry: Entry, etag: HeaderValue) -> Response {
    let mut response = (StatusCode::OK, entry.value).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(entry.codec.content_type()),
    );
    h.insert(header::ETAG, etag);
    h.insert("x-cfgnode-version", HeaderValue::from(entry.version));
    h.insert("x-cfgnode-revision", HeaderValue::from(entry.revision));
    if let Ok(codec) = HeaderValue::from_str(entry.codec.name()) {
        h.insert("x-cfgnode-codec", codec);
    }
    response
}

/// Query of `PUT .../keys/{key}`.
#[derive(Debug, Deserialize)]
pub struct PutQuery {
    codec: Option<String>,
    mode: Option<String>,
    if_version: Option<u64>,
}

/// The JSON envelope body of a write.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    value: String,
    codec: Option<String>,
    mode: Option<String>,
    if_version: Option<u64>,
}

/// What a write asks for, gathered from body, query and conditional headers.
struct WriteIntent {
    value: Vec<u8>,
    codec: Codec,
    mode: Option<WriteMode>,
    if_version: Option<u64>,
}

fn parse_mode(mode: &str) -> ApiResult<WriteMode> {
    match mode {
        "upsert" => Ok(WriteMode::Upsert),
        "create" => Ok(WriteMode::Create),
        "update" => Ok(WriteMode::Update),
        other => Err(ApiError::bad_request(format!(
            "unknown write mode {other:?}: use upsert, create or update"
        ))),
    }
}

fn parse_codec(name: &str) -> ApiResult<Codec> {
    name.parse::<Codec>().map_err(ApiError::from)
}

/// Picks the codec for a raw body from its media type.
fn codec_for_content_type(content_type: Option<&str>) -> ApiResult<Codec> {
    let Some(content_type) = content_type else {
        return Ok(Codec::Bytes);
    };
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let codec = match media.as_str() {
        "application/json" => Codec::Json,
        m if m.ends_with("+json") => Codec::Json,
        "text/plain" => Codec::Text,
        "application/toml" | "application/x-toml" | "text/toml" => Codec::Toml,
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => Codec::Yaml,
        "application/octet-stream" => Codec::Bytes,
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "Content-Type {other:?} does not name a codec: send application/json, text/plain, \
                     application/toml, application/yaml or application/octet-stream, add ?codec=NAME, \
                     or send the envelope as {ENVELOPE_CONTENT_TYPE}"
                ),
            ));
        }
    };
    Ok(codec)
}

fn write_intent(headers: &HeaderMap, query: PutQuery, body: &[u8]) -> ApiResult<WriteIntent> {
    let content_type = header_str(headers, header::CONTENT_TYPE)?;
    let is_envelope = content_type.is_some_and(|ct| {
        ct.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .eq_ignore_ascii_case(ENVELOPE_CONTENT_TYPE)
    });
    let mut intent = if is_envelope {
        let envelope: Envelope = json_body(body)?;
        let value = STANDARD.decode(envelope.value.as_bytes()).map_err(|e| {
            ApiError::bad_request(format!(
                "envelope value is not base64 (standard alphabet): {e}"
            ))
        })?;
        let codec = match (envelope.codec, query.codec) {
            (Some(a), Some(b)) if a != b => {
                return Err(ApiError::bad_request(format!(
                    "codec {a:?} in the body contradicts ?codec={b}"
                )));
            }
            (Some(name), _) | (None, Some(name)) => parse_codec(&name)?,
            (None, None) => Codec::Bytes,
        };
        WriteIntent {
            value,
            codec,
            mode: merge(
                envelope.mode.as_deref().map(parse_mode).transpose()?,
                query.mode.as_deref().map(parse_mode).transpose()?,
                "mode",
            )?,
            if_version: merge(envelope.if_version, query.if_version, "if_version")?,
        }
    } else {
        let codec = match query.codec {
            Some(name) => parse_codec(&name)?,
            None => codec_for_content_type(content_type)?,
        };
        WriteIntent {
            value: body.to_vec(),
            codec,
            mode: query.mode.as_deref().map(parse_mode).transpose()?,
            if_version: query.if_version,
        }
    };
    // Conditional headers: If-Match "N" is compare-and-set, If-Match * is update-only,
    // If-None-Match * is create-only.
    if let Some(if_match) = header_str(headers, header::IF_MATCH)? {
        if if_match == "*" {
            intent.mode = merge(intent.mode, Some(WriteMode::Update), "mode")?;
        } else {
            intent.if_version = merge(
                intent.if_version,
                Some(parse_version_tag(if_match)?),
                "if_version",
            )?;
        }
    }
    if let Some(if_none_match) = header_str(headers, header::IF_NONE_MATCH)? {
        if if_none_match != "*" {
            return Err(ApiError::bad_request(
                "on writes If-None-Match only takes *, meaning create-only",
            ));
        }
        intent.mode = merge(intent.mode, Some(WriteMode::Create), "mode")?;
    }
    Ok(intent)
}

/// Combines a condition given in two places, refusing contradictions.
fn merge<T: PartialEq + std::fmt::Debug>(
    a: Option<T>,
    b: Option<T>,
    what: &str,
) -> ApiResult<Option<T>> {
    match (a, b) {
        (Some(a), Some(b)) if a != b => Err(ApiError::bad_request(format!(
            "{what} is given twice with different values ({a:?} and {b:?})"
        ))),
        (Some(a), _) => Ok(Some(a)),
        (None, b) => Ok(b),
    }
}

/// Parses an `If-Match` entity tag holding a version: `"7"` (or `7`, or `W/"7"`).
fn parse_version_tag(tag: &str) -> ApiResult<u64> {
    let inner = tag.trim_start_matches("W/").trim_matches('"');
    inner.parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "If-Match {tag:?} is not a version: send the ETag of a GET, like \"3\""
        ))
    })
}

/// `PUT|POST /v1/namespaces/{ns}/keys/{key}`: write a key.
pub async fn put_key(
    State(state): State<Arc<AppState>>,
    ApiPath((ns, key)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<PutQuery>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> ApiResult<Response> {
    // Names first, so a bad name is reported as such whatever the body holds.
    validate_namespace(&ns)?;
    validate_key(&key)?;
    let intent = write_intent(&headers, query, &body)?;
    let entry = state
        .store
        .put(PutRequest {
            namespace: ns,
            key,
            value: intent.value,
            codec: intent.codec,
            mode: intent.mode.unwrap_or_default(),
            if_version: intent.if_version,
        })
        .await?;
    let etag = version_etag(entry.version);
    Ok((
        StatusCode::OK,
        [(header::ETAG, etag)],
        Json(EntryMetaView::from(&entry)),
    )
        .into_response())
}

/// `DELETE /v1/namespaces/{ns}/keys/{key}`: delete a key; honours `If-Match`.
pub async fn delete_key(
    State(state): State<Arc<AppState>>,
    ApiPath((ns, key)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let if_version = match header_str(&headers, header::IF_MATCH)? {
        None | Some("*") => None,
        Some(tag) => Some(parse_version_tag(tag)?),
    };
    let deleted = state
        .store
        .delete(DeleteRequest {
            namespace: ns,
            key,
            if_version,
        })
        .await?;
    let body = json!({
        "namespace": deleted.namespace,
        "key": deleted.key,
        "version": deleted.version,
        "revision": deleted.revision,
        "deleted": true,
    });
    Ok(Json(body).into_response())
}

/// Query of the paged listings.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    prefix: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /v1/namespaces/{ns}/keys`: a page of entries.
pub async fn list_keys(
    State(state): State<Arc<AppState>>,
    ApiPath(ns): ApiPath<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let limit = page_limit(query.limit)?;
    let after = cursor(query.cursor.as_deref())?;
    let prefix = query.prefix.unwrap_or_default();
    let n = ns.clone();
    let (state_now, page) = read(&state, move |s| {
        let Some(ns_state) = s.namespace(&n)? else {
            return Err(StoreError::NamespaceNotFound { namespace: n });
        };
        let page = s.list_entries(&n, &prefix, after.as_deref(), limit)?;
        Ok((ns_state, page))
    })
    .await?;
    let page = PageView::from_page(page, |e| EntryView::new(e, None));
    Ok(Json(json!({
        "namespace": ns,
        "revision": state_now.revision,
        "items": page.items,
        "next_cursor": page.next_cursor,
    }))
    .into_response())
}

// ---------------------------------------------------------------------------------------------
// History and diff

/// Query of `GET .../versions/{key}`.
#[derive(Debug, Deserialize)]
pub struct VersionsQuery {
    version: Option<u64>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /v1/namespaces/{ns}/versions/{key}`: history, newest first, or one version.
pub async fn versions(
    State(state): State<Arc<AppState>>,
    ApiPath((ns, key)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<VersionsQuery>,
) -> ApiResult<Response> {
    if let Some(version) = query.version {
        let one = fetch_version(&state, &ns, &key, version).await?;
        return Ok(Json(VersionView::from(&one)).into_response());
    }
    let limit = page_limit(query.limit)?;
    let before = cursor(query.cursor.as_deref())?
        .map(|c| {
            c.parse::<u64>()
                .map_err(|_| ApiError::bad_request("cursor is not a version cursor"))
        })
        .transpose()?;
    let (n, k) = (ns.clone(), key.clone());
    let page = read(&state, move |s| s.versions(&n, &k, before, limit)).await?;
    if page.items.is_empty() && before.is_none() {
        return Err(StoreError::KeyNotFound { namespace: ns, key }.into());
    }
    let page = PageView::from_page(page, |v| VersionView::from(&v));
    Ok(Json(json!({
        "namespace": ns,
        "key": key,
        "items": page.items,
        "next_cursor": page.next_cursor,
    }))
    .into_response())
}

async fn fetch_version(
    state: &AppState,
    ns: &str,
    key: &str,
    version: u64,
) -> ApiResult<VersionEntry> {
    let (n, k) = (ns.to_string(), key.to_string());
    read(state, move |s| {
        s.version(&n, &k, version)?
            .ok_or(StoreError::VersionNotFound { key: k, version })
    })
    .await
}

/// Query of `GET .../diff/{key}`.
#[derive(Debug, Deserialize)]
pub struct DiffQuery {
    v1: Option<u64>,
    v2: Option<u64>,
}

/// `GET /v1/namespaces/{ns}/diff/{key}?v1=&v2=`: two versions side by side; for JSON values, a
/// structural diff. Defaults: `v2` = newest retained version, `v1` = the one before it.
pub async fn diff(
    State(state): State<Arc<AppState>>,
    ApiPath((ns, key)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<DiffQuery>,
) -> ApiResult<Response> {
    let v2 = match query.v2 {
        Some(v) => v,
        None => {
            let (n, k) = (ns.clone(), key.clone());
            read(&state, move |s| s.latest_version(&n, &k))
                .await?
                .ok_or_else(|| {
                    ApiError::from(StoreError::KeyNotFound {
                        namespace: ns.clone(),
                        key: key.clone(),
                    })
                })?
        }
    };
    let v1 = match query.v1 {
        Some(v) => v,
        None => v2.checked_sub(1).filter(|v| *v > 0).ok_or_else(|| {
            ApiError::bad_request(format!(
                "version {v2} has no predecessor: pass v1 explicitly"
            ))
        })?,
    };
    let old = fetch_version(&state, &ns, &key, v1).await?;
    let new = fetch_version(&state, &ns, &key, v2).await?;
    let changed = old.value != new.value || old.codec != new.codec;
    let structural = structural_diff(&old, &new);
    Ok(Json(json!({
        "namespace": ns,
        "key": key,
        "v1": VersionView::from(&old),
        "v2": VersionView::from(&new),
        "changed": changed,
        "structural": structural,
    }))
    .into_response())
}

/// A JSON structural diff when both versions are JSON values, else null.
fn structural_diff(old: &VersionEntry, new: &VersionEntry) -> Value {
    let as_json = |v: &VersionEntry| match (&v.codec, &v.value) {
        (Some(Codec::Json), Some(bytes)) => serde_json::from_slice::<Value>(bytes).ok(),
        _ => None,
    };
    match (as_json(old), as_json(new)) {
        (Some(a), Some(b)) => serde_json::to_value(json_diff::diff(&a, &b)).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

// ---------------------------------------------------------------------------------------------
// Namespaces

/// `GET /v1/namespaces/{ns}/snapshot`: every entry at one revision, with the namespace ETag.
/// `If-None-Match` with the current ETag answers 304 after reading only the namespace record.
pub async fn snapshot(
    State(state): State<Arc<AppState>>,
    ApiPath(ns): ApiPath<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let n = ns.clone();
    let current = read(&state, move |s| s.namespace(&n)).await?;
    let Some(current) = current else {
        return Err(StoreError::NamespaceNotFound { namespace: ns }.into());
    };
    if if_none_match_hits(&headers, &current.etag())? {
        return Ok(not_modified(etag_header(&current.etag())?));
    }
    let n = ns.clone();
    let snapshot = read(&state, move |s| s.snapshot(&n))
        .await?
        .ok_or(StoreError::NamespaceNotFound { namespace: ns })?;
    let etag = snapshot.state.etag();
    let entries: Vec<EntryView> = snapshot
        .entries
        .into_iter()
        .map(|e| EntryView::new(e, None))
        .collect();
    let aliases: Vec<AliasView> = snapshot.aliases.iter().map(AliasView::from).collect();
    let body = json!({
        "namespace": snapshot.state.name,
        "revision": snapshot.state.revision,
        "etag": etag,
        "entries": entries,
        "aliases": aliases,
    });
    Ok((
        StatusCode::OK,
        [(header::ETAG, etag_header(&etag)?)],
        Json(body),
    )
        .into_response())
}

fn etag_header(etag: &str) -> ApiResult<HeaderValue> {
    HeaderValue::from_str(etag).map_err(|e| ApiError::internal(format!("bad etag {etag}: {e}")))
}

/// `GET /v1/namespaces`: namespaces holding at least one key.
pub async fn list_namespaces(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let limit = page_limit(query.limit)?;
    let after = cursor(query.cursor.as_deref())?;
    let prefix = query.prefix.unwrap_or_default();
    let page = read(&state, move |s| {
        s.list_namespaces(&prefix, after.as_deref(), limit)
    })
    .await?;
    Ok(Json(PageView::from_page(page, |s| NamespaceView::from(&s))).into_response())
}

/// `GET /v1/namespaces/{ns}/access`: what the caller's token may do in the namespace.
pub async fn access(
    ApiPath(ns): ApiPath<String>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<Response> {
    validate_namespace(&ns)?;
    let access = principal.access(&ns);
    Ok(Json(json!({
        "namespace": ns,
        "principal": principal.name(),
        "read": access.read,
        "write": access.write,
    }))
    .into_response())
}

// ---------------------------------------------------------------------------------------------
// Aliases

/// Body of `PUT .../aliases/{alias}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AliasBody {
    target: String,
}

/// `PUT /v1/namespaces/{ns}/aliases/{alias}`: create an alias (201), or confirm an identical
/// one (200).
pub async fn put_alias(
    State(state): State<Arc<AppState>>,
    ApiPath((ns, alias)): ApiPath<(String, String)>,
    ApiBody(body): ApiBody,
) -> ApiResult<Response> {
    validate_namespace(&ns)?;
    validate_key(&alias)?;
    let AliasBody { target } = json_body(&body)?;
    let put = state.store.put_alias(&ns, &alias, &target).await?;
    let status = if put.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(AliasView::from(&put.alias))).into_response())
}

/// `GET /v1/namespaces/{ns}/aliases/{alias}`.
pub async fn get_alias(
    State(state): State<Arc<AppState>>,
    ApiPath((ns, alias)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let found = read(&state, move |s| {
        s.alias(&ns, &alias)?.ok_or(StoreError::AliasNotFound {
            namespace: ns,
            alias,
        })
    })
    .await?;
    Ok(Json(AliasView::from(&found)).into_response())
}

/// `DELETE /v1/namespaces/{ns}/aliases/{alias}`.
pub async fn delete_alias(
    State(state): State<Arc<AppState>>,
    ApiPath((ns, alias)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let removed = state.store.delete_alias(&ns, &alias).await?;
    Ok(Json(AliasView::from(&removed)).into_response())
}

/// `GET /v1/namespaces/{ns}/aliases`: a page of aliases.
pub async fn list_aliases(
    State(state): State<Arc<AppState>>,
    ApiPath(ns): ApiPath<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let limit = page_limit(query.limit)?;
    let after = cursor(query.cursor.as_deref())?;
    let page = read(&state, move |s| s.aliases(&ns, after.as_deref(), limit)).await?;
    Ok(Json(PageView::from_page(page, |a| AliasView::from(&a))).into_response())
}

// ---------------------------------------------------------------------------------------------
// Codecs

/// `GET /v1/codecs`: the codecs this node knows.
pub async fn codecs() -> Response {
    let known: Vec<Value> = Codec::KNOWN
        .iter()
        .map(|c| {
            json!({
                "name": c.name(),
                "content_type": c.content_type(),
                "validated": !matches!(c, Codec::Bytes),
                "description": c.description(),
            })
        })
        .collect();
    Json(json!({
        "codecs": known,
        "client_codecs": {
            "pattern": "client:<name>",
            "validated": false,
            "description": Codec::Client(String::new()).description(),
        },
    }))
    .into_response()
}
