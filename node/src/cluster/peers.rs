//! [`Peers`]: node-to-node requests over QUIC, one request per stream.
//!
//! Every connection is a peer connection that proved the cluster key both ways
//! ([`dial_peer`]); requests carry no token (the admin token never leaves the node), only the
//! principal a forwarding node authenticated its caller as.
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
    MAX_FRAME_BYTES, PeerEnvelope, PeerRequest, Response, ResponseEnvelope, WireError, codes,
    decode_payload, encode_payload, read_frame, write_frame,
};

use crate::membership::{DatagramLinks, PeerLink, dial_peer};

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

/// Sends requests to other nodes over authenticated peer connections.
#[derive(Debug)]
pub struct Peers {
    links: DatagramLinks,
    connections: Mutex<HashMap<SocketAddr, PeerLink>>,
    next_id: AtomicU64,
}

impl Peers {
    /// The links this node's connections share (the partition switch lives there).
    pub fn links(&self) -> &DatagramLinks {
        &self.links
    }

    /// Requests over connections dialed (and authenticated) like `links`' own.
    pub fn new(links: DatagramLinks) -> Self {
        Peers {
            links,
            connections: Mutex::default(),
            next_id: AtomicU64::new(1),
        }
    }

    /// Closes cached connections to an earlier life of `node` than `generation` (or every
    /// one, with `None`: it is down), for requests and datagrams alike. Without this, the
    /// first requests after a peer's restart would wait on a connection nobody answers.
    pub fn forget_stale(&self, node: &str, generation: Option<u64>) {
        if let Ok(mut map) = self.connections.lock() {
            map.retain(|_, link| {
                let stale = link.claim.node_id == node
                    && generation.is_none_or(|current| link.claim.generation < current);
                if stale {
                    link.connection
                        .close(0u32.into(), b"peer restarted or down");
                }
                !stale
            });
        }
        self.links.forget_stale(node, generation);
    }

    /// Sends `request` to the node at `to` and waits up to `timeout` for its answer.
    pub async fn call(
        &self,
        to: SocketAddr,
        request: PeerRequest,
        timeout: Duration,
    ) -> Result<Response, PeerError> {
        tokio::time::timeout(timeout, self.exchange(to, request))
            .await
            .map_err(|_| {
                PeerError::Unreachable(format!("node at {to} did not answer within {timeout:?}"))
            })?
    }

    /// The cached connection to `to`, or a new, authenticated one; refused while traffic with
    /// that node is cut (a test's partition, [`DatagramLinks::cut`]).
    async fn connection(&self, to: SocketAddr) -> Result<quinn::Connection, String> {
        let cached = self.connections.lock().ok().and_then(|map| {
            map.get(&to)
                .filter(|l| l.connection.close_reason().is_none())
                .map(|l| (l.connection.clone(), l.claim.node_id.clone()))
        });
        if let Some((connection, node)) = cached {
            if self.links.requests_dropped(&node) {
                return Err(format!(
                    "node {node} at {to} is cut off (test fault injection)"
                ));
            }
            return Ok(connection);
        }
        let link = dial_peer(
            self.links.endpoint(),
            &self.links.credentials(),
            self.links.metrics(),
            to,
            DIAL_TIMEOUT,
        )
        .await?;
        let connection = link.connection.clone();
        let cut = self.links.requests_dropped(&link.claim.node_id);
        if let Ok(mut map) = self.connections.lock() {
            map.insert(to, link.clone());
        }
        if cut {
            self.links.adopt(link);
            return Err(format!("node at {to} is cut off (test fault injection)"));
        }
        // The peer adopts this connection for SWIM datagrams too (it accepted it): read them.
        self.links.adopt(link);
        Ok(connection)
    }

    async fn exchange(&self, to: SocketAddr, request: PeerRequest) -> Result<Response, PeerError> {
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
        let envelope = PeerEnvelope {
            request_id: self.next_id.fetch_add(1, Ordering::Relaxed),
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

/// Drops cached connections to members that restarted (a higher generation) or went down, as
/// soon as membership sees it, so the first request after a peer's restart dials afresh
/// instead of waiting on a connection nobody answers. Runs until `stop`.
pub async fn drop_stale_connections(
    cluster: super::Cluster,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use crate::membership::MemberState;
    let peers = cluster.peers();
    let mut members = cluster.membership().subscribe();
    // Member id -> (generation, down) as last seen.
    let mut seen: HashMap<String, (u64, bool)> = HashMap::new();
    loop {
        for member in members.borrow_and_update().iter() {
            let down = member.state == MemberState::Down;
            let generation = member.peer.generation;
            let before = seen.insert(member.peer.id.clone(), (generation, down));
            match before {
                Some((old, _)) if generation > old => {
                    tracing::debug!(member = %member.peer.id, generation, "member restarted; dropping connections to its previous life");
                    peers.forget_stale(&member.peer.id, Some(generation));
                }
                Some((_, false)) if down => peers.forget_stale(&member.peer.id, None),
                _ => {}
            }
        }
        tokio::select! {
            changed = members.changed() => if changed.is_err() { break },
            _ = stop.wait_for(|s| *s) => break,
        }
    }
}
