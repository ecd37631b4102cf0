//! Long-polling a snapshot with its ETag (`?wait=` + `If-None-Match`) across a cluster: it
//! answers 304 when the wait ends with nothing changed, wakes with the new snapshot when a write
//! lands (through any node), follows the namespace when it moves mid-wait, and refuses a bad
//! wait.

use std::time::Duration;

use cfgnode_tests::{TestCluster, shutdown_all};
use reqwest::Method;
use serde_json::Value;

async fn etag(cluster: &TestCluster, via: usize, ns: &str) -> String {
    let resp = cluster
        .request(
            cluster.node(via),
            Method::GET,
            &format!("/v1/namespaces/{ns}/snapshot"),
        )
        .send()
        .await
        .expect("snapshot");
    assert_eq!(resp.status(), 200);
    resp.headers()["etag"].to_str().expect("etag").to_string()
}

/// Starts a long-poll through node `via`; returns its status and body when it answers.
fn long_poll(
    cluster: &TestCluster,
    via: usize,
    ns: &str,
    etag: &str,
    wait: &str,
) -> tokio::task::JoinHandle<(u16, Option<Value>)> {
    let request = cluster
        .request(
            cluster.node(via),
            Method::GET,
            &format!("/v1/namespaces/{ns}/snapshot?wait={wait}"),
        )
        .header("if-none-match", etag)
        .timeout(Duration::from_secs(60));
    tokio::spawn(async move {
        let resp = request.send().await.expect("long-poll answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.ok())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_wake_on_writes_time_out_unchanged_and_follow_a_move() {
    let mut cluster = TestCluster::start(3).await;
    cluster.put(cluster.node(0), "cfg", "a", "1").await;
    let holder = cluster.wait_settled("cfg").await;
    let h = cluster.index_of(&holder);
    let others: Vec<usize> = (0..3).filter(|i| *i != h).collect();

    // Nothing changes: 304 when the wait ends (through a node that forwards).
    let tag = etag(&cluster, 0, "cfg").await;
    let (status, _) = long_poll(&cluster, others[0], "cfg", &tag, "300ms")
        .await
        .expect("task");
    assert_eq!(status, 304);

    // A write through another node wakes it with the new snapshot (had it not woken, the
    // answer would be a 304 after 30 s).
    let poll = long_poll(&cluster, others[0], "cfg", &tag, "30s");
    let written = cluster.put(cluster.node(others[1]), "cfg", "b", "2").await;
    let (status, body) = poll.await.expect("task");
    assert_eq!(status, 200);
    let body = body.expect("snapshot body");
    assert_eq!(body["revision"], written["revision"], "{body}");

    // The namespace moves while a long-poll waits on its holder: the poll follows it and wakes
    // on the next write at the new holder.
    let tag = etag(&cluster, 0, "cfg").await;
    let poll = long_poll(&cluster, h, "cfg", &tag, "30s");
    let to = format!("n{}", others[1] + 1);
    let resp = cluster
        .request(cluster.node(0), Method::PUT, "/v1/cluster/claims/cfg")
        .json(&serde_json::json!({ "node": to }))
        .send()
        .await
        .expect("claim");
    assert_eq!(resp.status(), 200);
    cluster.wait_held_by("cfg", &to).await;
    let written = cluster.put(cluster.node(0), "cfg", "c", "3").await;
    let (status, body) = poll.await.expect("task");
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(body.expect("body")["revision"], written["revision"]);

    // A bad wait is refused.
    let resp = cluster
        .request(
            cluster.node(0),
            Method::GET,
            "/v1/namespaces/cfg/snapshot?wait=forever",
        )
        .header("if-none-match", "\"x\"")
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 400);
    shutdown_all(&mut cluster).await;
}
