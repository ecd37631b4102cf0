//! Peer authentication: a node proves it holds the cluster key before any SWIM datagram, map
//! record, handoff, anti-entropy or forward of its is accepted.
//!
//! # How
//!
//! Node-to-node connections negotiate ALPN [`PEER_ALPN`] (clients use [`ALPN`](crate::ALPN)).
//! On such a connection the dialer opens the first stream and sends a [`PeerHello`]; the
//! acceptor answers with a [`PeerWelcome`] or closes the connection. Each carries an
//! HMAC-SHA256 under the [`ClusterKey`] over a role byte, the cluster id, the sender's node id
//! and generation, and 32 bytes exported from this connection's TLS session (RFC 5705 / RFC 8446
//! exporter). The exporter binds the proof to this one TLS session: a proof seen on one
//! connection is worthless on any other, so it cannot be replayed or relayed, and the key never
//! crosses the wire. Both sides prove it, so a node never sends datagrams or data to an
//! impostor listening at a member's address either.
//!
//! The hello is the only thing read from a peer connection before it is authenticated, and it
//! is read with a [`MAX_HELLO_BYTES`] bound and a [`HELLO_TIMEOUT`].
//!
//! # Why not a MAC per datagram or per request
//!
//! QUIC already authenticates and encrypts every packet of a connection under the TLS session
//! keys; binding the proof to the session once makes every later datagram and stream on it as
//! authentic as the handshake, for one HMAC per connection instead of one per packet
//! (docs/security.md, Alternatives).

use std::time::Duration;

use quinn::Connection;
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::endpoint::{read_frame, write_frame};
use crate::envelope::{decode_payload, encode_payload};

/// The ALPN protocol id of node-to-node connections. A client connection (ALPN `cfgnode/1`)
/// never carries node-to-node requests or datagrams.
pub const PEER_ALPN: &[u8] = b"cfgnode-peer/1";

/// Largest hello or welcome frame: a node id, a cluster id and a proof fit easily.
pub const MAX_HELLO_BYTES: usize = 1024;

/// How long a connection may take to prove the key after its TLS handshake.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// The exporter label that ties a proof to one TLS session.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-cfgnode-peer/1";
/// Domain separation for the proofs.
const PROOF_CONTEXT: &[u8] = b"cfgnode peer proof v1";

/// Bytes of a cluster key.
pub const CLUSTER_KEY_BYTES: usize = 32;

/// The cluster's shared secret: every node holds it, no client does. It is 32 random bytes,
/// written as 64 hex characters in a file (`cfgnode start --cluster-key-file`).
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; CLUSTER_KEY_BYTES]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
    }
}

/// Why a cluster key file's text is not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a cluster key is {} hex characters (32 random bytes); generate one with `cfgnode certs cluster-key` or let the first node of a new cluster create it",
    CLUSTER_KEY_BYTES * 2
)]
pub struct BadClusterKey;

impl ClusterKey {
    /// A fresh random key.
    pub fn generate() -> Result<ClusterKey, String> {
        let mut bytes = [0u8; CLUSTER_KEY_BYTES];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| "no randomness from the OS".to_string())?;
        Ok(ClusterKey(bytes))
    }

    /// Parses the hex text of a key file (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<ClusterKey, BadClusterKey> {
        let text = text.trim();
        if text.len() != CLUSTER_KEY_BYTES * 2 {
            return Err(BadClusterKey);
        }
        let mut bytes = [0u8; CLUSTER_KEY_BYTES];
        for (i, byte) in bytes.iter_mut().enumerate() {
            let pair = text.get(i * 2..i * 2 + 2).ok_or(BadClusterKey)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| BadClusterKey)?;
        }
        Ok(ClusterKey(bytes))
    }

    /// The key as the hex text of its file.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A 32-byte secret derived from the key for one `purpose` (e.g. a node's QUIC
    /// stateless-reset key), so the cluster key itself is used for proofs only.
    pub fn derive(&self, purpose: &[u8]) -> [u8; 32] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let tag = hmac::sign(&key, purpose);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

/// What a node claims about itself in its hello or welcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerClaim {
    /// The cluster it belongs to.
    pub cluster_id: String,
    /// Its node id.
    pub node_id: String,
    /// Its current generation (grows at every start).
    pub generation: u64,
}

/// The dialer's first frame on a peer connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHello {
    /// Who the dialer says it is.
    pub claim: PeerClaim,
    /// HMAC over the claim and this session's exporter (role: dialer).
    pub proof: [u8; 32],
}

/// The acceptor's answer to a valid hello.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerWelcome {
    /// Who the acceptor says it is.
    pub claim: PeerClaim,
    /// HMAC over the claim and this session's exporter (role: acceptor).
    pub proof: [u8; 32],
}

