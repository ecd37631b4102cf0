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

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::fs_atomic::{AtomicWrite, write_atomically};

/// The name every node certificate carries and every client verifies (see the module's trust
/// model): one fixed name, because nodes are reached by address and move between addresses.
pub const SERVER_NAME: &str = "cfgnode";

/// The ALPN protocol id of the cfgnode protocol, version 1. A peer speaking anything else fails
/// the handshake instead of misreading frames.
pub const ALPN: &[u8] = b"cfgnode/1";

/// The subdirectory of a node's data dir that holds its self-signed certificate.
const SELF_SIGNED_DIR: &str = "tls";
/// The names never accepted for an issued certificate: they would collide with the CA's files.
const RESERVED_NAMES: &[&str] = &["ca"];

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

impl Identity {
    /// Loads a PEM certificate chain and a PEM private key, and checks that the key belongs to
    /// the chain's leaf, so a mixed-up pair fails here, naming both files, rather than at every
    /// handshake.
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        let chain = load_certs(cert)?;
        let key_der = load_key(key)?;
        check_keys_match(&chain, &key_der, cert, key)?;
        Ok(Identity {
            chain,
            key: key_der,
        })
    }

    /// This node's self-signed identity from `<data_dir>/tls/node.pem` and `node.key`, made on
    /// first use and reused afterwards, so clients can pin it. Returns whether it was created
    /// now.
    ///
    /// The key is written before the certificate, each through a synced temporary file, a
    /// rename and a directory sync ([`crate::fs_atomic`]), so a crash leaves either nothing
    /// usable (retried at the next start) or the complete pair. The key file is mode 0600 and the directory 0700. The certificate names
    /// [`SERVER_NAME`], `localhost`, 127.0.0.1 and ::1.
    pub fn load_or_generate_self_signed(data_dir: &Path) -> Result<(Identity, bool), TlsError> {
        let dir = data_dir.join(SELF_SIGNED_DIR);
        let cert = dir.join("node.pem");
        let key = dir.join("node.key");
        match (path_exists(&cert)?, path_exists(&key)?) {
            (true, true) => return Ok((Identity::load(&cert, &key)?, false)),
            (true, false) => return Err(TlsError::MissingKey { cert, key }),
            // First start, or a start that crashed after writing the key but before the
            // certificate: a key alone authenticates nothing, so it is replaced.
            (false, _) => {}
        }
        create_private_dir(&dir)?;
        let key_pair = KeyPair::generate()?;
        let common_name = format!("cfgnode node {}", key_tag(&key_pair));
        let certificate = leaf_params(&common_name)?.self_signed(&key_pair)?;
        replace_file(&key, key_pair.serialize_pem().as_bytes(), true)?;
        replace_file(&cert, certificate.pem().as_bytes(), false)?;
        tracing::info!(cert = %cert.display(), "made a self-signed node certificate");
        Ok((Identity::load(&cert, &key)?, true))
    }
}

/// The cluster certificate authority: signs the certificates that make nodes and clients
/// members (see the module's trust model).
pub struct ClusterCa {
    /// The CA certificate, the trust root of every member.
    cert: CertificateDer<'static>,
    /// The same certificate as PEM, appended to every issued chain.
    cert_pem: String,
    /// The CA's name and signing key.
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the signing key.
        f.write_str("ClusterCa { .. }")
    }
}

impl ClusterCa {
    /// The CA certificate file name in a CA dir.
    pub const CERT_FILE: &'static str = "ca.pem";
    /// The CA key file name in a CA dir.
    pub const KEY_FILE: &'static str = "ca.key";

