//! TLS material and handshakes on real QUIC endpoints on 127.0.0.1:0: self-signed node
//! certificates, the cluster CA, and who mutual TLS lets in.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cfgnode_transport::{
    ClientTls, ClusterCa, Identity, SERVER_NAME, ServerTls, TlsError, bind_endpoint, load_certs,
    load_key, load_roots, read_frame, write_frame,
};
use quinn::Endpoint;

const DEADLINE: Duration = Duration::from_secs(10);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Waits until `done` holds, failing the test at the deadline.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A server that echoes one frame per stream behind "echo:", and records what it saw.
struct EchoServer {
    endpoint: Endpoint,
    /// Streams it answered: a refused peer must never get one.
    streams: Arc<AtomicUsize>,
    /// Why incoming connections failed their handshake, as the server saw it.
    refusals: Arc<Mutex<Vec<String>>>,
}

impl EchoServer {
    fn start(tls: &ServerTls) -> EchoServer {
        let endpoint = bind_endpoint(
            loopback(),
            Some(tls),
            &ClientTls::Insecure { identity: None },
        )
        .expect("server endpoint");
        let streams = Arc::new(AtomicUsize::new(0));
        let refusals = Arc::new(Mutex::new(Vec::new()));
        let (server, served, refused) = (endpoint.clone(), streams.clone(), refusals.clone());
        tokio::spawn(async move {
            while let Some(incoming) = server.accept().await {
                let (served, refused) = (served.clone(), refused.clone());
                tokio::spawn(async move {
                    let connection = match incoming.await {
                        Ok(connection) => connection,
                        Err(e) => {
                            refused.lock().expect("lock").push(e.to_string());
                            return;
                        }
                    };
                    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                        served.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(async move {
                            if let Ok(Some(frame)) = read_frame(&mut recv, 1024).await {
                                let reply = [b"echo:".as_slice(), &frame].concat();
                                let _ = write_frame(&mut send, &reply).await;
                                let _ = send.finish();
                            }
                        });
                    }
                });
            }
        });
        EchoServer {
            endpoint,
            streams,
            refusals,
        }
    }

    fn served(&self) -> usize {
        self.streams.load(Ordering::SeqCst)
    }

    /// Waits for the server to record a refused handshake and returns all refusals so far.
    async fn refusals(&self) -> String {
        wait_until("the server to refuse the handshake", || {
            !self.refusals.lock().expect("lock").is_empty()
        })
        .await;
        self.refusals.lock().expect("lock").join("; ")
    }

    /// Connects as `server_name` and exchanges one frame; `Err` carries what failed.
    async fn exchange_as(&self, tls: &ClientTls, server_name: &str) -> Result<Vec<u8>, String> {
        let client = bind_endpoint(loopback(), None, tls).map_err(|e| e.to_string())?;
        let target = self.endpoint.local_addr().map_err(|e| e.to_string())?;
        let attempt = async {
            let connection = client
                .connect(target, server_name)
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            let (mut send, mut recv) = connection
                .open_bi()
                .await
                .map_err(|e| format!("open: {e}"))?;
            write_frame(&mut send, b"ping")
                .await
                .map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            read_frame(&mut recv, 1024)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "no answer".to_string())
        };
        tokio::time::timeout(DEADLINE, attempt)
            .await
            .map_err(|_| "timeout".to_string())?
    }

    async fn exchange(&self, tls: &ClientTls) -> Result<Vec<u8>, String> {
        self.exchange_as(tls, SERVER_NAME).await
    }
}

const ECHO: &[u8] = b"echo:ping";

fn insecure() -> ClientTls {
    ClientTls::Insecure { identity: None }
}

