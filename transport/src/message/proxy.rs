//! The proxy role's messages: its routes, the namespace records that tell every proxying node
//! which host and path go to which backends (docs/proxy.md).
//!
//! A route travels as its JSON text, the HTTP API's body of
//! `PUT /v1/namespaces/{ns}/routes/{name}` (hosts, path_prefix, backend, timeout, retries,
//! rate_limit, check), for two reasons: bincode cannot carry a self-describing JSON value, and
//! one shape for both front ends means the node checks a route with one parser, whichever way it
//! arrives, and answers a bad one with the same `invalid_route` naming the field. The client
//! library and the CLI therefore build JSON, never a second typed copy of the route's rules.

use serde::{Deserialize, Serialize};

/// The proxy's bounds on the wire.
pub mod limits {
    /// Longest route JSON text a `PutRoute` may carry. The largest valid route (64 hosts of 253
    /// bytes, 64 targets, a check) is well under it; the bound keeps a caller from making the
    /// node parse a frame-sized JSON document (16 MiB) only to refuse it, as the HTTP body
    /// limit does on the other front end.
    pub const MAX_ROUTE_JSON: usize = 256 * 1024;
}

/// A route operation. Routes are records of the namespace, so every one is served by the
/// namespace's holder and names its namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProxyRequest {
    /// Creates or replaces a route. A route with static targets also (re)registers them with
    /// the registry, so the holder checks them.
    PutRoute {
        /// Namespace the route belongs to (its proxying nodes follow it).
        namespace: String,
        /// Route name (letters, digits, `.`, `_`, `-`; at most 122 bytes, because its static
        /// targets are the registry service `route.{name}`).
        name: String,
        /// The route as the HTTP API's JSON body (at most [`limits::MAX_ROUTE_JSON`] bytes);
        /// checked by the node (`invalid_route`).
        route_json: String,
    },
    /// One route.
    GetRoute {
        /// Namespace of the route.
        namespace: String,
        /// Route name.
        name: String,
    },
    /// Removes a route (and its registered static targets).
    DeleteRoute {
        /// Namespace of the route.
        namespace: String,
        /// Route name.
        name: String,
    },
    /// Every route of the namespace, by name.
    Routes {
        /// Namespace to list.
        namespace: String,
    },
}

impl ProxyRequest {
    /// True for the requests that change the namespace (they may create it).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            ProxyRequest::PutRoute { .. } | ProxyRequest::DeleteRoute { .. }
        )
    }

    /// True for the reads only. A resent `PutRoute` is harmless alone but not after a
    /// `DeleteRoute` from elsewhere (it would bring the route back), and a resent
    /// `DeleteRoute` would answer `proxy_route_not_found` for a delete that succeeded.
    pub fn is_idempotent(&self) -> bool {
        !self.is_write()
    }

    /// The namespace whose holder serves the request: always one.
    pub fn routed_namespace(&self) -> Option<&str> {
        match self {
            ProxyRequest::PutRoute { namespace, .. }
            | ProxyRequest::GetRoute { namespace, .. }
            | ProxyRequest::DeleteRoute { namespace, .. }
            | ProxyRequest::Routes { namespace } => Some(namespace),
        }
    }

    /// The operation's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            ProxyRequest::PutRoute { .. } => "put_route",
            ProxyRequest::GetRoute { .. } => "get_route",
            ProxyRequest::DeleteRoute { .. } => "delete_route",
            ProxyRequest::Routes { .. } => "routes",
        }
    }
}

/// A proxy answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProxyResponse {
    /// Answer to `PutRoute`: the route as stored, and whether it was new.
    RoutePut {
        /// False when an existing route was replaced.
        created: bool,
        /// The route as stored, with its defaults filled in.
        route: WireRoute,
    },
    /// Answer to `GetRoute`.
    Route(WireRoute),
    /// Answer to `DeleteRoute`: the namespace revision of the removal.
    RouteDeleted {
        /// Revision of the removal in the namespace log.
        revision: u64,
    },
    /// Answer to `Routes`: every route, by name.
    Routes(Vec<WireRoute>),
}

/// A route as the node has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRoute {
    /// Its name within the namespace.
    pub name: String,
    /// The route as JSON text in the HTTP API's shape, every default filled in (so a reader
    /// sees the timeout, retries and check that apply, not only what was given).
    pub route_json: String,
    /// Bumped by every write of the route's record; 0 in a `RoutePut` answer, which does not
    /// read the record back (read the route for it).
    pub version: u64,
    /// The namespace revision of that write; 0 in a `RoutePut` answer, like `version`.
    pub revision: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{decode_payload, encode_payload};
    use crate::{Request, Response};

    #[test]
    fn routes_round_trip_and_route_to_their_namespace() {
        let put = Request::Proxy(ProxyRequest::PutRoute {
            namespace: "shop".into(),
            name: "web".into(),
            route_json: r#"{"hosts":["shop.example.com"],"backend":{"service":"web"}}"#.into(),
        });
        let back: Request = decode_payload(&encode_payload(&put)).expect("decodes");
        assert_eq!(back, put);
        assert!(put.is_write());
        assert!(!put.is_idempotent(), "a put is not resent blindly");
        assert_eq!(put.routed_namespace(), Some("shop"));
        assert_eq!(put.name(), "put_route");

        let delete = Request::Proxy(ProxyRequest::DeleteRoute {
            namespace: "shop".into(),
            name: "web".into(),
        });
        assert!(delete.is_write() && !delete.is_idempotent());
        for read in [
            ProxyRequest::GetRoute {
                namespace: "shop".into(),
                name: "web".into(),
            },
            ProxyRequest::Routes {
                namespace: "shop".into(),
            },
        ] {
            let read = Request::Proxy(read);
            assert!(!read.is_write() && read.is_idempotent(), "{read:?}");
            assert_eq!(read.routed_namespace(), Some("shop"));
        }

        let answer = Response::Proxy(ProxyResponse::Routes(vec![WireRoute {
            name: "web".into(),
            route_json: "{}".into(),
            version: 2,
            revision: 7,
        }]));
        let back: Response = decode_payload(&encode_payload(&answer)).expect("decodes");
        assert_eq!(back, answer);
    }
}
