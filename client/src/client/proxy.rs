//! The typed proxy operations: put, read, list and delete the routes of a namespace, with the
//! [`Route`] of their answers. A route is the HTTP API's JSON (docs/proxy.md); it travels as
//! JSON text and is checked by the node, which names the field at fault in an `invalid_route`
//! answer ([`ClientError::Invalid`]).

use cfgnode_transport::proxy::{ProxyRequest, ProxyResponse, WireRoute};
use cfgnode_transport::{Request, Response};
use serde_json::Value;

use crate::error::ClientError;

use super::Client;

/// A route as the node has it.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// Its name within the namespace.
    pub name: String,
    /// The route in the HTTP API's shape, every default filled in (`timeout`, `retries`,
    /// `check`...), so it shows what applies and not only what was given.
    pub route: Value,
    /// Bumped by every write of the route; 0 in a [`RoutePut`], which does not read it back.
    pub version: u64,
    /// The namespace revision of that write; 0 in a [`RoutePut`], like `version`.
    pub revision: u64,
}

/// The answer to [`Client::put_route`].
#[derive(Clone, Debug, PartialEq)]
pub struct RoutePut {
    /// False when an existing route was replaced.
    pub created: bool,
    /// The route as stored.
    pub route: Route,
}

impl Route {
    /// The route of a wire answer; a node that sends JSON it cannot have stored is answering
    /// something this client does not understand.
    fn from_wire(wire: WireRoute) -> Result<Route, ClientError> {
        let route = serde_json::from_str(&wire.route_json).map_err(|e| ClientError::Server {
            code: "unexpected_response".to_string(),
            message: format!("route {:?} is not JSON: {e}", wire.name),
        })?;
        Ok(Route {
            name: wire.name,
            route,
            version: wire.version,
            revision: wire.revision,
        })
    }
}

impl Client {
    /// Creates or replaces route `name` of `namespace`. `route` is the HTTP API's body:
    /// `{"hosts":[...],"path_prefix":"/","backend":{"service":"web","endpoint":"http"} |
    /// {"targets":["http://10.0.0.5:9001"]},"timeout":"5s","retries":1,"rate_limit":{...},
    /// "check":{...}}`. A bad route is refused with [`ClientError::Invalid`] (`invalid_route`,
    /// naming the field) and changes nothing. Not resent after the request may have reached
    /// the node: on a lost answer, read the route before putting it again.
    pub async fn put_route(
        &self,
        namespace: &str,
        name: &str,
        route: &Value,
    ) -> Result<RoutePut, ClientError> {
        let request = Request::Proxy(ProxyRequest::PutRoute {
            namespace: namespace.into(),
            name: name.into(),
            route_json: route.to_string(),
        });
        match self.call(request).await? {
            Response::Proxy(ProxyResponse::RoutePut { created, route }) => Ok(RoutePut {
                created,
                route: Route::from_wire(route)?,
            }),
            other => Err(Self::unexpected(other)),
        }
    }

    /// One route; [`ClientError::NotFound`] (`proxy_route_not_found`) when there is none.
    pub async fn route(&self, namespace: &str, name: &str) -> Result<Route, ClientError> {
        let request = Request::Proxy(ProxyRequest::GetRoute {
            namespace: namespace.into(),
            name: name.into(),
        });
        match self.call(request).await? {
            Response::Proxy(ProxyResponse::Route(route)) => Route::from_wire(route),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Removes a route (and its registered static targets); returns the namespace revision
    /// of the removal. [`ClientError::NotFound`] when there is no such route.
    pub async fn delete_route(&self, namespace: &str, name: &str) -> Result<u64, ClientError> {
        let request = Request::Proxy(ProxyRequest::DeleteRoute {
            namespace: namespace.into(),
            name: name.into(),
        });
        match self.call(request).await? {
            Response::Proxy(ProxyResponse::RouteDeleted { revision }) => Ok(revision),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Every route of `namespace`, by name.
    pub async fn routes(&self, namespace: &str) -> Result<Vec<Route>, ClientError> {
        let request = Request::Proxy(ProxyRequest::Routes {
            namespace: namespace.into(),
        });
        match self.call(request).await? {
            Response::Proxy(ProxyResponse::Routes(routes)) => {
                routes.into_iter().map(Route::from_wire).collect()
            }
            other => Err(Self::unexpected(other)),
        }
    }
}