#[test]
fn self_signed_certificate_is_made_once_kept_and_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, created) = Identity::load_or_generate_self_signed(dir.path()).expect("cert");
    assert!(created, "first start makes the certificate");
    let (again, created) = Identity::load_or_generate_self_signed(dir.path()).expect("cert");
    assert!(!created, "later starts reuse it");
    assert_eq!(
        first.chain, again.chain,
        "the same certificate, so clients can pin it"
    );
    let tls = dir.path().join("tls");
    assert_eq!(mode(&tls.join("node.key")), 0o600);
    assert_eq!(mode(&tls), 0o700);
    assert_eq!(load_certs(&tls.join("node.pem")).expect("pem"), first.chain);
}

#[test]
fn self_signed_half_written_material_is_remade_or_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = dir.path().join("tls");
    let (first, _) = Identity::load_or_generate_self_signed(dir.path()).expect("cert");

    // A crash between writing the key and the certificate leaves a key alone: remade.
    std::fs::remove_file(tls.join("node.pem")).expect("rm");
    let (remade, created) = Identity::load_or_generate_self_signed(dir.path()).expect("remade");
    assert!(created);
    assert_ne!(remade.chain, first.chain);
    assert_eq!(mode(&tls.join("node.key")), 0o600);

    // A certificate without its key is not silently replaced: clients may have pinned it.
    std::fs::remove_file(tls.join("node.key")).expect("rm");
    let err = Identity::load_or_generate_self_signed(dir.path()).expect_err("key missing");
    assert!(matches!(err, TlsError::MissingKey { .. }), "{err:?}");
    assert!(err.to_string().contains("node.key"), "{err}");
    assert!(tls.join("node.pem").exists(), "the certificate is kept");
}

#[tokio::test]
async fn self_signed_server_and_insecure_client_exchange_a_frame() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (identity, _) = Identity::load_or_generate_self_signed(dir.path()).expect("cert");
    let server = EchoServer::start(&ServerTls::SelfSigned(identity));
    assert_eq!(server.exchange(&insecure()).await.as_deref(), Ok(ECHO));
    assert_eq!(server.served(), 1);
}

#[tokio::test]
async fn a_pinned_self_signed_certificate_is_valid_for_its_names_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (identity, _) = Identity::load_or_generate_self_signed(dir.path()).expect("cert");
    let server = EchoServer::start(&ServerTls::SelfSigned(identity));
    let pinned = ClientTls::Verified {
        roots: load_roots(&dir.path().join("tls/node.pem")).expect("roots"),
        identity: None,
    };
    for name in [SERVER_NAME, "localhost", "127.0.0.1", "::1"] {
        assert_eq!(
            server.exchange_as(&pinned, name).await.as_deref(),
            Ok(ECHO),
            "{name}"
        );
    }
    let err = server
        .exchange_as(&pinned, "elsewhere.example")
        .await
        .expect_err("not a name of the certificate");
    assert!(err.contains("not valid for name"), "{err}");

    // Another node's self-signed certificate is not trusted by that pin.
    let other = tempfile::tempdir().expect("tempdir");
    let (other_identity, _) = Identity::load_or_generate_self_signed(other.path()).expect("cert");
    let impostor = EchoServer::start(&ServerTls::SelfSigned(other_identity));
    let err = impostor.exchange(&pinned).await.expect_err("impostor");
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert_eq!(impostor.served(), 0);
}

#[tokio::test]
async fn a_verifying_client_refuses_a_self_signed_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (identity, _) = Identity::load_or_generate_self_signed(dir.path()).expect("cert");
    let server = EchoServer::start(&ServerTls::SelfSigned(identity));
    let ca_dir = tempfile::tempdir().expect("tempdir");
    let ca = ClusterCa::init(ca_dir.path()).expect("ca");
    let verified = ClientTls::Verified {
        roots: ca.roots().expect("roots"),
        identity: None,
    };
    let err = server
        .exchange(&verified)
        .await
        .expect_err("unknown issuer");
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert_eq!(server.served(), 0, "no request reached the server");
}

