//! The config role's HTTP handlers: keys, versions, diff, snapshot, namespaces, access, aliases,
//! codecs. Each translates HTTP into a [`ConfigService`](crate::roles::config::ConfigService)
//! call and back; the rules live in the service.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cfgnode_storage::{
    Codec, DeleteRequest, Entry, PutRequest, WriteMode, validate_key, validate_namespace,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Principal;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiBody, ApiPath, ApiQuery, json_body};
use crate::http::views::{
    AliasView, EntryMetaView, EntryView, NamespaceView, PageView, VersionView,
};
use crate::roles::Roles;
use crate::roles::config::{SnapshotOutcome, etag_list_matches};

/// The config role's routes (authenticated; namespace routes are sent to the holder first).
pub fn routes() -> axum::Router<Arc<Roles>> {
    use axum::routing::get;
    axum::Router::new()
        .route("/v1/codecs", get(codecs))
        .route("/v1/namespaces", get(list_namespaces))
        .route("/v1/namespaces/{ns}/keys", get(list_keys))
        .route(
            "/v1/namespaces/{ns}/keys/{*key}",
            get(get_key).put(put_key).post(put_key).delete(delete_key),
        )
        .route("/v1/namespaces/{ns}/versions/{*key}", get(versions))
        .route("/v1/namespaces/{ns}/diff/{*key}", get(diff))
        .route("/v1/namespaces/{ns}/snapshot", get(snapshot))
        .route("/v1/namespaces/{ns}/access", get(access))
        .route("/v1/namespaces/{ns}/aliases", get(list_aliases))
        .route(
            "/v1/namespaces/{ns}/aliases/{*alias}",
            get(get_alias).put(put_alias).delete(delete_alias),
        )
}

/// The media type that marks a write body as the JSON envelope rather than a raw JSON value.
pub const ENVELOPE_CONTENT_TYPE: &str = "application/vnd.cfgnode.entry+json";

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

