//! The registry through the client library, against a real node over QUIC: the typed calls,
//! the keep-alive registration (heartbeats keep a TTL instance healthy; dropping the handle
//! deregisters it), and the healthy-set watch (it yields on a change of the set, and not on
//! a write that leaves the set alone).

use std::collections::BTreeMap;
use std::time::Duration;

use cfgnode_client::{
    Check, Client, ClientError, InstanceEndpoint, InstanceFilter, InstanceSpec, InstanceStatus,
    PutOptions, SubscriptionSpec,
};
use cfgnode_tests::{SingleNode, allow_loopback_webhooks, poll_until};

const NS: &str = "shop";
const DEADLINE: Duration = Duration::from_secs(10);

fn client(node: &SingleNode) -> Client {
    Client::builder([node.quic])
        .token(node.token.clone())
        .insecure()
        .build()
        .expect("client")
}

fn http_spec(port: u16, tags: &[&str]) -> InstanceSpec {
    InstanceSpec {
        endpoints: vec![InstanceEndpoint {
            name: "api".into(),
            protocol: "http".into(),
            address: "10.0.0.5".into(),
            port,
        }],
        tags: tags.iter().map(|t| t.to_string()).collect(),
        metadata: BTreeMap::from([("zone".to_string(), "eu-1".to_string())]),
        check: None,
    }
}

fn ttl_spec(ttl_ms: u64) -> InstanceSpec {
    InstanceSpec {
        check: Some(Check::Ttl { ttl_ms }),
        ..http_spec(8080, &[])
    }
}

/// The instance's status as the node has it, `None` when it is not registered.
async fn status(client: &Client, service: &str, instance: &str) -> Option<InstanceStatus> {
    client
        .service(NS, service, InstanceFilter::default())
        .await
        .expect("read the service")
        .instances
        .into_iter()
        .find(|i| i.instance == instance)
        .map(|i| i.status)
}

