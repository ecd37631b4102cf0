//! `/v1/namespaces/{ns}/webhooks[/{name}]`: create, read, list and delete webhooks (served on
//! the namespace's holder, like every namespace route). docs/http-api.md, docs/push.md.

use cfgnode_transport::codes;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cfgnode_storage::validate_namespace;
use serde_json::{Value, json};

use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiBody, ApiPath, json_body};
use crate::http::views::rfc3339;
use crate::roles::Roles;
use crate::roles::push::webhooks::{self, Webhook, WebhookConfig};
use crate::time::now_millis;

fn view(ns: &str, name: &str, hook: &Webhook, revision: u64) -> Value {
    json!({
        "namespace": ns,
        "name": name,
        "url": hook.url,
        "prefixes": hook.prefixes,
        "cursor": hook.cursor,
        "pending": revision.saturating_sub(hook.cursor),
        "last_error": hook.last_error,
        "last_error_at": hook.last_error_at.map(rfc3339),
        "last_success_at": hook.last_success_at.map(rfc3339),
        "created_at": rfc3339(hook.created_at),
        "updated_at": rfc3339(hook.updated_at),
    })
}

fn not_found(ns: &str, name: &str) -> ApiError {
    ApiError::from_code(
        codes::WEBHOOK_NOT_FOUND,
        format!(
            "no webhook {name:?} in namespace {ns:?}: list them with GET /v1/namespaces/{ns}/webhooks"
        ),
    )
}

async fn stored(state: &Roles, ns: &str, name: &str) -> ApiResult<Option<Webhook>> {
    let wanted = webhooks::attachment(name);
    let all = state
        .config
        .store()
        .attachments(ns, &wanted)
        .map_err(ApiError::from)?;
    Ok(all
        .into_iter()
        .find(|(n, _)| *n == wanted)
        .and_then(|(_, bytes)| webhooks::decode(&bytes)))
}

/// The stored webhook, or 404 `webhook_not_found`.
async fn existing(state: &Roles, ns: &str, name: &str) -> ApiResult<Webhook> {
    validate_namespace(ns)?;
    stored(state, ns, name)
        .await?
        .ok_or_else(|| not_found(ns, name))
}

async fn revision(state: &Roles, ns: &str) -> ApiResult<u64> {
    Ok(state
        .config
        .namespace_state(ns)
        .await?
        .map_or(0, |s| s.revision))
}

/// `PUT /v1/namespaces/{ns}/webhooks/{name}` `{"url","prefixes","secret","from"?}`: creates
/// (201) or replaces (200) a webhook; replacing keeps its cursor.
pub async fn put_webhook(
    State(state): State<Arc<Roles>>,
    ApiPath((ns, name)): ApiPath<(String, String)>,
    ApiBody(body): ApiBody,
) -> ApiResult<Response> {
    validate_namespace(&ns)?;
    let config: WebhookConfig = json_body(&body)?;
    webhooks::check(&name, &config)
        .map_err(|why| ApiError::from_code(codes::INVALID_WEBHOOK, why))?;
    webhooks::check_target(&config.url, &state.push.webhook_targets).map_err(|refused| {
        ApiError::from_code(
            codes::WEBHOOK_TARGET_NOT_ALLOWED,
            format!(
                "{refused}: webhooks reach only public addresses unless the nodes are started \
                 with --webhook-allow (e.g. --webhook-allow {}/{})",
                refused.ip.to_canonical(),
                if refused.ip.to_canonical().is_ipv4() {
                    32
                } else {
                    128
                }
            ),
        )
    })?;
    let current = revision(&state, &ns).await?;
    let now = now_millis();
    let existing = stored(&state, &ns, &name).await?;
    let created = existing.is_none();
    let hook = match existing {
        Some(old) => Webhook {
            url: config.url,
            prefixes: config.prefixes,
            secret: config.secret,
            cursor: config.from.unwrap_or(old.cursor),
            updated_at: now,
            ..old
        },
        None => Webhook {
            url: config.url,
            prefixes: config.prefixes,
            secret: config.secret,
            cursor: config.from.unwrap_or(current),
            last_error: None,
            last_error_at: None,
            last_success_at: None,
            created_at: now,
            updated_at: now,
        },
    };
    state
        .config
        .store()
        .put_attachment(
            &ns,
            &webhooks::attachment(&name),
            Some(webhooks::encode(&hook)),
        )
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(&ns, &name, &hook, current))).into_response())
}

/// `GET /v1/namespaces/{ns}/webhooks/{name}`: config (no secret), cursor, last outcomes.
pub async fn get_webhook(
    State(state): State<Arc<Roles>>,
    ApiPath((ns, name)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let hook = existing(&state, &ns, &name).await?;
    let current = revision(&state, &ns).await?;
    Ok(Json(view(&ns, &name, &hook, current)).into_response())
}

/// `DELETE /v1/namespaces/{ns}/webhooks/{name}`.
pub async fn delete_webhook(
    State(state): State<Arc<Roles>>,
    ApiPath((ns, name)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let hook = existing(&state, &ns, &name).await?;
    state
        .config
        .store()
        .put_attachment(&ns, &webhooks::attachment(&name), None)
        .await?;
    let current = revision(&state, &ns).await?;
    Ok(Json(view(&ns, &name, &hook, current)).into_response())
}

/// `GET /v1/namespaces/{ns}/webhooks`: every webhook of the namespace.
pub async fn list_webhooks(
    State(state): State<Arc<Roles>>,
    ApiPath(ns): ApiPath<String>,
) -> ApiResult<Response> {
    validate_namespace(&ns)?;
    let current = revision(&state, &ns).await?;
    let hooks: Vec<Value> = state
        .config
        .store()
        .attachments(&ns, webhooks::PREFIX)
        .map_err(ApiError::from)?
        .into_iter()
        .filter_map(|(n, bytes)| {
            let name = n.strip_prefix(webhooks::PREFIX)?.to_string();
            webhooks::decode(&bytes).map(|h| view(&ns, &name, &h, current))
        })
        .collect();
    Ok(Json(json!({ "webhooks": hooks })).into_response())
}
