//! The cluster across real processes: three nodes join through a seed, one is SIGKILLed and the
//! others declare it down; restarted, it is alive again under a newer generation. With a shared
//! `--token-file`, the CLI's cluster commands claim, pin, unpin and release a namespace; a
//! SIGKILLed holder's namespace answers 503 naming it, and comes back with its data and claim.

mod common;

use std::time::{Duration, Instant};

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
    let key_file = common::write_cluster_key(dir.path());
    let key_arg = key_file.to_string_lossy().into_owned();
    let key = ["--cluster-key-file", key_arg.as_str()];
    let n1 = Node::start(
        &Launch::new(&dir.path().join("n1"))
            .args(&["--node-id", "n1"])
            .args(&key),
    )
    .await;
    let seed = n1.quic.to_string();
    let n2 = Node::start(
        &Launch::new(&dir.path().join("n2"))
            .args(&["--node-id", "n2", "--join", &seed])
            .args(&key),
    )
    .await;
    let n3_launch = Launch::new(&dir.path().join("n3"))
        .args(&["--node-id", "n3", "--join", &seed])
        .args(&key);
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
    let key_arg = common::write_cluster_key(dir.path())
        .to_string_lossy()
        .into_owned();
    let launch = |name: &str, join: Option<&str>| {
        std::fs::create_dir_all(dir.path().join(name)).expect("node dir");
        let mut args = vec!["--node-id", name, "--token-file", &token_arg];
        args.extend(["--cluster-key-file", &key_arg]);
        // One copy per namespace: this is the single-copy behaviour (with the default of three
        // replicas the namespace fails over instead; cli/tests/failover.rs covers that).
        args.extend(["--replicas", "1"]);
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
    assert_eq!(pinned["strict"], false, "{pinned}");
    wait_holder(&n3, token, "ledger", "n1").await;
    let strict = cli_json(&n2, token, &["pin", "ledger", "n1", "--strict"]);
    assert_eq!(strict["strict"], true, "{strict}");
    cli_json(&n2, token, &["unpin", "ledger"]);
    let released = cli_json(&n2, token, &["release", "ledger"]);
    assert_eq!(released["reason"], "ring");
}

/// How long the first read through a peer may take once that peer sees a restarted holder
/// alive. The requirement is 1 s (docs/security-restart.md has the measured figures, well under
/// it); 5 s is a generous bound for a debug build on a busy 2-core CI machine that still catches
/// the failure this guards against: a read held by a stale connection for 10 s and more, until
/// QUIC's idle timeout, then failing `unavailable`.
const FIRST_READ_BOUND: Duration = Duration::from_secs(5);

/// Longer than [`FIRST_READ_BOUND`], so a read that blocks is seen as slow (with how long it
/// took) rather than cut short by the client.
const READ_TIMEOUT: Duration = Duration::from_secs(12);

/// One read of `ns`/`key` through `node`, over HTTP (`?raw=true`) or the CLI's QUIC client:
/// the value read, or why it failed.
async fn read_through(
    node: &Node,
    token: &str,
    ns: &str,
    key: &str,
    over_quic: bool,
) -> Result<String, String> {
    if over_quic {
        let mut cmd = common::command(&node.launch.root);
        cmd.args(["get", ns, key, "--addr", &node.quic.to_string()])
            .args(["--timeout", &format!("{}s", READ_TIMEOUT.as_secs())])
            .args(["--token", token, "--output", "json"])
            .arg("--data-dir")
            .arg(&node.launch.data_dir);
        let out = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("run cfgnode get: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let entry: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let value = entry["value"].as_str().unwrap_or_default();
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|e| format!("{e}: {entry}"))?;
        String::from_utf8(bytes).map_err(|e| e.to_string())
    } else {
        let resp = node
            .request(
                Method::GET,
                &format!("/v1/namespaces/{ns}/keys/{key}?raw=true"),
            )
            .timeout(READ_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| format!("HTTP body: {e}"))?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("HTTP {status}: {body}"))
        }
    }
}

/// Polls `node` until it sees `id` alive under a generation above `before`, and returns the
/// instant it was first seen so.
async fn seen_alive_after(node: &Node, id: &str, before: u64) -> Instant {
    let what = format!(
        "{id} alive again (generation > {before}) as seen by {}",
        node.addr
    );
    poll_until(&what, Duration::from_secs(20), || async {
        let members = members(node).await;
        state_of(&members, id)
            .filter(|(state, generation)| state == "alive" && *generation > before)
            .map(|_| Instant::now())
    })
    .await
}

