//! Multi-node behaviour with real in-process nodes on loopback: 3 and 5 nodes converge; writes
//! through any node are read through every other; each namespace has exactly one holder that
//! every node agrees on; the client library follows redirects to the holder; a stopped holder's
//! namespaces answer 503 naming it, and come back with it; cluster-internal requests refuse
//! garbage and change nothing.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use cfgnode_client::{Client, ClientError, ConnectionEvent, PutOptions};
use cfgnode_tests::{
    DEADLINE, PeerProbe, TOKEN, TestCluster, metric_sum, poll_until, shutdown_all,
};
use cfgnode_transport::{PeerRequest, Request};
use reqwest::Method;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_write_anywhere_read_everywhere() {
    let mut cluster = TestCluster::start(3).await;
    let namespaces: Vec<String> = (0..24).map(|i| format!("app{i}")).collect();
    for (i, ns) in namespaces.iter().enumerate() {
        let via = cluster.node(i % 3);
        cluster
            .put(via, ns, "greeting", &format!("hello {ns}"))
            .await;
    }
    let mut holders = BTreeSet::new();
    for ns in &namespaces {
        let holder = cluster.wait_settled(ns).await;
        holders.insert(holder.clone());
        for node in cluster.running() {
            let (status, body, served_by) = cluster.get(node, ns, "greeting").await;
            assert_eq!(status, 200, "{ns} via {}", node.node_id());
            assert_eq!(body, format!("hello {ns}"));
            assert_eq!(
                served_by.as_deref(),
                Some(holder.as_str()),
                "served by the holder"
            );
        }
    }
    assert_eq!(
        holders.len(),
        3,
        "24 namespaces spread over all 3 nodes: {holders:?}"
    );

    // Every node lists the whole cluster's namespaces, paged (merged from every node).
    for node in cluster.running() {
        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/namespaces?limit=5&cursor={c}"),
                None => "/v1/namespaces?limit=5".to_string(),
            };
            let page = cluster.get_json(node, &path).await;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            assert!(items.len() <= 5, "{page}");
            names.extend(
                items
                    .iter()
                    .map(|n| n["name"].as_str().unwrap_or_default().to_string()),
            );
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let mut expected = namespaces.clone();
        expected.sort();
        assert_eq!(names, expected, "listing through {}", node.node_id());
    }
    let listed = cluster
        .client(cluster.node(2))
        .namespaces("", None, Some(100))
        .await
        .expect("list over QUIC");
    assert_eq!(listed.items.len(), 24);

    // The ring view agrees: every namespace counted once.
    let ring = cluster.get_json(cluster.node(1), "/v1/cluster/ring").await;
    let held: u64 = ring["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["holds"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(held, 24, "{ring}");

    // Forwarding shows in the metrics of the nodes that forwarded.
    let mut forwarded = 0.0;
    for node in cluster.running() {
        let text = cluster.metrics(node).await;
        forwarded += metric_sum(&text, "cfgnode_cluster_forwarded_requests_total", "");
    }
    assert!(
        forwarded >= 24.0,
        "reads through non-holders were forwarded: {forwarded}"
    );

    // Over QUIC too, through any node, with and without redirects.
    for node in cluster.running() {
        let client = cluster.client(node);
        let entry = client.get("app5", "greeting").await.expect("get");
        assert_eq!(entry.value, b"hello app5");
        let forwarding = Client::builder([node.quic_addr()])
            .token(TOKEN)
            .insecure()
            .follow_redirects(false)
            .build()
            .expect("client");
        let written = forwarding
            .put(
                "app5",
                &format!("via/{}", node.node_id()),
                b"x".to_vec(),
                PutOptions::default(),
            )
            .await
            .expect("forwarded put");
        assert!(written.revision > 1);
    }
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_goes_straight_to_the_holder_and_remembers_it() {
    let mut cluster = TestCluster::start(3).await;
    // A namespace claimed onto n3, reached through a client that only knows n1.
    let n1 = cluster.node(0);
    let placed = cluster
        .request(n1, Method::PUT, "/v1/cluster/claims/orders")
        .json(&serde_json::json!({"node": "n3"}))
        .send()
        .await
        .expect("claim");
    assert_eq!(placed.status(), 200);
    let placed: Value = placed.json().await.expect("json");
    assert_eq!(placed["desired_owner"], "n3");
    assert_eq!(placed["reason"], "claim");

    let events: Arc<Mutex<Vec<ConnectionEvent>>> = Arc::default();
    let seen = Arc::clone(&events);
    let client = Client::builder([n1.quic_addr()])
        .token(TOKEN)
        .insecure()
        .on_connection_change(move |e| seen.lock().expect("lock").push(e.clone()))
        .build()
        .expect("client");
    client
        .put("orders", "o-1", b"{}".to_vec(), PutOptions::default())
        .await
        .expect("put");
    cluster.wait_held_by("orders", "n3").await;
    for i in 0..5 {
        client.get("orders", "o-1").await.expect("get");
        client
            .put(
                "orders",
                &format!("o-{i}"),
                b"{}".to_vec(),
                PutOptions::default(),
            )
            .await
            .expect("put");
    }
    let n3_addr = cluster.node(2).quic_addr();
    let connects: Vec<_> = events
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|e| match e {
            ConnectionEvent::Connected { addr } => Some(*addr),
            _ => None,
        })
        .collect();
    assert!(
        connects.contains(&n3_addr),
        "connected to the holder: {connects:?}"
    );
    assert_eq!(
        connects.iter().filter(|a| **a == n3_addr).count(),
        1,
        "the holder's connection is kept and reused"
    );
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_converge_and_a_new_node_takes_its_share() {
    let mut cluster = TestCluster::start(4).await;
    let namespaces: Vec<String> = (0..40).map(|i| format!("svc{i}")).collect();
    for (i, ns) in namespaces.iter().enumerate() {
        let via = cluster.node(i % 4);
        for k in 0..3 {
            cluster
                .put(via, ns, &format!("k{k}"), &format!("{ns}-{k}"))
                .await;
        }
    }
    // And one record each, written on its holder (records have no HTTP API yet): records are
    // namespace data and must move with it.
    let mut records = Vec::new();
    for ns in &namespaces {
        let holder = cluster.wait_settled(ns).await;
        let record = cluster
            .node(cluster.index_of(&holder))
            .records()
            .put(cfgnode_storage::RecordPut {
                namespace: ns.clone(),
                kind: "instance".into(),
                name: format!("{ns}/1"),
                value: format!("{{\"ns\":\"{ns}\"}}").into_bytes(),
                if_version: None,
            })
            .await
            .expect("record put on the holder");
        records.push((holder, record));
    }
    cluster.add("n5").await;
    cluster.wait_converged().await;
    let mut on_new = 0;
    for ns in &namespaces {
        if cluster.wait_settled(ns).await == "n5" {
            on_new += 1;
        }
    }
    assert!(
        (2..=20).contains(&on_new),
        "the 5th node takes about a fifth of 40 namespaces, took {on_new}"
    );
    // Every record is on its namespace's holder, as written, moved or not.
    let mut moved = 0;
    for (ns, (old_holder, written)) in namespaces.iter().zip(&records) {
        let holder = cluster.wait_settled(ns).await;
        moved += usize::from(&holder != old_holder);
        let found = cluster
            .node(cluster.index_of(&holder))
            .records()
            .get(ns, "instance", &format!("{ns}/1"))
            .await
            .expect("record read");
        assert_eq!(found.as_ref(), Some(written), "{ns} on {holder}");
    }
    assert!(moved > 0, "some records moved with their namespace");
    // Nothing was lost in the moves: every key readable through every node.
    for ns in &namespaces {
        for node in cluster.running() {
            for k in 0..3 {
                let (status, body, _) = cluster.get(node, ns, &format!("k{k}")).await;
                assert_eq!(
                    (status, body),
                    (200, format!("{ns}-{k}")),
                    "{ns} via {}",
                    node.node_id()
                );
            }
        }
    }
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_holder_answers_503_naming_it_and_its_data_returns_with_it() {
    let mut cluster = TestCluster::start(3).await;
    let n2 = cluster.node(1);
    cluster
        .request(n2, Method::PUT, "/v1/cluster/claims/billing")
        .send()
        .await
        .expect("claim for the receiving node");
    cluster.put(cluster.node(0), "billing", "rate", "42").await;
    cluster.wait_held_by("billing", "n2").await;
    let (quic, http) = (n2.quic_addr(), n2.http_addr());

    let stopped = cluster.stop(1).await;
    stopped.shutdown().await.expect("shutdown");
    let n1 = cluster.node(0);
    let body = poll_until("503 naming n2", DEADLINE, || async {
        let resp = cluster
            .request(n1, Method::GET, "/v1/namespaces/billing/keys/rate")
            .send()
            .await
            .ok()?;
        (resp.status() == 503).then_some(())?;
        let body = resp.json::<Value>().await.ok()?;
        (body["error"]["code"] == "holder_down").then_some(body)
    })
    .await;
    assert_eq!(body["error"]["code"], "holder_down");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("n2"),
        "{body}"
    );
    // Over QUIC the same, once n3 has seen n2 down too.
    let client = cluster.client(cluster.node(2));
    poll_until("holder_down over QUIC", DEADLINE, || async {
        let err = client.get("billing", "rate").await.err()?;
        (err.code() == Some("holder_down")).then_some(())
    })
    .await;
    // Writes are refused too, and change nothing.
    let resp = cluster
        .request(n1, Method::PUT, "/v1/namespaces/billing/keys/rate")
        .header("content-type", "text/plain")
        .body("43")
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 503);

    cluster.restart_at("n2", quic, http).await;
    cluster.wait_converged().await;
    // The claim came back with n2.
    cluster.wait_held_by("billing", "n2").await;
    for node in cluster.running() {
        let (status, body, _) = cluster.get(node, "billing", "rate").await;
        assert_eq!((status, body.as_str()), (200, "42"));
    }
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_requests_refuse_garbage_and_unknown_nodes() {
    let mut cluster = TestCluster::start(2).await;
    cluster.put(cluster.node(0), "keep", "a", "1").await;
    // Talk to the holder itself.
    let holder = cluster.wait_settled("keep").await;
    let n1 = cluster.node(cluster.index_of(&holder));
    let other = if holder == "n1" { "n2" } else { "n1" };
    let client = cluster.client(n1);
    let before = client.snapshot("keep", None).await.expect("snapshot");

    // A member (it holds the cluster key) sending nonsense: a chunk without an offer, a
    // commit out of nowhere, an offer of a namespace the receiver holds.
    let member = PeerProbe::connect(n1.quic_addr(), PeerProbe::cluster_key(), other, 1)
        .await
        .expect("a node with the key is accepted");
    let refused = member
        .call(PeerRequest::HandoffChunk {
            namespace: "keep".into(),
            epoch: 1,
            ops: vec![1, 2, 3],
        })
        .await
        .expect_err("no offer");
    assert_eq!(refused.code, "handoff_refused", "{refused:?}");
    let refused = member
        .call(PeerRequest::HandoffCommit {
            namespace: "keep".into(),
            epoch: 9,
            revision: 1,
        })
        .await
        .expect_err("commit of a namespace this node holds");
    assert!(!refused.code.is_empty(), "{refused:?}");
    let refused = member
        .call(PeerRequest::HandoffOffer {
            namespace: "keep".into(),
            epoch: 1,
        })
        .await
        .expect_err("offer of a namespace this node holds");
    assert_eq!(refused.code, "handoff_refused", "{refused:?}");
    // An offer that does not match the record (a made-up giver and epoch) is refused by a node
    // that does not hold the namespace, and its map is unchanged.
    let other_node = cluster.node(cluster.index_of(other));
    let before_placement = cluster.placement(other_node, "keep").await;
    let made_up = PeerProbe::connect(other_node.quic_addr(), PeerProbe::cluster_key(), "n9", 1)
        .await
        .expect("a node with the key is accepted");
    let refused = made_up
        .call(PeerRequest::HandoffOffer {
            namespace: "keep".into(),
            epoch: 99,
        })
        .await
        .expect_err("made-up offer");
    assert_eq!(refused.code, "handoff_refused", "{refused:?}");
    assert_eq!(
        cluster.placement(other_node, "keep").await,
        before_placement
    );
    // A forwarded request that is not a namespace request.
    let refused = member
        .call(PeerRequest::Forward {
            hops: 1,
            principal: "admin".into(),
            request: Request::Ping,
        })
        .await
        .expect_err("not forwardable");
    assert_eq!(refused.code, "malformed", "{refused:?}");
    assert_eq!(
        client.snapshot("keep", None).await.expect("snapshot"),
        before,
        "nothing changed"
    );

    // Operators: unknown nodes and bad names are refused with a clear error.
    let resp = cluster
        .request(n1, Method::PUT, "/v1/cluster/pins/keep")
        .json(&serde_json::json!({"node": "nope"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unknown_node");
    let resp = cluster
        .request(n1, Method::PUT, "/v1/cluster/pins/keep")
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 400, "a pin needs a node");
    let resp = cluster
        .request(n1, Method::PUT, "/v1/cluster/claims/keep")
        .json(&serde_json::json!({"node": n1.node_id(), "strict": true}))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 400, "strict applies to pins only");
    let resp = cluster
        .request(n1, Method::PUT, "/v1/cluster/pins/keep")
        .json(&serde_json::json!({"node": n1.node_id(), "strict": "yes"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 400, "strict is a boolean");
    let resp = cluster
        .request(n1, Method::PUT, "/v1/cluster/claims/Bad!")
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 400);
    let err = client.pin("keep", "nope").await.expect_err("unknown node");
    assert!(
        matches!(
            err,
            ClientError::Server { .. } | ClientError::NotFound { .. }
        ),
        "{err:?}"
    );
    assert_eq!(cluster.placement(n1, "keep").await["reason"], "ring");
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_listening_on_every_interface_is_reached_at_its_advertised_address() {
    let mut cluster = TestCluster::start(1).await;
    let port = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
        socket.local_addr().expect("addr").port()
    };
    let mut config = cluster.config("n2");
    config.quic_addr = format!("0.0.0.0:{port}").parse().expect("addr");
    config.advertise_quic = Some(format!("127.0.0.1:{port}").parse().expect("addr"));
    let index = cluster.index_of("n2");
    cluster.nodes.push(None);
    cluster.nodes[index] = Some(cfgnode_node::Node::start(config).await.expect("starts"));
    cluster.wait_converged().await;
    let members = cluster.members(cluster.node(0)).await;
    let n2 = members.iter().find(|m| m["id"] == "n2").expect("n2 known");
    assert_eq!(n2["quic_addr"], format!("127.0.0.1:{port}"));
    // Requests forwarded to it reach it there.
    cluster
        .request(cluster.node(0), Method::PUT, "/v1/cluster/pins/adv")
        .json(&serde_json::json!({"node": "n2"}))
        .send()
        .await
        .expect("pin");
    cluster.put(cluster.node(0), "adv", "k", "v").await;
    cluster.wait_held_by("adv", "n2").await;
    let (status, body, served_by) = cluster.get(cluster.node(0), "adv", "k").await;
    assert_eq!(
        (status, body.as_str(), served_by.as_deref()),
        (200, "v", Some("n2"))
    );
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_right_after_pinning_a_new_namespace_lands_on_the_pinned_node() {
    let mut cluster = TestCluster::start(3).await;
    // The pin is known at n1 at once, at n3 a moment later: n1 forwards to n3, which may not
    // know it is the owner yet; the two exchange maps and the write lands on n3.
    for i in 0..20 {
        let ns = format!("fresh{i}");
        cluster.direct(0, "pins", &ns, "n3").await;
        cluster.put(cluster.node(0), &ns, "k", "v").await;
    }
    for i in 0..20 {
        cluster.wait_held_by(&format!("fresh{i}"), "n3").await;
    }
    shutdown_all(&mut cluster).await;
}
