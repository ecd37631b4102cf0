//! The client library against real nodes over real QUIC: every method, a node restarted under
//! the client, failover, a peer that swallows requests, and mutual TLS.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cfgnode_client::{
    Client, ClientError, ConnectionEvent, PutOptions, RetryPolicy, SnapshotResult, WriteMode,
};
use cfgnode_node::{Node, TlsFiles};
use cfgnode_tests::{node_token, start_single_node};
use cfgnode_transport::{ClientTls, ClusterCa, Identity, ServerTls, bind_endpoint, read_frame};

/// A node in `dir` on QUIC address `quic` (port 0, or a fixed one to restart on), with `tls`.
async fn start_node(dir: &std::path::Path, quic: SocketAddr, tls: Option<TlsFiles>) -> Node {
    start_single_node(dir, |config| {
        config.quic_addr = quic;
        config.tls = tls;
    })
    .await
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

fn json(codec: &str) -> PutOptions {
    PutOptions {
        codec: Some(codec.to_string()),
        ..PutOptions::default()
    }
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_rounds: 6,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(300),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_against_a_real_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path(), any_port(), None).await;
    let client = Client::builder([node.quic_addr()])
        .token(node_token(&node))
        .insecure()
        .build()
        .expect("client");
    client.ping().await.expect("ping");

    let written = client
        .put("app", "db/config", br#"{"port":1}"#.to_vec(), json("json"))
        .await
        .expect("put");
    assert_eq!(
        (written.version, written.revision, written.codec.as_str()),
        (1, 1, "json")
    );
    client
        .put("app", "db/config", br#"{"port":2}"#.to_vec(), json("json"))
        .await
        .expect("put");
    let entry = client.get("app", "db/config").await.expect("get");
    assert_eq!(entry.value, br#"{"port":2}"#);
    assert_eq!(entry.version, 2);

    // Write modes and compare-and-set, each error typed.
    let create = PutOptions {
        mode: WriteMode::Create,
        ..json("json")
    };
    let e = client
        .put("app", "db/config", b"3".to_vec(), create)
        .await
        .expect_err("exists");
    assert!(
        matches!(&e, ClientError::Conflict { code, .. } if code == "already_exists"),
        "{e}"
    );
    let cas = PutOptions {
        if_version: Some(1),
        ..json("json")
    };
    let e = client
        .put("app", "db/config", b"3".to_vec(), cas)
        .await
        .expect_err("stale");
    assert!(
        matches!(&e, ClientError::Conflict { code, .. } if code == "version_mismatch"),
        "{e}"
    );
    let e = client
        .put("app", "k", b"{bad".to_vec(), json("json"))
        .await
        .expect_err("bad json");
    assert!(
        matches!(&e, ClientError::Invalid { code, .. } if code == "codec_mismatch"),
        "{e}"
    );
    let e = client.get("app", "missing").await.expect_err("missing");
    assert!(
        matches!(&e, ClientError::NotFound { code, .. } if code == "key_not_found"),
        "{e}"
    );
    let e = client.get("Bad NS", "k").await.expect_err("bad name");
    assert!(
        matches!(&e, ClientError::Invalid { code, .. } if code == "invalid_namespace"),
        "{e}"
    );

    // Listing with paging.
    for i in 0..5 {
        client
            .put("app", &format!("list/{i}"), vec![i], PutOptions::default())
            .await
            .expect("put");
    }
    let first = client
        .list("app", "list/", None, Some(3))
        .await
        .expect("list");
    assert_eq!(first.items.len(), 3);
    let rest = client
        .list("app", "list/", first.next_cursor.as_deref(), Some(3))
        .await
        .expect("list");
    assert_eq!(rest.items.len(), 2);
    assert_eq!(rest.next_cursor, None);

    // History, one version, diff.
    let history = client
        .versions("app", "db/config", None, None)
        .await
        .expect("versions");
    assert_eq!(
        history.items.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![2, 1]
    );
    assert_eq!(
        client
            .version("app", "db/config", 1)
            .await
            .expect("v1")
            .value
            .as_deref(),
        Some(&br#"{"port":1}"#[..])
    );
    let diff = client
        .diff("app", "db/config", None, None)
        .await
        .expect("diff");
    assert!(diff.changed);
    let structural: serde_json::Value =
        serde_json::from_str(diff.structural_json.as_deref().expect("json diff")).expect("json");
    assert_eq!(structural["changed"][0]["path"], "/port");

    // Snapshot with ETag, namespaces, access, aliases, codecs.
    let SnapshotResult::Modified(snapshot) = client.snapshot("app", None).await.expect("snapshot")
    else {
        panic!("no ETag given: the snapshot is returned");
    };
    assert_eq!(snapshot.entries.len(), 6);
    let again = client
        .snapshot("app", Some(&snapshot.etag))
        .await
        .expect("snapshot");
    assert_eq!(
        again,
        SnapshotResult::NotModified {
            etag: snapshot.etag.clone()
        }
    );
    let namespaces = client.namespaces("", None, None).await.expect("namespaces");
    assert_eq!(namespaces.items[0].name, "app");
    assert_eq!(namespaces.items[0].key_count, 6);
    let access = client.access("app").await.expect("access");
    assert!(access.read && access.write);
    let (alias, created) = client
        .put_alias("app", "current", "db/config")
        .await
        .expect("alias");
    assert!(created);
    assert_eq!(alias.target, "db/config");
    let (_, created) = client
        .put_alias("app", "current", "db/config")
        .await
        .expect("alias");
    assert!(!created, "an identical alias is an idempotent retry");
    assert_eq!(
        client
            .get("app", "current")
            .await
            .expect("via alias")
            .alias
            .as_deref(),
        Some("current")
    );
    assert_eq!(
        client
            .get_alias("app", "current")
            .await
            .expect("alias")
            .target,
        "db/config"
    );
    assert_eq!(
        client
            .list_aliases("app", None, None)
            .await
            .expect("aliases")
            .items
            .len(),
        1
    );
    client
        .delete_alias("app", "current")
        .await
        .expect("unalias");
    let e = client.get_alias("app", "current").await.expect_err("gone");
    assert!(matches!(e, ClientError::NotFound { .. }));
    let codecs = client.codecs().await.expect("codecs");
    assert!(codecs.iter().any(|c| c.name == "yaml"));

    // Delete with a condition.
    let e = client
        .delete("app", "db/config", Some(1))
        .await
        .expect_err("stale delete");
    assert!(matches!(e, ClientError::Conflict { .. }));
    let deleted = client
        .delete("app", "db/config", Some(2))
        .await
        .expect("delete");
    assert_eq!(deleted.version, 3);

    // A wrong token is refused.
    let intruder = Client::builder([node.quic_addr()])
        .token("nope")
        .insecure()
        .build()
        .expect("client");
    assert!(matches!(
        intruder.get("app", "k").await,
        Err(ClientError::Unauthenticated(_))
    ));
    let foreign = Client::builder([node.quic_addr()])
        .token(node_token(&node))
        .cluster_id("elsewhere")
        .insecure()
        .build()
        .expect("client");
    let e = foreign.get("app", "k").await.expect_err("wrong cluster");
    assert!(
        matches!(&e, ClientError::Invalid { code, .. } if code == "wrong_cluster"),
        "{e}"
    );
    node.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reconnects_after_a_node_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path(), any_port(), None).await;
    let quic = node.quic_addr();
    let events: Arc<Mutex<Vec<ConnectionEvent>>> = Arc::default();
    let seen = Arc::clone(&events);
    let client = Client::builder([quic])
        .token(node_token(&node))
        .insecure()
        .retry(quick_retries())
        .timeout(Duration::from_secs(20))
        .on_connection_change(move |e| seen.lock().expect("lock").push(e.clone()))
        .build()
        .expect("client");
    client
        .put("r", "k", b"before".to_vec(), PutOptions::default())
        .await
        .expect("put");
    node.shutdown().await.expect("shutdown");

    // While the node is down, a read fails as unavailable (after its retries).
    let short = Client::builder([quic])
        .token("t")
        .insecure()
        .timeout(Duration::from_secs(3))
        .connect_timeout(Duration::from_millis(300))
        .retry(RetryPolicy {
            max_rounds: 2,
            ..quick_retries()
        })
        .build()
        .expect("client");
    let e = short.get("r", "k").await.expect_err("node is down");
    assert!(e.is_transient(), "{e}");

    let restarted = start_node(dir.path(), quic, None).await;
    let entry = client
        .get("r", "k")
        .await
        .expect("the read is retried on a new connection");
    assert_eq!(entry.value, b"before");
    let events = events.lock().expect("lock").clone();
    let connects = events
        .iter()
        .filter(|e| matches!(e, ConnectionEvent::Connected { .. }))
        .count();
    assert!(connects >= 2, "connected, lost, reconnected: {events:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ConnectionEvent::Disconnected { .. })),
        "{events:?}"
    );
    restarted.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_fails_over_to_the_next_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path(), any_port(), None).await;
    // A bound UDP socket that never answers: a dead node.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
    let dead_addr = dead.local_addr().expect("addr");
    let client = Client::builder([dead_addr, node.quic_addr()])
        .token(node_token(&node))
        .insecure()
        .connect_timeout(Duration::from_millis(300))
        .retry(quick_retries())
        .build()
        .expect("client");
    client
        .put("f", "k", b"v".to_vec(), PutOptions::default())
        .await
        .expect("write fails over");
    assert_eq!(client.get("f", "k").await.expect("read").value, b"v");
    node.shutdown().await.expect("shutdown");
}

/// A peer that reads each request and closes the stream without answering: the request
/// reached a node, but its outcome is unknown.
fn swallowing_peer(dir: &std::path::Path, seen: Arc<AtomicUsize>) -> SocketAddr {
    let (identity, _) = Identity::load_or_generate_self_signed(dir).expect("cert");
    let endpoint = bind_endpoint(
        any_port(),
        Some(&ServerTls::SelfSigned(identity)),
        &ClientTls::Insecure { identity: None },
    )
    .expect("endpoint");
    let addr = endpoint.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let Ok(connection) = incoming.await else {
                    return;
                };
                while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                    if let Ok(Some(_)) = read_frame(&mut recv, 1 << 20).await {
                        seen.fetch_add(1, Ordering::SeqCst);
                    }
                    let _ = send.reset(1u32.into());
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_whose_outcome_is_unknown_are_not_resent_but_reads_are_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seen = Arc::new(AtomicUsize::new(0));
    let addr = swallowing_peer(dir.path(), Arc::clone(&seen));
    let client = Client::builder([addr])
        .token("t")
        .insecure()
        .retry(RetryPolicy {
            max_rounds: 3,
            ..quick_retries()
        })
        .circuit_breaker(100, Duration::from_secs(1))
        .build()
        .expect("client");
    let e = client
        .put("w", "k", b"v".to_vec(), PutOptions::default())
        .await
        .expect_err("no answer");
    assert!(
        e.to_string().contains("may or may not have been applied"),
        "{e}"
    );
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "the write was sent exactly once"
    );

    seen.store(0, Ordering::SeqCst);
    let e = client.get("w", "k").await.expect_err("no answer");
    assert!(e.is_transient(), "{e}");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        3,
        "the read was retried every round"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_cluster_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let ca = ClusterCa::init(&certs).expect("ca");
    let (node_cert, node_key) = ca.issue("node-1", &certs).expect("node cert");
    let (client_cert, client_key) = ca.issue("ops", &certs).expect("client cert");
    let ca_file = certs.join(ClusterCa::CERT_FILE);
    let tls = TlsFiles {
        ca: ca_file.clone(),
        cert: node_cert,
        key: node_key,
    };
    let node = start_node(&dir.path().join("data"), any_port(), Some(tls)).await;

    let member = Client::builder([node.quic_addr()])
        .token(node_token(&node))
        .ca(&ca_file, Some((&client_cert, &client_key)))
        .expect("tls files")
        .build()
        .expect("client");
    member
        .put("m", "k", b"v".to_vec(), PutOptions::default())
        .await
        .expect("member writes");

    let quick = RetryPolicy {
        max_rounds: 1,
        ..quick_retries()
    };
    let anonymous = Client::builder([node.quic_addr()])
        .token(node_token(&node))
        .ca(&ca_file, None)
        .expect("ca")
        .retry(quick.clone())
        .build()
        .expect("client");
    assert!(
        anonymous.get("m", "k").await.is_err(),
        "no client certificate: refused"
    );
    let insecure = Client::builder([node.quic_addr()])
        .token(node_token(&node))
        .insecure()
        .retry(quick)
        .build()
        .expect("client");
    assert!(
        insecure.get("m", "k").await.is_err(),
        "no certificate at all: refused"
    );
    node.shutdown().await.expect("shutdown");
}
