//! The registry role's HTTP handlers: instances, heartbeats, services, subscriptions, and
//! seed 002's register/unregister shapes. Each parses its JSON ([`super::json`]), calls the
//! [`RegistryService`](super::RegistryService) and renders the answer; the rules live there.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cfgnode_transport::codes;
use cfgnode_transport::registry::{WireInstanceFilter, WireServiceView, WireStatus};
use serde::Deserialize;
use serde_json::{Value, json};

use super::json::{instance_json, parse_spec};
use super::seed;
use super::service::RegistryError;
use super::validate::Invalid;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiBody, ApiPath, ApiQuery, json_body};
use crate::roles::Roles;
use crate::roles::config::etag_list_matches;

/// The registry's routes (authenticated; every one is a namespace route, served by the holder).
pub fn routes() -> axum::Router<Arc<Roles>> {
    use axum::routing::{delete, get, post, put};
    axum::Router::new()
        .route("/v1/namespaces/{ns}/services", get(list_services))
        .route("/v1/namespaces/{ns}/services/{service}", get(get_service))
        .route(
            "/v1/namespaces/{ns}/services/{service}/instances/{instance}",
            get(get_instance).put(register).delete(deregister),
        )
        .route(
            "/v1/namespaces/{ns}/services/{service}/instances/{instance}/heartbeat",
            put(heartbeat).post(heartbeat),
        )
        .route("/v1/namespaces/{ns}/register", post(seed_register))
        .route("/v1/namespaces/{ns}/unregister", delete(seed_unregister))
        .merge(super::subscriptions::routes())
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        if let RegistryError::Store(store) = e {
            return store.into();
        }
        let code = e.code();
        let status = StatusCode::from_u16(codes::http_status(code))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError::new(status, code, e.to_string())
    }
}

/// A registration body that is not JSON, or breaks a rule.
fn invalid_instance(why: Invalid) -> ApiError {
    RegistryError::InvalidInstance(why).into()
}

/// `PUT /v1/namespaces/{ns}/services/{service}/instances/{instance}`: 201 created, 200 replaced.
pub async fn register(
    State(roles): State<Arc<Roles>>,
    ApiPath((ns, service, instance)): ApiPath<(String, String, String)>,
    ApiBody(body): ApiBody,
) -> ApiResult<Response> {
    let body: Value = json_body(&body)?;
    let spec = parse_spec(&body).map_err(invalid_instance)?;
    let (created, instance) = roles
        .registry
        .register(&ns, &service, &instance, spec)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(instance_json(&instance))).into_response())
}

/// `GET .../instances/{instance}`.
pub async fn get_instance(
    State(roles): State<Arc<Roles>>,
    ApiPath((ns, service, instance)): ApiPath<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let found = roles.registry.instance(&ns, &service, &instance).await?;
    Ok(Json(instance_json(&found)))
}

/// `DELETE .../instances/{instance}`.
pub async fn deregister(
    State(roles): State<Arc<Roles>>,
    ApiPath((ns, service, instance)): ApiPath<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let revision = roles.registry.deregister(&ns, &service, &instance).await?;
    Ok(Json(json!({
        "service": service,
        "instance": instance,
        "deregistered": true,
        "revision": revision,
    })))
}

/// `PUT .../instances/{instance}/heartbeat`: renews a TTL check.
pub async fn heartbeat(
    State(roles): State<Arc<Roles>>,
    ApiPath((ns, service, instance)): ApiPath<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let status = roles.registry.heartbeat(&ns, &service, &instance).await?;
    Ok(Json(
        json!({"service": service, "instance": instance, "status": status.as_str()}),
    ))
}

