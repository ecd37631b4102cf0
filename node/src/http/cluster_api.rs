//! The cluster routes: members, placement, ring, claims and pins; and the middleware that sends
//! a namespace request to the namespace's holder.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cfgnode_storage::validate_namespace;
use cfgnode_transport::{
    PeerRequest, PeerResponse, Response as WireResponse, WireError, WireHttpRequest, codes,
};
use serde::Deserialize;
use serde_json::json;

use super::ApiError;
use super::replay::Routed;
use crate::auth::Principal;
use crate::roles::Roles;
use crate::roles::push::longpoll::{LongPoll, wait_while_unchanged, with_wait};

use crate::cluster::{
    DirectiveKind, FORWARD_TIMEOUT, MAX_HOPS, Target, forward_hop, http_intent, http_namespace,
    moving,
};

/// How much longer than its wait a forwarded long-poll may take.
const LONG_POLL_SLACK: std::time::Duration = std::time::Duration::from_secs(10);

/// Headers that describe one connection, not the request: never forwarded. `authorization`
/// is not sent either: the caller's token stays on the node that checked it, and the holder
/// is told the principal instead.
const HOP_BY_HOP: [&str; 9] = [
    "authorization",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The environment variable that turns on `PUT /v1/debug/partition` (tests only).
pub const FAULT_INJECTION_ENV: &str = "CFGNODE_FAULT_INJECTION";

/// The cluster-admin routes: members, placement, ring, claims, pins; and, only when the node
/// runs with `CFGNODE_FAULT_INJECTION=1` (process-level tests), the partition switch.
pub fn routes() -> axum::Router<Arc<Roles>> {
    use axum::routing::{get, put};
    let router = axum::Router::new();
    let router = if std::env::var(FAULT_INJECTION_ENV).is_ok_and(|v| v == "1") {
        router.route("/v1/debug/partition", put(put_partition))
    } else {
        router
    };
    router
        .route("/v1/cluster/members", get(members))
        .route("/v1/cluster/placement/{ns}", get(placement))
        .route("/v1/cluster/ring", get(ring))
        .route(
            "/v1/cluster/claims/{ns}",
            put(put_claim).delete(delete_claim),
        )
        .route("/v1/cluster/pins/{ns}", put(put_pin).delete(delete_pin))
}

/// Sends `/v1/namespaces/{ns}/...` requests to the namespace's holder: runs the handler here
/// when this node holds it, forwards over QUIC otherwise (following redirects, at most two
/// hops), answers 503 naming the holder when it is down.
pub async fn route_to_holder(
    State(state): State<Arc<Roles>>,
    request: Request,
    next: Next,
) -> Response {
    if request.extensions().get::<Routed>().is_some() {
        return next.run(request).await;
    }
    let Some(namespace) = http_namespace(request.uri().path()).map(str::to_string) else {
        return next.run(request).await;
    };
    if validate_namespace(&namespace).is_err() {
        // The handler answers with the precise validation error.
        return next.run(request).await;
    }
    let intent = http_intent(request.method());
    let Some(principal) = request.extensions().get::<Principal>().cloned() else {
        return ApiError::unauthenticated("the request was not authenticated").into_response();
    };
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, state.body_limit).await {
        Ok(body) => body,
        Err(_) => {
            return ApiError::from_code(
                codes::VALUE_TOO_LARGE,
                format!(
                    "the request body is over this node's limit of {} bytes",
                    state.body_limit
                ),
            )
            .into_response();
        }
    };
    // A long-poll waits here first, holding nothing (a handoff may move the namespace meanwhile;
    // the request then follows it with the time left).
    let long_poll = match LongPoll::from_request(&parts.method, &parts.uri, &parts.headers) {
        Ok(poll) => poll,
        Err(e) => return ApiError::bad_request(e).into_response(),
    };
    if let Some(poll) = &long_poll
        && let Err(e) = wait_while_unchanged(&state.cluster, &state.config, &namespace, poll).await
    {
        return ApiError::from(e).into_response();
    }
    match consistency(parts.uri.query()) {
        Err(e) => return ApiError::bad_request(e).into_response(),
        Ok(Consistency::Stale) if intent == cfgnode_ring::Intent::Read => {
            return stale_read(
                &state,
                &namespace,
                Request::from_parts(parts, Body::from(body)),
                next,
            )
            .await;
        }
        Ok(_) => {}
    }
    let mut hops = 0u8;
    loop {
        let target = match state.cluster.route(&namespace, intent).await {
            Ok(target) => target,
            Err(e) => return ApiError::from(e).into_response(),
        };
        let (node, addr) = match target {
            Target::Local(permit) => {
                let request = Request::from_parts(parts, Body::from(body));
                if intent == cfgnode_ring::Intent::Read {
                    // A read queues nothing: if its client hangs up, dropping it with its
                    // permit leaves nothing behind (and saves a task spawn per read).
                    let response = next.run(request).await;
                    drop(permit);
                    return response;
                }
                // A write runs on even if the client hangs up now, holding the permit until
                // the handler (and its write) is done: see `Permit::run_to_completion`.
                return match permit.run_to_completion(next.run(request)).await {
                    Ok(response) => response,
                    Err(e) => ApiError::internal(format!("the request handler failed: {e}"))
                        .into_response(),
                };
            }
            Target::Remote { node, addr, .. } => (node, addr),
        };
        if hops >= MAX_HOPS {
            return from_wire(moving(&namespace, hops)).into_response();
        }
        hops += 1;
        let (uri, timeout) = match &long_poll {
            Some(poll) => (
                with_wait(&parts.uri, poll.remaining()),
                FORWARD_TIMEOUT.max(poll.remaining() + LONG_POLL_SLACK),
            ),
            None => (
                parts
                    .uri
                    .path_and_query()
                    .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string()),
                FORWARD_TIMEOUT,
            ),
        };
        let forwarded = WireHttpRequest {
            hops,
            method: parts.method.as_str().to_string(),
            uri,
            headers: forwardable(&parts.headers),
            body: body.to_vec(),
        };
        let write = intent == cfgnode_ring::Intent::Write;
        let request = PeerRequest::ForwardHttp {
            principal: principal.name().to_string(),
            http: forwarded,
        };
        let hop = forward_hop(
            &state.cluster,
            &namespace,
            (&node, addr),
            request,
            timeout,
            write,
        );
        match hop.await {
            Ok(Some(WireResponse::Peer(PeerResponse::Http(answer)))) => {
                let mut response = Response::new(Body::from(answer.body));
                *response.status_mut() =
                    StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
                for (name, value) in answer.headers {
                    if HOP_BY_HOP.contains(&name.as_str()) || name == "content-length" {
                        continue;
                    }
                    if let (Ok(name), Ok(value)) = (
                        HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_bytes(&value),
                    ) {
                        response.headers_mut().append(name, value);
                    }
                }
                return response;
            }
            Ok(None) => {}
            Ok(Some(other)) => {
                return ApiError::internal(format!(
                    "node {node} answered a forwarded request with {other:?}"
                ))
                .into_response();
            }
            Err(e) => return from_wire(e).into_response(),
        }
    }
}

