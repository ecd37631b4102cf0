//! The messages of the client protocol: one [`Request`] per bidirectional stream, answered by
//! one [`ResponseEnvelope`]; and the node-to-node messages ([`peer`]).
//!
//! One module per family, as the node serves them: [`config`] (the config role), [`push`]
//! (the push role: event log, watches, agents), [`registry`] (the registry role: services,
//! instances, checks, subscriptions), [`proxy`] (the proxy role: routes), [`cluster`] (cluster
//! administration) and [`peer`] (node to node). A [`Request`] names its family first, so the node dispatches by
//! role after routing, and a new role adds a module and a variant here instead of touching
//! every match. The client requests mirror the HTTP API (docs/http-api.md) operation for
//! operation, so the client library and the CLI can do everything curl can. Timestamps are
//! milliseconds since the Unix epoch.

pub mod cluster;
pub mod config;
pub mod peer;
pub mod proxy;
pub mod push;
pub mod registry;

use serde::{Deserialize, Serialize};

use crate::error::WireError;
use cluster::{ClusterRequest, ClusterResponse};
use config::{ConfigRequest, ConfigResponse};
use peer::PeerResponse;
use proxy::{ProxyRequest, ProxyResponse};
use push::{PushRequest, PushResponse};
use registry::{RegistryRequest, RegistryResponse};

/// Limits every node enforces on requests, the same over QUIC and HTTP; clients may rely on
/// them (a page over [`MAX_PAGE`] is refused, not truncated).
pub mod limits {
    /// The page size of a listing that does not name one.
    pub const DEFAULT_PAGE: usize = 100;
    /// The largest page a listing may ask for.
    pub const MAX_PAGE: usize = 1000;
    /// The most events one `Events` request may ask for.
    pub const MAX_EVENTS: usize = 10_000;
    /// The longest an `Events` request may wait for a first event, in milliseconds.
    pub const MAX_EVENTS_WAIT_MS: u32 = 60_000;
}

/// The first frame of every client request: who asks, and how to answer. It is small and read
/// with a small bound ([`MAX_HEADER_BYTES`](crate::MAX_HEADER_BYTES)), and its token is checked
/// before the second frame, the [`Request`] itself (up to the frame limit), is read: a caller
/// without a valid token never makes the node buffer more than a header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHeader {
    /// The cluster the client believes it talks to; a mismatch is refused.
    pub cluster_id: String,
    /// Chosen by the client, echoed in the answer (for logs and tracing).
    pub request_id: u64,
    /// The bearer token (`--token`), checked before the request frame is read; `None` for a node without tokens.
    pub token: Option<String>,
    /// True when the caller follows [`Response::Redirect`] itself (the client library): a node
    /// that does not hold the namespace then answers with the holder instead of forwarding.
    /// Callers that leave it false are served through forwarding.
    pub follow_redirects: bool,
}

/// Both frames of a client request (header, then request), ready to write on a fresh stream.
/// Fails when the header is over [`MAX_HEADER_BYTES`](crate::MAX_HEADER_BYTES) (a token that
/// long is not a token) or the request over the frame limit.
pub fn encode_request(
    header: &RequestHeader,
    request: &Request,
) -> Result<Vec<u8>, crate::FrameError> {
    let mut out = crate::encode_frame(
        &crate::encode_payload(header),
        crate::frame::MAX_HEADER_BYTES,
    )?;
    out.extend(crate::encode_frame(
        &crate::encode_payload(request),
        crate::MAX_FRAME_BYTES,
    )?);
    Ok(out)
}

/// What the node answers on the same stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseEnvelope {
    /// The answering node's cluster id.
    pub cluster_id: String,
    /// The request's id (0 when the request could not be decoded).
    pub request_id: u64,
    /// The answering node's id.
    pub node_id: String,
    /// The answer, or an error with a stable code (the HTTP API's vocabulary).
    pub result: Result<Response, WireError>,
}

/// One operation a client asks for, by family. Node-to-node operations are not here: they are
/// [`PeerRequest`](crate::PeerRequest)s, served only on connections that proved the cluster
/// key. `Request` is not recursive, so decoding one is bounded by its size alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness and identity.
    Ping,
    /// The config role.
    Config(ConfigRequest),
    /// The push role.
    Push(PushRequest),
    /// Cluster administration.
    Cluster(ClusterRequest),
    /// The registry role.
    Registry(RegistryRequest),
    /// The proxy role's routes. Appended last: the families are numbered by position.
    Proxy(ProxyRequest),
}

