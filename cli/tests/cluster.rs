//! The cluster across real processes: three nodes join through a seed, one is SIGKILLed and the
//! others declare it down; restarted, it is alive again under a newer generation. With a shared
//! `--token-file`, the CLI's cluster commands claim, pin, unpin and release a namespace; a
//! SIGKILLed holder's namespace answers 503 naming it, and comes back with its data and claim.

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

/// Runs `cfgnode ARGS --addr <node> --token T --data-dir <its dir> --output json`.
fn cli_json(node: &Node, token: &str, args: &[&str]) -> Value {
    let out = common::command(&node.launch.root)
        .args(args)
        .args(["--addr", &node.quic.to_string(), "--timeout", "20s"])
        .args(["--token", token, "--output", "json"])
        .arg("--data-dir")
        .arg(&node.launch.data_dir)
        .output()
        .expect("run cfgnode");
    assert!(
        out.status.success(),
        "cfgnode {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

async fn wait_holder(node: &Node, token: &str, ns: &str, holder: &str) {
    let what = format!("{ns} held by {holder} as seen by {}", node.addr);
    poll_until(&what, Duration::from_secs(30), || async {
        let p = cli_json(node, token, &["cluster", "placement", ns]);
        (p["holder"] == holder && p["desired_owner"] == holder).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_answers_503_and_comes_back_with_its_claims_and_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "cluster-shared-token-for-this-test-0123456789";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).expect("token file");
    let token_arg = token_file.to_string_lossy().into_owned();
    let launch = |name: &str, join: Option<&str>| {
        std::fs::create_dir_all(dir.path().join(name)).expect("node dir");
        let mut args = vec!["--node-id", name, "--token-file", &token_arg];
        if let Some(seed) = join {
            args.extend(["--join", seed]);
        }
        let mut l = Launch::new(&dir.path().join(name)).args(&args);
        l.token = Some(token.to_string());
        l
    };
    let n1 = Node::start(&launch("n1", None)).await;
    let seed = n1.quic.to_string();
    let n2 = Node::start(&launch("n2", Some(&seed))).await;
    let n3_launch = launch("n3", Some(&seed));
    let mut n3 = Node::start(&n3_launch).await;
    for node in [&n1, &n2, &n3] {
        for id in ["n1", "n2", "n3"] {
            wait_state(node, id, "alive").await;
        }
    }

    // Write through n1, claim onto n3 through n1, and see the data move.
    for i in 0..20 {
        cli_json(
            &n1,
            token,
            &["set", "ledger", &format!("k{i}"), &format!("v{i}")],
        );
    }
    let placed = cli_json(&n1, token, &["claim", "ledger", "--node", "n3"]);
    assert_eq!(placed["desired_owner"], "n3");
    assert_eq!(placed["reason"], "claim");
    wait_holder(&n2, token, "ledger", "n3").await;
    let members = cli_json(&n2, token, &["cluster", "members"]);
    assert_eq!(members.as_array().map(Vec::len), Some(3), "{members}");
    let ring = cli_json(&n2, token, &["cluster", "ring"]);
    let holds_n3 = ring
        .as_array()
        .and_then(|r| r.iter().find(|s| s["node"] == "n3"))
        .map(|s| s["holds"].as_u64().unwrap_or(0));
    assert!(holds_n3 >= Some(1), "{ring}");

    n3.kill9();
    let body = poll_until("503 naming n3", Duration::from_secs(30), || async {
        let resp = n1
            .request(Method::GET, "/v1/namespaces/ledger/keys/k1")
            .send()
            .await
            .ok()?;
        (resp.status() == 503).then_some(())?;
        let body: Value = resp.json().await.ok()?;
        (body["error"]["code"] == "holder_down").then_some(body)
    })
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("n3"),
        "{body}"
    );

    let n3 = Node::start(&n3_launch).await;
    for node in [&n1, &n2] {
        wait_state(node, "n3", "alive").await;
        wait_holder(node, token, "ledger", "n3").await;
    }
    for node in [&n1, &n2, &n3] {
        for i in [0, 7, 19] {
            let entry = cli_json(node, token, &["get", "ledger", &format!("k{i}")]);
            assert_eq!(
                entry["value"],
                serde_json::json!(base64_of(&format!("v{i}"))),
                "{entry}"
            );
        }
    }
    // Pin elsewhere, unpin, release: each answers with the placement.
    let pinned = cli_json(&n2, token, &["pin", "ledger", "n1"]);
    assert_eq!(
        (pinned["desired_owner"].as_str(), pinned["reason"].as_str()),
        (Some("n1"), Some("pin"))
    );
    wait_holder(&n3, token, "ledger", "n1").await;
    cli_json(&n2, token, &["unpin", "ledger"]);
    let released = cli_json(&n2, token, &["release", "ledger"]);
    assert_eq!(released["reason"], "ring");
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
