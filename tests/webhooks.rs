//! Webhooks against a real HTTP receiver: every matching event once and in order, signed;
//! a receiver that is down for a while gets everything once it is back (the cursor waits);
//! the webhook and its cursor move with the namespace (claimed mid-stream onto another node),
//! nothing is skipped; bad input is refused and changes nothing. Targets: loopback is refused
//! unless allowed (`--webhook-allow`), at creation for a literal IP and at delivery for a name
//! that resolves to it; a redirect is a failed delivery and is not followed.

use std::time::Duration;

use cfgnode_tests::{
    DEADLINE, Receiver, TestCluster, allow_loopback_webhooks, poll_until, shutdown_all,
};
use reqwest::Method;
use serde_json::{Value, json};

const NS: &str = "hooks";
const SECRET: &str = "webhook-secret";

/// The revisions a receiver got, in arrival order, after checking each signature.
fn delivered(receiver: &Receiver) -> Vec<u64> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let mut revisions = Vec::new();
    for r in receiver.received() {
        let signature = r.headers.get("x-cfgnode-signature").expect("signed");
        let hex = signature.strip_prefix("sha256=").expect("sha256=");
        let tag: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        ring::hmac::verify(&key, &r.body, &tag).expect("the signature matches the body");
        let body: Value = serde_json::from_slice(&r.body).expect("JSON body");
        assert_eq!(body["namespace"], NS);
        assert_eq!(body["webhook"], "deploy");
        for event in body["events"].as_array().expect("events") {
            assert!(
                event["key"].as_str().expect("key").starts_with("app/"),
                "{event}"
            );
            revisions.push(event["revision"].as_u64().expect("revision"));
        }
    }
    revisions
}