    /// Makes a new CA in `out_dir` (created mode 0700 if missing): `ca.pem`, and `ca.key`
    /// mode 0600. Refuses to overwrite either file, since replacing a CA locks out every member
    /// it admitted.
    pub fn init(out_dir: &Path) -> Result<ClusterCa, TlsError> {
        let cert_path = out_dir.join(Self::CERT_FILE);
        let key_path = out_dir.join(Self::KEY_FILE);
        refuse_existing(&[&cert_path, &key_path])?;
        create_private_dir(out_dir)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        // A name of its own: verifiers find a certificate's issuer by name, so with a shared
        // name a certificate from another cluster's CA would fail as a bad signature instead of
        // the clearer unknown issuer.
        dn.push(
            DnType::CommonName,
            format!("cfgnode cluster CA {}", key_tag(&key)),
        );
        params.distinguished_name = dn;
        // Signs leaves only: no intermediate CAs below it.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        write_new_pair(
            &cert_path,
            cert_pem.as_bytes(),
            &key_path,
            key.serialize_pem().as_bytes(),
        )?;
        Ok(ClusterCa {
            cert: cert.der().clone(),
            cert_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads the CA in `dir` (as made by [`ClusterCa::init`]), checking that `ca.pem` holds one
    /// certificate and that `ca.key` is its key, so a mixed-up pair cannot sign certificates
    /// that nobody accepts.
    pub fn load(dir: &Path) -> Result<ClusterCa, TlsError> {
        let cert_path = dir.join(Self::CERT_FILE);
        let key_path = dir.join(Self::KEY_FILE);
        let cert_pem = read_text(&cert_path)?;
        let mut certs = parse_certs(cert_pem.as_bytes(), &cert_path)?;
        let cert = match (certs.pop(), certs.is_empty()) {
            (Some(cert), true) => cert,
            _ => {
                return Err(TlsError::BadPem {
                    path: cert_path,
                    what: "expected exactly one certificate, the CA's (as written by `cfgnode \
                           certs init`)"
                        .to_string(),
                });
            }
        };
        let key = KeyPair::from_pem(&read_text(&key_path)?).map_err(|e| TlsError::BadPem {
            path: key_path.clone(),
            what: format!("not a usable private key ({e}); pass the ca.key made by `certs init`"),
        })?;
        let key_der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        check_keys_match(std::slice::from_ref(&cert), &key_der, &cert_path, &key_path)?;
        let issuer = Issuer::from_ca_cert_der(&cert, key).map_err(|e| TlsError::BadPem {
            path: cert_path.clone(),
            what: format!("not a usable CA certificate: {e}"),
        })?;
        Ok(ClusterCa {
            cert,
            cert_pem,
            issuer,
        })
    }

    /// Issues a certificate for a node or client called `name` into `out_dir` (created mode
    /// 0700 if missing): `NAME.pem` (the leaf, then the CA) and `NAME.key` mode 0600. The leaf
    /// is valid for both server and client auth, since a node is both, and names `NAME`,
    /// [`SERVER_NAME`], `localhost`, 127.0.0.1 and ::1. `name` must match
    /// `[a-z0-9][a-z0-9.-]{0,62}` (it is a file name and a DNS name) and not be `ca`. Refuses to
    /// overwrite. Returns the certificate and key paths.
    pub fn issue(&self, name: &str, out_dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
        self.issue_for(name, CertRole::Node, out_dir)
    }

    /// Like [`ClusterCa::issue`], for a node or a client: a client certificate is valid for
    /// client auth only, so it cannot serve as a node, and a node refuses it as a peer
    /// ([`is_node_certificate`]); holding one lets its owner call the API, never join.
    pub fn issue_for(
        &self,
        name: &str,
        role: CertRole,
        out_dir: &Path,
    ) -> Result<(PathBuf, PathBuf), TlsError> {
        validate_cert_name(name)?;
        let cert_path = out_dir.join(format!("{name}.pem"));
        let key_path = out_dir.join(format!("{name}.key"));
        refuse_existing(&[&cert_path, &key_path])?;
        create_private_dir(out_dir)?;
        let key = KeyPair::generate()?;
        let mut params = leaf_params(name)?;
        if role == CertRole::Client {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        let own_name = SanType::DnsName(name.try_into()?);
        if !params.subject_alt_names.contains(&own_name) {
            params.subject_alt_names.insert(0, own_name);
        }
        let cert = params.signed_by(&key, &self.issuer)?;
        let mut chain = cert.pem();
        if !chain.ends_with('\n') {
            chain.push('\n');
        }
        chain.push_str(&self.cert_pem);
        write_new_pair(
            &cert_path,
            chain.as_bytes(),
            &key_path,
            key.serialize_pem().as_bytes(),
        )?;
        Ok((cert_path, key_path))
    }

    /// The CA certificate as the only trust root, for [`ServerTls::Mutual`] and
    /// [`ClientTls::Verified`].
    pub fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.clone()).map_err(config_error)?;
        Ok(roots)
    }
}

/// What a certificate from the cluster CA is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertRole {
    /// A node: server and client auth (a node both accepts and dials).
    Node,
    /// A client (operators, agents, applications): client auth only.
    Client,
}

