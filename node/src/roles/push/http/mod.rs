//! The push role over HTTP: the SSE watch, the agents listing, and webhooks.

mod watch;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::roles::Roles;

/// The push role's routes (authenticated; namespace routes are sent to the holder first).
pub fn routes() -> Router<Arc<Roles>> {
    Router::new()
        .route("/v1/watch", get(watch::watch_sse))
        .route("/v1/agents", get(watch::agents))
        .route("/v1/namespaces/{ns}/webhooks", get(webhooks::list_webhooks))
        .route(
            "/v1/namespaces/{ns}/webhooks/{name}",
            get(webhooks::get_webhook)
                .put(webhooks::put_webhook)
                .delete(webhooks::delete_webhook),
        )
}