impl Request {
    /// True when repeating the request cannot change the outcome: reads, and a registry
    /// heartbeat. Clients retry only these blindly; a write whose answer was lost is not resent,
    /// because a second upsert would create a second version.
    pub fn is_idempotent(&self) -> bool {
        match self {
            Request::Registry(request) => request.is_idempotent(),
            Request::Proxy(request) => request.is_idempotent(),
            _ => !self.is_write(),
        }
    }

    /// True for the requests that change a namespace (they may create it) or placement.
    pub fn is_write(&self) -> bool {
        match self {
            Request::Ping | Request::Push(_) => false,
            Request::Config(request) => request.is_write(),
            Request::Cluster(request) => request.is_write(),
            Request::Registry(request) => request.is_write(),
            Request::Proxy(request) => request.is_write(),
        }
    }

    /// The namespace whose holder must serve this request; `None` for requests any node
    /// answers itself.
    pub fn routed_namespace(&self) -> Option<&str> {
        match self {
            Request::Ping | Request::Cluster(_) => None,
            Request::Config(request) => request.routed_namespace(),
            Request::Push(request) => request.routed_namespace(),
            Request::Registry(request) => request.routed_namespace(),
            Request::Proxy(request) => request.routed_namespace(),
        }
    }

    /// The operation's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Config(request) => request.name(),
            Request::Push(request) => request.name(),
            Request::Cluster(request) => request.name(),
            Request::Registry(request) => request.name(),
            Request::Proxy(request) => request.name(),
        }
    }
}

/// A successful answer, by family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to `Ping`.
    Pong,
    /// Done; nothing to say (agent heartbeats, handoff steps, anti-entropy pushes).
    Ack,
    /// "Not here": the namespace is held by another node. The client library follows it (at
    /// most two hops) and remembers the holder; a forwarding node does the same.
    Redirect(WireRedirect),
    /// A config answer.
    Config(ConfigResponse),
    /// A push answer.
    Push(PushResponse),
    /// A cluster-admin answer.
    Cluster(ClusterResponse),
    /// An answer only peers ask for.
    Peer(PeerResponse),
    /// A registry answer.
    Registry(RegistryResponse),
    /// A proxy (routes) answer. Appended last, like [`Request::Proxy`].
    Proxy(ProxyResponse),
}

/// A page of a listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePage<T> {
    /// This page's items, in the listing's order (continue with the next cursor).
    pub items: Vec<T>,
    /// Cursor for the next page, `None` when complete.
    pub next_cursor: Option<String>,
}

/// Where a namespace really is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRedirect {
    /// The namespace: `[a-z0-9][a-z0-9._-]{0,127}`.
    pub namespace: String,
    /// The node to ask.
    pub holder: String,
    /// Where to reach the holder: a caller that follows redirects sends the request there.
    pub quic_addr: String,
    /// The holder epoch the answer is based on (0 for a namespace nobody holds yet).
    pub epoch: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{decode_payload, encode_payload};
    use config::WireWriteMode;

    #[test]
    fn envelopes_round_trip() {
        let header = RequestHeader {
            cluster_id: "prod".into(),
            request_id: 42,
            token: Some("t".into()),
            follow_redirects: true,
        };
        let back: RequestHeader = decode_payload(&encode_payload(&header)).expect("decodes");
        assert_eq!(back, header);
        let request = Request::Config(ConfigRequest::Put {
            namespace: "app".into(),
            key: "db/url".into(),
            value: vec![0, 1, 255],
            codec: "bytes".into(),
            mode: WireWriteMode::Create,
            if_version: Some(0),
        });
        let back: Request = decode_payload(&encode_payload(&request)).expect("decodes");
        assert_eq!(back, request);
        assert!(!back.is_idempotent());
        let heartbeat = Request::Registry(RegistryRequest::Heartbeat {
            namespace: "a".into(),
            service: "web".into(),
            instance: "w1".into(),
        });
        assert!(heartbeat.is_write(), "routed like a write, to the holder");
        assert!(heartbeat.is_idempotent(), "but safe to resend");
        assert!(
            Request::Config(ConfigRequest::Get {
                namespace: "a".into(),
                key: "b".into()
            })
            .is_idempotent()
        );

        let response = ResponseEnvelope {
            cluster_id: "prod".into(),
            request_id: 42,
            node_id: "n1".into(),
            result: Err(WireError::new("key_not_found", "no such key")),
        };
        let back: ResponseEnvelope = decode_payload(&encode_payload(&response)).expect("decodes");
        assert_eq!(back, response);
    }
}