#[test]
fn ca_init_and_issue_write_private_keys_and_never_overwrite() {
    let root = tempfile::tempdir().expect("tempdir");
    let ca_dir = root.path().join("ca");
    let ca = ClusterCa::init(&ca_dir).expect("ca");
    assert_eq!(mode(&ca_dir), 0o700, "a new CA dir is private");
    assert_eq!(mode(&ca_dir.join(ClusterCa::KEY_FILE)), 0o600);
    let ca_cert = load_certs(&ca_dir.join(ClusterCa::CERT_FILE)).expect("ca cert");
    assert_eq!(ca_cert.len(), 1);

    let before = std::fs::read(ca_dir.join(ClusterCa::KEY_FILE)).expect("key");
    let err = ClusterCa::init(&ca_dir).expect_err("init refuses to overwrite");
    assert!(
        matches!(err, TlsError::Exists(ref p) if p.ends_with("ca.pem")),
        "{err:?}"
    );
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");
    assert_eq!(
        std::fs::read(ca_dir.join(ClusterCa::KEY_FILE)).expect("key"),
        before,
        "the CA key is untouched"
    );

    let certs = root.path().join("certs");
    let (cert, key) = ca.issue("node-1", &certs).expect("issue");
    assert_eq!(cert, certs.join("node-1.pem"));
    assert_eq!(key, certs.join("node-1.key"));
    assert_eq!(mode(&key), 0o600);
    let chain = load_certs(&cert).expect("chain");
    assert_eq!(chain.len(), 2, "leaf then CA");
    assert_eq!(chain[1], ca_cert[0]);
    Identity::load(&cert, &key).expect("the key belongs to the certificate");

    let leaf_before = std::fs::read(&cert).expect("leaf");
    let err = ca
        .issue("node-1", &certs)
        .expect_err("issue refuses to overwrite");
    assert!(matches!(err, TlsError::Exists(_)), "{err:?}");
    assert_eq!(std::fs::read(&cert).expect("leaf"), leaf_before);

    let longest = "a".repeat(63);
    for good in ["a", "0", "n.example-1", longest.as_str()] {
        ca.issue(good, &certs)
            .unwrap_or_else(|e| panic!("{good:?}: {e}"));
    }
    let too_long = "a".repeat(64);
    for bad in [
        "",
        "Node",
        "-a",
        ".a",
        "a b",
        "a/b",
        "a_b",
        "ca",
        "ü",
        too_long.as_str(),
    ] {
        let err = ca.issue(bad, &certs).expect_err(bad);
        assert!(matches!(err, TlsError::BadName { .. }), "{bad:?}: {err:?}");
    }
    assert!(!certs.join(".pem").exists() && !certs.join("ca.pem").exists());
}

#[test]
fn mixed_up_keys_are_refused_when_loaded() {
    let root = tempfile::tempdir().expect("tempdir");
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let ca_a = ClusterCa::init(&a).expect("ca a");
    ClusterCa::init(&b).expect("ca b");
    let (cert_1, _) = ca_a.issue("node-1", &a).expect("issue");
    let (_, key_2) = ca_a.issue("node-2", &a).expect("issue");

    let err = Identity::load(&cert_1, &key_2).expect_err("wrong key");
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("node-1.pem") && text.contains("node-2.key"),
        "{text}"
    );

    std::fs::copy(b.join("ca.key"), a.join("ca.key")).expect("swap the CA key");
    let err = ClusterCa::load(&a).expect_err("CA key of another CA");
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
}