/// Whether `cert` (DER) says it is a node's: its extended key usage allows server auth, which
/// [`CertRole::Client`] certificates lack. Used under mutual TLS to refuse a client's
/// certificate on a peer connection. A certificate that does not parse is not a node's.
pub fn is_node_certificate(cert: &CertificateDer<'_>) -> bool {
    match x509_parser::parse_x509_certificate(cert.as_ref()) {
        Ok((_, parsed)) => matches!(
            parsed.extended_key_usage(),
            Ok(Some(eku)) if eku.value.server_auth
        ),
        Err(_) => false,
    }
}

/// Checks a name for [`ClusterCa::issue`]: `[a-z0-9][a-z0-9.-]{0,62}`, not reserved.
fn validate_cert_name(name: &str) -> Result<(), TlsError> {
    let bad = |reason| TlsError::BadName {
        name: name.to_string(),
        reason,
    };
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let well_formed = match name.as_bytes() {
        [first, rest @ ..] => {
            allowed(*first)
                && rest.len() <= 62
                && rest.iter().all(|&b| allowed(b) || b == b'.' || b == b'-')
        }
        [] => false,
    };
    if !well_formed {
        return Err(bad(
            "use 1 to 63 lowercase letters, digits, '.' or '-', starting with a letter or digit",
        ));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(bad(
            "it is reserved for the CA's own files (ca.pem, ca.key); pick another name",
        ));
    }
    Ok(())
}

/// A short tag unique to `key`, for certificate subjects: hex of 8 bytes of the public key
/// (past an EC point's format byte), which are random.
fn key_tag(key: &KeyPair) -> String {
    let raw = key.public_key_raw();
    let bytes = raw.get(1..9).unwrap_or(raw);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parameters of a leaf certificate: server and client auth, the shared server name, loopback.
fn leaf_params(common_name: &str) -> Result<CertificateParams, TlsError> {
    let mut params =
        CertificateParams::new(vec![SERVER_NAME.to_string(), "localhost".to_string()])?;
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(params)
}

/// Loads every certificate of a PEM file, leaf first. Fails, naming the file, when it holds
/// none.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certs(&read_bytes(path)?, path)
}

fn parse_certs(bytes: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: path.to_path_buf(),
            what: format!("not valid PEM ({e}); pass a PEM certificate file"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::BadPem {
            path: path.to_path_buf(),
            what: "no CERTIFICATE block found; pass a PEM certificate file (e.g. NAME.pem from \
                   `cfgnode certs issue`), not a key"
                .to_string(),
        });
    }
    Ok(certs)
}

/// Loads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file. Fails, naming the
/// file, when it holds none; warns when other users may read it.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_bytes(path)?;
    warn_if_readable_by_others(path);
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::BadPem {
        path: path.to_path_buf(),
        what: format!(
            "no usable private key ({e}); pass a PEM key file (e.g. NAME.key from \
             `cfgnode certs issue`), not a certificate"
        ),
    })
}

