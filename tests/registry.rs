//! The registry role on real nodes, with real HTTP servers as backends and subscribers:
//! register through one node and read through another; an HTTP backend that fails turns
//! `unhealthy` after its threshold and back after recovery, seen through an SSE watch on a
//! third node; TTL expiry and renewal; a claim moves the namespace mid-checking and the new
//! holder keeps checking (one prober, no lost status change); subscribers get register,
//! update, unregister and reconcile in order, signed; seed 002's shapes; bad input refused
//! with the field named and nothing changed.

use std::time::Duration;

use cfgnode_node::Node;
use cfgnode_tests::{
    DEADLINE, Receiver, SseReader, TestCluster, allow_loopback_webhooks, poll_until, shutdown_all,
};
use reqwest::Method;
use serde_json::{Value, json};

const NS: &str = "shop";

/// `METHOD path` with a JSON body through `node`: status and JSON answer.
/// [`TestCluster::call`].
async fn call(
    cluster: &TestCluster,
    node: &Node,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    cluster.call(node, method, path, body).await
}

/// `PUT` an instance registration through `node`.
async fn register(
    cluster: &TestCluster,
    node: &Node,
    service: &str,
    instance: &str,
    body: Value,
) -> (u16, Value) {
    let path = instance_path(service, instance);
    call(cluster, node, Method::PUT, &path, Some(body)).await
}

fn instance_path(service: &str, instance: &str) -> String {
    format!("/v1/namespaces/{NS}/services/{service}/instances/{instance}")
}

/// The status of `service/instance` read through `node`.
async fn status_of(
    cluster: &TestCluster,
    node: &Node,
    service: &str,
    instance: &str,
) -> Option<String> {
    let (code, body) = call(
        cluster,
        node,
        Method::GET,
        &instance_path(service, instance),
        None,
    )
    .await;
    (code == 200).then(|| body["status"].as_str().unwrap_or_default().to_string())
}

async fn wait_status(
    cluster: &TestCluster,
    node: &Node,
    service: &str,
    instance: &str,
    want: &str,
) {
    let what = format!("{service}/{instance} {want} through {}", node.node_id());
    poll_until(&what, DEADLINE, || async {
        (status_of(cluster, node, service, instance).await.as_deref() == Some(want)).then_some(())
    })
    .await;
}

