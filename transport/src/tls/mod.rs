//! TLS material and configuration: node certificates, the cluster CA, and the rustls configs
//! quinn runs on.
//!
//! Two modes:
//!
//! - **Self-signed** (default): a node makes its own certificate on first start and keeps it in
//!   `<data-dir>/tls/`. Traffic is encrypted, but clients cannot tell this node from an
//!   impostor: they connect with [`ClientTls::Insecure`] (or pin the node's certificate as the
//!   only root), and the node warns about it.
//! - **Mutual TLS**: `cfgnode certs init` makes a cluster CA and `cfgnode certs issue` signs a
//!   certificate per node and client. Nodes and clients then verify each other against the CA:
//!   anyone without a certificate from it is refused at the handshake.
//!
//! # Trust model
//!
//! Every certificate carries [`SERVER_NAME`], which is the name every client verifies, and the
//! issued ones are valid for both server and client auth. So in mutual TLS mode "holds a
//! certificate from the cluster CA" is exactly what authenticates a peer, as a node or as a
//! client: a certificate is a membership credential, and the CA key is what admits members.
//! Per-node names are carried as well, for operators and for clients that want to verify one
//! particular node. Certificates do not expire (rcgen's default validity) and there is no
//! revocation: to remove a member, make a new CA and re-issue.
//!
//! # Protocol choices
//!
//! The crypto provider is always rustls' ring provider, passed explicitly: nothing depends on a
//! process-wide default. QUIC means TLS 1.3 only. 0-RTT is never enabled (the server accepts no
//! early data, clients send none), so no request, and in particular no write, can be replayed
//! from early data.
//!
//! # Layout
//!
//! - `issue`: the cluster CA ([`ClusterCa`]) and the certificates it issues, and a node's
//!   self-signed certificate made on first start.
//! - `load`: PEM certificates, keys and roots read from files, each key checked against its
//!   certificate.
//! - `config`: the rustls server and client configs quinn runs on ([`ServerTls`], [`ClientTls`]).
//! - `files`: TLS files written crash-safely with the right modes (keys 0600, directories
//!   0700), over [`crate::fs_atomic`].

mod config;
mod files;
mod issue;
mod load;

use std::path::PathBuf;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use config::{ClientTls, ServerTls, client_crypto, client_crypto_for, server_crypto};
pub use issue::{CertRole, ClusterCa, is_node_certificate};
pub use load::{load_certs, load_key, load_roots};

/// The name every node certificate carries and every client verifies (see the module's trust
/// model): one fixed name, because nodes are reached by address and move between addresses.
pub const SERVER_NAME: &str = "cfgnode";

/// The ALPN protocol id of the cfgnode protocol, version 1. A peer speaking anything else fails
/// the handshake instead of misreading frames.
pub const ALPN: &[u8] = b"cfgnode/1";

/// Why TLS material could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file or directory could not be read or written.
    #[error("cannot access {path}: {source}; check the path and that this user may use it")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file exists that this command would overwrite.
    #[error("{0} already exists: refusing to overwrite it; move it away or write elsewhere")]
    Exists(PathBuf),
    /// A PEM file holds nothing usable.
    #[error("{path}: {what}")]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What is wrong, and what to pass instead.
        what: String,
    },
    /// A private key is not the one of its certificate.
    #[error(
        "the private key {key} does not belong to the certificate {cert}: pass the key that was \
         made with that certificate"
    )]
    KeyMismatch {
        /// The certificate (chain) file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A node's self-signed certificate is present but its key is gone.
    #[error(
        "{cert} exists but its private key {key} is missing: restore the key, or remove {cert} \
         to make a new self-signed certificate (clients that pinned the old one must re-pin)"
    )]
    MissingKey {
        /// The certificate file.
        cert: PathBuf,
        /// The missing key file.
        key: PathBuf,
    },
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error(
        "TLS configuration refused: {0}; check that each key matches its certificate and that \
         the CA file holds CA certificates"
    )]
    Config(String),
    /// A certificate name is not acceptable.
    #[error("invalid certificate name {name:?}: {reason}")]
    BadName {
        /// The name given.
        name: String,
        /// Why it is refused and what to use instead.
        reason: &'static str,
    },
}

/// A certificate chain with its private key: what a node or client presents at the handshake.
///
/// `Debug` never shows the key (rustls' key types elide it).
#[derive(Debug)]
pub struct Identity {
    /// The leaf first, then any intermediates (and possibly the root), as peers need them to
    /// build the path to their trusted CA.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}
