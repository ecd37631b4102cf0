//! The routes' HTTP API: `PUT`/`GET`/`DELETE /v1/namespaces/{ns}/routes/{name}` and
//! `GET /v1/namespaces/{ns}/routes`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cfgnode_storage::Record;
use cfgnode_transport::codes;
use serde_json::{Value, json};

use super::route::{Route, route_json};
use super::service::RouteError;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiBody, ApiPath, json_body};
use crate::roles::Roles;

/// The routes API (namespace routes, served by the holder).
pub fn routes() -> axum::Router<Arc<Roles>> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/v1/namespaces/{ns}/hit", post(super::hit::hit))
        .route("/v1/namespaces/{ns}/routes", get(list))
        .route(
            "/v1/namespaces/{ns}/routes/{name}",
            get(get_one).put(put).delete(delete),
        )
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::Store(store) => store.into(),
            RouteError::Invalid(why) => {
                ApiError::from_code(codes::INVALID_ROUTE, format!("invalid route: {why}"))
            }
            not_found @ RouteError::NotFound { .. } => {
                ApiError::from_code(codes::PROXY_ROUTE_NOT_FOUND, not_found.to_string())
            }
        }
    }
}

fn view(name: &str, route: &Route, record: Option<&Record>) -> Value {
    let mut out = route_json(route);
    out["name"] = json!(name);
    if let Some(record) = record {
        out["version"] = json!(record.version);
        out["revision"] = json!(record.revision);
    }
    out
}

async fn put(
    State(roles): State<Arc<Roles>>,
    ApiPath((ns, name)): ApiPath<(String, String)>,
    ApiBody(body): ApiBody,
) -> ApiResult<Response> {
    let body: Value = json_body(&body)?;
    let (created, route) = roles.proxy.put(&ns, &name, &body).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(&name, &route, None))).into_response())
}

async fn get_one(
    State(roles): State<Arc<Roles>>,
    ApiPath((ns, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    let (record, route) = roles.proxy.get(&ns, &name).await?;
    Ok(Json(view(&name, &route, Some(&record))))
}

async fn delete(
    State(roles): State<Arc<Roles>>,
    ApiPath((ns, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    let revision = roles.proxy.delete(&ns, &name).await?;
    Ok(Json(
        json!({"name": name, "deleted": true, "revision": revision}),
    ))
}

async fn list(
    State(roles): State<Arc<Roles>>,
    ApiPath(ns): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let all = roles.proxy.list(&ns).await?;
    Ok(Json(json!({
        "namespace": ns,
        "routes": all.iter().map(|(record, route)| view(&record.name, route, Some(record))).collect::<Vec<_>>(),
    })))
}
