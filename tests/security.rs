//! Trust and safety on real nodes (docs/security.md): a node without the cluster key cannot
//! join, take data, push records or pose as a member; a client's token cannot make node-to-node
//! requests; a node that joins late hides nothing; a refused handoff commit loses nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use cfgnode_node::Node;
use cfgnode_tests::{
    DEADLINE, PeerProbe, TOKEN, TestCluster, metric_sum, poll_until, shutdown_all,
};
use cfgnode_transport::{
    ClientTls, ClusterKey, PEER_ALPN, PeerEnvelope, PeerRequest, RequestHeader, ResponseEnvelope,
    SERVER_NAME, bind_endpoint, decode_payload, encode_frame, encode_payload, read_frame,
};
use reqwest::Method;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_cluster_key_cannot_join_or_take_anything() {
    let mut cluster = TestCluster::start(2).await;
    cluster.put(cluster.node(0), "vault", "secret", "42").await;
    let holder = cluster.wait_settled("vault").await;
    let members_before: Vec<(String, String, u64)> = member_ids(&cluster).await;

    // A rogue built from the project's own code: the real node, with the admin token even,
    // but another cluster key. It calls itself n2 (a real member's id) and joins through n1.
    let rogue_dir = cluster.dir.path().join("rogue");
    std::fs::create_dir_all(&rogue_dir).expect("dir");
    let wrong_key = rogue_dir.join("wrong.key");
    std::fs::write(&wrong_key, ClusterKey::generate().expect("random").to_hex()).expect("key");
    let mut config = cluster.config("n2");
    config.data_dir = rogue_dir.join("data");
    config.cluster_key_file = Some(wrong_key);
    config.join = vec![cluster.node(0).quic_addr()];
    let rogue = Node::start(config).await.expect("the rogue starts");

    // Its attempts are refused and counted on the real nodes.
    let n1 = cluster.node(0);
    poll_until("n1 to refuse the rogue's handshakes", DEADLINE, || async {
        let text = cluster.metrics(n1).await;
        (metric_sum(&text, "cfgnode_peer_auth_failures_total", "bad_proof") >= 2.0).then_some(())
    })
    .await;
    // It never became a member anywhere, and never learned one.
    assert_eq!(member_ids(&cluster).await, members_before);
    let rogue_members = rogue.membership().members();
    assert_eq!(rogue_members.len(), 1, "{rogue_members:?}");
    // Nothing was handed to it, and it learned no namespace.
    assert_eq!(cluster.wait_settled("vault").await, holder);
    let rogue_view = cluster.placement(&rogue, "vault").await;
    assert!(rogue_view["holder"].is_null(), "{rogue_view}");
    // It cannot be made a target either: to the cluster it is no member.
    let resp = cluster
        .request(cluster.node(0), Method::PUT, "/v1/cluster/pins/vault")
        .json(&serde_json::json!({ "node": rogue.node_id() }))
        .send()
        .await
        .expect("answer");
    // n2 is a real member: pinning to it pins to the real n2, never the rogue.
    assert_eq!(resp.status(), 200);
    cluster.wait_held_by("vault", "n2").await;
    let (status, body, _) = cluster.get(cluster.node(1), "vault", "secret").await;
    assert_eq!((status, body.as_str()), (200, "42"));

    // The same protocol by hand: a wrong key fails the handshake, so no request (a map push,
    // an offer) can even be sent.
    let refused = PeerProbe::connect(
        n1.quic_addr(),
        ClusterKey::generate().expect("random"),
        "n1",
        u64::MAX,
    )
    .await;
    assert!(refused.is_err(), "a wrong key must be refused");
    let listed: Value = cluster
        .request(&rogue, Method::GET, "/v1/namespaces")
        .send()
        .await
        .expect("listing")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["items"], serde_json::json!([]), "{listed}");
    rogue.shutdown().await.expect("rogue stops");
    shutdown_all(&mut cluster).await;
}