fn http_check(url: &str) -> Value {
    json!({"kind": "http", "url": url, "interval": "200ms", "timeout": "150ms",
           "unhealthy_after": 2, "healthy_after": 2})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_through_one_node_and_read_through_another() {
    let mut cluster = TestCluster::start(3).await;
    let (a, b) = (cluster.node(0), cluster.node(1));
    let body = json!({
        "endpoints": [
            {"name": "api", "protocol": "http", "address": "10.0.0.5", "port": 8080},
            {"name": "n4", "protocol": "pfcp", "address": "10.0.0.5", "port": 8805},
        ],
        "tags": ["v2"],
        "metadata": {"zone": "a"},
    });
    let (code, created) = register(&cluster, a, "web", "w1", body.clone()).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        created["status"], "healthy",
        "no check: healthy until removed"
    );
    let (code, _) = register(&cluster, a, "web", "w1", body.clone()).await;
    assert_eq!(code, 200, "a second PUT replaces");
    register(
        &cluster,
        a,
        "web",
        "w2",
        json!({"tags": ["v1"], "endpoints": [
        {"name": "api", "protocol": "grpc", "address": "10.0.0.6", "port": 9090}]}),
    )
    .await;
    register(&cluster, a, "db", "d1", json!({})).await;

    let (code, view) = call(
        &cluster,
        b,
        Method::GET,
        &format!("/v1/namespaces/{NS}/services/web"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{view}");
    let names: Vec<_> = view["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["instance"].clone())
        .collect();
    assert_eq!(names, [json!("w1"), json!("w2")]);
    assert_eq!(view["instances"][0]["endpoints"][1]["protocol"], "pfcp");
    assert_eq!(view["instances"][0]["metadata"]["zone"], "a");
    for (query, want) in [
        ("?tag=v2", vec!["w1"]),
        ("?protocol=grpc", vec!["w2"]),
        ("?status=healthy", vec!["w1", "w2"]),
        ("?status=unknown", vec![]),
    ] {
        let (_, view) = call(
            &cluster,
            b,
            Method::GET,
            &format!("/v1/namespaces/{NS}/services/web{query}"),
            None,
        )
        .await;
        let got: Vec<_> = view["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .map(|i| i["instance"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(got, want, "{query}");
    }
    let (_, services) = call(
        &cluster,
        cluster.node(2),
        Method::GET,
        &format!("/v1/namespaces/{NS}/services"),
        None,
    )
    .await;
    assert_eq!(
        services["services"],
        json!([
            {"service": "db", "instances": 1, "healthy": 1, "unhealthy": 0, "unknown": 0},
            {"service": "web", "instances": 2, "healthy": 2, "unhealthy": 0, "unknown": 0},
        ])
    );

    // The view has the namespace's ETag: a conditional read answers 304, a long-poll waits for
    // the next change and answers with it.
    let resp = cluster
        .request(b, Method::GET, &format!("/v1/namespaces/{NS}/services/web"))
        .send()
        .await
        .expect("get");
    let etag = resp.headers()["etag"].to_str().expect("etag").to_string();
    let resp = cluster
        .request(b, Method::GET, &format!("/v1/namespaces/{NS}/services/web"))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 304);
    let poll = {
        let request = cluster
            .request(
                cluster.node(2),
                Method::GET,
                &format!("/v1/namespaces/{NS}/services/web?wait=20s"),
            )
            .header("if-none-match", &etag);
        tokio::spawn(async move { request.send().await.expect("long-poll").status().as_u16() })
    };
    let (code, gone) = call(
        &cluster,
        a,
        Method::DELETE,
        &instance_path("web", "w2"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{gone}");
    assert_eq!(
        tokio::time::timeout(DEADLINE, poll)
            .await
            .expect("the long-poll answers")
            .expect("task"),
        200
    );
    let (code, body) = call(&cluster, b, Method::GET, &instance_path("web", "w2"), None).await;
    assert_eq!(
        (code, body["error"]["code"].clone()),
        (404, json!("instance_not_found"))
    );
    let (code, _) = call(
        &cluster,
        b,
        Method::DELETE,
        &instance_path("web", "w2"),
        None,
    )
    .await;
    assert_eq!(code, 404, "deregistering twice");
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backend_turns_unhealthy_and_back_seen_by_a_watch_on_a_third_node() {
    let mut cluster = TestCluster::start(3).await;
    let backend = Receiver::start().await;
    let first = cluster.put(cluster.node(0), NS, "first", "x").await;
    let first = first["revision"].as_u64().expect("revision");
    let holder = cluster.wait_settled(NS).await;
    let holder_at = cluster.index_of(&holder);
    let others: Vec<usize> = (0..3).filter(|i| *i != holder_at).collect();
    let (via, watcher) = (cluster.node(others[0]), cluster.node(others[1]));
    // From the first write's revision, not "from now": the watch's start on the holder may be
    // fixed a moment after its answer's headers, after the registration below (a CI race).
    let response = cluster
        .request(
            watcher,
            Method::GET,
            &format!("/v1/watch?namespaces={NS}&from={first}"),
        )
        .send()
        .await
        .expect("watch");
    assert_eq!(response.status(), 200);
    let mut sse = SseReader::new(response);

    let (code, body) = register(&cluster, via, "web", "w1", json!({"endpoints": [{"protocol": "http", "address": "127.0.0.1", "port": 1}], "check": http_check(&backend.url)})).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        body["status"], "unknown",
        "a new checked instance starts unknown"
    );
    // The statuses the watch shows for w1, in order, until `want` (within the deadline).
    let mut seen = Vec::new();
    let watch_until = async |sse: &mut SseReader, want: &str, seen: &mut Vec<String>| {
        let wait = async {
            loop {
                let message = sse.next_change().await;
                if message.data["kind"] == "instance" && message.data["name"] == "web/w1" {
                    let status = message.data["value"]["status"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    seen.push(status.clone());
                    if status == want {
                        return;
                    }
                }
            }
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .unwrap_or_else(|_| {
                panic!("the watch showed {want} within {DEADLINE:?}; saw {seen:?}")
            });
    };
    watch_until(&mut sse, "healthy", &mut seen).await;
    backend.set_status(503);
    watch_until(&mut sse, "unhealthy", &mut seen).await;
    let (_, body) = call(
        &cluster,
        via,
        Method::GET,
        &instance_path("web", "w1"),
        None,
    )
    .await;
    assert_eq!(body["last_check"]["ok"], false);
    assert_eq!(body["last_check"]["output"], "HTTP 503");
    backend.set_status(200);
    watch_until(&mut sse, "healthy", &mut seen).await;
    assert_eq!(
        seen,
        ["unknown", "healthy", "unhealthy", "healthy"],
        "every change once, in order"
    );
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_instances_expire_without_heartbeats_and_come_back_with_one() {
    let mut cluster = TestCluster::start(2).await;
    let (a, b) = (cluster.node(0), cluster.node(1));
    let (code, body) = register(
        &cluster,
        a,
        "jobs",
        "j1",
        json!({"check": {"kind": "ttl", "ttl": "600ms"}}),
    )
    .await;
    assert_eq!((code, body["status"].clone()), (201, json!("unknown")));
    let (code, beat) = call(
        &cluster,
        b,
        Method::PUT,
        &format!("{}/heartbeat", instance_path("jobs", "j1")),
        None,
    )
    .await;
    assert_eq!(
        (code, beat["status"].clone()),
        (200, json!("healthy")),
        "{beat}"
    );
    assert_eq!(
        status_of(&cluster, a, "jobs", "j1").await.as_deref(),
        Some("healthy")
    );
    // Keep beating for a while: it stays healthy past several TTLs.
    let until = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        call(
            &cluster,
            b,
            Method::PUT,
            &format!("{}/heartbeat", instance_path("jobs", "j1")),
            None,
        )
        .await;
        assert_eq!(
            status_of(&cluster, a, "jobs", "j1").await.as_deref(),
            Some("healthy")
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    wait_status(&cluster, b, "jobs", "j1", "unhealthy").await;
    let (_, body) = call(&cluster, b, Method::GET, &instance_path("jobs", "j1"), None).await;
    assert!(
        body["last_check"]["output"]
            .as_str()
            .expect("output")
            .contains("TTL"),
        "{body}"
    );
    call(
        &cluster,
        a,
        Method::POST,
        &format!("{}/heartbeat", instance_path("jobs", "j1")),
        None,
    )
    .await;
    assert_eq!(
        status_of(&cluster, b, "jobs", "j1").await.as_deref(),
        Some("healthy")
    );
    // Heartbeats for an instance without a TTL check, or no instance, are refused.
    register(&cluster, a, "jobs", "plain", json!({})).await;
    let (code, body) = call(
        &cluster,
        a,
        Method::PUT,
        &format!("{}/heartbeat", instance_path("jobs", "plain")),
        None,
    )
    .await;
    assert_eq!(
        (code, body["error"]["code"].clone()),
        (400, json!("no_ttl_check"))
    );
    let (code, body) = call(
        &cluster,
        a,
        Method::PUT,
        &format!("{}/heartbeat", instance_path("jobs", "nobody")),
        None,
    )
    .await;
    assert_eq!(
        (code, body["error"]["code"].clone()),
        (404, json!("instance_not_found"))
    );
    shutdown_all(&mut cluster).await;
}

/// `cfgnode_registry_checked_instances` on `node`.
async fn checked_here(cluster: &TestCluster, node: &Node) -> u64 {
    let text = cluster
        .request(node, Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find(|l| l.starts_with("cfgnode_registry_checked_instances"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_moves_the_checks_with_the_namespace() {
    let mut cluster = TestCluster::start(2).await;
    let backend = Receiver::start().await;
    let (code, _) = register(
        &cluster,
        cluster.node(0),
        "web",
        "w1",
        json!({"check": http_check(&backend.url)}),
    )
    .await;
    assert_eq!(code, 201);
    let holder = cluster.wait_settled(NS).await;
    let old = cluster.index_of(&holder);
    let new = 1 - old;
    wait_status(&cluster, cluster.node(new), "web", "w1", "healthy").await;
    poll_until("one prober, on the holder", DEADLINE, || async {
        (checked_here(&cluster, cluster.node(old)).await == 1
            && checked_here(&cluster, cluster.node(new)).await == 0)
            .then_some(())
    })
    .await;

    let new_id = cluster.node(new).node_id().to_string();
    cluster.direct(old, "claims", NS, &new_id).await;
    cluster.wait_held_by(NS, &new_id).await;
    poll_until("the prober moved", DEADLINE, || async {
        (checked_here(&cluster, cluster.node(old)).await == 0
            && checked_here(&cluster, cluster.node(new)).await == 1)
            .then_some(())
    })
    .await;
    // The new holder checks: a failure after the move is seen, through either node.
    backend.set_status(500);
    wait_status(&cluster, cluster.node(old), "web", "w1", "unhealthy").await;
    let (_, body) = call(
        &cluster,
        cluster.node(old),
        Method::GET,
        &instance_path("web", "w1"),
        None,
    )
    .await;
    assert_eq!(body["last_check"]["output"], "HTTP 500");
    backend.set_status(200);
    wait_status(&cluster, cluster.node(new), "web", "w1", "healthy").await;
    shutdown_all(&mut cluster).await;
}

/// The notifications a subscriber got, signature checked: (event_type, instance, status).
fn notifications(receiver: &Receiver, secret: &str) -> Vec<(String, String, String)> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    receiver
        .received()
        .iter()
        .filter_map(|r| {
            let signature = r.headers.get("x-cfgnode-signature").expect("signed");
            let hex = signature.strip_prefix("sha256=").expect("sha256=");
            let tag: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            ring::hmac::verify(&key, &r.body, &tag).expect("the signature matches the body");
            let body: Value = serde_json::from_slice(&r.body).expect("JSON");
            assert_eq!(body["service"], "web", "{body}");
            let instances = body["instances"].as_array()?;
            let event = body["event_type"].as_str()?.to_string();
            let names: Vec<String> = instances
                .iter()
                .map(|i| {
                    format!(
                        "{}:{}",
                        i["instance"].as_str().unwrap_or(""),
                        i["status"].as_str().unwrap_or("-")
                    )
                })
                .collect();
            Some((event, names.join(","), body["revision"].to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_register_update_unregister_and_reconcile_in_order() {
    let mut cluster = TestCluster::start_with(2, |config| {
        allow_loopback_webhooks(config);
        config.registry_reconcile = Duration::from_secs(1);
    })
    .await;
    let subscriber = Receiver::start().await;
    let (a, b) = (cluster.node(0), cluster.node(1));
    register(&cluster, a, "other", "o1", json!({})).await;
    let (code, body) = call(
        &cluster,
        b,
        Method::PUT,
        &format!("/v1/namespaces/{NS}/subscriptions/ops"),
        Some(json!({"url": subscriber.url, "services": ["web"], "secret": "sub-secret"})),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    assert!(body.get("secret").is_none(), "the secret is never shown");
    // First a reconcile of the (empty) service.
    poll_until("a first reconcile", DEADLINE, || async {
        notifications(&subscriber, "sub-secret")
            .first()
            .is_some_and(|n| n.0 == "reconcile" && n.1.is_empty())
            .then_some(())
    })
    .await;
    register(&cluster, a, "web", "w1", json!({})).await;
    register(&cluster, b, "web", "w1", json!({"tags": ["v2"]})).await;
    register(&cluster, a, "other", "o2", json!({})).await;
    call(
        &cluster,
        a,
        Method::DELETE,
        &instance_path("web", "w1"),
        None,
    )
    .await;
    register(&cluster, a, "web", "w2", json!({})).await;
    let events = poll_until(
        "the changes and a reconcile after them",
        DEADLINE,
        || async {
            let all = notifications(&subscriber, "sub-secret");
            let changes: Vec<_> = all.iter().filter(|n| n.0 != "reconcile").cloned().collect();
            let reconciled_after = all
                .iter()
                .skip_while(|n| n.0 != "register" || !n.1.starts_with("w2"))
                .any(|n| n.0 == "reconcile");
            (changes.len() >= 4 && reconciled_after).then_some(all)
        },
    )
    .await;
    let changes: Vec<(String, String)> = events
        .iter()
        .filter(|n| n.0 != "reconcile")
        .map(|n| (n.0.clone(), n.1.clone()))
        .collect();
    assert_eq!(
        changes,
        [
            ("register".to_string(), "w1:healthy".to_string()),
            ("update".to_string(), "w1:healthy".to_string()),
            ("unregister".to_string(), "w1:-".to_string()),
            ("register".to_string(), "w2:healthy".to_string()),
        ],
        "each change once, in order, only of the subscribed service"
    );
    let revisions: Vec<u64> = events
        .iter()
        .filter(|n| n.0 != "reconcile")
        .map(|n| n.2.parse().expect("revision"))
        .collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    let last_reconcile = events
        .iter()
        .rev()
        .find(|n| n.0 == "reconcile")
        .expect("a reconcile");
    assert_eq!(
        last_reconcile.1, "w2:healthy",
        "a reconcile carries the full state"
    );

    let (_, listed) = call(
        &cluster,
        a,
        Method::GET,
        &format!("/v1/namespaces/{NS}/subscriptions"),
        None,
    )
    .await;
    assert_eq!(listed["subscriptions"][0]["name"], "ops");
    let (code, _) = call(
        &cluster,
        a,
        Method::DELETE,
        &format!("/v1/namespaces/{NS}/subscriptions/ops"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = call(
        &cluster,
        a,
        Method::GET,
        &format!("/v1/namespaces/{NS}/subscriptions/ops"),
        None,
    )
    .await;
    assert_eq!(code, 404);
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_shaped_register_and_unregister_work() {
    let mut cluster = TestCluster::start_with(2, allow_loopback_webhooks).await;
    let (a, b) = (cluster.node(0), cluster.node(1));
    let subscriber = Receiver::start().await;
    let (code, body) = call(&cluster, a, Method::POST, &format!("/v1/namespaces/{NS}/register"), Some(json!({
        "service_name": "smf",
        "pod_name": "smf-0",
        "providers": [{"protocol": "PFCP", "ip": "10.0.0.7", "port": 8805}, {"protocol": "http", "ip": "10.0.0.7", "port": 80}],
        "notification_url": subscriber.url,
        "subscriptions": ["upf"],
    }))).await;
    assert_eq!(code, 201, "{body}");
    let (_, view) = call(
        &cluster,
        b,
        Method::GET,
        &format!("/v1/namespaces/{NS}/services/smf"),
        None,
    )
    .await;
    assert_eq!(
        view["instances"][0]["endpoints"][0],
        json!({"name": "pfcp", "protocol": "pfcp", "address": "10.0.0.7", "port": 8805})
    );
    let (_, subs) = call(
        &cluster,
        b,
        Method::GET,
        &format!("/v1/namespaces/{NS}/subscriptions"),
        None,
    )
    .await;
    assert_eq!(subs["subscriptions"][0]["services"], json!(["upf"]));
    let (code, body) = call(
        &cluster,
        b,
        Method::DELETE,
        &format!("/v1/namespaces/{NS}/unregister?service_name=smf&pod_name=smf-0"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (_, subs) = call(
        &cluster,
        a,
        Method::GET,
        &format!("/v1/namespaces/{NS}/subscriptions"),
        None,
    )
    .await;
    assert_eq!(
        subs["subscriptions"],
        json!([]),
        "its subscription went with it"
    );
    let (code, _) = call(
        &cluster,
        a,
        Method::GET,
        &instance_path("smf", "smf-0"),
        None,
    )
    .await;
    assert_eq!(code, 404);
    let (code, body) = call(
        &cluster,
        a,
        Method::POST,
        &format!("/v1/namespaces/{NS}/register"),
        Some(json!({"pod_name": "x"})),
    )
    .await;
    assert_eq!(
        (code, body["error"]["code"].clone()),
        (400, json!("invalid_instance"))
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("service_name")
    );
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_registrations_name_the_field_and_change_nothing() {
    let mut cluster = TestCluster::start(1).await;
    let node = cluster.node(0);
    register(&cluster, node, "web", "w1", json!({})).await;
    let before = call(
        &cluster,
        node,
        Method::GET,
        &format!("/v1/namespaces/{NS}/services"),
        None,
    )
    .await
    .1;
    let endpoint = |port: Value| json!({"protocol": "http", "address": "10.0.0.5", "port": port});
    let many: Vec<Value> = (0..65).map(|i| json!({"name": format!("e{i}"), "protocol": "http", "address": "10.0.0.5", "port": 80})).collect();
    let cases: Vec<(String, Value, &str)> = vec![
        (
            instance_path("web", "w1"),
            json!({"endpoints": [endpoint(json!(70000))]}),
            "endpoints[0].port",
        ),
        (
            instance_path("web", "w1"),
            json!({"endpoints": [endpoint(json!(0))]}),
            "endpoints[0].port",
        ),
        (
            instance_path("web", "w1"),
            json!({"endpoints": many}),
            "endpoints",
        ),
        (
            instance_path("web", "w1"),
            json!({"check": {"kind": "grpc"}}),
            "check.kind",
        ),
        (
            instance_path("web", "w1"),
            json!({"check": {"kind": "http", "url": "http://10.0.0.5/", "interval": "50ms"}}),
            "check.interval",
        ),
        (
            instance_path("web", "w1"),
            json!({"check": {"kind": "tcp", "address": "nowhere"}}),
            "check.address",
        ),
        (
            instance_path("web", "w1"),
            json!({"colour": "red"}),
            "colour",
        ),
        (instance_path("web", "-bad"), json!({}), "instance"),
        (instance_path("we%20b", "w1"), json!({}), "service"),
    ];
    for (path, body, field) in cases {
        let (code, answer) = call(&cluster, node, Method::PUT, &path, Some(body.clone())).await;
        assert_eq!(code, 400, "{path} {body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_instance", "{answer}");
        let message = answer["error"]["message"].as_str().expect("message");
        assert!(message.contains(field), "{message} names {field}");
    }
    let resp = cluster
        .request(node, Method::PUT, &instance_path("web", "w1"))
        .body("{not json")
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 400);
    let after = call(
        &cluster,
        node,
        Method::GET,
        &format!("/v1/namespaces/{NS}/services"),
        None,
    )
    .await
    .1;
    assert_eq!(
        before, after,
        "refused requests changed nothing (same revision)"
    );
    let (_, w1) = call(
        &cluster,
        node,
        Method::GET,
        &instance_path("web", "w1"),
        None,
    )
    .await;
    assert_eq!(w1["endpoints"], json!([]));
    let (code, _) = call(
        &cluster,
        node,
        Method::GET,
        "/v1/namespaces/nowhere/services",
        None,
    )
    .await;
    assert_eq!(code, 404);
    shutdown_all(&mut cluster).await;
}