/// `GET /v1/namespaces/{ns}/services`.
pub async fn list_services(
    State(roles): State<Arc<Roles>>,
    ApiPath(ns): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let listing = roles.registry.services(&ns).await?;
    Ok(Json(json!({
        "namespace": ns,
        "revision": listing.revision,
        "services": listing.services.iter().map(|s| json!({
            "service": s.service,
            "instances": s.instances,
            "healthy": s.healthy,
            "unhealthy": s.unhealthy,
            "unknown": s.unknown,
        })).collect::<Vec<_>>(),
    })))
}

/// Query of `GET .../services/{service}` (`wait` is the long-poll's, handled before the
/// handler by the routing layer, see push::longpoll).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceQuery {
    status: Option<String>,
    protocol: Option<String>,
    tag: Option<String>,
    #[serde(rename = "wait")]
    _wait: Option<String>,
}

impl ServiceQuery {
    fn filter(self) -> ApiResult<WireInstanceFilter> {
        let status = self
            .status
            .map(|s| {
                WireStatus::parse(&s).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "status={s:?} is not a status (healthy, unhealthy or unknown)"
                    ))
                })
            })
            .transpose()?;
        Ok(WireInstanceFilter {
            status,
            protocol: self.protocol,
            tag: self.tag,
        })
    }
}

/// `GET /v1/namespaces/{ns}/services/{service}?status=&protocol=&tag=`, with an ETag; with
/// `If-None-Match` and `?wait=`, a long-poll (304 when nothing changed in time).
pub async fn get_service(
    State(roles): State<Arc<Roles>>,
    ApiPath((ns, service)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<ServiceQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let filter = query.filter()?;
    let view = roles.registry.service(&ns, &service, &filter).await?;
    let etag = HeaderValue::from_str(&view.etag)
        .map_err(|e| ApiError::internal(format!("bad etag {}: {e}", view.etag)))?;
    if let Some(tags) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        && etag_list_matches(tags, &view.etag)
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok((
        StatusCode::OK,
        [(header::ETAG, etag)],
        Json(service_json(&view)),
    )
        .into_response())
}

/// A service view as JSON.
pub fn service_json(view: &WireServiceView) -> Value {
    json!({
        "service": view.service,
        "revision": view.revision,
        "instances": view.instances.iter().map(instance_json).collect::<Vec<_>>(),
    })
}

/// `POST /v1/namespaces/{ns}/register`: seed 002's registration shape.
pub async fn seed_register(
    State(roles): State<Arc<Roles>>,
    ApiPath(ns): ApiPath<String>,
    ApiBody(body): ApiBody,
) -> ApiResult<Response> {
    let body: Value = json_body(&body)?;
    let registration = seed::parse_register(&body).map_err(invalid_instance)?;
    let (created, instance) = roles
        .registry
        .register(
            &ns,
            &registration.service,
            &registration.instance,
            registration.spec,
        )
        .await?;
    if let Some(subscription) = registration.subscription {
        roles
            .registry
            .put_subscription(&ns, &subscription.name, subscription.spec)
            .await?;
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(instance_json(&instance))).into_response())
}

/// Query of `DELETE /v1/namespaces/{ns}/unregister`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnregisterQuery {
    service_name: String,
    pod_name: String,
}

/// `DELETE /v1/namespaces/{ns}/unregister?service_name=&pod_name=`: seed 002's removal, which
/// also drops the subscription its registration made.
pub async fn seed_unregister(
    State(roles): State<Arc<Roles>>,
    ApiPath(ns): ApiPath<String>,
    ApiQuery(query): ApiQuery<UnregisterQuery>,
) -> ApiResult<Json<Value>> {
    let revision = roles
        .registry
        .deregister(&ns, &query.service_name, &query.pod_name)
        .await?;
    let name = seed::subscription_name(&query.service_name, &query.pod_name);
    match roles.registry.delete_subscription(&ns, &name).await {
        Ok(()) | Err(RegistryError::SubscriptionNotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Json(json!({
        "service_name": query.service_name,
        "pod_name": query.pod_name,
        "deregistered": true,
        "revision": revision,
    })))
}
