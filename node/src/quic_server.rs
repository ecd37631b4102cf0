//! The QUIC front end: one request per bidirectional stream, answered like the HTTP API.
//!
//! Two kinds of connection, told apart by their ALPN:
//! - **client** (`cfgnode/1`): each stream carries a small header frame (read with a
//!   [`MAX_HEADER_BYTES`] bound) whose token is checked before the request frame is read, so an
//!   unauthenticated caller never makes the node buffer more than a header per stream. Client
//!   connections never carry SWIM datagrams or node-to-node requests.
//! - **peer** (`cfgnode-peer/1`): the first stream must prove the cluster key
//!   ([`accept_handshake`]) within a few seconds, or the connection is closed; only then are its
//!   datagrams read (SWIM) and its streams served as [`PeerRequest`]s.
//!
//! Connections are capped in total and per remote IP before their TLS handshake. Every stream is
//! independent: a malformed, oversized, unauthenticated or slow request gets an error frame (or
//! a timeout) on its own stream and never disturbs other streams or connections.

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use cfgnode_transport::{
    DecodeError, FrameError, MAX_FRAME_BYTES, MAX_HEADER_BYTES, PEER_ALPN, PeerClaim, PeerEnvelope,
    PushRequest, PushResponse, Request, RequestHeader, Response, ResponseEnvelope, StreamError,
    WireError, accept_handshake, codes, decode_payload, encode_payload, negotiated_alpn,
    read_frame, write_frame,
};
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::dispatch::{serve_peer_request, serve_request};
use crate::membership::{DatagramLinks, PeerLink, check_node_certificate, count_auth_failure};
use crate::metrics::ReasonLabels;
use crate::roles::Roles;
use crate::roles::push::watch::{WatchSpec, item_bytes, open as open_watch};
use crate::shutdown::until_stopped;

/// How long a peer may take to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a peer may take to send its request frame.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for peers to acknowledge the connection closes.
const CLOSE_GRACE: Duration = Duration::from_millis(300);
/// How long in-flight requests may run after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections the node keeps at once, all peers and clients together. With the per-connection
/// receive window, this bounds what QUIC can buffer for callers.
pub const MAX_CONNECTIONS: usize = 1024;
/// Connections one remote IP may keep at once (a node and its clients on one host stay far
/// below; a flood from one host cannot take every slot).
pub const MAX_CONNECTIONS_PER_IP: usize = 256;

/// Open connections by remote IP, for the caps.
#[derive(Debug, Default)]
struct ConnectionCounts {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Holds one connection's slot; dropping it frees the slot.
struct ConnectionSlot<'a> {
    counts: &'a ConnectionCounts,
    ip: IpAddr,
}

impl ConnectionCounts {
    /// Takes a slot for a connection from `ip`, or says which cap is full.
    fn take(&self, ip: IpAddr) -> Result<ConnectionSlot<'_>, &'static str> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = per_ip.values().sum();
        if total >= MAX_CONNECTIONS {
            return Err("total_cap");
        }
        let mine = per_ip.entry(ip).or_default();
        if *mine >= MAX_CONNECTIONS_PER_IP {
            return Err("per_ip_cap");
        }
        *mine += 1;
        Ok(ConnectionSlot { counts: self, ip })
    }
}

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        let mut per_ip = self.counts.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// What the QUIC front end needs to answer requests.
#[derive(Debug)]
pub struct QuicContext {
    /// The roles, the cluster, and what authentication needs.
    pub roles: Arc<Roles>,
    /// The HTTP router, to replay HTTP requests other nodes forward.
    pub http: axum::Router,
    /// This node's cluster id; requests naming another are refused.
    pub cluster_id: String,
    /// This node's id, sent in every answer.
    pub node_id: String,
    /// Authenticated peer connections also carry SWIM datagrams.
    pub links: DatagramLinks,
}

/// Accepts connections until `shutdown` turns true, then lets in-flight requests finish (up to
/// a deadline) and closes the endpoint.
pub async fn serve(endpoint: Endpoint, ctx: Arc<QuicContext>, shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    let counts = Arc::new(ConnectionCounts::default());
    // A separate receiver for this loop's own wait, so connection tasks can take clones.
    let mut stop = shutdown.clone();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let ctx = Arc::clone(&ctx);
                let shutdown = shutdown.clone();
                let counts = Arc::clone(&counts);
                connections.spawn(async move {
                    let ip = incoming.remote_address().ip();
                    let _slot = match counts.take(ip) {
                        Ok(slot) => slot,
                        Err(reason) => {
                            tracing::debug!(%ip, reason, "QUIC connection refused at the cap");
                            ctx.roles
                                .cluster
                                .metrics()
                                .quic_connections_refused
                                .get_or_create(&ReasonLabels { reason })
                                .inc();
                            incoming.refuse();
                            return;
                        }
                    };
                    let connection = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
                        Ok(Ok(connection)) => connection,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "QUIC handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("QUIC handshake timed out");
                            return;
                        }
                    };
                    serve_connection(connection, ctx, shutdown).await;
                });
            }
            _ = stop.wait_for(|stop| *stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    endpoint.set_server_config(None);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("QUIC requests still running after the drain deadline; closing");
        connections.abort_all();
    }
    endpoint.close(0u32.into(), b"node shutting down");
    // Waiting for every peer to acknowledge the close can take several round-trip timeouts per
    // connection; the close frames are already sent, and peers that miss them time out.
    let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
}

