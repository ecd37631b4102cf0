//! The proxy's routes through the client library, against a real node over QUIC: put (created,
//! then replaced), get and list (the same route the HTTP API shows, defaults filled in),
//! delete (static targets deregistered with it), a bad route refused with the field named and
//! nothing changed (nor by a caller with a wrong token), and a route put over QUIC served by
//! the node's proxy.

use std::time::Duration;

use cfgnode_client::{Client, ClientError, InstanceFilter};
use cfgnode_tests::{Backend, SingleNode, poll_until};
use serde_json::{Value, json};

const NS: &str = "shop";
/// How long a route change may take to reach the proxy (it takes milliseconds).
const DEADLINE: Duration = Duration::from_secs(10);

fn client(node: &SingleNode) -> Client {
    Client::builder([node.quic])
        .token(node.token.clone())
        .insecure()
        .build()
        .expect("client")
}

/// The route as the HTTP API shows it, without the fields the view adds to the route itself.
async fn http_route(node: &SingleNode, name: &str) -> Value {
    let mut view = node
        .json(&format!("/v1/namespaces/{NS}/routes/{name}"))
        .await;
    let fields = view.as_object_mut().expect("an object");
    for added in ["name", "version", "revision"] {
        fields.remove(added);
    }
    view
}

/// The instances of a route's static targets, by name.
async fn target_instances(client: &Client, route: &str) -> Vec<String> {
    match client
        .service(NS, &format!("route.{route}"), InstanceFilter::default())
        .await
    {
        Ok(view) => view.instances.into_iter().map(|i| i.instance).collect(),
        Err(ClientError::NotFound { .. }) => Vec::new(),
        Err(e) => panic!("read the targets of {route}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_put_read_list_and_delete_over_quic() {
    let node = SingleNode::start().await;
    let client = client(&node);

    let web =
        json!({"hosts": ["Shop.Example.com"], "backend": {"service": "web"}, "timeout": "5s"});
    let first = client.put_route(NS, "web", &web).await.expect("put");
    assert!(first.created);
    assert_eq!(first.route.name, "web");
    assert_eq!(first.route.route["hosts"], json!(["shop.example.com"]));
    assert_eq!(first.route.route["timeout"], "5s");
    assert_eq!(
        first.route.route["backend"],
        json!({"service": "web", "endpoint": "http"}),
        "defaults filled in"
    );
    let again = client.put_route(NS, "web", &web).await.expect("put again");
    assert!(!again.created, "replaced, not created");

    let read = client.route(NS, "web").await.expect("get");
    assert_eq!(read.version, 2, "two writes of the record");
    assert_eq!(read.revision, node.revision(NS).await);
    assert_eq!(read.route, first.route.route);
    assert_eq!(
        read.route,
        http_route(&node, "web").await,
        "the HTTP API shows the same route"
    );

    let targets = json!({"hosts": ["static.example.com"], "path_prefix": "/api",
        "backend": {"targets": ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]},
        "rate_limit": {"per_client_per_minute": 600, "burst": 50}});
    client
        .put_route(NS, "static", &targets)
        .await
        .expect("put targets");
    assert_eq!(target_instances(&client, "static").await, ["t0", "t1"]);
    let listed = client.routes(NS).await.expect("list");
    let names: Vec<&str> = listed.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["static", "web"], "by name");
    assert_eq!(listed[0].route["path_prefix"], "/api");
    assert_eq!(
        listed[0].route["rate_limit"],
        json!({"per_client_per_minute": 600, "burst": 50})
    );
    assert_eq!(listed[1], read);

    let revision = client.delete_route(NS, "static").await.expect("delete");
    assert_eq!(revision, node.revision(NS).await);
    assert!(
        target_instances(&client, "static").await.is_empty(),
        "its targets left with it"
    );
    match client.route(NS, "static").await {
        Err(ClientError::NotFound { code, .. }) => assert_eq!(code, "proxy_route_not_found"),
        other => panic!("a deleted route is not found: {other:?}"),
    }
    assert!(matches!(
        client.delete_route(NS, "static").await,
        Err(ClientError::NotFound { .. })
    ));
    let names: Vec<String> = client
        .routes(NS)
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["web"]);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_route_is_refused_with_its_field_and_changes_nothing() {
    let node = SingleNode::start().await;
    let client = client(&node);
    client
        .put_route(
            NS,
            "web",
            &json!({"hosts": ["a.example"], "backend": {"service": "web"}}),
        )
        .await
        .expect("put");
    let before = client.routes(NS).await.expect("list");
    let revision = node.revision(NS).await;

    for (name, body, field) in [
        (
            "web",
            json!({"hosts": ["bad host"], "backend": {"service": "web"}}),
            "hosts[0]",
        ),
        (
            "web",
            json!({"hosts": ["a"], "backend": {"service": "web"}, "retries": 99}),
            "retries",
        ),
        (
            "new",
            json!({"hosts": ["a"], "backend": {"targets": ["http://127.0.0.1:9001"]},
                "check": {"kind": "http", "interval": "10ms"}}),
            "check.interval",
        ),
        (
            "bad/name",
            json!({"hosts": ["a"], "backend": {"service": "web"}}),
            "name",
        ),
        ("web", json!(["not", "an", "object"]), "body"),
        // Over the wire bound: refused before it is parsed, not for its path_prefix.
        (
            "web",
            json!({"hosts": ["a"], "backend": {"service": "web"},
                "path_prefix": format!("/{}", "x".repeat(300 * 1024))}),
            "body",
        ),
    ] {
        match client.put_route(NS, name, &body).await {
            Err(ClientError::Invalid { code, message }) => {
                assert_eq!(code, "invalid_route", "{body}");
                assert!(message.contains(field), "{message:?} names {field}");
            }
            other => panic!("{body} is refused: {other:?}"),
        }
    }
    let stranger = Client::builder([node.quic])
        .token("not-the-token")
        .insecure()
        .build()
        .expect("client");
    let refused = stranger
        .put_route(
            NS,
            "web",
            &json!({"hosts": ["evil.example"], "backend": {"targets": ["http://127.0.0.1:9"]}}),
        )
        .await;
    assert!(
        matches!(refused, Err(ClientError::Unauthenticated(_))),
        "a wrong token puts no route: {refused:?}"
    );
    assert_eq!(
        client.routes(NS).await.expect("list"),
        before,
        "nothing changed"
    );
    assert_eq!(node.revision(NS).await, revision, "nothing was written");
    assert!(
        target_instances(&client, "new").await.is_empty(),
        "a refused route registers no target"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_put_over_quic_is_served_by_the_proxy() {
    let node = SingleNode::start_with(|config| {
        config.proxy = Some("127.0.0.1:0".parse().expect("addr"));
        config.proxy_namespaces = vec![NS.to_string()];
    })
    .await;
    let client = client(&node);
    let backend = Backend::start("b1").await;
    let proxy = format!(
        "http://{}/",
        node.node().proxy_addr().expect("the node runs the proxy")
    );
    let http = reqwest::Client::new();
    let through_proxy = || async {
        let resp = http
            .get(&proxy)
            .header("host", "shop.example.com")
            .send()
            .await
            .expect("the proxy answers");
        resp.status().as_u16()
    };

    client
        .put_route(
            NS,
            "web",
            &json!({"hosts": ["shop.example.com"], "backend": {"targets": [backend.url()]}}),
        )
        .await
        .expect("put");
    poll_until("the proxy serves the route", DEADLINE, || async {
        (through_proxy().await == 200).then_some(())
    })
    .await;
    assert!(backend.hits() > 0, "the backend answered");

    client.delete_route(NS, "web").await.expect("delete");
    poll_until("the proxy forgets the route", DEADLINE, || async {
        (through_proxy().await == 404).then_some(())
    })
    .await;
    node.shutdown().await;
}
