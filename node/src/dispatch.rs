//! Where a request goes once its front end (QUIC or HTTP) has authenticated it: routed to its
//! namespace's holder (`cluster`), then served by its role (`roles`) on the node that holds
//! it. Client requests and the node-to-node requests of authenticated peers both start here.

use axum::Router;
use cfgnode_transport::{
    ConfigResponse, PeerClaim, PeerRequest, PeerResponse, PushRequest, Request, Response,
    WireError, codes,
};

use crate::auth::Principal;
use crate::cluster::{handoff, intent_of, serve_routed, sync};
use crate::roles::push::longpoll::settle_wait;
use crate::roles::{Roles, serve_local};

/// Answers one QUIC request from an authenticated client: a namespace request is routed to
/// the holder (served here, forwarded, or redirected when the caller follows redirects); any
/// other is served by this node.
pub async fn serve_request(
    roles: &Roles,
    principal: &Principal,
    follow_redirects: bool,
    request: Request,
) -> Result<Response, WireError> {
    let Some(namespace) = request.routed_namespace().map(str::to_string) else {
        return serve_local(roles, principal, request).await;
    };
    let mut request = request;
    settle_wait(&roles.cluster, &roles.config, &mut request).await?;
    serve_routed(
        &roles.cluster,
        principal,
        follow_redirects,
        &namespace,
        request,
        async |request| serve_local(roles, principal, request).await,
    )
    .await
}

/// Answers one node-to-node request from `peer`, which proved the cluster key on this
/// connection (so its node id is authentic). `http` replays forwarded HTTP requests.
pub async fn serve_peer_request(
    roles: &Roles,
    http: &Router,
    peer: &PeerClaim,
    request: PeerRequest,
) -> Result<Response, WireError> {
    let cluster = &roles.cluster;
    match request {
        PeerRequest::Forward {
            principal, request, ..
        } => {
            let principal = forwarded_principal(&principal)?;
            serve_forwarded(roles, &principal, request).await
        }
        PeerRequest::ForwardHttp {
            principal,
            http: forwarded,
        } => {
            let principal = forwarded_principal(&principal)?;
            crate::http::replay::serve_forwarded_http(roles, http, principal, forwarded).await
        }
        PeerRequest::HeldNamespaces {
            prefix,
            cursor,
            limit,
        } => crate::roles::config::listing::held_here(
            cluster,
            &roles.config,
            &prefix,
            cursor.as_deref(),
            limit,
        )
        .await
        .map(|answer| Response::Config(ConfigResponse::Namespaces(answer))),
        PeerRequest::LocalAgents => {
            crate::roles::push::agents::serve(
                cluster,
                &roles.push.agents,
                PushRequest::Agents { local_only: true },
            )
            .await
        }
        // The cluster's own requests: `?` turns a `ClusterError` into its wire error.
        PeerRequest::ClusterSync { digest } => Ok(sync::answer(cluster, digest)),
        PeerRequest::ClusterPush { updates } => Ok(sync::merge_pushed(cluster, &updates)?),
        PeerRequest::CreateCheck { namespace } => {
            let answer = cluster.answer_create_check(&namespace)?;
            Ok(Response::Peer(PeerResponse::CreateCheck(answer)))
        }
        PeerRequest::HandoffOffer { namespace, epoch } => {
            Ok(handoff::on_offer(cluster, &peer.node_id, &namespace, epoch).await?)
        }
        PeerRequest::HandoffChunk {
            namespace,
            epoch,
            ops,
        } => Ok(handoff::on_chunk(cluster, &peer.node_id, &namespace, epoch, &ops).await?),
        PeerRequest::HandoffCommit {
            namespace,
            epoch,
            revision,
        } => Ok(handoff::on_commit(cluster, &peer.node_id, &namespace, epoch, revision).await?),
        PeerRequest::ReplicaAppend {
            namespace,
            epoch,
            replicas,
            base,
            to,
            ops,
            set_version,
        } => {
            let holding = cluster.holder(&namespace);
            let state = roles
                .replication
                .on_append(
                    &peer.node_id,
                    holding,
                    &namespace,
                    epoch,
                    (replicas, set_version),
                    base,
                    to,
                    &ops,
                )
                .await?;
            Ok(Response::Peer(PeerResponse::Replica(Some(state))))
        }
        PeerRequest::ReplicaPromise { namespace, epoch } => {
            let state = roles
                .replication
                .on_promise(&peer.node_id, cluster.holder(&namespace), &namespace, epoch)
                .await?;
            Ok(Response::Peer(PeerResponse::Replica(Some(state))))
        }
        PeerRequest::ReplicaState { namespace } => Ok(Response::Peer(PeerResponse::Replica(
            roles.replication.on_state(&namespace)?,
        ))),
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

/// A request another node forwarded: serve it here, or redirect. Never forwarded again.
async fn serve_forwarded(
    roles: &Roles,
    principal: &Principal,
    request: Request,
) -> Result<Response, WireError> {
    let mut request = request;
    settle_wait(&roles.cluster, &roles.config, &mut request).await?;
    let Some(namespace) = request.routed_namespace().map(str::to_string) else {
        return Err(WireError::new(
            codes::MALFORMED,
            "only namespace requests are forwarded",
        ));
    };
    let target = roles
        .cluster
        .route(&namespace, intent_of(&request))
        .await
        .map_err(|e| e.to_wire())?;
    match target.redirect(&namespace) {
        Some(redirect) => Ok(Response::Redirect(redirect)),
        None => {
            let answer = serve_local(roles, principal, request).await;
            drop(target);
            answer
        }
    }
}
