//! Replaying an HTTP request another node forwarded: through this node's own router, so a
//! forwarded request gets exactly the answer a direct one would (same handlers, same errors).

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method};
use cfgnode_transport::{
    MAX_FRAME_BYTES, PeerResponse, Response, WireError, WireHttpRequest, WireHttpResponse, codes,
};
use tower::ServiceExt;

use crate::auth::Principal;
use crate::cluster::{Target, http_intent, http_namespace};
use crate::roles::Roles;
use crate::roles::push::longpoll::{LongPoll, wait_while_unchanged};

/// Marks an HTTP request replayed on the holder: the routing middleware lets it through (a
/// request extension, so no client can set it).
#[derive(Clone, Copy, Debug)]
pub struct Routed;

/// Largest HTTP response body carried back to a forwarding node.
const MAX_FORWARDED_BODY: usize = MAX_FRAME_BYTES - 64 * 1024;

/// An HTTP request another node forwarded: replay it through this node's router if this node
/// holds the namespace, else redirect.
pub async fn serve_forwarded_http(
    roles: &Roles,
    http_router: &Router,
    principal: Principal,
    http: WireHttpRequest,
) -> Result<Response, WireError> {
    let malformed = |why: String| WireError::new(codes::MALFORMED, why);
    let method = Method::from_bytes(http.method.as_bytes())
        .map_err(|e| malformed(format!("bad method: {e}")))?;
    let uri: axum::http::Uri = http
        .uri
        .parse()
        .map_err(|e| malformed(format!("bad uri: {e}")))?;
    let Some(namespace) = http_namespace(uri.path()).map(str::to_string) else {
        return Err(malformed("only namespace routes are forwarded".to_string()));
    };
    let intent = http_intent(&method);
    let mut builder = axum::http::Request::builder().method(method).uri(uri);
    for (name, value) in &http.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| malformed(format!("bad header name: {e}")))?;
        let value =
            HeaderValue::from_bytes(value).map_err(|e| malformed(format!("bad header: {e}")))?;
        builder = builder.header(name, value);
    }
    let mut request = builder
        .body(Body::from(http.body))
        .map_err(|e| malformed(format!("bad request: {e}")))?;
    // A long-poll waits before taking the namespace's gate (see push::longpoll).
    let poll = LongPoll::from_request(request.method(), request.uri(), request.headers())
        .map_err(|e| WireError::new(codes::INVALID_REQUEST, e))?;
    if let Some(poll) = &poll {
        wait_while_unchanged(&roles.cluster, &roles.config, &namespace, poll)
            .await
            .map_err(|e| e.to_wire())?;
    }
    let target = roles
        .cluster
        .route(&namespace, intent)
        .await
        .map_err(|e| e.to_wire())?;
    let permit = match target {
        Target::Local(permit) => permit,
        remote @ Target::Remote { .. } => {
            let redirect = remote
                .redirect(&namespace)
                .expect("a remote target always has a redirect");
            return Ok(Response::Redirect(redirect));
        }
    };
    request.extensions_mut().insert(Routed);
    request.extensions_mut().insert(principal);
    // Same rule as for a client's own HTTP request: the permit lasts until the handler is
    // done, even if this future is dropped (see `Permit::run_to_completion`).
    let response = permit
        .run_to_completion(http_router.clone().oneshot(request))
        .await
        .map_err(|e| WireError::new(codes::INTERNAL, e.to_string()))?
        .map_err(|e| WireError::new(codes::INTERNAL, e.to_string()))?;
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, MAX_FORWARDED_BODY)
        .await
        .map_err(|e| {
            WireError::new(
                codes::FRAME_TOO_LARGE,
                format!("the answer is too large to forward ({e}); ask the holder directly"),
            )
        })?;
    Ok(Response::Peer(PeerResponse::Http(WireHttpResponse {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
            .collect(),
        body: body.to_vec(),
    })))
}
