//! Real QUIC endpoints on 127.0.0.1:0: TLS modes, mutual TLS refusals, framed streams.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use cfgnode_transport::{
    ClientTls, ClusterCa, FrameError, Identity, SERVER_NAME, ServerTls, StreamError, bind_endpoint,
    load_roots, read_frame, write_frame,
};
use quinn::Endpoint;

const LOOPBACK: &str = "127.0.0.1:0";

fn addr() -> SocketAddr {
    LOOPBACK.parse().expect("addr")
}

/// A server that echoes one frame per stream, prefixed with "echo:".
fn echo_server(tls: &ServerTls) -> Endpoint {
    let endpoint = bind_endpoint(addr(), Some(tls), &ClientTls::Insecure { identity: None })
        .expect("server endpoint");
    let server = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            tokio::spawn(async move {
                let Ok(connection) = incoming.await else {
                    return;
                };
                while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                    tokio::spawn(async move {
                        let reply = match read_frame(&mut recv, 1024).await {
                            Ok(Some(frame)) => [b"echo:".as_slice(), &frame].concat(),
                            Ok(None) => b"empty".to_vec(),
                            Err(e) => format!("error:{e}").into_bytes(),
                        };
                        let _ = write_frame(&mut send, &reply).await;
                        let _ = send.finish();
                    });
                }
            });
        }
    });
    endpoint
}

/// Connects and exchanges one frame; `Err` carries whatever failed.
async fn exchange(
    server: &Endpoint,
    client_tls: &ClientTls,
    payload: &[u8],
) -> Result<Vec<u8>, String> {
    let client = bind_endpoint(addr(), None, client_tls).map_err(|e| e.to_string())?;
    let target = server.local_addr().map_err(|e| e.to_string())?;
    let attempt = async {
        let connection = client
            .connect(target, SERVER_NAME)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
        write_frame(&mut send, payload)
            .await
            .map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        read_frame(&mut recv, 1024)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no answer".to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .map_err(|_| "timeout".to_string())?
}

#[tokio::test]
async fn self_signed_server_and_insecure_client_talk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (identity, created) = Identity::load_or_generate_self_signed(dir.path()).expect("cert");
    assert!(created);
    let (_, created_again) = Identity::load_or_generate_self_signed(dir.path()).expect("cert");
    assert!(!created_again, "the certificate is kept in the data dir");
    let key_mode = std::fs::metadata(dir.path().join("tls/node.key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);

    let server = echo_server(&ServerTls::SelfSigned(identity));
    let answer = exchange(&server, &ClientTls::Insecure { identity: None }, b"hi").await;
    assert_eq!(answer.as_deref(), Ok(&b"echo:hi"[..]));

    // A client that verifies against a CA cannot trust a self-signed node.
    let ca_dir = tempfile::tempdir().expect("tempdir");
    let ca = ClusterCa::init(ca_dir.path()).expect("ca");
    let verified = ClientTls::Verified {
        roots: ca.roots().expect("roots"),
        identity: None,
    };
    assert!(exchange(&server, &verified, b"hi").await.is_err());
}

#[tokio::test]
async fn mutual_tls_accepts_the_cluster_and_refuses_everyone_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ClusterCa::init(dir.path()).expect("ca");
    let (node_cert, node_key) = ca.issue("node-1", dir.path()).expect("node cert");
    let (client_cert, client_key) = ca.issue("ops", dir.path()).expect("client cert");
    let roots = load_roots(&dir.path().join(ClusterCa::CERT_FILE)).expect("roots");
    let server = echo_server(&ServerTls::Mutual {
        roots: roots.clone(),
        identity: Identity::load(&node_cert, &node_key).expect("identity"),
    });

    let member = ClientTls::Verified {
        roots: roots.clone(),
        identity: Some(Identity::load(&client_cert, &client_key).expect("identity")),
    };
    assert_eq!(
        exchange(&server, &member, b"x").await.as_deref(),
        Ok(&b"echo:x"[..])
    );

    let anonymous = ClientTls::Verified {
        roots: roots.clone(),
        identity: None,
    };
    assert!(
        exchange(&server, &anonymous, b"x").await.is_err(),
        "no client certificate"
    );

    let other_dir = tempfile::tempdir().expect("tempdir");
    let other_ca = ClusterCa::init(other_dir.path()).expect("other ca");
    let (stranger_cert, stranger_key) = other_ca.issue("stranger", other_dir.path()).expect("cert");
    let stranger = ClientTls::Insecure {
        identity: Some(Identity::load(&stranger_cert, &stranger_key).expect("identity")),
    };
    assert!(
        exchange(&server, &stranger, b"x").await.is_err(),
        "certificate from another CA"
    );
}

#[test]
fn ca_files_are_private_and_never_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ClusterCa::init(dir.path()).expect("ca");
    let mode = |name: &str| {
        std::fs::metadata(dir.path().join(name))
            .expect("file")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("ca.key"), 0o600);
    assert!(
        ClusterCa::init(dir.path()).is_err(),
        "init refuses to overwrite"
    );
    ca.issue("node-1", dir.path()).expect("issue");
    assert_eq!(mode("node-1.key"), 0o600);
    assert!(
        ca.issue("node-1", dir.path()).is_err(),
        "issue refuses to overwrite"
    );
    assert!(ca.issue("Bad Name", dir.path()).is_err());
    let reloaded = ClusterCa::load(dir.path()).expect("load");
    reloaded
        .issue("node-2", dir.path())
        .expect("a reloaded CA still issues");
}

