//! [`Peers`]: node-to-node requests over QUIC, one request per stream.
//!
//! Requests go on connections this node dialed itself: the peer serves streams on the
//! connections it accepts (its QUIC front end), not on the ones it dialed for SWIM. The peer
//! also sends SWIM datagrams on a connection it accepted, so this node reads datagrams on it
//! (adopts it into [`DatagramLinks`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cfgnode_transport::{
    MAX_FRAME_BYTES, Request, RequestEnvelope, Response, ResponseEnvelope, SERVER_NAME, WireError,
    codes, decode_payload, encode_payload, read_frame, write_frame,
};
use quinn::{Connection, Endpoint};

use crate::membership::DatagramLinks;

/// How long dialing a peer may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

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
    endpoint: Endpoint,
    links: DatagramLinks,
    connections: Mutex<HashMap<SocketAddr, Connection>>,
    cluster_id: String,
    token: String,
    next_id: AtomicU64,
}

impl Peers {
    /// Requests from `endpoint`, in cluster `cluster_id`, carrying `token` (the cluster's
    /// shared admin token) unless a caller's own token is passed on.
    pub fn new(
        endpoint: Endpoint,
        links: DatagramLinks,
        cluster_id: String,
        token: String,
    ) -> Self {
        Peers {
            endpoint,
            links,
            connections: Mutex::default(),
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

    /// The cached connection to `to`, or a new one.
    async fn connection(&self, to: SocketAddr) -> Result<Connection, String> {
        let cached = self
            .connections
            .lock()
            .ok()
            .and_then(|map| map.get(&to).filter(|c| c.close_reason().is_none()).cloned());
        if let Some(connection) = cached {
            return Ok(connection);
        }
        let connecting = self
            .endpoint
            .connect(to, SERVER_NAME)
            .map_err(|e| format!("cannot dial {to}: {e}"))?;
        let connection = tokio::time::timeout(DIAL_TIMEOUT, connecting)
            .await
            .map_err(|_| format!("dialing {to} timed out after {DIAL_TIMEOUT:?}"))?
            .map_err(|e| format!("cannot connect to {to}: {e}"))?;
        if let Ok(mut map) = self.connections.lock() {
            map.insert(to, connection.clone());
        }
        // The peer adopts this connection for SWIM datagrams too (it accepted it): read them.
        self.links.adopt(connection.clone());
        Ok(connection)
    }

    async fn exchange(
        &self,
        to: SocketAddr,
        request: Request,
        token: Option<String>,
    ) -> Result<Response, PeerError> {
        let unreachable = |e: String| PeerError::Unreachable(e);
        let connection = self.connection(to).await.map_err(unreachable)?;
        let (mut send, mut recv) = match connection.open_bi().await {
            Ok(streams) => streams,
            Err(e) => {
                if let Ok(mut map) = self.connections.lock() {
                    map.remove(&to);
                }
                return Err(unreachable(format!("cannot open a stream to {to}: {e}")));
            }
        };
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
