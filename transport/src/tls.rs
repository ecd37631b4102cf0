//! TLS material and configuration: node certificates, the cluster CA, and the rustls configs
//! quinn runs on.
//!
//! Two modes:
//!
//! - **Self-signed** (default): a node makes its own certificate on first start and keeps it in
//!   `<data-dir>/tls/`. Traffic is encrypted, but clients cannot tell this node from an
//!   impostor: they connect with [`ClientTls::Insecure`], and the node warns about it.
//! - **Mutual TLS**: `cfgnode certs init` makes a cluster CA and `cfgnode certs issue` signs a
//!   certificate per node and client. Nodes and clients then verify each other against the CA:
//!   anyone without a certificate from it is refused at the handshake. Every certificate names
//!   [`SERVER_NAME`], which is the name clients verify, so "holds a certificate from the cluster
//!   CA" is exactly what authenticates a peer; per-node names are carried for operators.
//!
//! The crypto provider is always rustls' ring provider, passed explicitly: nothing depends on
//! a process-wide default. QUIC means TLS 1.3 only; 0-RTT is never enabled, so no request (and
//! in particular no write) can be replayed from early data.

use std::io::Write;
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
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The name every node certificate carries and every client verifies.
pub const SERVER_NAME: &str = "cfgnode";

/// The ALPN protocol id of the cfgnode protocol, version 1.
pub const ALPN: &[u8] = b"cfgnode/1";

/// Why TLS material could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file exists that this command would overwrite.
    #[error("{0} already exists: refusing to overwrite it; move it away or pick another --out")]
    Exists(PathBuf),
    /// A PEM file holds nothing usable.
    #[error("{path}: {what}")]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration (e.g. a key that does not match its certificate).
    #[error("TLS configuration refused: {0}")]
    Config(String),
    /// A certificate name is not acceptable.
    #[error("invalid certificate name {0:?}: use 1-63 lowercase letters, digits, '.' or '-'")]
    BadName(String),
}

/// A certificate chain with its private key.
#[derive(Debug)]
pub struct Identity {
    /// The leaf first.
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
    /// Loads a PEM certificate chain and a PEM private key.
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        Ok(Identity {
            chain: load_certs(cert)?,
            key: load_key(key)?,
        })
    }

    /// This node's self-signed identity from `<data_dir>/tls/`, made on first use. Returns
    /// whether it was created now.
    pub fn load_or_generate_self_signed(data_dir: &Path) -> Result<(Identity, bool), TlsError> {
        let dir = data_dir.join("tls");
        let cert = dir.join("node.pem");
        let key = dir.join("node.key");
        if cert.exists() && key.exists() {
            return Ok((Identity::load(&cert, &key)?, false));
        }
        create_private_dir(&dir)?;
        let key_pair = KeyPair::generate()?;
        let mut params = leaf_params("cfgnode self-signed node")?;
        params.is_ca = IsCa::NoCa;
        let certificate = params.self_signed(&key_pair)?;
        write_new(&cert, certificate.pem().as_bytes(), false)?;
        write_new(&key, key_pair.serialize_pem().as_bytes(), true)?;
        Ok((Identity::load(&cert, &key)?, true))
    }
}

/// The cluster certificate authority.
pub struct ClusterCa {
    cert_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterCa { .. }")
    }
}

impl ClusterCa {
    /// The CA certificate file name in a CA dir.
    pub const CERT_FILE: &'static str = "ca.pem";
    /// The CA key file name in a CA dir.
    pub const KEY_FILE: &'static str = "ca.key";

