//! The HTTP admin port: routing, authentication, metrics, health.
//!
//! Every route but `/health` and `/ready` needs `Authorization: Bearer <token>`. Every error is
//! `{"error":{"code","message"}}` (see [`ApiError`]).

mod cluster_api;
mod config_api;
mod error;
mod extract;
pub(crate) mod views;
mod watch_api;
mod webhooks_api;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::json;

pub use config_api::ENVELOPE_CONTENT_TYPE;
pub use error::ApiError;

use crate::auth::TokenVerifier;
use crate::cluster::Cluster;
use crate::config_service::ConfigService;
use crate::metrics::Metrics;

/// The header naming the node that served a request (the holder, for forwarded requests).
pub const SERVED_BY: &str = "x-cfgnode-node";

/// What every handler shares.
pub struct AppState {
    /// The config role.
    pub service: ConfigService,
    /// Checks bearer tokens.
    pub verifier: TokenVerifier,
    /// The node's metrics.
    pub metrics: Arc<Metrics>,
    /// The cluster role: routing to holders, placement, pins and claims.
    pub cluster: Cluster,
    /// Largest request body accepted.
    pub body_limit: usize,
    /// The push role's watch hub (SSE watches).
    pub hub: crate::push::Hub,
    /// The agents that heartbeat to this node.
    pub agents: crate::push::Agents,
    /// Which webhook targets this node delivers to (`--webhook-allow`): refused literal IP
    /// targets get a 400 at creation.
    pub webhook_targets: crate::push::webhook_targets::TargetPolicy,
}

/// The largest request body for a node whose value limit is `max_value_bytes`: the value, or
/// its base64 envelope (4/3 of it), plus slack.
pub fn body_limit(max_value_bytes: usize) -> usize {
    max_value_bytes / 3 * 4 + 64 * 1024
}

/// Builds the router with every route of the HTTP API.
pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.body_limit;
    use cluster_api as k;
    use config_api as c;
    let api = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/codecs", get(c::codecs))
        .route("/v1/cluster/members", get(k::members))
        .route("/v1/cluster/placement/{ns}", get(k::placement))
        .route("/v1/cluster/ring", get(k::ring))
        .route(
            "/v1/cluster/claims/{ns}",
            put(k::put_claim).delete(k::delete_claim),
        )
        .route(
            "/v1/cluster/pins/{ns}",
            put(k::put_pin).delete(k::delete_pin),
        )
        .route("/v1/watch", get(watch_api::watch_sse))
        .route("/v1/agents", get(watch_api::agents))
        .route("/v1/namespaces", get(c::list_namespaces))
        .route("/v1/namespaces/{ns}/keys", get(c::list_keys))
        .route(
            "/v1/namespaces/{ns}/keys/{*key}",
            get(c::get_key)
                .put(c::put_key)
                .post(c::put_key)
                .delete(c::delete_key),
        )
        .route("/v1/namespaces/{ns}/versions/{*key}", get(c::versions))
        .route("/v1/namespaces/{ns}/diff/{*key}", get(c::diff))
        .route("/v1/namespaces/{ns}/snapshot", get(c::snapshot))
        .route("/v1/namespaces/{ns}/access", get(c::access))
        .route("/v1/namespaces/{ns}/aliases", get(c::list_aliases))
        .route(
            "/v1/namespaces/{ns}/aliases/{*alias}",
            get(c::get_alias).put(c::put_alias).delete(c::delete_alias),
        )
        .route(
            "/v1/namespaces/{ns}/webhooks",
            get(webhooks_api::list_webhooks),
        )
        .route(
            "/v1/namespaces/{ns}/webhooks/{name}",
            get(webhooks_api::get_webhook)
                .put(webhooks_api::put_webhook)
                .delete(webhooks_api::delete_webhook),
        )
        // Layers run outside in: the token is checked before anything is forwarded.
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

/// Authenticates the bearer token and records the principal for handlers.
async fn require_token(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
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
            next.run(request).await
        }
        None => {
            ApiError::unauthenticated("the bearer token is not valid on this node").into_response()
        }
    }
}

/// Counts and times every request by its route template.
async fn track_request(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let mut response = next.run(request).await;
    // Which node served (a forwarded answer keeps the holder's).
    if let Ok(node) = HeaderValue::from_str(state.service.store().node_id()) {
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

async fn health(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(json!({ "status": "ok", "node_id": state.service.store().node_id() }))
        .into_response()
}

/// Ready when storage answers a read.
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let store = state.service.store().clone();
    let probe = tokio::task::spawn_blocking(move || store.list_namespaces("", None, 1)).await;
    match probe {
        Ok(Ok(_)) => axum::Json(json!({ "status": "ready" })).into_response(),
        Ok(Err(e)) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
        .into_response(),
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
        .into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn route_not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        format!(
            "no route for {} {}; see docs/http-api.md",
            request.method(),
            request.uri().path()
        ),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}