/// The security requirement "a restarted holder serves through every peer within 1 s of being
/// seen alive": n1 and n2 hold connections to n3 (they forwarded reads to it); n3 is SIGKILLed
/// and restarted at once on the same addresses and data dir; as soon as each peer sees the new
/// generation alive, the first read through it, over HTTP and over the QUIC client, must answer
/// with the value, not wait on the connection to n3's previous life.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_restarted_in_place_serves_through_its_peers_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "restart-shared-token-for-this-test-0123456789";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).expect("token file");
    let token_arg = token_file.to_string_lossy().into_owned();
    let key_arg = common::write_cluster_key(dir.path())
        .to_string_lossy()
        .into_owned();
    let launch = |name: &str, join: Option<&str>| {
        std::fs::create_dir_all(dir.path().join(name)).expect("node dir");
        let mut args = vec!["--node-id", name, "--token-file", &token_arg];
        args.extend(["--cluster-key-file", &key_arg]);
        // One copy per namespace: this is the single-copy behaviour (with the default of three
        // replicas the namespace fails over instead; cli/tests/failover.rs covers that).
        args.extend(["--replicas", "1"]);
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
    let mut n3 = Node::start(&launch("n3", Some(&seed))).await;
    for node in [&n1, &n2, &n3] {
        for id in ["n1", "n2", "n3"] {
            wait_state(node, id, "alive").await;
        }
    }

    cli_json(&n1, token, &["pin", "pinned", "n3"]);
    cli_json(&n1, token, &["set", "pinned", "db/url", "postgres://db-1"]);
    for node in [&n1, &n2] {
        wait_holder(node, token, "pinned", "n3").await;
        // Both peers now hold connections to n3, dialed for these forwards.
        for over_quic in [false, true] {
            let read = read_through(node, token, "pinned", "db/url", over_quic).await;
            assert_eq!(read.as_deref(), Ok("postgres://db-1"), "before the restart");
        }
    }
    let old_generation = wait_state(&n1, "n3", "alive").await;
    let generations = [
        wait_state(&n2, "n1", "alive").await,
        wait_state(&n1, "n2", "alive").await,
    ];

    n3.kill9();
    // Watch for the new life from the moment the old one is gone: the instant a peer first
    // sees it alive is the start of the 1 s the requirement allows.
    let (n3, seen_by_n1, seen_by_n2) = tokio::join!(
        n3.restart_in_place(),
        seen_alive_after(&n1, "n3", old_generation),
        seen_alive_after(&n2, "n3", old_generation),
    );

    // The first reads through each peer after it saw n3 alive, all at once.
    let timed = async |node: &Node, seen: Instant, over_quic: bool| {
        let read = read_through(node, token, "pinned", "db/url", over_quic).await;
        (node.addr, over_quic, read, seen.elapsed())
    };
    let reads = tokio::join!(
        timed(&n1, seen_by_n1, false),
        timed(&n1, seen_by_n1, true),
        timed(&n2, seen_by_n2, false),
        timed(&n2, seen_by_n2, true),
    );
    let reads = [reads.0, reads.1, reads.2, reads.3];
    // All four figures first (they go to docs/security-restart.md), then the verdicts.
    for (addr, over_quic, read, elapsed) in &reads {
        let via = if *over_quic { "QUIC client" } else { "HTTP" };
        eprintln!("first read through {addr} ({via}) {elapsed:?} after it saw n3 alive: {read:?}");
    }
    for (addr, over_quic, read, elapsed) in reads {
        let via = if over_quic { "QUIC client" } else { "HTTP" };
        assert_eq!(
            read.as_deref(),
            Ok("postgres://db-1"),
            "the first read through {addr} ({via}) after n3 restarted"
        );
        assert!(
            elapsed < FIRST_READ_BOUND,
            "the first read through {addr} ({via}) took {elapsed:?} after it saw n3 alive"
        );
    }
    // n3's restart is n3's business: n1 and n2 keep their identities (n3 must not tell them,
    // from what it remembered of them, that they are down, which would make both rejoin
    // under new generations and drop every connection to their old ones).
    let after = [
        wait_state(&n2, "n1", "alive").await,
        wait_state(&n1, "n2", "alive").await,
    ];
    assert_eq!(
        after, generations,
        "n1 and n2 rejoined because n3 restarted"
    );
    drop(n3);
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