#[test]
fn pem_loading_errors_name_the_file() {
    let root = tempfile::tempdir().expect("tempdir");
    let ca = ClusterCa::init(root.path()).expect("ca");
    let (cert, key) = ca.issue("node-1", root.path()).expect("issue");

    let err = load_certs(&key).expect_err("a key is not a certificate");
    assert!(matches!(err, TlsError::BadPem { .. }), "{err:?}");
    assert!(err.to_string().contains("node-1.key"), "{err}");

    let err = load_key(&cert).expect_err("a certificate is not a key");
    assert!(matches!(err, TlsError::BadPem { .. }), "{err:?}");
    assert!(err.to_string().contains("node-1.pem"), "{err}");

    let missing = root.path().join("missing.pem");
    let err = load_certs(&missing).expect_err("missing");
    assert!(matches!(err, TlsError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.pem"), "{err}");

    let err = ClusterCa::load(&root.path().join("nowhere")).expect_err("no CA there");
    assert!(err.to_string().contains("ca.pem"), "{err}");
}

#[tokio::test]
async fn mutual_tls_admits_holders_of_a_cluster_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ClusterCa::init(dir.path()).expect("ca");
    let (node_cert, node_key) = ca.issue("node-1", dir.path()).expect("node cert");
    // Issued by the CA as reloaded from disk, as `cfgnode certs issue` does.
    let reloaded = ClusterCa::load(dir.path()).expect("load");
    let (client_cert, client_key) = reloaded.issue("ops", dir.path()).expect("client cert");
    let roots = load_roots(&dir.path().join(ClusterCa::CERT_FILE)).expect("roots");
    let server = EchoServer::start(&ServerTls::Mutual {
        roots: roots.clone(),
        identity: Identity::load(&node_cert, &node_key).expect("identity"),
    });

    let member = ClientTls::Verified {
        roots,
        identity: Some(Identity::load(&client_cert, &client_key).expect("identity")),
    };
    assert_eq!(server.exchange(&member).await.as_deref(), Ok(ECHO));
    // A client may also verify one particular node by its own name.
    assert_eq!(
        server.exchange_as(&member, "node-1").await.as_deref(),
        Ok(ECHO)
    );
    assert!(
        server.exchange_as(&member, "node-2").await.is_err(),
        "node-1's certificate does not name node-2"
    );
    assert_eq!(server.served(), 2);
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ClusterCa::init(dir.path()).expect("ca");
    let (node_cert, node_key) = ca.issue("node-1", dir.path()).expect("node cert");
    let server = EchoServer::start(&ServerTls::Mutual {
        roots: ca.roots().expect("roots"),
        identity: Identity::load(&node_cert, &node_key).expect("identity"),
    });
    let anonymous = ClientTls::Verified {
        roots: ca.roots().expect("roots"),
        identity: None,
    };
    let err = server
        .exchange(&anonymous)
        .await
        .expect_err("no certificate");
    // TLS 1.3 client auth completes after the client's side of the handshake, so the client
    // learns of the refusal at its first stream.
    assert!(err.contains("peer sent no certificates"), "{err}");
    let refusals = server.refusals().await;
    assert!(refusals.contains("no certificates"), "{refusals}");
    assert_eq!(server.served(), 0, "no request reached the server");
}

#[tokio::test]
async fn mutual_tls_refuses_certificates_from_elsewhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ClusterCa::init(dir.path()).expect("ca");
    let (node_cert, node_key) = ca.issue("node-1", dir.path()).expect("node cert");
    let server = EchoServer::start(&ServerTls::Mutual {
        roots: ca.roots().expect("roots"),
        identity: Identity::load(&node_cert, &node_key).expect("identity"),
    });

    // A certificate from another cluster's CA.
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other_ca = ClusterCa::init(other_dir.path()).expect("other ca");
    let (cert, key) = other_ca.issue("stranger", other_dir.path()).expect("cert");
    let stranger = ClientTls::Insecure {
        identity: Some(Identity::load(&cert, &key).expect("identity")),
    };
    assert!(server.exchange(&stranger).await.is_err(), "another CA");
    let refusals = server.refusals().await;
    assert!(refusals.contains("UnknownIssuer"), "{refusals}");

    // A node's self-signed certificate.
    let self_signed_dir = tempfile::tempdir().expect("tempdir");
    let (identity, _) =
        Identity::load_or_generate_self_signed(self_signed_dir.path()).expect("cert");
    let lone_node = ClientTls::Insecure {
        identity: Some(identity),
    };
    assert!(server.exchange(&lone_node).await.is_err(), "self-signed");
    assert_eq!(server.served(), 0, "no request reached the server");
}