async fn member_ids(cluster: &TestCluster) -> Vec<(String, String, u64)> {
    let mut all = Vec::new();
    for node in cluster.running() {
        for m in cluster.members(node).await {
            all.push((
                m["id"].as_str().unwrap_or_default().to_string(),
                m["quic_addr"].as_str().unwrap_or_default().to_string(),
                m["generation"].as_u64().unwrap_or_default(),
            ));
        }
    }
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_token_cannot_make_node_requests() {
    let mut cluster = TestCluster::start(1).await;
    cluster.put(cluster.node(0), "keep", "a", "1").await;
    let node = cluster.node(0);
    let before = cluster.placement(node, "keep").await;
    let push = PeerRequest::ClusterPush {
        updates: vec![0, 1, 2],
    };

    // On a client connection, a node request sent behind a valid token is just a malformed
    // client request: the client protocol has no node operations.
    let client = bind_endpoint(
        "127.0.0.1:0".parse().expect("addr"),
        None,
        &ClientTls::Insecure { identity: None },
    )
    .expect("endpoint");
    let connection = client
        .connect(node.quic_addr(), SERVER_NAME)
        .expect("connect")
        .await
        .expect("handshake");
    let header = RequestHeader {
        cluster_id: "cfgnode".into(),
        request_id: 3,
        token: Some(TOKEN.into()),
        follow_redirects: false,
    };
    let mut bytes = encode_frame(&encode_payload(&header), 4096).expect("frame");
    bytes.extend(
        encode_frame(
            &encode_payload(&PeerEnvelope {
                request_id: 3,
                request: push.clone(),
            }),
            1 << 20,
        )
        .expect("frame"),
    );
    let (mut send, mut recv) = connection.open_bi().await.expect("stream");
    send.write_all(&bytes).await.expect("write");
    send.finish().expect("finish");
    let frame = read_frame(&mut recv, 1 << 20)
        .await
        .expect("answer")
        .expect("frame");
    let answer: ResponseEnvelope = decode_payload(&frame).expect("envelope");
    assert_eq!(
        answer.result.expect_err("refused").code,
        "malformed",
        "a node request must not decode as a client request"
    );

    // On a peer connection, presenting the admin token instead of the cluster-key proof gets
    // the connection closed before anything is served.
    let peer_config =
        cfgnode_transport::peer_client_config(&ClientTls::Insecure { identity: None })
            .expect("config");
    let peer = cfgnode_transport::bind_endpoint_with(
        "127.0.0.1:0".parse().expect("addr"),
        None,
        peer_config,
    )
    .expect("endpoint");
    let connection = peer
        .connect(node.quic_addr(), SERVER_NAME)
        .expect("connect")
        .await
        .expect("handshake");
    assert_eq!(
        cfgnode_transport::negotiated_alpn(&connection).as_deref(),
        Some(PEER_ALPN)
    );
    let (mut send, mut recv) = connection.open_bi().await.expect("stream");
    send.write_all(&bytes).await.expect("write");
    let _ = send.finish();
    let answered = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut recv, 1 << 20))
        .await
        .expect("the node closes the connection in time");
    assert!(
        !matches!(answered, Ok(Some(_))),
        "a peer connection without the key must get no answer: {answered:?}"
    );
    tokio::time::timeout(Duration::from_secs(10), connection.closed())
        .await
        .expect("the node closed the connection");

    // Nothing changed, and the attempt was counted.
    assert_eq!(cluster.placement(node, "keep").await, before);
    let text = cluster.metrics(node).await;
    assert!(
        metric_sum(&text, "cfgnode_peer_auth_failures_total", "malformed") >= 1.0,
        "{text}"
    );
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_late_hides_and_loses_nothing() {
    let mut cluster = TestCluster::start(3).await;
    // Namespaces created at epoch 1 on n1..n3: before the fix, a joining n4 that took a write
    // for one of them before it had merged the map created {n4, 1}, which wins the tie-break
    // over {n1|n2|n3, 1} and hides the real copy.
    let namespaces: Vec<String> = (0..12).map(|i| format!("late{i}")).collect();
    for (i, ns) in namespaces.iter().enumerate() {
        cluster
            .put(cluster.node(i % 3), ns, "first", "original")
            .await;
    }
    for ns in &namespaces {
        cluster.wait_settled(ns).await;
    }
    let index = cluster.add("n4").await;
    // Its first second: writes to every existing namespace through it.
    let n4 = cluster.node(index);
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let start = std::time::Instant::now();
    let mut round = 0;
    while start.elapsed() < Duration::from_secs(1) {
        for ns in &namespaces {
            let value = format!("r{round}");
            let resp = cluster
                .request(n4, Method::PUT, &format!("/v1/namespaces/{ns}/keys/late"))
                .header("content-type", "text/plain")
                .body(value.clone())
                .send()
                .await
                .expect("answer");
            let status = resp.status().as_u16();
            if status == 200 || status == 201 {
                acked.insert(ns.clone(), value);
            } else {
                // A clear "retry" is fine; a lost write is not.
                assert_eq!(status, 503, "{}", resp.text().await.unwrap_or_default());
            }
        }
        round += 1;
    }
    assert!(
        !acked.is_empty(),
        "n4 acknowledged no write in its first second"
    );
    cluster.wait_converged().await;
    for ns in &namespaces {
        cluster.wait_settled(ns).await;
        for node in cluster.running() {
            let (status, body, _) = cluster.get(node, ns, "first").await;
            assert_eq!(
                (status, body.as_str()),
                (200, "original"),
                "{ns}/first through {}",
                node.node_id()
            );
            if let Some(value) = acked.get(ns) {
                let (status, body, _) = cluster.get(node, ns, "late").await;
                assert_eq!(
                    (status, body.as_str()),
                    (200, value.as_str()),
                    "{ns}/late through {}",
                    node.node_id()
                );
            }
        }
    }
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_handoff_commit_keeps_the_giver_serving_its_copy() {
    let mut cluster = TestCluster::start(2).await;
    cluster.put(cluster.node(0), "move", "a", "1").await;
    let holder = cluster.wait_settled("move").await;
    let (giver, receiver) = if holder == "n1" { (0, 1) } else { (1, 0) };
    let receiver_id = cluster.node(receiver).node_id().to_string();
    cluster.node(receiver).refuse_handoff_commits(true);
    cluster.direct(0, "claims", "move", &receiver_id).await;

    // The handoff runs to the commit and is refused, more than once.
    poll_until("two refused handoffs", DEADLINE, || async {
        let text = cluster.metrics(cluster.node(giver)).await;
        (metric_sum(&text, "cfgnode_cluster_handoffs_total", "failed") >= 2.0).then_some(())
    })
    .await;
    // The giver still holds and serves the namespace, and keeps taking writes.
    for node in cluster.running() {
        let placement = cluster.placement(node, "move").await;
        assert_eq!(placement["holder"], holder.as_str(), "{placement}");
    }
    cluster.put(cluster.node(receiver), "move", "b", "2").await;
    for node in cluster.running() {
        for (key, value) in [("a", "1"), ("b", "2")] {
            let (status, body, _) = cluster.get(node, "move", key).await;
            assert_eq!((status, body.as_str()), (200, value), "{key}");
        }
    }

    // Once the receiver accepts, the namespace moves whole.
    cluster.node(receiver).refuse_handoff_commits(false);
    cluster.wait_held_by("move", &receiver_id).await;
    for node in cluster.running() {
        for (key, value) in [("a", "1"), ("b", "2")] {
            let (status, body, _) = cluster.get(node, "move", key).await;
            assert_eq!((status, body.as_str()), (200, value), "{key}");
        }
    }
    shutdown_all(&mut cluster).await;
}
