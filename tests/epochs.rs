//! Epoch bounds on real nodes: a peer that pushes cluster-map records with epochs no honest
//! history reaches (above `MAX_EPOCH`, or more than `MAX_EPOCH_JUMP` ahead of the known one)
//! changes nothing; the refusals show in `cfgnode_cluster_updates_refused_total{reason}`; and
//! the facts it tried to freeze still take honest new versions.

use cfgnode_ring::{Directive, HolderRecord, MAX_EPOCH, MAX_EPOCH_JUMP, Update};
use cfgnode_tests::{PeerProbe, TestCluster, metric_sum, shutdown_all};
use cfgnode_transport::{PeerRequest, Response};
use reqwest::Method;
use serde_json::Value;

/// The cluster-map push body, as nodes encode it (bincode 2, standard config).
fn encode(updates: &[Update]) -> Vec<u8> {
    bincode::serde::encode_to_vec(updates, bincode::config::standard()).expect("plain data")
}

/// The value of `cfgnode_cluster_updates_refused_total{reason}` on one node (0 when absent).
fn refused(metrics: &str, reason: &str) -> f64 {
    let label = format!("reason=\"{reason}\"");
    metric_sum(metrics, "cfgnode_cluster_updates_refused_total", &label)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_records_with_implausible_epochs_change_nothing_and_are_counted() {
    let mut cluster = TestCluster::start(2).await;
    cluster.put(cluster.node(0), "keep", "a", "1").await;
    let holder = cluster.wait_settled("keep").await;
    let target = cluster.node(cluster.index_of(&holder));
    let other = if holder == "n1" { "n2" } else { "n1" };
    let before = cluster.placement(target, "keep").await;

    let forged = vec![
        // Would take the namespace away for good: nobody can write a higher epoch.
        Update::Holder {
            namespace: "keep".into(),
            record: HolderRecord {
                holder: "mallory".into(),
                epoch: u64::MAX,
            },
        },
        // Would make the next honest claim of a new namespace wrap.
        Update::Claim {
            namespace: "fresh".into(),
            directive: Directive {
                target: Some("mallory".into()),
                epoch: MAX_EPOCH + 1,
                author: "mallory".into(),
                strict: false,
            },
        },
        // Plausible in absolute terms, but far ahead of the unknown pin (epoch 0).
        Update::Pin {
            namespace: "keep".into(),
            directive: Directive {
                target: Some(other.into()),
                epoch: MAX_EPOCH_JUMP + 1,
                author: "mallory".into(),
                strict: false,
            },
        },
    ];
    // A member (it holds the cluster key) gone wrong.
    let member = PeerProbe::connect(target.quic_addr(), PeerProbe::cluster_key(), "mallory", 1)
        .await
        .expect("a node with the key is accepted");
    let answer = member
        .call(PeerRequest::ClusterPush {
            updates: encode(&forged),
        })
        .await
        .expect("a push is acknowledged; refused records are dropped");
    assert!(matches!(answer, Response::Ack), "{answer:?}");

    assert_eq!(
        cluster.placement(target, "keep").await,
        before,
        "map changed"
    );
    let fresh = cluster.placement(target, "fresh").await;
    assert_eq!(
        fresh["reason"], "ring",
        "the forged claim was merged: {fresh}"
    );
    let metrics = cluster.metrics(target).await;
    assert_eq!(refused(&metrics, "above_maximum"), 2.0, "{metrics}");
    assert_eq!(refused(&metrics, "too_far_ahead"), 1.0, "{metrics}");

    // The facts were not frozen: an operator's pin takes the next honest epoch and wins.
    let resp = cluster
        .request(target, Method::PUT, "/v1/cluster/pins/keep")
        .json(&serde_json::json!({ "node": other }))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let placement: Value = cluster.placement(target, "keep").await;
    assert_eq!(placement["reason"], "pin", "{placement}");
    assert_eq!(placement["desired_owner"], other, "{placement}");
    shutdown_all(&mut cluster).await;
}
