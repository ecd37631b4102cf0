//! The rustls configs quinn runs on: TLS 1.3 only, the cfgnode ALPN ids, no 0-RTT, and the
//! explicit ring crypto provider.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{ALPN, Identity, TlsError};

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
    /// (normally [`SERVER_NAME`](super::SERVER_NAME)).
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

pub(super) fn config_error(e: impl std::fmt::Display) -> TlsError {
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
