//! The proxy role's routes over the QUIC protocol: a [`ProxyRequest`] becomes a
//! [`ProxyService`] call and its result a [`ProxyResponse`]. Pure translation; the route's JSON
//! text is parsed here and checked by the same [`parse_route`](super::route::parse_route) the
//! HTTP API uses, so both answer a bad route with the same `invalid_route` naming the field.

use cfgnode_storage::Record;
use cfgnode_transport::proxy::limits::MAX_ROUTE_JSON;
use cfgnode_transport::proxy::{ProxyRequest, ProxyResponse, WireRoute};
use cfgnode_transport::{Response, WireError, codes};
use serde_json::Value;

use super::route::{Route, route_json};
use super::service::{ProxyService, RouteError};
use crate::roles::registry::validate::Invalid;

/// Serves one proxy request on the namespace's holder.
pub async fn handle(proxy: &ProxyService, request: ProxyRequest) -> Result<Response, WireError> {
    serve(proxy, request)
        .await
        .map(Response::Proxy)
        .map_err(to_wire)
}

async fn serve(proxy: &ProxyService, request: ProxyRequest) -> Result<ProxyResponse, RouteError> {
    Ok(match request {
        ProxyRequest::PutRoute {
            namespace,
            name,
            route_json,
        } => {
            if route_json.len() > MAX_ROUTE_JSON {
                return Err(RouteError::Invalid(Invalid::new(
                    "body",
                    format!(
                        "is {} bytes; a route is at most {MAX_ROUTE_JSON} bytes of JSON",
                        route_json.len()
                    ),
                )));
            }
            let body: Value = serde_json::from_str(&route_json).map_err(|e| {
                RouteError::Invalid(Invalid::new("body", format!("is not JSON ({e})")))
            })?;
            let (created, route) = proxy.put(&namespace, &name, &body).await?;
            ProxyResponse::RoutePut {
                created,
                route: wire_route(&name, &route, None),
            }
        }
        ProxyRequest::GetRoute { namespace, name } => {
            let (record, route) = proxy.get(&namespace, &name).await?;
            ProxyResponse::Route(wire_route(&name, &route, Some(&record)))
        }
        ProxyRequest::DeleteRoute { namespace, name } => ProxyResponse::RouteDeleted {
            revision: proxy.delete(&namespace, &name).await?,
        },
        ProxyRequest::Routes { namespace } => ProxyResponse::Routes(
            proxy
                .list(&namespace)
                .await?
                .iter()
                .map(|(record, route)| wire_route(&record.name, route, Some(record)))
                .collect(),
        ),
    })
}

/// A route as the wire carries it: the stored JSON (defaults filled in), and the record's
/// version and revision when the answer read the record (a put does not).
fn wire_route(name: &str, route: &Route, record: Option<&Record>) -> WireRoute {
    WireRoute {
        name: name.to_string(),
        route_json: route_json(route).to_string(),
        version: record.map_or(0, |r| r.version),
        revision: record.map_or(0, |r| r.revision),
    }
}

/// The same codes and messages as the HTTP API's answers (proxy::http).
fn to_wire(error: RouteError) -> WireError {
    match error {
        RouteError::Store(store) => crate::error::to_wire_error(store),
        invalid @ RouteError::Invalid(_) => {
            WireError::new(codes::INVALID_ROUTE, invalid.to_string())
        }
        not_found @ RouteError::NotFound { .. } => {
            WireError::new(codes::PROXY_ROUTE_NOT_FOUND, not_found.to_string())
        }
    }
}