/// Loads a PEM file of trusted CA certificates (e.g. `ca.pem`, or a node's self-signed
/// `node.pem` to pin that one node).
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::BadPem {
            path: path.to_path_buf(),
            what: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// Fails unless `key` is the private key of `chain`'s leaf.
fn check_keys_match(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), TlsError> {
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| TlsError::BadPem {
            path: key_path.to_path_buf(),
            what: format!("not a key this build can use ({e}); use an ECDSA, Ed25519 or RSA key"),
        })?;
    match CertifiedKey::new(chain.to_vec(), signing_key).keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            })
        }
        // The key cannot tell its public half: the handshake will be the judge.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(e) => Err(TlsError::BadPem {
            path: cert_path.to_path_buf(),
            what: format!("the first certificate is not usable: {e}"),
        }),
    }
}

/// How a node presents itself and whom it accepts.
#[derive(Debug, Clone)]
pub enum ServerTls {
    /// Its own self-signed certificate; any client may connect (the token still applies).
    SelfSigned(Identity),
    /// A certificate from the cluster CA; only clients presenting a certificate that chains to
    /// the CA complete the handshake (rustls' `WebPkiClientVerifier`), so a node or client
    /// without one cannot open a single stream.
    Mutual {
        /// The cluster CA.
        roots: RootCertStore,
        /// This node's certificate from it.
        identity: Identity,
    },
}

/// How a client (or a node dialing a peer) verifies the server and presents itself.
#[derive(Debug, Clone)]
pub enum ClientTls {
    /// DANGEROUS: encrypted, but the server's certificate is NOT verified (the handshake
    /// signature is still checked against it), so an active attacker could impersonate the
    /// node. For self-signed nodes and local use only.
    Insecure {
        /// A certificate to present, if the server asks for one.
        identity: Option<Identity>,
    },
    /// The server must present a certificate from these roots for the name the client dials
    /// (normally [`SERVER_NAME`]).
    Verified {
        /// Trusted CA certificates.
        roots: RootCertStore,
        /// This client's certificate, for servers in mutual TLS mode.
        identity: Option<Identity>,
    },
}

/// The one crypto provider of every config, passed explicitly.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

/// The rustls server config for `tls` (TLS 1.3, ALPN [`ALPN`], no 0-RTT), wrapped for quinn.
pub fn server_crypto(tls: &ServerTls) -> Result<quinn::crypto::rustls::QuicServerConfig, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?;
    let mut config = match tls {
        ServerTls::SelfSigned(identity) => builder
            .with_no_client_auth()
            .with_single_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(config_error)?,
        ServerTls::Mutual { roots, identity } => {
            // Mandatory client auth is the builder's default: no anonymous clients.
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots.clone()), provider())
                    .build()
                    .map_err(config_error)?;
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(identity.chain.clone(), identity.key.clone_key())
                .map_err(config_error)?
        }
    };
    config.alpn_protocols = vec![ALPN.to_vec(), crate::peer_auth::PEER_ALPN.to_vec()];
    // No 0-RTT: early data could be replayed, and a replayed write would apply twice.
    config.max_early_data_size = 0;
    quinn::crypto::rustls::QuicServerConfig::try_from(config).map_err(config_error)
}

/// The rustls client config for `tls` (TLS 1.3, ALPN [`ALPN`], no 0-RTT), wrapped for quinn.
pub fn client_crypto(tls: &ClientTls) -> Result<quinn::crypto::rustls::QuicClientConfig, TlsError> {
    client_crypto_for(tls, ALPN)
}

/// The rustls client config for `tls` with ALPN `alpn` ([`ALPN`] for clients,
/// [`PEER_ALPN`](crate::PEER_ALPN) for a node dialing a peer).
pub fn client_crypto_for(
    tls: &ClientTls,
    alpn: &[u8],
) -> Result<quinn::crypto::rustls::QuicClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?;
    let (builder, identity) = match tls {
        ClientTls::Insecure { identity } => (
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(UnverifiedServer(provider()))),
            identity,
        ),
        ClientTls::Verified { roots, identity } => {
            (builder.with_root_certificates(roots.clone()), identity)
        }
    };
    let mut config = match identity {
        Some(identity) => builder
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(config_error)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    config.enable_early_data = false;
    quinn::crypto::rustls::QuicClientConfig::try_from(config).map_err(config_error)
}