async fn serve_connection(
    connection: Connection,
    ctx: Arc<QuicContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let remote = connection.remote_address();
    let peer = if negotiated_alpn(&connection).as_deref() == Some(PEER_ALPN) {
        let proved = match check_node_certificate(&connection) {
            Ok(()) => accept_handshake(&connection, &ctx.links.credentials()).await,
            Err(e) => Err(e),
        };
        match proved {
            Ok(claim) => {
                ctx.links.adopt(PeerLink {
                    connection: connection.clone(),
                    claim: claim.clone(),
                });
                Some(Arc::new(claim))
            }
            Err(e) => {
                count_auth_failure(ctx.roles.cluster.metrics(), &e);
                tracing::warn!(%remote, error = %e, "peer connection refused: it did not prove the cluster key");
                connection.close(1u32.into(), b"peer authentication failed");
                return;
            }
        }
    } else {
        None
    };
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            stream = connection.accept_bi() => match stream {
                Ok((send, recv)) => {
                    let ctx = Arc::clone(&ctx);
                    match &peer {
                        // A test's partition: the request is lost, as on a cut network.
                        Some(claim) if ctx.links.requests_dropped(&claim.node_id) => drop((send, recv)),
                        Some(claim) => {
                            let claim = Arc::clone(claim);
                            streams.spawn(async move { serve_peer_stream(send, recv, &ctx, &claim).await });
                        }
                        None => {
                            streams.spawn(async move { serve_stream(send, recv, &ctx).await });
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(%remote, error = %e, "QUIC connection ended");
                    break;
                }
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
    // Requests already accepted finish and are answered before the connection is dropped.
    while streams.join_next().await.is_some() {}
    connection.close(0u32.into(), b"bye");
}

async fn serve_stream(send: SendStream, mut recv: RecvStream, ctx: &QuicContext) {
    let (request_id, result) = match read_request(&mut recv, ctx).await {
        Ok((header, principal, Request::Push(PushRequest::Watch(request)))) => {
            match WatchSpec::check(request, &principal) {
                Ok(spec) => return serve_watch(send, header.request_id, spec, ctx).await,
                Err(e) => (header.request_id, Err(e)),
            }
        }
        Ok((header, principal, request)) => {
            let result =
                serve_request(&ctx.roles, &principal, header.follow_redirects, request).await;
            (header.request_id, result)
        }
        Err((request_id, error)) => {
            // Nothing more will be read from this stream.
            let _ = recv.stop(0u32.into());
            (request_id, Err(error))
        }
    };
    answer(send, ctx, request_id, result).await;
}

/// Serves one node-to-node request on an authenticated peer connection.
async fn serve_peer_stream(
    send: SendStream,
    mut recv: RecvStream,
    ctx: &QuicContext,
    claim: &PeerClaim,
) {
    let read = tokio::time::timeout(REQUEST_READ_TIMEOUT, read_frame(&mut recv, MAX_FRAME_BYTES))
        .await
        .map_err(|_| WireError::new(codes::TIMEOUT, "no complete request frame within 30 s"))
        .and_then(|r| r.map_err(stream_error))
        .and_then(|f| {
            f.ok_or_else(|| WireError::new(codes::MALFORMED, "the stream ended without a request"))
        })
        .and_then(|frame| decode_payload::<PeerEnvelope>(&frame).map_err(decode_error));
    let (request_id, result) = match read {
        Ok(envelope) => (
            envelope.request_id,
            serve_peer_request(&ctx.roles, &ctx.http, claim, envelope.request).await,
        ),
        Err(error) => {
            let _ = recv.stop(0u32.into());
            (0, Err(error))
        }
    };
    answer(send, ctx, request_id, result).await;
}

async fn answer(
    mut send: SendStream,
    ctx: &QuicContext,
    request_id: u64,
    result: Result<Response, WireError>,
) {
    match write_frame(&mut send, &answer_frame(ctx, request_id, result)).await {
        Ok(()) => {
            let _ = send.finish();
        }
        Err(e) => tracing::debug!(error = %e, "could not write a QUIC answer"),
    }
}

fn answer_frame(
    ctx: &QuicContext,
    request_id: u64,
    result: Result<Response, WireError>,
) -> Vec<u8> {
    encode_payload(&ResponseEnvelope {
        cluster_id: ctx.cluster_id.clone(),
        request_id,
        node_id: ctx.node_id.clone(),
        result,
    })
}

/// Most watch items' bytes put in one frame (well under the frame limit).
const WATCH_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// Streams a watch's items as `Response::Push(PushResponse::Watch)` frames until the client stops reading or
/// closes, or the node stops (the stream is then finished cleanly; the client resumes
/// elsewhere from its cursors).
async fn serve_watch(mut send: SendStream, request_id: u64, spec: WatchSpec, ctx: &QuicContext) {
    let mut watch = open_watch(&ctx.roles.push.hub, spec, "quic");
    let mut stop = ctx.roles.push.hub.stopping();
    loop {
        let batch = tokio::select! {
            batch = watch.items.recv() => batch,
            _ = send.stopped() => return,
            _ = until_stopped(&mut stop) => None,
        };
        let Some(mut items) = batch else {
            let _ = send.finish();
            return;
        };
        // Coalesce what is already waiting into the same frame.
        let mut bytes: usize = items.iter().map(item_bytes).sum();
        while bytes < WATCH_FRAME_BYTES {
            match watch.items.try_recv() {
                Ok(more) => {
                    bytes += more.iter().map(item_bytes).sum::<usize>();
                    items.extend(more);
                }
                Err(_) => break,
            }
        }
        let frame = answer_frame(
            ctx,
            request_id,
            Ok(Response::Push(PushResponse::Watch(items))),
        );
        tokio::select! {
            written = write_frame(&mut send, &frame) => {
                if let Err(e) = written {
                    tracing::debug!(error = %e, "watch stream closed by the client");
                    return;
                }
            }
            // A client that stopped reading does not hold up the node's shutdown.
            _ = until_stopped(&mut stop) => return,
        }
    }
}

/// Reads and checks one client request: the header frame (small bound), its cluster id and
/// token, and only then the request frame. Errors carry the request id when it was read.
async fn read_request(
    recv: &mut RecvStream,
    ctx: &QuicContext,
) -> Result<(RequestHeader, crate::auth::Principal, Request), (u64, WireError)> {
    let deadline = tokio::time::Instant::now() + REQUEST_READ_TIMEOUT;
    let timed_out = || WireError::new(codes::TIMEOUT, "no complete request within 30 s");
    let frame = tokio::time::timeout_at(deadline, read_frame(recv, MAX_HEADER_BYTES))
        .await
        .map_err(|_| (0, timed_out()))?
        .map_err(|e| (0, stream_error(e)))?
        .ok_or_else(|| {
            (
                0,
                WireError::new(codes::MALFORMED, "the stream ended without a request"),
            )
        })?;
    let header: RequestHeader = decode_payload(&frame).map_err(|e| (0, decode_error(e)))?;
    let id = header.request_id;
    if header.cluster_id != ctx.cluster_id {
        return Err((
            id,
            decode_error(DecodeError::WrongCluster {
                theirs: header.cluster_id,
                ours: ctx.cluster_id.clone(),
            }),
        ));
    }
    let Some(principal) = header
        .token
        .as_deref()
        .and_then(|t| ctx.roles.verifier.verify(t))
    else {
        return Err((
            id,
            WireError::new(
                codes::UNAUTHENTICATED,
                "missing or wrong token: pass the node's admin token",
            ),
        ));
    };
    let frame = tokio::time::timeout_at(deadline, read_frame(recv, MAX_FRAME_BYTES))
        .await
        .map_err(|_| (id, timed_out()))?
        .map_err(|e| (id, stream_error(e)))?
        .ok_or_else(|| {
            (
                id,
                WireError::new(
                    codes::MALFORMED,
                    "the stream ended after the request header",
                ),
            )
        })?;
    let request: Request = decode_payload(&frame).map_err(|e| (id, decode_error(e)))?;
    Ok((header, principal, request))
}

fn stream_error(error: StreamError) -> WireError {
    match error {
        StreamError::Frame(FrameError::TooLarge { size, limit }) => WireError::new(
            codes::FRAME_TOO_LARGE,
            format!("frame of {size} bytes is over the limit of {limit} bytes"),
        ),
        other => WireError::new(codes::MALFORMED, other.to_string()),
    }
}

fn decode_error(error: DecodeError) -> WireError {
    WireError::new(error.code(), error.to_string())
}
