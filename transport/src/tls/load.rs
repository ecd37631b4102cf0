//! Reading TLS material: PEM certificates, keys and roots from files, each failure naming the
//! file and what to pass instead.

use std::path::Path;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::files::read_bytes;
use super::{Identity, TlsError};

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
}

/// Loads every certificate of a PEM file, leaf first. Fails, naming the file, when it holds
/// none.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certs(&read_bytes(path)?, path)
}

pub(super) fn parse_certs(
    bytes: &[u8],
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
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
pub(super) fn check_keys_match(
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
