//! [`Peers`]: node-to-node requests over QUIC, one request per stream on the connection the
//! node already keeps to each peer for SWIM.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cfgnode_transport::{
    MAX_FRAME_BYTES, Request, RequestEnvelope, Response, ResponseEnvelope, WireError, codes,
    decode_payload, encode_payload, read_frame, write_frame,
};

use crate::membership::DatagramLinks;

/// What a peer request can end in.
#[derive(Debug, Clone)]
pub enum PeerError {
    /// The peer answered with an error.
    Answered(WireError),
    /// The peer could not be reached, or the exchange broke off (the request may or may not
    /// have been applied).
    Unreachable(String),
}

impl PeerError {
    /// The error as a client should see it.
    pub fn into_wire(self) -> WireError {
        match self {
            PeerError::Answered(e) => e,
            PeerError::Unreachable(why) => WireError::new(codes::UNAVAILABLE, why),
        }
    }
}

/// Sends requests to other nodes with this node's credentials.
#[derive(Debug)]
pub struct Peers {
    links: DatagramLinks,
    cluster_id: String,
    token: String,
    next_id: AtomicU64,
}

impl Peers {
    /// Requests over `links`, in cluster `cluster_id`, carrying `token` (the cluster's shared
    /// admin token) unless a caller's own token is passed on.
    pub fn new(links: DatagramLinks, cluster_id: String, token: String) -> Self {
        Peers {
            links,
            cluster_id,
            token,
            next_id: AtomicU64::new(1),
        }
    }

    /// Sends `request` to the node at `to` and waits up to `timeout` for its answer.
    /// `token` is the caller's own token for forwarded requests; `None` uses the node's.
    pub async fn call(
        &self,
        to: SocketAddr,
        request: Request,
        token: Option<String>,
        timeout: Duration,
    ) -> Result<Response, PeerError> {
        tokio::time::timeout(timeout, self.exchange(to, request, token))
            .await
            .map_err(|_| {
                PeerError::Unreachable(format!("node at {to} did not answer within {timeout:?}"))
            })?
    }

    async fn exchange(
        &self,
        to: SocketAddr,
        request: Request,
        token: Option<String>,
    ) -> Result<Response, PeerError> {
        let unreachable = |e: String| PeerError::Unreachable(e);
        let connection = self.links.connection(to).await.map_err(unreachable)?;
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| unreachable(format!("cannot open a stream to {to}: {e}")))?;
        let envelope = RequestEnvelope {
            cluster_id: self.cluster_id.clone(),
            request_id: self.next_id.fetch_add(1, Ordering::Relaxed),
            token: Some(token.unwrap_or_else(|| self.token.clone())),
            follow_redirects: true,
            request,
        };
        write_frame(&mut send, &encode_payload(&envelope))
            .await
            .map_err(|e| unreachable(format!("sending to {to}: {e}")))?;
        let _ = send.finish();
        let frame = read_frame(&mut recv, MAX_FRAME_BYTES)
            .await
            .map_err(|e| unreachable(format!("reading the answer of {to}: {e}")))?
            .ok_or_else(|| unreachable(format!("{to} closed the stream without answering")))?;
        let answer: ResponseEnvelope = decode_payload(&frame)
            .map_err(|e| unreachable(format!("undecodable answer from {to}: {e}")))?;
        answer.result.map_err(PeerError::Answered)
    }
}
