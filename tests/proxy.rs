//! The proxy role on real nodes with real backends on loopback: host and wildcard routing;
//! round robin spread; a backend killed mid-load costs no client-visible error (GETs are
//! retried on the next backend) and gets no request after its first failure; a backend
//! registered through another node gets traffic within a second; a route changed through
//! another node applies within a second; rate limits answer 429 with Retry-After, then
//! recover; a 50 MiB body streams through with flat memory; bad route records are refused
//! with the field named and change nothing; answers of every HTTP/1.1 framing (chunked,
//! ended by close, 204, HEAD, after a `100 Continue`) pass through whole, and a backend that
//! speaks no HTTP gets a 502. The proxy runs on n1 only.

use std::time::{Duration, Instant};

use cfgnode_node::{Node, NodeConfig};
use cfgnode_tests::{Backend, DEADLINE, TestCluster, pattern_byte, poll_until, shutdown_all};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NS: &str = "shop";

/// n1 runs the proxy for `shop`.
fn proxy_on_n1(config: &mut NodeConfig) {
    if config.node_id.as_deref() == Some("n1") {
        config.proxy = Some("127.0.0.1:0".parse().expect("addr"));
        config.proxy_namespaces = vec![NS.to_string()];
    }
}

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

async fn put_route(cluster: &TestCluster, via: &Node, name: &str, route: Value) {
    let (code, body) = call(
        cluster,
        via,
        Method::PUT,
        &format!("/v1/namespaces/{NS}/routes/{name}"),
        Some(route),
    )
    .await;
    assert!(code == 201 || code == 200, "{code} {body}");
}

/// A client of n1's proxy.
struct ProxyClient {
    http: reqwest::Client,
    base: String,
}

impl ProxyClient {
    fn new(node: &Node) -> ProxyClient {
        ProxyClient {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(8)
                .build()
                .expect("client"),
            base: format!("http://{}", node.proxy_addr().expect("n1 runs the proxy")),
        }
    }