fn names(instances: &[cfgnode_client::Instance]) -> Vec<&str> {
    instances.iter().map(|i| i.instance.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_read_and_deregister_over_quic() {
    let node = SingleNode::start_with(allow_loopback_webhooks).await;
    let client = client(&node);

    let first = client
        .register(NS, "web", "w1", http_spec(8080, &["v2"]))
        .await
        .expect("register");
    assert!(first.created);
    assert_eq!(first.instance.status, InstanceStatus::Healthy, "no check");
    assert_eq!(first.instance.spec, http_spec(8080, &["v2"]));
    let again = client
        .register(NS, "web", "w1", http_spec(8080, &["v2"]))
        .await
        .expect("register again");
    assert!(!again.created, "replaced, not created");
    client
        .register(NS, "web", "w2", ttl_spec(60_000))
        .await
        .expect("register a ttl instance");

    let services = client.services(NS).await.expect("services");
    assert_eq!(services.services.len(), 1);
    let web = &services.services[0];
    assert_eq!(
        (
            web.service.as_str(),
            web.instances,
            web.healthy,
            web.unknown
        ),
        ("web", 2, 1, 1)
    );

    let tagged = client
        .service(
            NS,
            "web",
            InstanceFilter {
                tag: Some("v2".into()),
                ..InstanceFilter::default()
            },
        )
        .await
        .expect("filter by tag");
    assert_eq!(names(&tagged.instances), ["w1"]);
    let grpc = client
        .service(
            NS,
            "web",
            InstanceFilter {
                protocol: Some("grpc".into()),
                ..InstanceFilter::default()
            },
        )
        .await
        .expect("filter by protocol");
    assert!(grpc.instances.is_empty());
    assert_eq!(
        names(&client.healthy_instances(NS, "web").await.expect("healthy")),
        ["w1"],
        "w2 is unknown until its first heartbeat"
    );
    assert_eq!(
        client.heartbeat(NS, "web", "w2").await.expect("heartbeat"),
        InstanceStatus::Healthy
    );
    assert_eq!(
        names(&client.healthy_instances(NS, "web").await.expect("healthy")),
        ["w1", "w2"]
    );

    // Errors are typed, and the refused registration changed nothing.
    let no_ttl = client.heartbeat(NS, "web", "w1").await;
    assert!(
        matches!(&no_ttl, Err(ClientError::Invalid { code, .. }) if code == "no_ttl_check"),
        "{no_ttl:?}"
    );
    let bad = client
        .register(NS, "web", "w3", http_spec(0, &[]))
        .await
        .expect_err("port 0");
    assert!(
        matches!(&bad, ClientError::Invalid { code, message } if code == "invalid_instance" && message.contains("port")),
        "{bad:?}"
    );
    assert_eq!(status(&client, "web", "w3").await, None);

    // Subscriptions.
    let spec = SubscriptionSpec {
        url: "http://127.0.0.1:9/hook".into(),
        services: vec!["web".into()],
        secret: Some("s".into()),
    };
    let (subscription, created) = client
        .put_subscription(NS, "ops", spec)
        .await
        .expect("put a subscription");
    assert!(created);
    assert_eq!(subscription.services, ["web"]);
    let listed = client.subscriptions(NS).await.expect("subscriptions");
    assert_eq!(
        listed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["ops"]
    );
    client
        .delete_subscription(NS, "ops")
        .await
        .expect("delete the subscription");
    assert!(client.subscriptions(NS).await.expect("list").is_empty());
    assert!(matches!(
        client.delete_subscription(NS, "ops").await,
        Err(ClientError::NotFound { .. })
    ));

    let revision = client
        .deregister(NS, "web", "w1")
        .await
        .expect("deregister");
    assert!(revision > first.instance.revision);
    assert_eq!(status(&client, "web", "w1").await, None);
    let gone = client.deregister(NS, "web", "w1").await;
    assert!(
        matches!(&gone, Err(ClientError::NotFound { code, .. }) if code == "instance_not_found"),
        "{gone:?}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keepalive_keeps_a_ttl_instance_healthy_and_dropping_it_deregisters() {
    let node = SingleNode::start().await;
    let client = client(&node);
    let ttl = Duration::from_millis(500);
    let registration = client
        .register_with_keepalive(NS, "jobs", "j1", ttl_spec(500))
        .await
        .expect("register with keep-alive");
    assert!(registration.sends_heartbeats());
    assert!(registration.registered().created);
    poll_until("the first heartbeat makes it healthy", DEADLINE, || async {
        (status(&client, "jobs", "j1").await == Some(InstanceStatus::Healthy)).then_some(())
    })
    .await;
    // Healthy at every look for more than three TTLs: without heartbeats it would turn
    // unhealthy after one.
    let until = tokio::time::Instant::now() + ttl * 4;
    while tokio::time::Instant::now() < until {
        assert_eq!(
            status(&client, "jobs", "j1").await,
            Some(InstanceStatus::Healthy),
            "the keep-alive lets the TTL run out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    drop(registration);
    poll_until("dropping the handle deregisters", DEADLINE, || async {
        status(&client, "jobs", "j1").await.is_none().then_some(())
    })
    .await;

    // The explicit way, for an instance without a check: no heartbeats, removed on await.
    let plain = client
        .register_with_keepalive(NS, "web", "w1", http_spec(8080, &[]))
        .await
        .expect("register");
    assert!(!plain.sends_heartbeats());
    assert_eq!(
        status(&client, "web", "w1").await,
        Some(InstanceStatus::Healthy)
    );
    plain.deregister().await.expect("deregister");
    assert_eq!(status(&client, "web", "w1").await, None, "gone on return");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthy_watch_yields_on_a_change_of_the_set_only() {
    let node = SingleNode::start().await;
    let client = client(&node);
    client
        .register(NS, "web", "w1", http_spec(8080, &[]))
        .await
        .expect("register w1");
    let mut watch = client.watch_healthy(NS, "web").wait(Duration::from_secs(5));
    let now = watch.next().await.expect("the current set");
    assert_eq!(names(&now), ["w1"]);

    // A write in the same namespace moves its ETag (the long-poll answers) but not the set.
    let next = tokio::spawn(async move {
        let set = watch.next().await;
        (watch, set)
    });
    client
        .put(NS, "unrelated/key", b"x".to_vec(), PutOptions::default())
        .await
        .expect("put a config key");
    // The same registration again (a new version of the record) is no change either.
    client
        .register(NS, "web", "w1", http_spec(8080, &[]))
        .await
        .expect("register w1 again");
    // Another service's instance neither.
    client
        .register(NS, "db", "d1", http_spec(5432, &[]))
        .await
        .expect("register d1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !next.is_finished(),
        "the watch yielded on writes that left the healthy set alone"
    );

    client
        .register(NS, "web", "w2", http_spec(8081, &[]))
        .await
        .expect("register w2");
    let (mut watch, set) = tokio::time::timeout(DEADLINE, next)
        .await
        .expect("the watch yields when an instance joins")
        .expect("the watch task");
    assert_eq!(names(&set.expect("a set")), ["w1", "w2"]);

    client
        .deregister(NS, "web", "w2")
        .await
        .expect("deregister");
    let set = tokio::time::timeout(DEADLINE, watch.next())
        .await
        .expect("the watch yields when an instance leaves")
        .expect("a set");
    assert_eq!(names(&set), ["w1"]);
    assert_eq!(watch.current().map(names), Some(vec!["w1"]));
    node.shutdown().await;
}
