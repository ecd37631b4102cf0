//! TLS termination for the proxy listener (`--proxy-tls-cert` / `--proxy-tls-key`): the
//! certificate chain and key are read once at start (PEM), and every accepted connection is
//! handshaken with them before HTTP is served on it. TLS 1.2 and 1.3, ring provider, ALPN
//! `http/1.1` (the proxy speaks HTTP/1.1 to clients and backends).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::error::NodeError;

/// The acceptor for the proxy's certificate `cert` (PEM chain) and key `key` (PEM).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, NodeError> {
    let chain = cfgnode_transport::load_certs(cert)
        .map_err(|e| NodeError::Config(format!("--proxy-tls-cert {}: {e}", cert.display())))?;
    let key = cfgnode_transport::load_key(key)
        .map_err(|e| NodeError::Config(format!("--proxy-tls-key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| NodeError::Config(format!("proxy TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            NodeError::Config(format!(
                "--proxy-tls-cert and --proxy-tls-key do not make a usable pair: {e}"
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