/// Which side of the handshake a proof is from (so a dialer's proof cannot be echoed back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The node that opened the connection.
    Dialer,
    /// The node that accepted it.
    Acceptor,
}

/// This node's credentials for peer connections.
#[derive(Clone, Debug)]
pub struct PeerCredentials {
    /// The cluster key.
    pub key: ClusterKey,
    /// What this node claims (cluster id, node id, generation).
    pub claim: PeerClaim,
}

/// Why a peer handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerAuthError {
    /// The peer sent no hello (or welcome) in time.
    #[error("the peer did not complete the cluster-key handshake within {0:?}")]
    Timeout(Duration),
    /// The hello or welcome did not decode (or was over the size bound).
    #[error("malformed peer handshake: {0}")]
    Malformed(String),
    /// The peer belongs to another cluster.
    #[error("the peer belongs to cluster {theirs:?}, not {ours:?}")]
    WrongCluster {
        /// The peer's cluster id.
        theirs: String,
        /// Ours.
        ours: String,
    },
    /// The proof is wrong: the peer does not hold this cluster's key.
    #[error(
        "the peer at {0} does not hold this cluster's key: start every node with the same --cluster-key-file"
    )]
    BadProof(std::net::SocketAddr),
    /// The peer's certificate is not a node certificate (mutual TLS).
    #[error(
        "the peer at {0} presented a client certificate, not a node certificate: issue node certificates with `cfgnode certs issue --role node`"
    )]
    NotANode(std::net::SocketAddr),
    /// The connection broke during the handshake.
    #[error("the connection broke during the peer handshake: {0}")]
    Connection(String),
}

impl PeerAuthError {
    /// A short, bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            PeerAuthError::Timeout(_) => "timeout",
            PeerAuthError::Malformed(_) => "malformed",
            PeerAuthError::WrongCluster { .. } => "wrong_cluster",
            PeerAuthError::BadProof(_) => "bad_proof",
            PeerAuthError::NotANode(_) => "not_a_node",
            PeerAuthError::Connection(_) => "connection",
        }
    }
}

/// The bytes a proof signs: domain, role, claim (length-prefixed fields) and session exporter.
fn proof_message(role: Role, claim: &PeerClaim, exporter: &[u8; 32]) -> Vec<u8> {
    let mut message = Vec::with_capacity(128);
    message.extend_from_slice(PROOF_CONTEXT);
    message.push(match role {
        Role::Dialer => b'd',
        Role::Acceptor => b'a',
    });
    for field in [claim.cluster_id.as_bytes(), claim.node_id.as_bytes()] {
        message.extend_from_slice(&(field.len() as u64).to_be_bytes());
        message.extend_from_slice(field);
    }
    message.extend_from_slice(&claim.generation.to_be_bytes());
    message.extend_from_slice(exporter);
    message
}

/// Computes a proof (pure: the IO below only gathers its inputs).
pub fn proof(key: &ClusterKey, role: Role, claim: &PeerClaim, exporter: &[u8; 32]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key.0);
    let tag = hmac::sign(&key, &proof_message(role, claim, exporter));
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Checks a proof (in constant time).
pub fn verify(
    key: &ClusterKey,
    role: Role,
    claim: &PeerClaim,
    exporter: &[u8; 32],
    proof: &[u8; 32],
) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key.0);
    hmac::verify(&key, &proof_message(role, claim, exporter), proof).is_ok()
}

/// The 32 exporter bytes of `connection`'s TLS session.
fn exporter(connection: &Connection, cluster_id: &str) -> Result<[u8; 32], PeerAuthError> {
    let mut out = [0u8; 32];
    connection
        .export_keying_material(&mut out, EXPORTER_LABEL, cluster_id.as_bytes())
        .map_err(|e| PeerAuthError::Connection(format!("no TLS exporter: {e:?}")))?;
    Ok(out)
}

/// The dialer's side: proves the key on a fresh peer connection and checks the acceptor's
/// proof. Returns what the acceptor claims (authenticated).
pub async fn dial_handshake(
    connection: &Connection,
    credentials: &PeerCredentials,
) -> Result<PeerClaim, PeerAuthError> {
    tokio::time::timeout(HELLO_TIMEOUT, async {
        let remote = connection.remote_address();
        let exporter = exporter(connection, &credentials.claim.cluster_id)?;
        let broke = |e: String| PeerAuthError::Connection(e);
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| broke(e.to_string()))?;
        let hello = PeerHello {
            claim: credentials.claim.clone(),
            proof: proof(
                &credentials.key,
                Role::Dialer,
                &credentials.claim,
                &exporter,
            ),
        };
        write_frame(&mut send, &encode_payload(&hello))
            .await
            .map_err(|e| broke(e.to_string()))?;
        let _ = send.finish();
        let frame = read_frame(&mut recv, MAX_HELLO_BYTES)
            .await
            .map_err(|e| broke(e.to_string()))?
            .ok_or_else(|| broke("the peer refused the handshake".to_string()))?;
        let welcome: PeerWelcome =
            decode_payload(&frame).map_err(|e| PeerAuthError::Malformed(e.to_string()))?;
        check_claim(&credentials.claim.cluster_id, &welcome.claim)?;
        if !verify(
            &credentials.key,
            Role::Acceptor,
            &welcome.claim,
            &exporter,
            &welcome.proof,
        ) {
            return Err(PeerAuthError::BadProof(remote));
        }
        Ok(welcome.claim)
    })
    .await
    .map_err(|_| PeerAuthError::Timeout(HELLO_TIMEOUT))?
}