fn forwardable(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .filter(|(name, _)| !HOP_BY_HOP.contains(&name.as_str()))
        .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
        .collect()
}

/// An error from another node (or the router's hop limit) as an HTTP answer: its code's status
/// from the one table (`codes::http_status`); a code this node does not know is 502
/// `upstream_error`, with the holder's message.
pub fn from_wire(e: WireError) -> ApiError {
    match codes::known(&e.code) {
        Some(code) => ApiError::from_code(code, e.message),
        None => ApiError::from_code(codes::UPSTREAM_ERROR, e.message),
    }
}

/// `GET /v1/cluster/members`.
pub async fn members(State(state): State<Arc<Roles>>) -> Response {
    Json(json!({ "members": state.cluster.members() })).into_response()
}

/// `GET /v1/cluster/placement/{ns}`.
pub async fn placement(State(state): State<Arc<Roles>>, Path(namespace): Path<String>) -> Response {
    match state.cluster.placement_view(&namespace).await {
        Ok(p) => Json(p).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `GET /v1/cluster/ring`: namespaces per node (held and desired).
pub async fn ring(State(state): State<Arc<Roles>>) -> Response {
    Json(json!({ "nodes": state.cluster.ring_shares() })).into_response()
}

/// How current a read must be (`?consistency=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Consistency {
    /// The default: served by the holder, under its lease, once a quorum has what it read.
    Linearizable,
    /// Served by whichever node received it, from its own copy (a follower's, or none),
    /// however far behind; the answer names the copy's revision.
    Stale,
}

/// The `consistency` query parameter; unknown values are refused (a typo must not silently
/// give a different guarantee).
fn consistency(query: Option<&str>) -> Result<Consistency, String> {
    let value = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(name, _)| *name == "consistency")
        .map(|(_, value)| value);
    match value {
        None | Some("linearizable") => Ok(Consistency::Linearizable),
        Some("stale") => Ok(Consistency::Stale),
        Some(other) => Err(format!(
            "consistency={other:?} is not one of \"linearizable\" (the default) or \"stale\""
        )),
    }
}

