//! cfgnode transport: how nodes and clients talk.
//!
//! # Layout
//!
//! - [`frame`](crate::FrameDecoder): length-prefixed frames with a hard size limit (sans-IO).
//! - [`envelope`](crate::encode_payload): magic, protocol version, bincode body.
//! - [`message`]: requests and responses by family: [`message::config`], [`message::push`],
//!   [`message::registry`] (also reachable as [`registry`]), [`message::proxy`] (also
//!   [`proxy`]), [`message::cluster`] (client
//!   requests, nested in [`Request`]) and [`message::peer`]
//!   (node-to-node requests, served only on authenticated peer connections); the protocol's
//!   [`limits`].
//! - [`codes`]: every error code, shared by QUIC and HTTP answers.
//! - [`peer_auth`](crate::ClusterKey): the cluster key and the handshake that proves it on
//!   every peer connection.
//! - [`tls`](crate::ClusterCa): node certificates, the cluster CA, rustls configs: `tls/issue`
//!   (the CA and the certificates it signs, self-signed node certificates), `tls/load` (PEM
//!   files read and checked), `tls/config` (rustls configs for quinn), `tls/files` (TLS files
//!   written crash-safely with their modes, over `fs_atomic`).
//! - [`endpoint`](crate::bind_endpoint): quinn endpoints and framed stream reads/writes.
//! - [`fs_atomic`](crate::write_atomically): crash-safe writes of small files (temporary file,
//!   fsync, rename or no-clobber link, directory fsync), shared with the node and the CLI.
//! - `error`: framing and decoding errors, and [`WireError`], the error answer on the wire.
//!
//! # Place in the map
//!
//! `node -> transport` and `client -> transport`; transport depends on no crate of ours. The
//! wire format is described in docs/protocol.md.

pub mod codes;
mod endpoint;
mod envelope;
mod error;
mod frame;
mod fs_atomic;
pub mod message;
mod peer_auth;
mod tls;

pub use endpoint::{
    CONNECTION_RECEIVE_WINDOW, EndpointError, IDLE_TIMEOUT, KEEP_ALIVE, MAX_CONCURRENT_STREAMS,
    STREAM_RECEIVE_WINDOW, StreamError, bind_endpoint, bind_endpoint_with, bind_node_endpoint,
    client_config, peer_client_config, read_frame, server_config, transport_config, write_frame,
};
pub use envelope::{MAGIC, PROTOCOL_VERSION, decode_payload, encode_payload};
pub use error::{DecodeError, FrameError, WireError};
pub use frame::{FrameDecoder, LENGTH_PREFIX, MAX_FRAME_BYTES, MAX_HEADER_BYTES, encode_frame};
pub use fs_atomic::{AtomicWrite, write_atomically, write_private_atomically};
pub use message::cluster::{
    ClusterRequest, ClusterResponse, WireMember, WirePlacement, WireReplicaView, WireRingShare,
};
pub use message::config::{
    ConfigRequest, ConfigResponse, WireAccess, WireAlias, WireCodec, WireDeleted, WireDiff,
    WireEntry, WireNamespace, WireSnapshot, WireVersion, WireWriteMode,
};
pub use message::peer::{
    PeerEnvelope, PeerRequest, PeerResponse, WireCreateCheck, WireHttpRequest, WireHttpResponse,
    WireLogPosition, WireReplica,
};
pub use message::proxy;
pub use message::push::{
    PushRequest, PushResponse, WireAgent, WireAgentSeen, WireEvent, WireEventKind, WireRecord,
    WireWatchItem, WireWatchRequest,
};
pub use message::registry;
pub use message::{
    Request, RequestHeader, Response, ResponseEnvelope, WirePage, WireRedirect, encode_request,
    limits,
};
pub use peer_auth::{
    BadClusterKey, CLUSTER_KEY_BYTES, ClusterKey, HELLO_TIMEOUT, MAX_HELLO_BYTES, PEER_ALPN,
    PeerAuthError, PeerClaim, PeerCredentials, PeerHello, PeerWelcome, Role, accept_handshake,
    dial_handshake, negotiated_alpn, proof, verify,
};
// The rustls types that appear in this crate's API, so dependents need no rustls of their own.
pub use rustls::RootCertStore;
pub use rustls::pki_types::{CertificateDer, PrivateKeyDer};
pub use tls::{
    ALPN, CertRole, ClientTls, ClusterCa, Identity, SERVER_NAME, ServerTls, TlsError,
    client_crypto, client_crypto_for, is_node_certificate, load_certs, load_key, load_roots,
    server_crypto,
};