    /// Makes a new CA in `out_dir` (`ca.pem`, `ca.key` mode 0600). Refuses to overwrite.
    pub fn init(out_dir: &Path) -> Result<ClusterCa, TlsError> {
        let cert_path = out_dir.join(Self::CERT_FILE);
        let key_path = out_dir.join(Self::KEY_FILE);
        for path in [&cert_path, &key_path] {
            if path.exists() {
                return Err(TlsError::Exists(path.clone()));
            }
        }
        create_private_dir(out_dir)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "cfgnode cluster CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        write_new(&cert_path, cert.pem().as_bytes(), false)?;
        write_new(&key_path, key.serialize_pem().as_bytes(), true)?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            key,
        })
    }

    /// Loads the CA in `dir`.
    pub fn load(dir: &Path) -> Result<ClusterCa, TlsError> {
        let cert_path = dir.join(Self::CERT_FILE);
        let key_path = dir.join(Self::KEY_FILE);
        let cert_pem = read_text(&cert_path)?;
        let key = KeyPair::from_pem(&read_text(&key_path)?).map_err(|e| TlsError::BadPem {
            path: key_path.clone(),
            what: format!("not a usable private key: {e}"),
        })?;
        Ok(ClusterCa { cert_pem, key })
    }

    /// Issues a certificate for a node or client called `name` into `out_dir` (`NAME.pem`,
    /// `NAME.key` mode 0600), usable as both server and client. Refuses to overwrite.
    pub fn issue(&self, name: &str, out_dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
        validate_cert_name(name)?;
        let cert_path = out_dir.join(format!("{name}.pem"));
        let key_path = out_dir.join(format!("{name}.key"));
        for path in [&cert_path, &key_path] {
            if path.exists() {
                return Err(TlsError::Exists(path.clone()));
            }
        }
        create_private_dir(out_dir)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?;
        let key = KeyPair::generate()?;
        let mut params = leaf_params(name)?;
        params
            .subject_alt_names
            .insert(0, SanType::DnsName(name.try_into()?));
        let cert = params.signed_by(&key, &issuer)?;
        // The chain file carries the leaf then the CA, so peers can build the path.
        let chain = format!("{}{}", cert.pem(), self.cert_pem);
        write_new(&cert_path, chain.as_bytes(), false)?;
        write_new(&key_path, key.serialize_pem().as_bytes(), true)?;
        Ok((cert_path, key_path))
    }

    /// The CA certificate as a trust root.
    pub fn roots(&self) -> Result<RootCertStore, TlsError> {
        let der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).map_err(|e| {
            TlsError::BadPem {
                path: PathBuf::from(Self::CERT_FILE),
                what: e.to_string(),
            }
        })?;
        let mut roots = RootCertStore::empty();
        roots
            .add(der)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(roots)
    }
}

fn validate_cert_name(name: &str) -> Result<(), TlsError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(TlsError::BadName(name.to_string()))
    }
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
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(params)
}

/// Loads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_bytes(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: path.to_path_buf(),
            what: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::BadPem {
            path: path.to_path_buf(),
            what: "no CERTIFICATE block found".to_string(),
        });
    }
    Ok(certs)
}

/// Loads the first private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_bytes(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::BadPem {
        path: path.to_path_buf(),
        what: format!("no usable private key: {e}"),
    })
}

/// Loads a PEM file of trusted CA certificates.
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

/// How a node presents itself and whom it accepts.
#[derive(Debug, Clone)]
pub enum ServerTls {
    /// Its own self-signed certificate; any client may connect (the token still applies).
    SelfSigned(Identity),
    /// A certificate from the cluster CA; only clients with a certificate from it connect.
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
    /// Encrypted, but the server's certificate is NOT verified: an active attacker could
    /// impersonate the node. For self-signed nodes and local use only.
    Insecure {
        /// A certificate to present, if the server asks for one.
        identity: Option<Identity>,
    },
    /// The server must present a certificate from these roots for [`SERVER_NAME`].
    Verified {
        /// Trusted CA certificates.
        roots: RootCertStore,
        /// This client's certificate, for servers in mutual TLS mode.
        identity: Option<Identity>,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

/// The rustls server config for `tls`, wrapped for quinn.
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
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.max_early_data_size = 0;
    quinn::crypto::rustls::QuicServerConfig::try_from(config).map_err(config_error)
}

/// The rustls client config for `tls`, wrapped for quinn.
pub fn client_crypto(tls: &ClientTls) -> Result<quinn::crypto::rustls::QuicClientConfig, TlsError> {
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
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.enable_early_data = false;
    quinn::crypto::rustls::QuicClientConfig::try_from(config).map_err(config_error)
}

/// Accepts any server certificate while still checking that the handshake is signed by the
/// key in it. Dangerous by design: it is what [`ClientTls::Insecure`] means.
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

fn read_bytes(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| TlsError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes a new file (never overwriting), mode 0600 when `private`.
fn write_new(path: &Path, contents: &[u8], private: bool) -> Result<(), TlsError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let fail = |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            TlsError::Exists(path.to_path_buf())
        } else {
            fail(e)
        }
    })?;
    file.write_all(contents).map_err(fail)?;
    file.sync_all().map_err(fail)
}
