//! Serving a request wherever it arrives: here when this node holds the namespace, else
//! forwarded to the holder over QUIC (or, for callers that follow redirects, answered with a
//! redirect). A node that receives a forwarded request never forwards it again: it serves or
//! redirects, and the forwarding node follows at most [`MAX_HOPS`] hops in all.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method};
use cfgnode_ring::Intent;
use cfgnode_transport::{
    ClusterRequest, ClusterResponse, ConfigRequest, ConfigResponse, MAX_FRAME_BYTES, PeerClaim,
    PeerRequest, PeerResponse, PushRequest, Request, Response, WireError, WireHttpRequest,
    WireHttpResponse, codes,
};
use tower::ServiceExt;

use super::{Cluster, FORWARD_TIMEOUT, MAX_HOPS, Target, handoff, sync};
use crate::auth::Principal;
use crate::config_service::ConfigService;
use crate::push::longpoll::{LongPoll, MAX_WAIT, Waited, wait_for_state, wait_while_unchanged};
use crate::wire_api;
use std::time::Duration;
use tokio::time::Instant;

/// Marks an HTTP request replayed on the holder: the routing middleware lets it through (a
/// request extension, so no client can set it).
#[derive(Clone, Copy, Debug)]
pub struct Routed;

/// Largest HTTP response body carried back to a forwarding node.
const MAX_FORWARDED_BODY: usize = MAX_FRAME_BYTES - 64 * 1024;

/// What serving a QUIC request needs.
#[derive(Clone, Debug)]
pub struct Serving {
    /// The cluster role.
    pub cluster: Cluster,
    /// The config role.
    pub service: ConfigService,
    /// The HTTP router, to replay forwarded HTTP requests.
    pub http: axum::Router,
    /// The agents that heartbeat to this node.
    pub agents: crate::push::Agents,
}

/// Answers one QUIC request from an authenticated client.
pub async fn serve_request(
    serving: &Serving,
    principal: &Principal,
    follow_redirects: bool,
    request: Request,
) -> Result<Response, WireError> {
    let cluster = &serving.cluster;
    match request {
        Request::Cluster(ClusterRequest::Members) => Ok(Response::Cluster(
            ClusterResponse::Members(cluster.members()),
        )),
        Request::Cluster(ClusterRequest::Placement { namespace }) => cluster
            .placement(&namespace)
            .map(|answer| Response::Cluster(ClusterResponse::Placement(answer))),
        Request::Cluster(ClusterRequest::Ring) => Ok(Response::Cluster(ClusterResponse::Ring(
            cluster.ring_shares(),
        ))),
        Request::Cluster(ClusterRequest::Claim { namespace, node }) => {
            let node = node.unwrap_or_else(|| cluster.me().to_string());
            cluster
                .set_directive(super::DirectiveKind::Claim, &namespace, Some(node))
                .await
                .map(|answer| Response::Cluster(ClusterResponse::Placement(answer)))
        }
        Request::Cluster(ClusterRequest::Release { namespace }) => cluster
            .set_directive(super::DirectiveKind::Claim, &namespace, None)
            .await
            .map(|answer| Response::Cluster(ClusterResponse::Placement(answer))),
        Request::Cluster(ClusterRequest::Pin { namespace, node }) => cluster
            .set_directive(super::DirectiveKind::Pin, &namespace, Some(node))
            .await
            .map(|answer| Response::Cluster(ClusterResponse::Placement(answer))),
        Request::Cluster(ClusterRequest::Unpin { namespace }) => cluster
            .set_directive(super::DirectiveKind::Pin, &namespace, None)
            .await
            .map(|answer| Response::Cluster(ClusterResponse::Placement(answer))),
        request @ (Request::Push(PushRequest::AgentHeartbeat(_))
        | Request::Push(PushRequest::AgentLeave { .. })
        | Request::Push(PushRequest::Agents { .. })) => {
            crate::push::agents::serve(cluster, &serving.agents, request).await
        }
        Request::Config(ConfigRequest::Namespaces {
            prefix,
            cursor,
            limit,
        }) => super::listing::namespaces(cluster, &serving.service, &prefix, cursor, limit)
            .await
            .map(|answer| Response::Config(ConfigResponse::Namespaces(answer))),
        request => match request.routed_namespace().map(str::to_string) {
            None => wire_api::handle(&serving.service, principal, request).await,
            Some(namespace) => {
                serve_routed(
                    &serving.cluster,
                    &serving.service,
                    principal,
                    follow_redirects,
                    &namespace,
                    request,
                )
                .await
            }
        },
    }
}

