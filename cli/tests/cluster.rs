//! Membership across real processes: three nodes join through a seed, one is SIGKILLed and the
//! others declare it down; restarted, it is alive again under a newer generation.

mod common;

use std::time::Duration;

use common::{Launch, Node, poll_until};
use reqwest::Method;
use serde_json::Value;

async fn members(node: &Node) -> Vec<Value> {
    let Ok(resp) = node
        .request(Method::GET, "/v1/cluster/members")
        .send()
        .await
    else {
        return Vec::new();
    };
    let body: Value = resp.json().await.unwrap_or_default();
    body["members"].as_array().cloned().unwrap_or_default()
}

fn state_of(members: &[Value], id: &str) -> Option<(String, u64)> {
    members.iter().find(|m| m["id"] == id).map(|m| {
        (
            m["state"].as_str().unwrap_or_default().to_string(),
            m["generation"].as_u64().unwrap_or(0),
        )
    })
}

async fn wait_state(node: &Node, id: &str, state: &str) -> u64 {
    let what = format!("{id} {state} as seen by {}", node.addr);
    poll_until(&what, Duration::from_secs(20), || async {
        let members = members(node).await;
        state_of(&members, id)
            .filter(|(s, _)| s == state)
            .map(|(_, generation)| generation)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_declared_down_and_comes_back_alive() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["n1", "n2", "n3"] {
        std::fs::create_dir(dir.path().join(name)).expect("node dir");
    }
    let n1 = Node::start(&Launch::new(&dir.path().join("n1")).args(&["--node-id", "n1"])).await;
    let seed = n1.quic.to_string();
    let n2 = Node::start(&Launch::new(&dir.path().join("n2")).args(&[
        "--node-id",
        "n2",
        "--join",
        &seed,
    ]))
    .await;
    let n3_launch = Launch::new(&dir.path().join("n3")).args(&["--node-id", "n3", "--join", &seed]);
    let mut n3 = Node::start(&n3_launch).await;
    for node in [&n1, &n2, &n3] {
        for id in ["n1", "n2", "n3"] {
            wait_state(node, id, "alive").await;
        }
    }
    let first_generation = wait_state(&n1, "n3", "alive").await;

    n3.kill9();
    for node in [&n1, &n2] {
        wait_state(node, "n3", "down").await;
    }

    let n3 = Node::start(&n3_launch).await;
    for node in [&n1, &n2, &n3] {
        let generation = wait_state(node, "n3", "alive").await;
        assert!(
            generation > first_generation,
            "the restarted node is a newer generation"
        );
    }
}