async fn webhook(cluster: &TestCluster, via: usize) -> Value {
    let resp = cluster
        .request(
            cluster.node(via),
            Method::GET,
            &format!("/v1/namespaces/{NS}/webhooks/deploy"),
        )
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

/// Writes `n` events (every other one under `app/`) through node `via`; returns the revisions
/// of the `app/` ones.
async fn write(cluster: &TestCluster, via: usize, from: usize, n: usize) -> Vec<u64> {
    let mut app = Vec::new();
    for i in from..from + n {
        let key = if i % 2 == 0 {
            format!("app/k{i}")
        } else {
            format!("other/k{i}")
        };
        let body = cluster
            .put(cluster.node(via), NS, &key, &format!("v{i}"))
            .await;
        if i % 2 == 0 {
            app.push(body["revision"].as_u64().expect("revision"));
        }
    }
    app
}

async fn wait_for(receiver: &Receiver, expected: &[u64]) {
    poll_until("every event at the receiver", DEADLINE, || async {
        let mut seen = delivered(receiver);
        let mut first = std::collections::HashSet::new();
        seen.retain(|r| first.insert(*r));
        (seen.len() >= expected.len()).then_some(())
    })
    .await;
}

/// Puts `NS` on n1 (one write, a claim) and creates the `deploy` webhook (`app/` keys, signed)
/// through n2, forwarded to the holder, to a fresh receiver; answers it and the creation's JSON.
async fn held_by_n1_with_a_webhook(cluster: &TestCluster) -> (Receiver, Value) {
    cluster.put(cluster.node(0), NS, "seed", "0").await;
    cluster.direct(0, "claims", NS, "n1").await;
    cluster.wait_held_by(NS, "n1").await;
    let receiver = Receiver::start().await;
    let resp = cluster
        .request(
            cluster.node(1),
            Method::PUT,
            &format!("/v1/namespaces/{NS}/webhooks/deploy"),
        )
        .json(&json!({ "url": receiver.url, "prefixes": ["app/"], "secret": SECRET }))
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), 201);
    let created = resp.json().await.expect("json");
    (receiver, created)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_once_in_order_through_downtime_and_a_move() {
    let mut cluster = TestCluster::start_with(3, allow_loopback_webhooks).await;
    let (receiver, created) = held_by_n1_with_a_webhook(&cluster).await;
    assert_eq!(created["cursor"], 1);
    assert!(created.get("secret").is_none(), "the secret is never shown");

    // Phase 1: delivered once, in order.
    let mut expected = write(&cluster, 0, 0, 20).await;
    wait_for(&receiver, &expected).await;
    assert_eq!(delivered(&receiver), expected);

    // Phase 2: the receiver fails for a while; the cursor waits; then everything, once.
    // (First the cursor must have passed phase 1's last events, which may trail the POST.)
    poll_until("the cursor to catch up", DEADLINE, || async {
        (webhook(&cluster, 0).await["pending"] == 0).then_some(())
    })
    .await;
    receiver.set_status(500);
    let before = webhook(&cluster, 2).await["cursor"]
        .as_u64()
        .expect("cursor");
    expected.extend(write(&cluster, 1, 20, 20).await);
    let failing = poll_until("the failure to show", DEADLINE, || async {
        let hook = webhook(&cluster, 0).await;
        hook["last_error"].is_string().then_some(hook)
    })
    .await;
    assert_eq!(
        failing["cursor"].as_u64(),
        Some(before),
        "the cursor waits for the receiver"
    );
    assert!(failing["pending"].as_u64().expect("pending") > 0);
    receiver.set_down();
    tokio::time::sleep(Duration::from_millis(300)).await;
    receiver.set_status(200);
    wait_for(&receiver, &expected).await;
    assert_eq!(
        delivered(&receiver),
        expected,
        "exactly once, in order, after the downtime"
    );
    let hook = webhook(&cluster, 0).await;
    assert!(hook["last_success_at"].is_string());

    // Phase 3: claimed onto n3 while writes go on: nothing skipped (a batch may repeat).
    let writer = {
        let http = reqwest::Client::new();
        let base = format!("http://{}", cluster.node(0).http_addr());
        tokio::spawn(async move {
            let mut app = Vec::new();
            for i in 40..80usize {
                let key = if i % 2 == 0 {
                    format!("app/k{i}")
                } else {
                    format!("other/k{i}")
                };
                loop {
                    let resp = http
                        .put(format!("{base}/v1/namespaces/{NS}/keys/{key}"))
                        .bearer_auth(cfgnode_tests::TOKEN)
                        .header("content-type", "text/plain")
                        .body(format!("v{i}"))
                        .send()
                        .await
                        .expect("put");
                    if resp.status().is_success() {
                        let body: Value = resp.json().await.expect("json");
                        if i % 2 == 0 {
                            app.push(body["revision"].as_u64().expect("revision"));
                        }
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            app
        })
    };
    cluster.direct(0, "claims", NS, "n3").await;
    expected.extend(writer.await.expect("writer"));
    cluster.wait_held_by(NS, "n3").await;
    wait_for(&receiver, &expected).await;
    let got = delivered(&receiver);
    let mut firsts = Vec::new();
    for r in &got {
        if !firsts.contains(r) {
            firsts.push(*r);
        }
    }
    assert_eq!(firsts, expected, "every event, in order, none skipped");
    assert!(
        got.len() - firsts.len() <= 100,
        "at most one batch repeated around the move"
    );
    let moved = poll_until("the cursor on the new holder", DEADLINE, || async {
        let hook = webhook(&cluster, 2).await;
        (hook["cursor"].as_u64() >= expected.last().copied()).then_some(hook)
    })
    .await;
    assert_eq!(moved["url"], receiver.url.as_str());
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webhooks_are_refused_and_change_nothing() {
    let mut cluster = TestCluster::start_with(1, allow_loopback_webhooks).await;
    let node = cluster.node(0);
    let put = |name: &str, body: Value| {
        cluster
            .request(
                node,
                Method::PUT,
                &format!("/v1/namespaces/{NS}/webhooks/{name}"),
            )
            .json(&body)
    };
    cluster.put(node, NS, "k", "v").await;
    for body in [
        json!({"url": "https://example.com/", "secret": "s"}),
        json!({"url": "nonsense", "secret": "s"}),
        json!({"url": "http://127.0.0.1:9/", "secret": ""}),
        json!({"url": "http://127.0.0.1:9/", "secret": "s", "extra": 1}),
        json!({"secret": "s"}),
    ] {
        let resp = put("a", body.clone()).send().await.expect("answer");
        assert_eq!(resp.status(), 400, "{body}");
    }
    let listed: Value = cluster
        .request(node, Method::GET, &format!("/v1/namespaces/{NS}/webhooks"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["webhooks"], json!([]), "nothing was stored");
    let resp = cluster
        .request(
            node,
            Method::DELETE,
            &format!("/v1/namespaces/{NS}/webhooks/ghost"),
        )
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "webhook_not_found");
    // A good one, listed, then deleted.
    let resp = put("a", json!({"url": "http://127.0.0.1:9/", "secret": "s"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 201);
    let resp = cluster
        .request(
            node,
            Method::DELETE,
            &format!("/v1/namespaces/{NS}/webhooks/a"),
        )
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 200);
    shutdown_all(&mut cluster).await;
}

/// `PUT` of webhook `name` to `url` through node 0; returns status and body.
async fn create(cluster: &TestCluster, name: &str, url: &str) -> (u16, Value) {
    let resp = cluster
        .request(
            cluster.node(0),
            Method::PUT,
            &format!("/v1/namespaces/{NS}/webhooks/{name}"),
        )
        .json(&json!({ "url": url, "prefixes": ["app/"], "secret": SECRET }))
        .send()
        .await
        .expect("put");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

/// Waits until webhook `name` reports a failure; returns the webhook.
async fn first_failure(cluster: &TestCluster, name: &str) -> Value {
    poll_until("the delivery to fail", DEADLINE, || async {
        let hook: Value = cluster
            .request(
                cluster.node(0),
                Method::GET,
                &format!("/v1/namespaces/{NS}/webhooks/{name}"),
            )
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        hook["last_error"].is_string().then_some(hook)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_targets_are_refused_unless_allowed() {
    // No --webhook-allow: the node's default.
    let mut cluster = TestCluster::start(1).await;
    cluster.put(cluster.node(0), NS, "seed", "0").await;
    let receiver = Receiver::start().await;
    let port = receiver.url.rsplit(':').next().expect("port");

    // A literal loopback IP, in either spelling: refused at creation, naming the flag.
    for url in [
        receiver.url.clone(),
        format!("http://[::ffff:127.0.0.1]:{port}"),
    ] {
        let (status, body) = create(&cluster, "literal", &url).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["error"]["code"], "webhook_target_not_allowed");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(
            message.contains("is loopback") && message.contains("--webhook-allow 127.0.0.1/32"),
            "{message}"
        );
    }

    // A name that resolves to loopback: accepted, then refused at every delivery.
    let (status, created) = create(&cluster, "named", &format!("http://localhost:{port}")).await;
    assert_eq!(status, 201, "{created}");
    cluster.put(cluster.node(0), NS, "app/x", "1").await;
    let failed = first_failure(&cluster, "named").await;
    let error = failed["last_error"].as_str().expect("last_error");
    assert!(
        error.starts_with("target address not allowed (")
            && error.ends_with(" is loopback): see --webhook-allow"),
        "{error}"
    );
    assert_eq!(
        failed["cursor"], created["cursor"],
        "nothing counted as delivered"
    );
    assert!(
        receiver.received().is_empty(),
        "nothing reached the receiver"
    );
    let listed: Value = cluster
        .request(
            cluster.node(0),
            Method::GET,
            &format!("/v1/namespaces/{NS}/webhooks"),
        )
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(
        listed["webhooks"].as_array().map(Vec::len),
        Some(1),
        "the refused literal was not stored"
    );
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_a_failed_delivery_and_is_not_followed() {
    let mut cluster = TestCluster::start_with(1, allow_loopback_webhooks).await;
    cluster.put(cluster.node(0), NS, "seed", "0").await;
    let elsewhere = Receiver::start().await;
    let redirecting = Receiver::start().await;
    redirecting.set_redirect(&elsewhere.url);
    let (status, created) = create(&cluster, "moved", &redirecting.url).await;
    assert_eq!(status, 201, "{created}");
    cluster.put(cluster.node(0), NS, "app/x", "1").await;
    let failed = first_failure(&cluster, "moved").await;
    assert_eq!(failed["last_error"], "redirect refused (HTTP 302)");
    assert_eq!(failed["cursor"], created["cursor"], "the cursor waits");
    assert!(failed["last_success_at"].is_null());
    assert!(
        elsewhere.received().is_empty(),
        "the redirect was not followed"
    );
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_is_reported_without_its_answer() {
    let mut cluster = TestCluster::start_with(1, allow_loopback_webhooks).await;
    cluster.put(cluster.node(0), NS, "seed", "0").await;
    let receiver = Receiver::start().await;
    receiver.set_status(500);
    let (status, _) = create(&cluster, "failing", &receiver.url).await;
    assert_eq!(status, 201);
    cluster.put(cluster.node(0), NS, "app/x", "1").await;
    assert_eq!(
        first_failure(&cluster, "failing").await["last_error"],
        "HTTP 500"
    );
    receiver.set_down();
    // The next failure is the closed connection, in generic words, without the URL.
    let closed = poll_until("the closed connection to show", DEADLINE, || async {
        let hook = first_failure(&cluster, "failing").await;
        (hook["last_error"] != "HTTP 500").then_some(hook)
    })
    .await;
    assert_eq!(closed["last_error"], "request failed", "{closed}");
    shutdown_all(&mut cluster).await;
}

/// Every event the receiver got, in arrival order, as (type, revision).
fn event_types(receiver: &Receiver) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for r in receiver.received() {
        let body: Value = serde_json::from_slice(&r.body).expect("JSON body");
        for event in body["events"].as_array().expect("events") {
            out.push((
                event["type"].as_str().expect("type").to_string(),
                event["revision"].as_u64().expect("revision"),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_events_reach_webhooks_without_prefixes_and_pass_the_others() {
    let mut cluster = TestCluster::start_with(1, allow_loopback_webhooks).await;
    cluster.put(cluster.node(0), NS, "app/seed", "0").await;
    let everything = Receiver::start().await;
    let apps = Receiver::start().await;
    for (name, receiver, prefixes) in [
        ("everything", &everything, json!([])),
        ("deploy", &apps, json!(["app/"])),
    ] {
        let resp = cluster
            .request(
                cluster.node(0),
                Method::PUT,
                &format!("/v1/namespaces/{NS}/webhooks/{name}"),
            )
            .json(&json!({ "url": receiver.url, "prefixes": prefixes, "secret": SECRET }))
            .send()
            .await
            .expect("put");
        assert_eq!(resp.status(), 201, "{name}");
    }
    let records = cluster.node(0).records();
    let set = records
        .put(cfgnode_storage::RecordPut {
            namespace: NS.into(),
            kind: "subscription".into(),
            name: "billing".into(),
            value: br#"{"url":"http://billing/"}"#.to_vec(),
            if_version: None,
        })
        .await
        .expect("record put");
    let key = cluster.put(cluster.node(0), NS, "app/x", "1").await;
    let deleted = records
        .delete(cfgnode_storage::RecordDelete {
            namespace: NS.into(),
            kind: "subscription".into(),
            name: "billing".into(),
            if_version: None,
        })
        .await
        .expect("record delete");
    drop(records);
    let key_revision = key["revision"].as_u64().expect("revision");

    poll_until(
        "three events at the prefix-less receiver",
        DEADLINE,
        || async { (event_types(&everything).len() >= 3).then_some(()) },
    )
    .await;
    assert_eq!(
        event_types(&everything),
        [
            ("record_set".to_string(), set.revision),
            ("set".to_string(), key_revision),
            ("record_delete".to_string(), deleted.revision),
        ]
    );
    // The prefixed webhook gets the key only, and its cursor passes the record events.
    poll_until("the prefixed cursor past the records", DEADLINE, || async {
        let hook = webhook(&cluster, 0).await;
        (hook["cursor"].as_u64() >= Some(deleted.revision)).then_some(())
    })
    .await;
    assert_eq!(event_types(&apps), [("set".to_string(), key_revision)]);
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_set_up_before_the_first_write_gets_it() {
    let mut cluster = TestCluster::start_with(2, allow_loopback_webhooks).await;
    let receiver = Receiver::start().await;
    // The namespace has no data at all yet: the webhook is accepted from revision 0...
    let (status, created) = create(&cluster, "deploy", &receiver.url).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["cursor"], 0);
    // ...and delivers the very first write, made through the other node.
    let expected = write(&cluster, 1, 0, 4).await;
    assert_eq!(expected.first(), Some(&1), "the first write is revision 1");
    wait_for(&receiver, &expected).await;
    assert_eq!(delivered(&receiver), expected);
    shutdown_all(&mut cluster).await;
}

/// Three replicas and loopback webhooks.
fn replicated_webhooks(config: &mut cfgnode_node::NodeConfig) {
    allow_loopback_webhooks(config);
    config.replicas = 3;
}

/// Deliveries across a promotion (docs/replication.md, "Watches, deliveries and checks"): the
/// webhook and its cursor are replicated with the namespace, so when the holder dies the new
/// holder goes on delivering from the last durable cursor: every event reaches the receiver
/// (at least once: the cursor may trail the last delivery), signed, in revision order per
/// delivery, and the old holder delivers nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_carry_on_across_a_promotion() {
    let mut cluster = TestCluster::start_with(3, replicated_webhooks).await;
    let (receiver, _) = held_by_n1_with_a_webhook(&cluster).await;
    let mut expected = write(&cluster, 1, 0, 10).await;
    wait_for(&receiver, &expected).await;

    let gone = cluster.stop(0).await;
    gone.shutdown().await.expect("shutdown");
    poll_until("a write after the failover", DEADLINE, || async {
        let resp = cluster
            .request(
                cluster.node(1),
                Method::PUT,
                &format!("/v1/namespaces/{NS}/keys/other/probe"),
            )
            .header("content-type", "text/plain")
            .body("p")
            .send()
            .await
            .ok()?;
        (resp.status() == 200).then_some(())
    })
    .await;
    expected.extend(write(&cluster, 2, 10, 10).await);
    wait_for(&receiver, &expected).await;
    let mut seen = delivered(&receiver);
    let mut first = std::collections::HashSet::new();
    seen.retain(|r| first.insert(*r));
    seen.sort_unstable();
    assert_eq!(seen, expected, "every event, at least once");
    assert_ne!(
        cluster.placement(cluster.node(2), NS).await["holder"],
        "n1",
        "a survivor holds the namespace"
    );
    // The new holder's cursor moves past every event (it started from the last cursor that
    // reached the followers, which may trail what the old holder had delivered).
    let last = *expected.last().expect("events");
    poll_until("the cursor past every event", DEADLINE, || async {
        let hook = webhook(&cluster, 2).await;
        (hook["cursor"].as_u64().expect("cursor") >= last).then_some(())
    })
    .await;
}
