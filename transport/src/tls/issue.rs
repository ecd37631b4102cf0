//! Making certificates: the cluster CA, the node and client certificates it issues, and a
//! node's self-signed certificate made on first start.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::config::config_error;
use super::files::{
    create_private_dir, path_exists, read_text, refuse_existing, replace_file, write_new_pair,
};
use super::load::{check_keys_match, parse_certs};
use super::{Identity, SERVER_NAME, TlsError};

/// The subdirectory of a node's data dir that holds its self-signed certificate.
const SELF_SIGNED_DIR: &str = "tls";
/// The names never accepted for an issued certificate: they would collide with the CA's files.
const RESERVED_NAMES: &[&str] = &["ca"];

impl Identity {
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

    /// The CA certificate as the only trust root, for
    /// [`ServerTls::Mutual`](super::ServerTls::Mutual) and
    /// [`ClientTls::Verified`](super::ClientTls::Verified).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs_atomic::names;

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
