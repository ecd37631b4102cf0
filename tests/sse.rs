//! The SSE watch (`GET /v1/watch`) with a real HTTP client: named events with resume cursors
//! as ids, `Last-Event-ID` resuming exactly after the last event seen (through another node),
//! heartbeats, progress, and bad queries refused.

use std::time::Duration;

use cfgnode_tests::{DEADLINE, Message, SseReader, TestCluster, shutdown_all};
use reqwest::Method;
use serde_json::Value;

async fn open(
    cluster: &TestCluster,
    via: usize,
    query: &str,
    last_event_id: Option<&str>,
) -> SseReader {
    let mut request = cluster.request(
        cluster.node(via),
        Method::GET,
        &format!("/v1/watch?{query}"),
    );
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = request.send().await.expect("watch answers");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().expect("type"),
        "text/event-stream"
    );
    SseReader::new(response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_exactly_after_the_last_event_seen() {
    let mut cluster = TestCluster::start(2).await;
    cluster.put(cluster.node(0), "web", "a/0", "zero").await;
    cluster.put(cluster.node(0), "api", "a/0", "zero").await;

    // Through n2, two namespaces, from the start of their logs, with a prefix filter.
    let mut sse = open(
        &cluster,
        1,
        "namespaces=web&namespaces=api&prefixes=a%2F&from=0&heartbeat=200ms",
        None,
    )
    .await;
    let mut seen = Vec::new();
    for i in 1..=3 {
        cluster
            .put(cluster.node(0), "web", &format!("a/{i}"), &format!("w{i}"))
            .await;
        cluster
            .put(cluster.node(1), "web", "other/x", "filtered")
            .await;
    }
    while seen
        .iter()
        .filter(|m: &&Message| m.data["namespace"] == "web")
        .count()
        < 4
    {
        let message = sse.next_change().await;
        assert_eq!(message.event, "set", "{message:?}");
        seen.push(message);
    }
    let web: Vec<&Message> = seen
        .iter()
        .filter(|m| m.data["namespace"] == "web")
        .collect();
    let keys: Vec<&str> = web
        .iter()
        .map(|m| m.data["key"].as_str().expect("key"))
        .collect();
    assert_eq!(keys, ["a/0", "a/1", "a/2", "a/3"]);
    let value = web[3].data["value"].as_str().expect("base64 value");
    assert_eq!(value, "dzM=", "w3 in base64");
    // The id is the cursor of both namespaces.
    let last_id = web[3].id.clone();
    assert!(
        last_id.contains("web:") && last_id.contains("api:"),
        "{last_id}"
    );
    assert!(
        web.windows(2)
            .all(|w| w[0].data["revision"].as_u64() < w[1].data["revision"].as_u64()),
        "revision order"
    );
    // Heartbeats arrive while idle.
    sse.wait_comment().await;
    assert!(
        sse.comments.iter().any(|c| c == "heartbeat"),
        "{:?}",
        sse.comments
    );
    drop(sse);

    // Written while nobody listened; resumed through the other node from the last id.
    cluster.put(cluster.node(1), "web", "a/4", "w4").await;
    cluster.put(cluster.node(1), "api", "a/1", "one").await;
    cluster.put(cluster.node(1), "web", "a/5", "w5").await;
    let mut resumed = open(
        &cluster,
        0,
        "namespaces=web,api&prefixes=a/",
        Some(&last_id),
    )
    .await;
    let mut after = Vec::new();
    while after.len() < 3 {
        let message = resumed.next_change().await;
        after.push(format!(
            "{}:{}",
            message.data["namespace"].as_str().expect("ns"),
            message.data["key"].as_str().expect("key")
        ));
    }
    after.sort();
    assert_eq!(
        after,
        ["api:a/1", "web:a/4", "web:a/5"],
        "exactly the events after the id"
    );
    drop(resumed);
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_watch_queries_are_refused_with_a_reason() {
    let mut cluster = TestCluster::start(1).await;
    let node = cluster.node(0);
    for (query, code) in [
        ("", "invalid_watch"),
        ("namespaces=Bad", "invalid_watch"),
        ("namespaces=a&from=a:x", "invalid_watch"),
        ("namespaces=a&bogus=1", "invalid_watch"),
        ("namespaces=a&progress=10m", "invalid_watch"),
    ] {
        let resp = cluster
            .request(node, Method::GET, &format!("/v1/watch?{query}"))
            .send()
            .await
            .expect("answers");
        assert_eq!(resp.status(), 400, "{query}");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
    }
    let resp = reqwest::Client::new()
        .get(format!("http://{}/v1/watch?namespaces=a", node.http_addr()))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 401);
    shutdown_all(&mut cluster).await;
}

fn record(kind: &str, name: &str, value: &str) -> cfgnode_storage::RecordPut {
    cfgnode_storage::RecordPut {
        namespace: "reg".into(),
        kind: kind.into(),
        name: name.into(),
        value: value.as_bytes().to_vec(),
        if_version: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_events_reach_watches_without_prefixes_and_move_the_cursor_of_the_others() {
    let mut cluster = TestCluster::start(1).await;
    cluster.put(cluster.node(0), "reg", "cfg/a", "one").await;
    let mut all = open(&cluster, 0, "namespaces=reg&from=0", None).await;
    let mut keys = open(
        &cluster,
        0,
        "namespaces=reg&prefixes=cfg%2F&from=0&progress=200ms",
        None,
    )
    .await;
    let records = cluster.node(0).records();
    let set = records
        .put(record("instance", "web/1", r#"{"status":"healthy"}"#))
        .await
        .expect("record put");
    let deleted = records
        .delete(cfgnode_storage::RecordDelete {
            namespace: "reg".into(),
            kind: "instance".into(),
            name: "web/1".into(),
            if_version: Some(1),
        })
        .await
        .expect("record delete");
    drop(records);

    // Without prefixes: the key event, then both record events, in revision order.
    let first = all.next_change().await;
    assert_eq!(first.event, "set", "{first:?}");
    let record_set = all.next_change().await;
    assert_eq!(record_set.event, "record_set", "{record_set:?}");
    assert_eq!(record_set.data["type"], "record_set");
    assert_eq!(record_set.data["kind"], "instance");
    assert_eq!(record_set.data["name"], "web/1");
    assert_eq!(record_set.data["version"], 1);
    assert_eq!(record_set.data["revision"], set.revision);
    assert_eq!(record_set.data["value"]["status"], "healthy");
    assert_eq!(record_set.id, format!("reg:{}", set.revision));
    let record_delete = all.next_change().await;
    assert_eq!(record_delete.event, "record_delete", "{record_delete:?}");
    assert_eq!(record_delete.data["revision"], deleted.revision);
    assert_eq!(record_delete.data["version"], 1);

    // With a key prefix: the key event only, and the cursor still moves past the records.
    let first = keys.next_change().await;
    assert_eq!(first.event, "set", "{first:?}");
    let passed = tokio::time::timeout(DEADLINE, async {
        loop {
            let message = keys.next().await;
            assert_eq!(
                message.event, "progress",
                "no record event here: {message:?}"
            );
            if message.data["revision"].as_u64() >= Some(deleted.revision) {
                return message;
            }
        }
    })
    .await
    .expect("progress past the record events within the deadline");
    assert_eq!(passed.id, format!("reg:{}", deleted.revision));
    cluster.put(cluster.node(0), "reg", "cfg/b", "two").await;
    let next = keys.next_change().await;
    assert_eq!(next.event, "set", "{next:?}");
    assert_eq!(next.data["key"], "cfg/b");
    drop((all, keys));
    shutdown_all(&mut cluster).await;
}
