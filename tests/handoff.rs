//! Claims and pins move namespaces, and the data moves with them, while writers keep writing
//! and readers keep reading: every acknowledged write is present on the new holder, the
//! namespace's revisions have no gap and no repeat (each revision created exactly one key), and
//! no read is ever answered from an empty or partial copy.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cfgnode_client::{Client, PutOptions};
use cfgnode_tests::{TOKEN, TestCluster, shutdown_all};
use reqwest::Method;
use serde_json::Value;

/// What one writer had acknowledged: key -> revision.
type Acked = BTreeMap<String, u64>;

/// Writes fresh keys `w{id}-{n}` through `client` until `stop`; returns what was acknowledged.
/// A write whose outcome is unknown (an error) is not counted; it may or may not exist.
async fn writer(id: usize, client: Client, stop: Arc<AtomicBool>) -> (Acked, usize) {
    let mut acked = Acked::new();
    let mut errors = 0;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("w{id}-{n}");
        n += 1;
        match client
            .put(
                "orders",
                &key,
                format!("v{n}").into_bytes(),
                PutOptions::default(),
            )
            .await
        {
            Ok(entry) => {
                acked.insert(key, entry.revision);
            }
            Err(_) => errors += 1,
        }
    }
    (acked, errors)
}

async fn set(
    cluster: &TestCluster,
    via: usize,
    kind: &str,
    method: Method,
    node: Option<&str>,
) -> Value {
    let mut req = cluster.request(
        cluster.node(via),
        method,
        &format!("/v1/cluster/{kind}/orders"),
    );
    if let Some(node) = node {
        req = req.json(&serde_json::json!({ "node": node }));
    }
    let resp = req.send().await.expect("answer");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_pin_release_unpin_move_the_data_while_writers_write() {
    let mut cluster = TestCluster::start(3).await;
    for i in 0..200 {
        cluster
            .put(
                cluster.node(i % 3),
                "orders",
                &format!("seed-{i}"),
                &format!("{i}"),
            )
            .await;
    }
    let first = cluster.wait_settled("orders").await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for id in 0..3 {
        // One writer through each node: one follows redirects, the others are forwarded.
        let node = cluster.node(id);
        let client = Client::builder([node.quic_addr()])
            .token(TOKEN)
            .insecure()
            .follow_redirects(id == 0)
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .expect("client");
        writers.push(tokio::spawn(writer(id, client, Arc::clone(&stop))));
    }

    // Readers through every node, over HTTP: a seeded key must always read back its value
    // (never 404 from an empty store, never a stale or wrong value).
    let mut readers = Vec::new();
    for id in 0..3 {
        let url = format!("http://{}", cluster.node(id).http_addr());
        let stop = Arc::clone(&stop);
        readers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let (mut reads, mut bad) = (0u64, Vec::new());
            let mut i = id;
            while !stop.load(Ordering::Relaxed) {
                i = (i + 7) % 200;
                let resp = http
                    .get(format!("{url}/v1/namespaces/orders/keys/seed-{i}?raw=true"))
                    .bearer_auth(TOKEN)
                    .send()
                    .await;
                match resp {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body = r.text().await.unwrap_or_default();
                        if status != 200 || body != i.to_string() {
                            bad.push(format!("seed-{i}: {status} {body}"));
                        }
                        reads += 1;
                    }
                    Err(e) => bad.push(format!("seed-{i}: {e}")),
                }
            }
            (reads, bad)
        }));
    }

    // Move the namespace around: claim it elsewhere, pin it to a third node, unpin (the claim
    // decides again), release (the ring decides).
    let others: Vec<String> = ["n1", "n2", "n3"]
        .iter()
        .filter(|n| **n != first)
        .map(|n| n.to_string())
        .collect();
    let placed = set(&cluster, 0, "claims", Method::PUT, Some(&others[0])).await;
    assert_eq!(placed["desired_owner"], others[0].as_str());
    assert_eq!(placed["reason"], "claim");
    cluster.wait_held_by("orders", &others[0]).await;
    let placed = set(&cluster, 1, "pins", Method::PUT, Some(&others[1])).await;
    assert_eq!(placed["reason"], "pin");
    cluster.wait_held_by("orders", &others[1]).await;
    // Unpinned, the claim decides again.
    let placed = set(&cluster, 2, "pins", Method::DELETE, None).await;
    assert_eq!(placed["reason"], "claim");
    cluster.wait_held_by("orders", &others[0]).await;
    // Released, the ring decides: back where it started.
    let placed = set(&cluster, 0, "claims", Method::DELETE, None).await;
    assert_eq!(placed["reason"], "ring");
    cluster.wait_held_by("orders", &first).await;

    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let (reads, bad) = r.await.expect("reader");
        assert!(reads > 20, "the reader made progress: {reads}");
        assert!(bad.is_empty(), "reads during the moves: {bad:?}");
    }
    let mut acked = Acked::new();
    let mut errors = 0;
    for w in writers {
        let (a, e) = w.await.expect("writer");
        acked.extend(a);
        errors += e;
    }
    assert!(
        acked.len() > 50,
        "writers made progress: {} acked, {errors} errors",
        acked.len()
    );

    // Every acknowledged write is on the final holder, read through every node.
    let snapshot = cluster
        .client(cluster.node(0))
        .snapshot("orders", None)
        .await
        .expect("snapshot");
    let cfgnode_client::SnapshotResult::Modified(snapshot) = snapshot else {
        panic!("no snapshot");
    };
    let found: BTreeMap<&str, u64> = snapshot
        .entries
        .iter()
        .map(|e| (e.key.as_str(), e.revision))
        .collect();
    for (key, revision) in &acked {
        assert_eq!(
            found.get(key.as_str()),
            Some(revision),
            "acknowledged {key} at {revision}"
        );
    }
    // Each revision created one key: no gap, no revision used twice across the moves.
    assert_eq!(
        snapshot.entries.len() as u64,
        snapshot.revision,
        "revisions 1..={} map one-to-one onto keys",
        snapshot.revision
    );
    let mut revisions: Vec<u64> = found.values().copied().collect();
    revisions.sort_unstable();
    assert_eq!(revisions, (1..=snapshot.revision).collect::<Vec<_>>());
    for node in cluster.running() {
        let (status, body, _) = cluster.get(node, "orders", "seed-7").await;
        assert_eq!((status, body.as_str()), (200, "7"));
    }
    shutdown_all(&mut cluster).await;
}