/// A `?consistency=stale` read: answered here from this node's own copy, with no routing and
/// no quorum, with `x-cfgnode-revision` naming the copy's revision (0: no copy here, and the
/// read answers as for an unknown namespace) and `x-cfgnode-consistency: stale`.
async fn stale_read(state: &Roles, namespace: &str, mut request: Request, next: Next) -> Response {
    let ns = namespace.to_string();
    let revision = crate::blocking::read(state.config.store(), move |s| s.namespace(&ns))
        .await
        .ok()
        .flatten()
        .map_or(0, |s| s.revision);
    request.extensions_mut().insert(Routed);
    let mut response = crate::replication::holder::stale(next.run(request)).await;
    let headers = response.headers_mut();
    headers.insert("x-cfgnode-revision", revision.into());
    headers.insert(
        "x-cfgnode-consistency",
        axum::http::HeaderValue::from_static("stale"),
    );
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionBody {
    /// The nodes this one stops exchanging datagrams and peer requests with (empty heals).
    cut: Vec<String>,
}

/// `PUT /v1/debug/partition` `{"cut":["n2"]}` (only with `CFGNODE_FAULT_INJECTION=1`): cuts
/// this node off from those nodes, as `Node::cut_off_from` does for in-process tests.
async fn put_partition(State(state): State<Arc<Roles>>, body: Bytes) -> Response {
    let parsed: PartitionBody = match serde_json::from_slice(&body) {
        Ok(parsed) => parsed,
        Err(e) => {
            return ApiError::bad_request(format!("expected {{\"cut\":[\"node-id\", ...]}}: {e}"))
                .into_response();
        }
    };
    state.cluster.peers().links().cut(&parsed.cut);
    tracing::warn!(cut = ?parsed.cut, "fault injection: peer traffic cut");
    Json(json!({ "cut": parsed.cut })).into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NodeBody {
    node: Option<String>,
    /// Pins only: keep the namespace on the node even while it is down.
    strict: Option<bool>,
}

fn body_from(body: &Bytes) -> Result<NodeBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(NodeBody::default());
    }
    serde_json::from_slice::<NodeBody>(body)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"node\": \"ID\"}}: {e}")))
}

async fn directive(
    state: &Roles,
    kind: DirectiveKind,
    namespace: &str,
    target: Option<String>,
    strict: bool,
) -> Response {
    match state
        .cluster
        .set_directive(kind, namespace, target, strict)
        .await
    {
        Ok(p) => Json(p).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `PUT /v1/cluster/claims/{ns}` with `{"node": "ID"}` (default: this node).
pub async fn put_claim(
    State(state): State<Arc<Roles>>,
    Path(namespace): Path<String>,
    body: Bytes,
) -> Response {
    let node = match body_from(&body) {
        Ok(NodeBody {
            strict: Some(_), ..
        }) => {
            return ApiError::bad_request(
                "\"strict\" applies to pins only (PUT /v1/cluster/pins/{ns}); a claim always fails over",
            )
            .into_response();
        }
        Ok(body) => body.node.unwrap_or_else(|| state.cluster.me().to_string()),
        Err(e) => return e.into_response(),
    };
    directive(&state, DirectiveKind::Claim, &namespace, Some(node), false).await
}

/// `DELETE /v1/cluster/claims/{ns}`: release.
pub async fn delete_claim(
    State(state): State<Arc<Roles>>,
    Path(namespace): Path<String>,
) -> Response {
    directive(&state, DirectiveKind::Claim, &namespace, None, false).await
}

/// `PUT /v1/cluster/pins/{ns}` with `{"node": "ID"}`, and `"strict": true` to keep the
/// namespace there even while the node is down.
pub async fn put_pin(
    State(state): State<Arc<Roles>>,
    Path(namespace): Path<String>,
    body: Bytes,
) -> Response {
    match body_from(&body) {
        Ok(NodeBody {
            node: Some(node),
            strict,
        }) => {
            let strict = strict.unwrap_or(false);
            directive(&state, DirectiveKind::Pin, &namespace, Some(node), strict).await
        }
        Ok(NodeBody { node: None, .. }) => {
            ApiError::bad_request("a pin needs a node: send {\"node\": \"ID\"}").into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `DELETE /v1/cluster/pins/{ns}`: unpin.
pub async fn delete_pin(
    State(state): State<Arc<Roles>>,
    Path(namespace): Path<String>,
) -> Response {
    directive(&state, DirectiveKind::Pin, &namespace, None, false).await
}
