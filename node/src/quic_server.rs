//! The QUIC front end: one request per bidirectional stream, answered through the
//! [`ConfigService`] like the HTTP API.
//!
//! Every stream is independent: a malformed, oversized, unauthenticated or slow request gets an
//! error frame (or a timeout) on its own stream and never disturbs other streams or connections.

use std::sync::Arc;
use std::time::Duration;

use cfgnode_transport::{
    DecodeError, FrameError, MAX_FRAME_BYTES, Request, RequestEnvelope, Response, ResponseEnvelope,
    StreamError, WireError, codes, decode_payload, encode_payload, read_frame, write_frame,
};
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::auth::TokenVerifier;
use crate::cluster::{Serving, serve_request};
use crate::membership::DatagramLinks;
use crate::push::watch::{WatchSpec, item_bytes, open as open_watch};
use crate::push::{Hub, until_stopped};

/// How long a peer may take to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a peer may take to send its request frame.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for peers to acknowledge the connection closes.
const CLOSE_GRACE: Duration = Duration::from_millis(300);
/// How long in-flight requests may run after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the QUIC front end needs to answer requests.
#[derive(Debug)]
pub struct QuicContext {
    /// The config and cluster roles (and the HTTP router, for forwarded HTTP requests).
    pub serving: Serving,
    /// Checks request tokens.
    pub verifier: TokenVerifier,
    /// This node's cluster id; requests naming another are refused.
    pub cluster_id: String,
    /// This node's id, sent in every answer.
    pub node_id: String,
    /// Every accepted connection also carries SWIM datagrams.
    pub links: DatagramLinks,
    /// Serves watches (one upstream per namespace, fanned out).
    pub hub: Hub,
}

/// Accepts connections until `shutdown` turns true, then lets in-flight requests finish (up to
/// a deadline) and closes the endpoint.
pub async fn serve(endpoint: Endpoint, ctx: Arc<QuicContext>, shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    // A separate receiver for this loop's own wait, so connection tasks can take clones.
    let mut stop = shutdown.clone();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let ctx = Arc::clone(&ctx);
                let shutdown = shutdown.clone();
                connections.spawn(async move {
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
    ctx.links.adopt(connection.clone());
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            stream = connection.accept_bi() => match stream {
                Ok((send, recv)) => {
                    let ctx = Arc::clone(&ctx);
                    streams.spawn(async move { serve_stream(send, recv, &ctx).await });
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

async fn serve_stream(mut send: SendStream, mut recv: RecvStream, ctx: &QuicContext) {
    let (request_id, result) = match read_request(&mut recv, ctx).await {
        Ok(envelope) => {
            let id = envelope.request_id;
            let result = match envelope
                .token
                .as_deref()
                .and_then(|t| ctx.verifier.verify(t))
            {
                Some(principal) if matches!(envelope.request, Request::Watch(_)) => {
                    let Request::Watch(request) = envelope.request else {
                        return;
                    };
                    match WatchSpec::check(request, &principal) {
                        Ok(spec) => return serve_watch(send, id, spec, ctx).await,
                        Err(e) => Err(e),
                    }
                }
                Some(principal) => {
                    serve_request(
                        &ctx.serving,
                        &principal,
                        envelope.token,
                        envelope.follow_redirects,
                        envelope.request,
                    )
                    .await
                }
                None => Err(WireError::new(
                    codes::UNAUTHENTICATED,
                    "missing or wrong token: pass the node's admin token",
                )),
            };
            (id, result)
        }
        Err(error) => {
            // Nothing more will be read from this stream.
            let _ = recv.stop(0u32.into());
            (0, Err(error))
        }
    };
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

/// Streams a watch's items as `Response::Watch` frames until the client stops reading or
/// closes, or the node stops (the stream is then finished cleanly; the client resumes
/// elsewhere from its cursors).
async fn serve_watch(mut send: SendStream, request_id: u64, spec: WatchSpec, ctx: &QuicContext) {
    let mut watch = open_watch(&ctx.hub, spec, "quic");
    let mut stop = ctx.hub.stopping();
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
        let frame = answer_frame(ctx, request_id, Ok(Response::Watch(items)));
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

/// Reads and checks one request: frame, envelope, cluster id.
async fn read_request(
    recv: &mut RecvStream,
    ctx: &QuicContext,
) -> Result<RequestEnvelope, WireError> {
    let frame = tokio::time::timeout(REQUEST_READ_TIMEOUT, read_frame(recv, MAX_FRAME_BYTES))
        .await
        .map_err(|_| WireError::new(codes::TIMEOUT, "no complete request frame within 30 s"))?
        .map_err(stream_error)?
        .ok_or_else(|| WireError::new(codes::MALFORMED, "the stream ended without a request"))?;
    let envelope: RequestEnvelope = decode_payload(&frame).map_err(decode_error)?;
    if envelope.cluster_id != ctx.cluster_id {
        return Err(decode_error(DecodeError::WrongCluster {
            theirs: envelope.cluster_id,
            ours: ctx.cluster_id.clone(),
        }));
    }
    Ok(envelope)
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