/// The acceptor's side: reads the hello (bounded, timed), checks the proof, answers with its
/// own. Returns what the dialer claims (authenticated). On an error the caller closes the
/// connection; nothing else of the connection has been read.
pub async fn accept_handshake(
    connection: &Connection,
    credentials: &PeerCredentials,
) -> Result<PeerClaim, PeerAuthError> {
    tokio::time::timeout(HELLO_TIMEOUT, async {
        let remote = connection.remote_address();
        let exporter = exporter(connection, &credentials.claim.cluster_id)?;
        let broke = |e: String| PeerAuthError::Connection(e);
        let (mut send, mut recv) = connection
            .accept_bi()
            .await
            .map_err(|e| broke(e.to_string()))?;
        let frame = read_frame(&mut recv, MAX_HELLO_BYTES)
            .await
            .map_err(|e| PeerAuthError::Malformed(e.to_string()))?
            .ok_or_else(|| PeerAuthError::Malformed("empty hello stream".to_string()))?;
        let hello: PeerHello =
            decode_payload(&frame).map_err(|e| PeerAuthError::Malformed(e.to_string()))?;
        check_claim(&credentials.claim.cluster_id, &hello.claim)?;
        if !verify(
            &credentials.key,
            Role::Dialer,
            &hello.claim,
            &exporter,
            &hello.proof,
        ) {
            return Err(PeerAuthError::BadProof(remote));
        }
        let welcome = PeerWelcome {
            claim: credentials.claim.clone(),
            proof: proof(
                &credentials.key,
                Role::Acceptor,
                &credentials.claim,
                &exporter,
            ),
        };
        write_frame(&mut send, &encode_payload(&welcome))
            .await
            .map_err(|e| broke(e.to_string()))?;
        let _ = send.finish();
        Ok(hello.claim)
    })
    .await
    .map_err(|_| PeerAuthError::Timeout(HELLO_TIMEOUT))?
}

fn check_claim(ours: &str, claim: &PeerClaim) -> Result<(), PeerAuthError> {
    if claim.cluster_id != ours {
        return Err(PeerAuthError::WrongCluster {
            theirs: claim.cluster_id.clone(),
            ours: ours.to_string(),
        });
    }
    Ok(())
}

/// The ALPN protocol `connection` negotiated (`None` if none or not TLS).
pub fn negotiated_alpn(connection: &Connection) -> Option<Vec<u8>> {
    connection
        .handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(node: &str) -> PeerClaim {
        PeerClaim {
            cluster_id: "prod".into(),
            node_id: node.into(),
            generation: 7,
        }
    }

    #[test]
    fn proofs_bind_key_role_claim_and_session() {
        let key = ClusterKey::generate().expect("random");
        let other = ClusterKey::generate().expect("random");
        let session = [1u8; 32];
        let p = proof(&key, Role::Dialer, &claim("n1"), &session);
        assert!(verify(&key, Role::Dialer, &claim("n1"), &session, &p));
        assert!(!verify(&other, Role::Dialer, &claim("n1"), &session, &p));
        assert!(!verify(&key, Role::Acceptor, &claim("n1"), &session, &p));
        assert!(!verify(&key, Role::Dialer, &claim("n2"), &session, &p));
        let mut newer = claim("n1");
        newer.generation = 8;
        assert!(!verify(&key, Role::Dialer, &newer, &session, &p));
        assert!(!verify(&key, Role::Dialer, &claim("n1"), &[2u8; 32], &p));
    }

    #[test]
    fn key_text_round_trips_and_garbage_is_refused() {
        let key = ClusterKey::generate().expect("random");
        assert_eq!(ClusterKey::parse(&format!(" {}\n", key.to_hex())), Ok(key));
        assert_eq!(ClusterKey::parse(""), Err(BadClusterKey));
        assert_eq!(ClusterKey::parse(&"zz".repeat(32)), Err(BadClusterKey));
        assert_eq!(ClusterKey::parse(&"ab".repeat(31)), Err(BadClusterKey));
        assert_eq!(ClusterKey::parse(&"é".repeat(32)), Err(BadClusterKey));
        assert!(!format!("{:?}", ClusterKey::generate().expect("random")).contains('0'));
    }
}
