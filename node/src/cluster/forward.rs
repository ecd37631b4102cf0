//! Serving a request wherever its namespace is held: here when this node holds it, else
//! forwarded to the holder over QUIC (or, for callers that follow redirects, answered with a
//! redirect). A node that receives a forwarded request never forwards it again: it serves or
//! redirects, and the forwarding node follows at most [`MAX_HOPS`] hops in all.
//!
//! What "serve it here" means is the caller's: [`serve_routed`] takes the local server as a
//! function, so the cluster routes requests of every role without knowing any of them.

use std::time::Duration;

use axum::http::Method;
use cfgnode_ring::Intent;
use cfgnode_transport::registry::RegistryRequest;
use cfgnode_transport::{PeerRequest, PushRequest, Request, Response, WireError, codes};

use super::{Cluster, FORWARD_TIMEOUT, MAX_HOPS, Target, sync};
use crate::auth::Principal;

/// Whether a request changes its namespace (or placement).
pub fn intent_of(request: &Request) -> Intent {
    if request.is_write() {
        Intent::Write
    } else {
        Intent::Read
    }
}

/// A client's request for `namespace`: served by `local` when this node holds it (under the
/// namespace's permit), else redirected or forwarded (following redirects). Also how this
/// node's own watch hub reads namespaces wherever they are held.
pub async fn serve_routed<F>(
    cluster: &Cluster,
    principal: &Principal,
    follow_redirects: bool,
    namespace: &str,
    request: Request,
    local: F,
) -> Result<Response, WireError>
where
    F: AsyncFnOnce(Request) -> Result<Response, WireError>,
{
    let intent = intent_of(&request);
    let mut hops = 0u8;
    let mut local = Some(local);
    loop {
        let target = cluster
            .route(namespace, intent)
            .await
            .map_err(|e| e.to_wire())?;
        let (node, addr) = match &target {
            Target::Local(_) => {
                let serve = local
                    .take()
                    .expect("the local server runs at most once: it returns");
                let answer = serve(request).await;
                drop(target);
                return answer;
            }
            Target::Remote { node, addr, .. } => (node.clone(), *addr),
        };
        if follow_redirects && let Some(redirect) = target.redirect(namespace) {
            cluster.metrics().redirects.inc();
            return Ok(Response::Redirect(redirect));
        }
        if hops >= MAX_HOPS {
            return Err(moving(namespace, hops));
        }
        hops += 1;
        let forwarded = PeerRequest::Forward {
            hops,
            principal: principal.name().to_string(),
            request: request.clone(),
        };
        let write = request.is_write();
        let target = (node.as_str(), addr);
        let hop = forward_hop(
            cluster,
            namespace,
            target,
            forwarded,
            FORWARD_TIMEOUT + waits_for(&request),
            write,
        );
        if let Some(answer) = hop.await? {
            return Ok(answer);
        }
    }
}

/// Sends a forwarded request (QUIC or HTTP) to `node` at `addr`: `Some` answer, or `None` when
/// the node redirected (route again). A redirect is merged into the map, and for a namespace nobody holds yet (the two nodes disagree on its desired owner: one
/// lacks a pin, claim or member) the maps are exchanged with `node` before routing again. An
/// unreachable holder is an error that says whether a write may have been applied.
pub async fn forward_hop(
    cluster: &Cluster,
    namespace: &str,
    (node, addr): (&str, std::net::SocketAddr),
    request: PeerRequest,
    timeout: std::time::Duration,
    write: bool,
) -> Result<Option<Response>, WireError> {
    let transport = if matches!(request, PeerRequest::ForwardHttp { .. }) {
        "http"
    } else {
        "quic"
    };
    cluster
        .metrics()
        .forwarded
        .get_or_create(&crate::metrics::ForwardLabels { transport })
        .inc();
    match cluster.peers().call(addr, request, timeout).await {
        Ok(Response::Redirect(redirect)) => {
            tracing::debug!(
                namespace,
                from = node,
                to = redirect.holder,
                "following a redirect"
            );
            cluster.learn(&redirect, node);
            if redirect.epoch == 0 {
                sync::sync_with(cluster, node).await;
            }
            Ok(None)
        }
        Ok(answer) => Ok(Some(answer)),
        Err(e) => Err(unreachable_holder(e, namespace, node, write)),
    }
}

/// The error after `hops` hops without finding the holder.
pub fn moving(namespace: &str, hops: u8) -> WireError {
    WireError::new(
        codes::MOVING,
        format!(
            "namespace {namespace:?} is moving between nodes: not found on its holder after {hops} hops; retry in a moment"
        ),
    )
}

fn unreachable_holder(e: super::PeerError, namespace: &str, node: &str, write: bool) -> WireError {
    match e {
        super::PeerError::Answered(e) => e,
        super::PeerError::Unreachable(why) => WireError::new(
            codes::UNAVAILABLE,
            if write {
                format!(
                    "the holder {node} of namespace {namespace:?} could not be reached ({why}); the write may or may not have been applied: read before retrying"
                )
            } else {
                format!(
                    "the holder {node} of namespace {namespace:?} could not be reached ({why}); retry"
                )
            },
        ),
    }
}

/// How long a request may wait on its holder before answering (an `Events` or a registry
/// `Service` long-poll): without it a forwarded long-poll would time out mid-wait.
fn waits_for(request: &Request) -> Duration {
    match request {
        Request::Push(PushRequest::Events { wait_ms, .. }) => {
            Duration::from_millis(u64::from(*wait_ms))
        }
        Request::Registry(RegistryRequest::Service {
            wait: Some(wait), ..
        }) => Duration::from_millis(u64::from(wait.wait_ms)),
        _ => Duration::ZERO,
    }
}

/// The namespace an HTTP path is about: `/v1/namespaces/{ns}/...` (not the listing itself).
pub fn http_namespace(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/namespaces/")?;
    let (namespace, tail) = rest.split_once('/')?;
    (!namespace.is_empty() && !tail.is_empty()).then_some(namespace)
}

/// Whether an HTTP method changes the namespace.
pub fn http_intent(method: &Method) -> Intent {
    if method == Method::GET || method == Method::HEAD {
        Intent::Read
    } else {
        Intent::Write
    }
}

#[cfg(test)]
mod tests {
    use cfgnode_transport::registry::{WireInstanceFilter, WireWait};

    use super::*;

    #[test]
    fn long_polls_wait_on_top_of_the_forward_timeout() {
        let service = |wait: Option<WireWait>| {
            Request::Registry(RegistryRequest::Service {
                namespace: "shop".into(),
                service: "web".into(),
                filter: WireInstanceFilter::default(),
                wait,
            })
        };
        let waiting = service(Some(WireWait {
            etag: "\"e\"".into(),
            wait_ms: 30_000,
        }));
        assert_eq!(waits_for(&waiting), Duration::from_secs(30));
        assert_eq!(waits_for(&service(None)), Duration::ZERO);
        let events = Request::Push(PushRequest::Events {
            namespace: "shop".into(),
            after: Some(1),
            limit: 10,
            wait_ms: 500,
        });
        assert_eq!(waits_for(&events), Duration::from_millis(500));
    }
}
