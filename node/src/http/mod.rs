//! The HTTP admin port: routing, authentication, metrics, health.
//!
//! Every route but `/health` and `/ready` needs `Authorization: Bearer <token>`. Every error is
//! `{"error":{"code","message"}}` (see [`ApiError`]).
//!
//! Layers, outside in: `track_request` (metrics, `x-cfgnode-node`), then on authenticated
//! routes `require_token` (the token, then the whole body within the body timeout) and
//! `cluster_api::route_to_holder`. Connections are served by
//! [`serve`] (`server`), which caps them and times out their headers.

pub(crate) mod cluster_api;
pub(crate) mod error;
pub(crate) mod extract;
pub mod replay;
mod server;
pub(crate) mod views;

use cfgnode_transport::codes;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

pub use error::ApiError;
pub use server::{
    DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS, HttpLimits, serve,
};

use crate::metrics::UNMATCHED_ROUTE;
use crate::roles::Roles;

/// The header naming the node that served a request (the holder, for forwarded requests).
pub const SERVED_BY: &str = "x-cfgnode-node";

/// The largest request body for a node whose value limit is `max_value_bytes`: the value, or
/// its base64 envelope (4/3 of it), plus slack.
pub fn body_limit(max_value_bytes: usize) -> usize {
    max_value_bytes / 3 * 4 + 64 * 1024
}

/// Builds the router with every route of the HTTP API.
pub fn router(state: Arc<Roles>) -> Router {
    let body_limit = state.body_limit;
    let api = Router::new()
        .route("/metrics", get(metrics))
        .merge(cluster_api::routes())
        .merge(crate::roles::config::http::routes())
        .merge(crate::roles::push::http::routes())
        .merge(crate::roles::registry::http::routes())
        .merge(crate::roles::proxy::http::routes())
        // Layers run outside in: the token is checked and the body read (in that order, in
        // one layer) before anything is forwarded.
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            cluster_api::route_to_holder,
        ))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            require_token,
        ));
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .merge(api)
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            track_request,
        ))
        .with_state(state)
}

/// Authenticates the bearer token and records the principal for handlers, then reads the body
/// (see [`read_body_within`]). One layer rather than two: a layer costs a boxed future and a
/// clone of the inner service per request, measurable on the read path.
async fn require_token(
    State(state): State<Arc<Roles>>,
    mut request: Request,
    next: Next,
) -> Response {
    // A request a peer forwarded was authenticated by that peer (it proved the cluster key);
    // both extensions are set only by this node's own replay, never from the wire.
    let extensions = request.extensions();
    if extensions.get::<replay::Routed>().is_some()
        && extensions.get::<crate::auth::Principal>().is_some()
    {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(token) = presented else {
        return ApiError::unauthenticated(
            "missing bearer token: send Authorization: Bearer <token> (the node's admin token is in <data-dir>/admin.token)",
        )
        .into_response();
    };
    match state.verifier.verify(token) {
        Some(principal) => {
            request.extensions_mut().insert(principal);
            match read_body_within(&state, request).await {
                Ok(request) => next.run(request).await,
                Err(refused) => refused,
            }
        }
        None => {
            ApiError::unauthenticated("the bearer token is not valid on this node").into_response()
        }
    }
}

/// Reads the whole request body, within the body timeout and the body limit, before the
/// handler runs: a body that trickles in gets 408 instead of holding its connection (and, on
/// namespace routes, the namespace) for as long as the client likes. The deadline covers the
/// whole body, not the gap between two chunks, so sending a byte now and then does not help.
/// Only authenticated requests get here: an anonymous client cannot make the node buffer a body.
async fn read_body_within(state: &Roles, request: Request) -> Result<Request, Response> {
    // Most requests (GETs) have no body: nothing to time or collect.
    if axum::body::HttpBody::size_hint(request.body()).exact() == Some(0) {
        return Ok(request);
    }
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(state.body_timeout, read_body(body, state.body_limit));
    let body = match read.await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => return Err(e.into_response()),
        Err(_) => {
            return Err(ApiError::from_code(codes::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {:?}; send it in one go (the node's --http-body-timeout)",
                    state.body_timeout
                ),
            )
            .into_response());
        }
    };
    Ok(Request::from_parts(parts, Body::from(body)))
}

/// Collects `body`, refusing it as soon as it grows over `limit` bytes.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;
    let too_large = || {
        ApiError::from_code(
            codes::VALUE_TOO_LARGE,
            format!("the request body is over this node's limit of {limit} bytes"),
        )
    };
    let mut stream = body.into_data_stream();
    let mut collected = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(format!("the request body could not be read: {e}"))
        })?;
        if collected.len() + chunk.len() > limit {
            return Err(too_large());
        }
        collected.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(collected))
}

/// Counts and times every request by its route template.
async fn track_request(State(state): State<Arc<Roles>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_string();
    // A route template or `unmatched`, never the raw path: the path is the client's choice.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED_ROUTE.to_string(), |p| p.as_str().to_string());
    let mut response = next.run(request).await;
    // Which node served (a forwarded answer keeps the holder's).
    if let Ok(node) = HeaderValue::from_str(state.config.store().node_id()) {
        response.headers_mut().entry(SERVED_BY).or_insert(node);
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state
        .metrics
        .observe_request(&method, &route, status, elapsed);
    tracing::debug!(%method, %route, status, micros = elapsed.as_micros() as u64, "request");
    response
}

async fn health(State(state): State<Arc<Roles>>) -> Response {
    axum::Json(json!({ "status": "ok", "node_id": state.config.store().node_id() })).into_response()
}

/// Ready when storage answers a read.
async fn ready(State(state): State<Arc<Roles>>) -> Response {
    let store = state.config.store().clone();
    let probe = tokio::task::spawn_blocking(move || store.list_namespaces("", None, 1)).await;
    if !state.cluster.is_synced() {
        return ApiError::from_code(codes::NOT_READY,
            "this node has not yet merged the cluster map from a peer; it serves the namespaces it holds, and creates none until it has",
        )
        .into_response();
    }
    match probe {
        Ok(Ok(_)) => axum::Json(json!({ "status": "ready" })).into_response(),
        Ok(Err(e)) => ApiError::from_code(codes::UNAVAILABLE, e.to_string()).into_response(),
        Err(e) => ApiError::from_code(codes::UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn metrics(State(state): State<Arc<Roles>>) -> Response {
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn route_not_found(request: Request) -> ApiError {
    ApiError::from_code(
        codes::ROUTE_NOT_FOUND,
        format!(
            "no route for {} {}; see docs/http-api.md",
            request.method(),
            request.uri().path()
        ),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::from_code(
        codes::METHOD_NOT_ALLOWED,
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}