/// Answers one node-to-node request from `peer`, which proved the cluster key on this
/// connection (so its node id is authentic).
pub async fn serve_peer_request(
    serving: &Serving,
    peer: &PeerClaim,
    request: PeerRequest,
) -> Result<Response, WireError> {
    let cluster = &serving.cluster;
    match request {
        PeerRequest::Forward {
            principal, request, ..
        } => {
            let principal = forwarded_principal(&principal)?;
            serve_forwarded(serving, &principal, request).await
        }
        PeerRequest::ForwardHttp { principal, http } => {
            let principal = forwarded_principal(&principal)?;
            serve_forwarded_http(serving, principal, http).await
        }
        PeerRequest::HeldNamespaces {
            prefix,
            cursor,
            limit,
        } => {
            super::listing::held_here(cluster, &serving.service, &prefix, cursor.as_deref(), limit)
                .await
                .map(|answer| Response::Config(ConfigResponse::Namespaces(answer)))
        }
        PeerRequest::LocalAgents => {
            crate::push::agents::serve(
                cluster,
                &serving.agents,
                Request::Push(PushRequest::Agents { local_only: true }),
            )
            .await
        }
        PeerRequest::ClusterSync { digest } => Ok(sync::answer(cluster, digest)),
        PeerRequest::ClusterPush { updates } => sync::merge_pushed(cluster, &updates),
        PeerRequest::CreateCheck { namespace } => cluster
            .answer_create_check(&namespace)
            .map(|answer| Response::Peer(PeerResponse::CreateCheck(answer))),
        PeerRequest::HandoffOffer { namespace, epoch } => {
            handoff::on_offer(cluster, &peer.node_id, &namespace, epoch).await
        }
        PeerRequest::HandoffChunk {
            namespace,
            epoch,
            ops,
        } => handoff::on_chunk(cluster, &peer.node_id, &namespace, epoch, &ops).await,
        PeerRequest::HandoffCommit {
            namespace,
            epoch,
            revision,
        } => handoff::on_commit(cluster, &peer.node_id, &namespace, epoch, revision).await,
    }
}

/// The principal a forwarding node vouches for (it checked the caller's token itself).
fn forwarded_principal(name: &str) -> Result<Principal, WireError> {
    Principal::from_name(name).ok_or_else(|| {
        WireError::new(
            codes::MALFORMED,
            format!("forwarded request for an unknown principal {name:?}"),
        )
    })
}

fn intent_of(request: &Request) -> Intent {
    if request.is_write() {
        Intent::Write
    } else {
        Intent::Read
    }
}

/// A client's request for `namespace`: serve, redirect, or forward (following redirects).
/// Also how this node's own watch hub reads namespaces wherever they are held.
pub async fn serve_routed(
    cluster: &Cluster,
    service: &ConfigService,
    principal: &Principal,
    follow_redirects: bool,
    namespace: &str,
    request: Request,
) -> Result<Response, WireError> {
    let intent = intent_of(&request);
    let mut request = request;
    settle_wait(cluster, service, &mut request).await?;
    let mut hops = 0u8;
    loop {
        let target = cluster
            .route(namespace, intent)
            .await
            .map_err(|e| e.to_wire())?;
        let (node, addr) = match &target {
            Target::Local(_) => {
                let answer = wire_api::handle(service, principal, request).await;
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

/// How long a request may wait on its holder before answering (an `Events` long-poll).
fn waits_for(request: &Request) -> Duration {
    match request {
        Request::Push(PushRequest::Events { wait_ms, .. }) => {
            Duration::from_millis(u64::from(*wait_ms))
        }
        _ => Duration::ZERO,
    }
}

/// Does the waiting part of an `Events` long-poll here when this node holds the namespace,
/// holding no gate permit (see [`wait_for_state`]): afterwards the request asks for no more
/// wait, or (when the namespace is held elsewhere) for the time left, to be forwarded.
async fn settle_wait(
    cluster: &Cluster,
    service: &ConfigService,
    request: &mut Request,
) -> Result<(), WireError> {
    let Request::Push(PushRequest::Events {
        namespace,
        after: Some(after),
        wait_ms,
        ..
    }) = request
    else {
        return Ok(());
    };
    if *wait_ms == 0 {
        return Ok(());
    }
    let wait = Duration::from_millis(u64::from(*wait_ms)).min(MAX_WAIT);
    let deadline = Instant::now() + wait;
    let after = *after;
    let waited = wait_for_state(cluster, service, namespace, deadline, |state| {
        state.map_or(0, |s| s.revision) > after
    })
    .await
    .map_err(|e| e.to_wire())?;
    *wait_ms = match waited {
        Waited::Moved => u32::try_from(
            deadline
                .saturating_duration_since(Instant::now())
                .as_millis(),
        )
        .unwrap_or(u32::MAX),
        Waited::Changed | Waited::TimedOut => 0,
    };
    Ok(())
}

/// A request another node forwarded: serve it here, or redirect. Never forwarded again.
async fn serve_forwarded(
    serving: &Serving,
    principal: &Principal,
    request: Request,
) -> Result<Response, WireError> {
    let mut request = request;
    settle_wait(&serving.cluster, &serving.service, &mut request).await?;
    let Some(namespace) = request.routed_namespace().map(str::to_string) else {
        return Err(WireError::new(
            codes::MALFORMED,
            "only namespace requests are forwarded",
        ));
    };
    let target = serving
        .cluster
        .route(&namespace, intent_of(&request))
        .await
        .map_err(|e| e.to_wire())?;
    match target.redirect(&namespace) {
        Some(redirect) => Ok(Response::Redirect(redirect)),
        None => {
            let answer = wire_api::handle(&serving.service, principal, request).await;
            drop(target);
            answer
        }
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

/// An HTTP request another node forwarded: replay it through this node's router if this node
/// holds the namespace, else redirect.
async fn serve_forwarded_http(
    serving: &Serving,
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
        .map_err(|e| WireError::new("invalid_request", e))?;
    if let Some(poll) = &poll {
        wait_while_unchanged(&serving.cluster, &serving.service, &namespace, poll)
            .await
            .map_err(|e| e.to_wire())?;
    }
    let target = serving
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
        .run_to_completion(serving.http.clone().oneshot(request))
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