    /// GET `path` with `Host: host`: status and JSON body.
    async fn get(&self, host: &str, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("host", host)
            .send()
            .await
            .expect("the proxy answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Which backend answered `host`, or the error code.
    async fn who(&self, host: &str) -> String {
        let (code, body) = self.get(host, "/").await;
        if code == 200 {
            body["backend"].as_str().unwrap_or_default().to_string()
        } else {
            format!(
                "{code} {}",
                body["error"]["code"].as_str().unwrap_or_default()
            )
        }
    }
}

fn targets(backends: &[&Backend]) -> Value {
    json!({"targets": backends.iter().map(|b| b.url()).collect::<Vec<_>>()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_and_wildcards_route_and_headers_are_forwarded_right() {
    let mut cluster = TestCluster::start_with(2, proxy_on_n1).await;
    let (shop, api, wild) = (
        Backend::start("shop").await,
        Backend::start("api").await,
        Backend::start("wild").await,
    );
    let via = cluster.node(1);
    put_route(
        &cluster,
        via,
        "shop",
        json!({"hosts": ["shop.example.com"], "backend": targets(&[&shop])}),
    )
    .await;
    put_route(
        &cluster,
        via,
        "api",
        json!({"hosts": ["shop.example.com"], "path_prefix": "/api/", "backend": targets(&[&api])}),
    )
    .await;
    put_route(
        &cluster,
        via,
        "wild",
        json!({"hosts": ["*.example.com"], "backend": targets(&[&wild])}),
    )
    .await;
    let proxy = ProxyClient::new(cluster.node(0));
    poll_until("the routes reach the proxy", DEADLINE, || async {
        (proxy.who("shop.example.com").await == "shop"
            && proxy.who("eu.example.com").await == "wild")
            .then_some(())
    })
    .await;
    let (code, body) = proxy.get("Shop.Example.com:8000", "/api/v1?x=1").await;
    assert_eq!((code, body["backend"].clone()), (200, json!("api")));
    assert_eq!(
        body["request"], "GET /api/v1?x=1 HTTP/1.1",
        "path and query kept"
    );
    assert_eq!(
        body["host"], "Shop.Example.com:8000",
        "the Host is passed through"
    );
    assert_eq!(body["x_forwarded_for"], "127.0.0.1");
    assert_eq!(body["x_forwarded_proto"], "http");
    assert_eq!(body["x_forwarded_host"], "Shop.Example.com:8000");
    assert_eq!(
        body["keep_alive"],
        Value::Null,
        "hop-by-hop headers are not forwarded"
    );
    assert_eq!(
        proxy.who("example.com").await,
        "404 no_route",
        "a wildcard needs a label"
    );
    assert_eq!(proxy.who("other.org").await, "404 no_route");
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_and_a_killed_backend_costs_no_visible_error() {
    let mut cluster = TestCluster::start_with(1, proxy_on_n1).await;
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let node = cluster.node(0);
    put_route(&cluster, node, "web", json!({"hosts": ["web"], "backend": targets(&backends.iter().collect::<Vec<_>>()), "retries": 2})).await;
    let proxy = ProxyClient::new(node);
    poll_until("the route reaches the proxy", DEADLINE, || async {
        (proxy.who("web").await.len() == 1).then_some(())
    })
    .await;
    let before: Vec<usize> = backends.iter().map(Backend::hits).collect();
    for _ in 0..300 {
        let who = proxy.who("web").await;
        assert_eq!(who.len(), 1, "{who}");
    }
    for (backend, before) in backends.iter().zip(before) {
        let got = backend.hits() - before;
        assert!(
            (90..=110).contains(&got),
            "{} got {got} of 300",
            backend.name
        );
    }
    // Kill b: every request still succeeds (retried on the next backend), and after the
    // first failure b is skipped.
    backends[1].kill();
    let mut seen = Vec::new();
    for _ in 0..60 {
        let who = proxy.who("web").await;
        assert!(who == "a" || who == "c", "a client saw {who}");
        seen.push(who);
    }
    assert!(seen.iter().any(|w| w == "a") && seen.iter().any(|w| w == "c"));
    let retries = cluster.metrics(node).await;
    assert!(
        retries.contains("cfgnode_proxy_retries_total{"),
        "a retry was counted"
    );
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_backends_and_route_changes_through_another_node_apply_within_a_second() {
    let mut cluster = TestCluster::start_with(2, proxy_on_n1).await;
    let (one, two) = (Backend::start("one").await, Backend::start("two").await);
    let other = cluster.node(1);
    put_route(
        &cluster,
        other,
        "web",
        json!({"hosts": ["web"], "backend": {"service": "web", "endpoint": "http"}}),
    )
    .await;
    let proxy = ProxyClient::new(cluster.node(0));
    poll_until("the route reaches the proxy", DEADLINE, || async {
        (proxy.who("web").await == "503 no_healthy_backend").then_some(())
    })
    .await;
    let register = |name: &str, backend: &Backend| {
        let port: u16 = backend
            .addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        (
            format!("/v1/namespaces/{NS}/services/web/instances/{name}"),
            json!({"endpoints": [{"name": "http", "protocol": "http", "address": "127.0.0.1", "port": port}]}),
        )
    };
    let (path, body) = register("i1", &one);
    let started = Instant::now();
    assert_eq!(
        call(&cluster, other, Method::PUT, &path, Some(body))
            .await
            .0,
        201
    );
    poll_until("the instance gets traffic", DEADLINE, || async {
        (proxy.who("web").await == "one").then_some(())
    })
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1) * 5, "took {took:?}");
    eprintln!("registered instance took {took:?} to get traffic");
    // A second instance joins the rotation; removing the first leaves only the second.
    let (path2, body2) = register("i2", &two);
    call(&cluster, other, Method::PUT, &path2, Some(body2)).await;
    poll_until("both in rotation", DEADLINE, || async {
        let a = proxy.who("web").await;
        let b = proxy.who("web").await;
        (a != b
            && [a.as_str(), b.as_str()]
                .iter()
                .all(|w| *w == "one" || *w == "two"))
        .then_some(())
    })
    .await;
    call(&cluster, other, Method::DELETE, &path, None).await;
    poll_until("only the second left", DEADLINE, || async {
        let all: Vec<String> = futures_all(&proxy, 4).await;
        all.iter().all(|w| w == "two").then_some(())
    })
    .await;
    // A route change through the other node: the route now sends to static target one.
    let started = Instant::now();
    put_route(
        &cluster,
        other,
        "web",
        json!({"hosts": ["web"], "backend": targets(&[&one])}),
    )
    .await;
    poll_until("the route change applies", DEADLINE, || async {
        (proxy.who("web").await == "one").then_some(())
    })
    .await;
    eprintln!("a route change took {:?} to apply", started.elapsed());
    call(
        &cluster,
        other,
        Method::DELETE,
        &format!("/v1/namespaces/{NS}/routes/web"),
        None,
    )
    .await;
    poll_until("the route removal applies", DEADLINE, || async {
        (proxy.who("web").await == "404 no_route").then_some(())
    })
    .await;
    shutdown_all(&mut cluster).await;
}

async fn futures_all(proxy: &ProxyClient, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(proxy.who("web").await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after_then_recover() {
    let mut cluster = TestCluster::start_with(1, proxy_on_n1).await;
    let backend = Backend::start("a").await;
    let node = cluster.node(0);
    put_route(
        &cluster,
        node,
        "web",
        json!({"hosts": ["web"], "backend": targets(&[&backend]),
        "rate_limit": {"per_client_per_minute": 60, "burst": 3}}),
    )
    .await;
    let proxy = ProxyClient::new(node);
    poll_until("the route reaches the proxy", DEADLINE, || async {
        (proxy.who("web").await != "404 no_route").then_some(())
    })
    .await;
    // The poll may have spent tokens: wait for a full bucket (3 tokens at 1/s).
    poll_until("a 429 first", DEADLINE, || async {
        (proxy.who("web").await == "429 rate_limited").then_some(())
    })
    .await;
    let resp = proxy
        .http
        .get(format!("{}/", proxy.base))
        .header("host", "web")
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 429);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    poll_until("recovered", DEADLINE, || async {
        (proxy.who("web").await == "a").then_some(())
    })
    .await;
    let metrics = cluster.metrics(node).await;
    assert!(
        metrics.contains("cfgnode_proxy_rate_limited_total{"),
        "counted"
    );
    shutdown_all(&mut cluster).await;
}

/// The process's resident memory, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mib_body_streams_through_with_flat_memory() {
    let mut cluster = TestCluster::start_with(1, proxy_on_n1).await;
    let backend = Backend::start("sink").await;
    let node = cluster.node(0);
    put_route(
        &cluster,
        node,
        "up",
        json!({"hosts": ["up"], "backend": targets(&[&backend])}),
    )
    .await;
    let proxy = ProxyClient::new(node);
    poll_until("the route reaches the proxy", DEADLINE, || async {
        (proxy.who("up").await == "sink").then_some(())
    })
    .await;
    const SIZE: u64 = 50 * 1024 * 1024;
    // Written straight to a socket as it is produced, so the client holds no copy either.
    let addr = node.proxy_addr().expect("proxy");
    let before = rss();
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: up\r\ncontent-length: {SIZE}\r\nconnection: close\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![7u8; 64 * 1024];
    for _ in 0..SIZE / chunk.len() as u64 {
        socket.write_all(&chunk).await.expect("body");
    }
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.expect("answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body: Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).expect("body")).expect("json");
    assert_eq!(body["bytes"], SIZE, "every byte arrived");
    let grew = rss().saturating_sub(before);
    assert!(
        grew < 25 * 1024 * 1024,
        "memory grew by {} MiB for a 50 MiB body",
        grew / (1024 * 1024)
    );
    shutdown_all(&mut cluster).await;
}

/// Sends one raw request on `socket` and reads the answer to the end of the stream (the
/// request asks for `connection: close`).
async fn raw_exchange(socket: &mut tokio::net::TcpStream, request: &[u8]) -> String {
    socket.write_all(request).await.expect("request");
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.expect("answer");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_of_every_framing_pass_through_whole() {
    let mut cluster = TestCluster::start_with(1, proxy_on_n1).await;
    let backend = Backend::start("framed").await;
    // A backend that answers every connection with something that is not HTTP.
    let garbage = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let garbage_addr = garbage.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = garbage.accept().await {
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(b"SMTP 220 hello there\r\n\r\n").await;
        }
    });
    let node = cluster.node(0);
    put_route(
        &cluster,
        node,
        "framed",
        json!({"hosts": ["framed"], "backend": targets(&[&backend]), "retries": 0}),
    )
    .await;
    put_route(
        &cluster,
        node,
        "garbage",
        json!({"hosts": ["garbage"], "backend": {"targets": [format!("http://{garbage_addr}")]}, "retries": 0}),
    )
    .await;
    let proxy = ProxyClient::new(node);
    poll_until("the route reaches the proxy", DEADLINE, || async {
        (proxy.who("framed").await == "framed").then_some(())
    })
    .await;
    let pattern = |n: u64| (0..n).map(pattern_byte).collect::<Vec<u8>>();
    let fetch = |method: Method, path: &'static str| {
        proxy
            .http
            .request(method, format!("{}{path}", proxy.base))
            .header("host", "framed")
    };
    for _ in 0..3 {
        // Chunked (with an extension and a trailer), then ended by close: whole, and the
        // connections that stay open serve the next request.
        let resp = fetch(Method::GET, "/chunked/100000")
            .send()
            .await
            .expect("chunked");
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.bytes().await.expect("body").as_ref(), pattern(100_000));
        let resp = fetch(Method::GET, "/close/5000")
            .send()
            .await
            .expect("close");
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.bytes().await.expect("body").as_ref(), pattern(5000));
        let resp = fetch(Method::GET, "/status/204").send().await.expect("204");
        assert_eq!(resp.status().as_u16(), 204);
        assert_eq!(resp.headers()["x-backend"], "framed");
        assert!(resp.bytes().await.expect("body").is_empty());
        let resp = fetch(Method::HEAD, "/").send().await.expect("head");
        assert_eq!(resp.status().as_u16(), 200);
        let length: u64 = resp.headers()["content-length"]
            .to_str()
            .expect("text")
            .parse()
            .expect("a number");
        assert!(length > 0, "a HEAD answer keeps its length");
        assert!(resp.bytes().await.expect("body").is_empty());
        let resp = fetch(Method::GET, "/continue")
            .header("expect", "100-continue")
            .send()
            .await
            .expect("continue");
        assert_eq!(resp.status().as_u16(), 200, "the interim 100 is skipped");
        assert_eq!(resp.text().await.expect("body"), "continued");
    }
    // A chunked upload reaches the backend chunked, every byte of it.
    let addr = node.proxy_addr().expect("proxy");
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let answer = raw_exchange(
        &mut socket,
        b"POST /up HTTP/1.1\r\nhost: framed\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body: Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).expect("body")).expect("json");
    assert_eq!(body["bytes"], 11, "{body}");
    // A 50 MiB chunked answer streams to a slow reader with flat memory.
    const SIZE: u64 = 50 * 1024 * 1024;
    let before = rss();
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    socket
        .write_all(
            format!("GET /chunked/{SIZE} HTTP/1.1\r\nhost: framed\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("request");
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = socket.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    // The proxy re-chunks it for the client: the framing adds a little.
    assert!(total > SIZE && total < SIZE + SIZE / 100, "{total} bytes");
    let grew = rss().saturating_sub(before);
    assert!(
        grew < 25 * 1024 * 1024,
        "memory grew by {} MiB for a 50 MiB answer",
        grew / (1024 * 1024)
    );
    // A backend that speaks no HTTP: 502, and the proxy goes on serving.
    let resp = proxy
        .http
        .get(format!("{}/", proxy.base))
        .header("host", "garbage")
        .send()
        .await
        .expect("the proxy answers");
    assert_eq!(resp.status().as_u16(), 502);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "backend_unavailable", "{body}");
    assert_eq!(proxy.who("framed").await, "framed");
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_routes_name_the_field_and_change_nothing() {
    let mut cluster = TestCluster::start_with(1, proxy_on_n1).await;
    let node = cluster.node(0);
    put_route(
        &cluster,
        node,
        "ok",
        json!({"hosts": ["ok"], "backend": {"service": "web"}}),
    )
    .await;
    let before = call(
        &cluster,
        node,
        Method::GET,
        &format!("/v1/namespaces/{NS}/routes"),
        None,
    )
    .await
    .1;
    for (body, field) in [
        (json!({"backend": {"service": "web"}}), "hosts"),
        (
            json!({"hosts": ["a b"], "backend": {"service": "web"}}),
            "hosts[0]",
        ),
        (
            json!({"hosts": ["a"], "backend": {"targets": ["ftp://x"]}}),
            "backend.targets[0]",
        ),
        (
            json!({"hosts": ["a"], "backend": {"service": "web"}, "timeout": "never"}),
            "timeout",
        ),
        (
            json!({"hosts": ["a"], "backend": {"service": "web"}, "strategy": "random"}),
            "strategy",
        ),
        (
            json!({"hosts": ["a"], "backend": {"service": "web"}, "rate_limit": {"per_client_per_minute": 0}}),
            "rate_limit.per_client_per_minute",
        ),
        (json!({"hosts": ["a"]}), "backend"),
    ] {
        let (code, answer) = call(
            &cluster,
            node,
            Method::PUT,
            &format!("/v1/namespaces/{NS}/routes/ok"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (code, answer["error"]["code"].clone()),
            (400, json!("invalid_route")),
            "{body}"
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .expect("message")
                .contains(field),
            "{answer} names {field}"
        );
    }
    let after = call(
        &cluster,
        node,
        Method::GET,
        &format!("/v1/namespaces/{NS}/routes"),
        None,
    )
    .await
    .1;
    assert_eq!(before, after, "nothing changed");
    let (code, answer) = call(
        &cluster,
        node,
        Method::GET,
        &format!("/v1/namespaces/{NS}/routes/nope"),
        None,
    )
    .await;
    assert_eq!(
        (code, answer["error"]["code"].clone()),
        (404, json!("proxy_route_not_found"))
    );
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_targets_are_checked_by_the_holder_and_a_failing_one_leaves_the_rotation() {
    let mut cluster = TestCluster::start_with(2, proxy_on_n1).await;
    let good = Backend::start("good").await;
    let sick = cfgnode_tests::Receiver::start().await;
    let sick_base = sick.url.trim_end_matches("/hook").to_string();
    let other = cluster.node(1);
    put_route(&cluster, other, "web", json!({"hosts": ["web"], "backend": {"targets": [good.url(), sick_base]},
        "check": {"kind": "http", "path": "/health", "interval": "200ms", "timeout": "150ms", "unhealthy_after": 1, "healthy_after": 1}})).await;
    // The targets are registry instances of `route.web`, checked by the holder.
    poll_until("both targets healthy", DEADLINE, || async {
        let (_, view) = call(
            &cluster,
            other,
            Method::GET,
            &format!("/v1/namespaces/{NS}/services/route.web?status=healthy"),
            None,
        )
        .await;
        (view["instances"].as_array().map(Vec::len) == Some(2)).then_some(())
    })
    .await;
    sick.set_status(503);
    poll_until("the failing target is out", DEADLINE, || async {
        let (_, view) = call(
            &cluster,
            other,
            Method::GET,
            &format!("/v1/namespaces/{NS}/services/route.web?status=unhealthy"),
            None,
        )
        .await;
        (view["instances"].as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await;
    let proxy = ProxyClient::new(cluster.node(0));
    poll_until("only the good target answers", DEADLINE, || async {
        (futures_all(&proxy, 6).await.iter().all(|w| w == "good")).then_some(())
    })
    .await;
    // Deleting the route removes its targets from the registry.
    call(
        &cluster,
        other,
        Method::DELETE,
        &format!("/v1/namespaces/{NS}/routes/web"),
        None,
    )
    .await;
    let (_, view) = call(
        &cluster,
        other,
        Method::GET,
        &format!("/v1/namespaces/{NS}/services/route.web"),
        None,
    )
    .await;
    assert_eq!(view["instances"], json!([]));
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hit_reaches_only_what_the_namespace_allows() {
    let mut cluster = TestCluster::start(2).await;
    let (allowed, other) = (
        Backend::start("allowed").await,
        Backend::start("other").await,
    );
    let (a, b) = (cluster.node(0), cluster.node(1));
    let hit = |url: String| json!({"method": "POST", "url": url, "headers": {"x-test": "1"}, "body": "payload"});
    // No allow list yet: refused.
    let (code, body) = call(
        &cluster,
        b,
        Method::POST,
        &format!("/v1/namespaces/{NS}/hit"),
        Some(hit(format!("{}/x", allowed.url()))),
    )
    .await;
    assert_eq!(
        (code, body["error"]["code"].clone()),
        (403, json!("hit_not_allowed")),
        "{body}"
    );
    cluster
        .put(
            a,
            NS,
            "allow",
            &json!([format!("{}/", allowed.url())]).to_string(),
        )
        .await;
    let (code, body) = call(
        &cluster,
        b,
        Method::POST,
        &format!("/v1/namespaces/{NS}/hit"),
        Some(hit(format!("{}/x?y=1", allowed.url()))),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], 200);
    let answered: Value =
        serde_json::from_str(body["body"].as_str().expect("text body")).expect("json");
    assert_eq!(answered["backend"], "allowed");
    assert_eq!(answered["request"], "POST /x?y=1 HTTP/1.1");
    assert_eq!(answered["bytes"], 7);
    let (code, body) = call(
        &cluster,
        b,
        Method::POST,
        &format!("/v1/namespaces/{NS}/hit"),
        Some(hit(format!("{}/x", other.url()))),
    )
    .await;
    assert_eq!(
        (code, body["error"]["code"].clone()),
        (403, json!("hit_not_allowed"))
    );
    assert_eq!(other.hits(), 0, "a refused hit sends nothing");
    let (code, _) = call(
        &cluster,
        b,
        Method::POST,
        &format!("/v1/namespaces/{NS}/hit"),
        Some(json!({"url": "ftp://x/"})),
    )
    .await;
    assert_eq!(code, 400);
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_terminates_tls_with_the_given_certificate() {
    use tokio_rustls::rustls;
    let certs = tempfile::tempdir().expect("tempdir");
    let ca = cfgnode_transport::ClusterCa::init(&certs.path().join("ca")).expect("a CA");
    let (cert, key) = ca
        .issue("proxy", &certs.path().join("proxy"))
        .expect("a certificate");
    // The tweak is a plain fn (no captures): it reads the files from a static set once.
    static FILES: std::sync::OnceLock<(std::path::PathBuf, std::path::PathBuf)> =
        std::sync::OnceLock::new();
    FILES.set((cert, key)).expect("set once");
    let mut cluster = TestCluster::start_with(1, |config| {
        proxy_on_n1(config);
        config.proxy_tls = FILES.get().cloned();
    })
    .await;
    let backend = Backend::start("secure").await;
    let node = cluster.node(0);
    put_route(
        &cluster,
        node,
        "web",
        json!({"hosts": ["web"], "backend": targets(&[&backend])}),
    )
    .await;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(ca.roots().expect("roots"))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let addr = node.proxy_addr().expect("proxy");
    let answer = poll_until("the route answers over TLS", DEADLINE, || async {
        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let name = rustls::pki_types::ServerName::try_from("cfgnode").expect("name");
        let mut tls = connector
            .connect(name, tcp)
            .await
            .expect("the TLS handshake succeeds");
        tls.write_all(b"GET /x HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        answer.starts_with("HTTP/1.1 200").then_some(answer)
    })
    .await;
    let body: Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).expect("body")).expect("json");
    assert_eq!(body["backend"], "secure");
    assert_eq!(body["x_forwarded_proto"], "https");
    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: web\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, plain.read_to_end(&mut got)).await;
    assert!(!String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    shutdown_all(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_are_passed_through_and_spliced() {
    let mut cluster = TestCluster::start_with(1, proxy_on_n1).await;
    // A backend that switches protocols, then echoes what it gets.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let backend = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if !head.contains("upgrade: websocket") {
                    let _ = socket
                        .write_all(b"HTTP/1.1 400 X\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let _ = socket
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n")
                    .await;
                let (mut read, mut write) = socket.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    let node = cluster.node(0);
    put_route(
        &cluster,
        node,
        "ws",
        json!({"hosts": ["ws"], "backend": {"targets": [backend]}}),
    )
    .await;
    let addr = node.proxy_addr().expect("proxy");
    let mut socket = poll_until("the upgrade is answered 101", DEADLINE, || async {
        let mut socket = tokio::net::TcpStream::connect(addr).await.ok()?;
        socket
            .write_all(b"GET /ws HTTP/1.1\r\nhost: ws\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n")
            .await
            .ok()?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if socket.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            head.push(byte[0]);
        }
        String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101").then_some(socket)
    })
    .await;
    for message in [&b"ping"[..], b"pong pong", b"\x00\x01binary"] {
        socket.write_all(message).await.expect("write");
        let mut back = vec![0u8; message.len()];
        tokio::time::timeout(DEADLINE, socket.read_exact(&mut back))
            .await
            .expect("in time")
            .expect("echo");
        assert_eq!(back, message, "both ways through the splice");
    }
    shutdown_all(&mut cluster).await;
}