fn etag_header(etag: &str) -> ApiResult<HeaderValue> {
    HeaderValue::from_str(etag).map_err(|e| ApiError::internal(format!("bad etag {etag}: {e}")))
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
    State(state): State<Arc<Roles>>,
    ApiPath((ns, key)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<GetQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let resolved = state.config.get(&ns, &key).await?;
    let etag = version_etag(resolved.entry.version);
    if let Some(tags) = header_str(&headers, header::IF_NONE_MATCH)?
        && etag_list_matches(tags, etag.to_str().unwrap_or_default())
    {
        return Ok(not_modified(etag));
    }
    let wants_raw = query.raw.unwrap_or(false)
        || header_str(&headers, header::ACCEPT)?
            .is_some_and(|accept| accept.contains("application/octet-stream"));
    if wants_raw {
        return Ok(raw_value_response(resolved.entry, etag));
    }
    let view = EntryView::new(resolved.entry, resolved.alias);
    Ok((StatusCode::OK, [(header::ETAG, etag)], Json(view)).into_response())
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
    let query_mode = query.mode.as_deref().map(parse_mode).transpose()?;
    let mut intent = if is_envelope {
        let envelope: Envelope = json_body(body)?;
        let value = STANDARD.decode(envelope.value.as_bytes()).map_err(|e| {
            ApiError::bad_request(format!(
                "envelope value is not base64 (standard alphabet): {e}"
            ))
        })?;
        let codec = match merge(envelope.codec, query.codec, "codec")? {
            Some(name) => parse_codec(&name)?,
            None => Codec::Bytes,
        };
        let envelope_mode = envelope.mode.as_deref().map(parse_mode).transpose()?;
        WriteIntent {
            value,
            codec,
            mode: merge(envelope_mode, query_mode, "mode")?,
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
            mode: query_mode,
            if_version: query.if_version,
        }
    };
    // Conditional headers: If-Match "N" is compare-and-set, If-Match * is update-only,
    // If-None-Match * is create-only.
    if let Some(if_match) = header_str(headers, header::IF_MATCH)? {
        if if_match == "*" {
            intent.mode = merge(intent.mode, Some(WriteMode::Update), "mode")?;
        } else {
            let version = parse_version_tag(if_match)?;
            intent.if_version = merge(intent.if_version, Some(version), "if_version")?;
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
    State(state): State<Arc<Roles>>,
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
        .config
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
    State(state): State<Arc<Roles>>,
    ApiPath((ns, key)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let if_version = match header_str(&headers, header::IF_MATCH)? {
        None | Some("*") => None,
        Some(tag) => Some(parse_version_tag(tag)?),
    };
    let deleted = state
        .config
        .delete(DeleteRequest {
            namespace: ns,
            key,
            if_version,
        })
        .await?;
    Ok(Json(json!({
        "namespace": deleted.namespace,
        "key": deleted.key,
        "version": deleted.version,
        "revision": deleted.revision,
        "deleted": true,
    }))
    .into_response())
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
    State(state): State<Arc<Roles>>,
    ApiPath(ns): ApiPath<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let prefix = query.prefix.unwrap_or_default();
    let (ns_state, page) = state
        .config
        .list(&ns, &prefix, query.cursor.as_deref(), query.limit)
        .await?;
    let page = PageView::from_page(page, |e| EntryView::new(e, None));
    Ok(Json(json!({
        "namespace": ns,
        "revision": ns_state.revision,
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
    State(state): State<Arc<Roles>>,
    ApiPath((ns, key)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<VersionsQuery>,
) -> ApiResult<Response> {
    if let Some(version) = query.version {
        let one = state.config.version(&ns, &key, version).await?;
        return Ok(Json(VersionView::from(&one)).into_response());
    }
    let page = state
        .config
        .versions(&ns, &key, query.cursor.as_deref(), query.limit)
        .await?;
    let page = PageView::from_page(page, |v| VersionView::from(&v));
    Ok(Json(json!({
        "namespace": ns,
        "key": key,
        "items": page.items,
        "next_cursor": page.next_cursor,
    }))
    .into_response())
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
    State(state): State<Arc<Roles>>,
    ApiPath((ns, key)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<DiffQuery>,
) -> ApiResult<Response> {
    let diff = state.config.diff(&ns, &key, query.v1, query.v2).await?;
    let structural = match &diff.structural {
        Some(s) => serde_json::to_value(s).map_err(|e| ApiError::internal(e.to_string()))?,
        None => Value::Null,
    };
    Ok(Json(json!({
        "namespace": ns,
        "key": key,
        "v1": VersionView::from(&diff.old),
        "v2": VersionView::from(&diff.new),
        "changed": diff.changed,
        "structural": structural,
    }))
    .into_response())
}

// ---------------------------------------------------------------------------------------------
// Namespaces

/// `GET /v1/namespaces/{ns}/snapshot`: every entry at one revision, with the namespace ETag.
/// `If-None-Match` with the current ETag answers 304 after reading only the namespace record.
pub async fn snapshot(
    State(state): State<Arc<Roles>>,
    ApiPath(ns): ApiPath<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let if_none_match = header_str(&headers, header::IF_NONE_MATCH)?;
    let snapshot = match state.config.snapshot(&ns, if_none_match).await? {
        SnapshotOutcome::NotModified { etag } => return Ok(not_modified(etag_header(&etag)?)),
        SnapshotOutcome::Snapshot(snapshot) => snapshot,
    };
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

/// `GET /v1/namespaces`: namespaces holding at least one key.
pub async fn list_namespaces(
    State(state): State<Arc<Roles>>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let prefix = query.prefix.unwrap_or_default();
    let limit = match query.limit {
        Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
        None => 0,
    };
    // Every alive node lists what it holds; this node merges the pages.
    let page = super::listing::namespaces(
        &state.cluster,
        &state.config,
        &prefix,
        query.cursor.clone(),
        limit,
    )
    .await
    .map_err(crate::http::cluster_api::from_wire)?;
    Ok(Json(PageView::from_wire_page(page, |n| NamespaceView::from(&n))).into_response())
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
    State(state): State<Arc<Roles>>,
    ApiPath((ns, alias)): ApiPath<(String, String)>,
    ApiBody(body): ApiBody,
) -> ApiResult<Response> {
    validate_namespace(&ns)?;
    validate_key(&alias)?;
    let AliasBody { target } = json_body(&body)?;
    let put = state.config.put_alias(&ns, &alias, &target).await?;
    let status = if put.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(AliasView::from(&put.alias))).into_response())
}

/// `GET /v1/namespaces/{ns}/aliases/{alias}`.
pub async fn get_alias(
    State(state): State<Arc<Roles>>,
    ApiPath((ns, alias)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let found = state.config.get_alias(&ns, &alias).await?;
    Ok(Json(AliasView::from(&found)).into_response())
}

/// `DELETE /v1/namespaces/{ns}/aliases/{alias}`.
pub async fn delete_alias(
    State(state): State<Arc<Roles>>,
    ApiPath((ns, alias)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let removed = state.config.delete_alias(&ns, &alias).await?;
    Ok(Json(AliasView::from(&removed)).into_response())
}

/// `GET /v1/namespaces/{ns}/aliases`: a page of aliases.
pub async fn list_aliases(
    State(state): State<Arc<Roles>>,
    ApiPath(ns): ApiPath<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let page = state
        .config
        .aliases(&ns, query.cursor.as_deref(), query.limit)
        .await?;
    Ok(Json(PageView::from_page(page, |a| AliasView::from(&a))).into_response())
}

// ---------------------------------------------------------------------------------------------
// Codecs

/// `GET /v1/codecs`: the codecs this node knows.
pub async fn codecs(State(state): State<Arc<Roles>>) -> Response {
    let known: Vec<Value> = state
        .config
        .codecs()
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