/// DANGEROUS: accepts any server certificate, while still checking that the handshake is
/// signed by the key in it (with the ring provider's algorithms), so the session is encrypted
/// to whoever answered but not authenticated. It is what [`ClientTls::Insecure`] means.
#[derive(Debug)]
struct UnverifiedServer(Arc<CryptoProvider>);

impl ServerCertVerifier for UnverifiedServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(io_error(path))
}

fn read_text(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(io_error(path))
}

/// Whether `path` exists; unlike `Path::exists`, an unreadable directory is an error.
fn path_exists(path: &Path) -> Result<bool, TlsError> {
    path.try_exists().map_err(io_error(path))
}

fn refuse_existing(paths: &[&Path]) -> Result<(), TlsError> {
    for path in paths {
        if path_exists(path)? {
            return Err(TlsError::Exists(path.to_path_buf()));
        }
    }
    Ok(())
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            key = %path.display(),
            "private key file is accessible to other users; run `chmod 600` on it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// Creates `dir` and its missing parents, mode 0700 (existing directories keep their mode).
fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_error(dir))
}

/// How a TLS file is written: mode 0600 for keys, 0644 for certificates.
fn file_write(private: bool, replace: bool) -> AtomicWrite {
    AtomicWrite {
        mode: Some(if private { 0o600 } else { 0o644 }),
        owner: None,
        replace,
    }
}

/// Writes a new file (never overwriting, see [`crate::fs_atomic`]): complete or absent after a
/// crash, mode 0600 when `private`.
fn write_new(path: &Path, contents: &[u8], private: bool) -> Result<(), TlsError> {
    write_atomically(path, contents, file_write(private, false)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            TlsError::Exists(path.to_path_buf())
        } else {
            io_error(path)(e)
        }
    })
}

/// Writes a certificate and its key as new files. The key goes first and is removed again if
/// the certificate cannot be written, so a failed command leaves nothing that blocks a retry.
fn write_new_pair(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<(), TlsError> {
    write_new(key_path, key_pem, true)?;
    if let Err(e) = write_new(cert_path, cert_pem, false) {
        // Best effort: the error that matters is the certificate's.
        let _ = std::fs::remove_file(key_path);
        return Err(e);
    }
    Ok(())
}

/// Replaces `path` atomically (see [`crate::fs_atomic`]), mode 0600 when `private`.
fn replace_file(path: &Path, contents: &[u8], private: bool) -> Result<(), TlsError> {
    write_atomically(path, contents, file_write(private, true)).map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs_atomic::names;

    #[test]
    fn a_pair_is_written_whole_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (dir.path().join("n.pem"), dir.path().join("n.key"));
        // The certificate's name was taken after the up-front check (another command).
        std::fs::write(&cert, b"someone else's").expect("write");
        let err = write_new_pair(&cert, b"cert", &key, b"key").expect_err("taken");
        assert!(
            matches!(err, TlsError::Exists(ref p) if p == &cert),
            "{err:?}"
        );
        assert_eq!(std::fs::read(&cert).expect("read"), b"someone else's");
        assert_eq!(names(dir.path()), ["n.pem"], "no key, no temporary file");

        std::fs::remove_file(&cert).expect("rm");
        write_new_pair(&cert, b"cert", &key, b"key").expect("written");
        assert_eq!(std::fs::read(&cert).expect("read"), b"cert");
        assert_eq!(std::fs::read(&key).expect("read"), b"key");
        assert_eq!(names(dir.path()), ["n.key", "n.pem"]);
    }

    #[test]
    fn self_signed_material_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        Identity::load_or_generate_self_signed(dir.path()).expect("made");
        let tls = dir.path().join(SELF_SIGNED_DIR);
        assert_eq!(names(&tls), ["node.key", "node.pem"]);
        // A key alone (a crash between the two files) is replaced in place.
        std::fs::remove_file(tls.join("node.pem")).expect("rm");
        Identity::load_or_generate_self_signed(dir.path()).expect("remade");
        assert_eq!(names(&tls), ["node.key", "node.pem"]);
    }
}