/// Opens a raw stream to `server` and sends `bytes` as they are.
async fn send_raw(server: &Endpoint, bytes: &[u8]) -> Vec<u8> {
    let client =
        bind_endpoint(addr(), None, &ClientTls::Insecure { identity: None }).expect("client");
    let connection = client
        .connect(server.local_addr().expect("addr"), SERVER_NAME)
        .expect("connect")
        .await
        .expect("handshake");
    let (mut send, mut recv) = connection.open_bi().await.expect("stream");
    send.write_all(bytes).await.expect("write");
    send.finish().expect("finish");
    tokio::time::timeout(Duration::from_secs(10), read_frame(&mut recv, 1 << 20))
        .await
        .expect("answer in time")
        .expect("readable")
        .expect("a frame")
}

#[tokio::test]
async fn oversized_and_truncated_frames_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (identity, _) = Identity::load_or_generate_self_signed(dir.path()).expect("cert");
    let server = echo_server(&ServerTls::SelfSigned(identity));
    // Declares 1 GiB: refused from the prefix alone (the reader's limit is 1 KiB).
    let answer = send_raw(&server, &(1u32 << 30).to_be_bytes()).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("error:") && text.contains("over the limit"),
        "{text}"
    );
    // Declares 10 bytes, sends 3, ends the stream.
    let answer = send_raw(&server, &[0, 0, 0, 10, 1, 2, 3]).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.contains("ended in the middle of a frame"), "{text}");
    // The connection-level service carries on: a good frame still works.
    let ok = exchange(&server, &ClientTls::Insecure { identity: None }, b"after").await;
    assert_eq!(ok.as_deref(), Ok(&b"echo:after"[..]));
    // The error types say what happened.
    let e: StreamError = FrameError::TooLarge { size: 2, limit: 1 }.into();
    assert!(e.to_string().contains("over the limit"));
}

#[tokio::test]
async fn a_self_signed_node_certificate_can_be_pinned_as_the_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (identity, _) = Identity::load_or_generate_self_signed(dir.path()).expect("cert");
    let server = echo_server(&ServerTls::SelfSigned(identity));
    let pinned = ClientTls::Verified {
        roots: load_roots(&dir.path().join("tls/node.pem")).expect("roots"),
        identity: None,
    };
    assert_eq!(
        exchange(&server, &pinned, b"pin").await.as_deref(),
        Ok(&b"echo:pin"[..])
    );
    // Another node's self-signed certificate is not trusted by that pin.
    let other = tempfile::tempdir().expect("tempdir");
    let (other_identity, _) = Identity::load_or_generate_self_signed(other.path()).expect("cert");
    let impostor = echo_server(&ServerTls::SelfSigned(other_identity));
    assert!(exchange(&impostor, &pinned, b"pin").await.is_err());
}
