//! The HTTP admin port under abuse, against a real node on 127.0.0.1:0: half-open connection
//! floods (slowloris), the connection cap, the header and body timeouts, and metric labels
//! that clients cannot grow.

use std::collections::BTreeSet;
use std::time::Duration;

use cfgnode_node::NodeConfig;
use cfgnode_tests::SingleNode;
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// A generous bound for what should take milliseconds: a liveness check, not a speed one.
const PROMPTLY: Duration = Duration::from_secs(5);

/// A test node whose HTTP client opens one connection per request (a pooled connection would
/// count as open) and gives up after [`PROMPTLY`].
async fn start(tweak: impl FnOnce(&mut NodeConfig)) -> SingleNode {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(PROMPTLY)
        .build()
        .expect("client");
    SingleNode::start_with(tweak).await.with_http(http)
}

/// The value of an unlabelled-but-for-`node` metric in a Prometheus text page.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `check` until it holds or `within` has passed.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Raises this process's soft limit of open files to its hard limit: a flood test holds both
/// ends of thousands of connections.
fn raise_fd_limit(needed: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|soft| soft < needed) {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit).expect("raise RLIMIT_NOFILE");
    }
    let soft = getrlimit(Resource::Nofile).current;
    assert!(
        soft.is_none_or(|soft| soft >= needed),
        "this test needs {needed} open files; the hard limit allows {soft:?}"
    );
}

/// Opens a connection that sends part of a request and then stalls (half-open).
async fn stalled_connection(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .expect("partial request");
    stream
}

/// Waits until the server closes `stream` (EOF or reset); false if it stays open `within`.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // hyper may answer a timed-out request before closing; read on to the close.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_stalled_connections_does_not_starve_other_clients() {
    const FLOOD: usize = 2000;
    raise_fd_limit(3 * FLOOD as u64);
    // A header timeout far beyond the test's length: the flood stays open throughout.
    let n = start(|c| c.http_header_timeout = Duration::from_secs(120)).await;
    let addr = n.node().http_addr();
    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        flood.push(stalled_connection(addr).await);
    }
    eventually(
        PROMPTLY * 2,
        "the node accepted the whole flood",
        || async {
            metric(&n.metrics().await, "cfgnode_http_connections_open")
                .is_some_and(|open| open >= FLOOD as f64)
        },
    )
    .await;

    let health = timeout(PROMPTLY, n.http.get(format!("{}/health", n.base)).send())
        .await
        .expect("/health answered while flooded")
        .expect("send");
    assert_eq!(health.status(), StatusCode::OK);
    let key = format!("{}/v1/namespaces/app/keys/flooded", n.base);
    let put = timeout(
        PROMPTLY,
        n.http
            .put(&key)
            .bearer_auth(&n.token)
            .header("content-type", "text/plain")
            .body("still served")
            .send(),
    )
    .await
    .expect("PUT answered while flooded")
    .expect("send");
    assert_eq!(put.status(), StatusCode::OK);
    let get = timeout(
        PROMPTLY,
        n.http
            .get(format!("{key}?raw=true"))
            .bearer_auth(&n.token)
            .send(),
    )
    .await
    .expect("GET answered while flooded")
    .expect("send");
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(get.text().await.expect("body"), "still served");

    // The flood was still there while those were served.
    let open = metric(&n.metrics().await, "cfgnode_http_connections_open").expect("gauge");
    assert!(open >= FLOOD as f64, "only {open} connections open");
    drop(flood);
    n.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_idle_connections_are_closed_at_the_header_timeout() {
    const STALLED: usize = 200;
    raise_fd_limit(4 * STALLED as u64);
    let n = start(|c| c.http_header_timeout = Duration::from_millis(500)).await;
    let addr = n.node().http_addr();
    let mut stalled = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        stalled.push(stalled_connection(addr).await);
    }
    // One that sends nothing at all, and one that trickles its headers (sending does not
    // extend the timeout), and one kept alive after a full request.
    let silent = TcpStream::connect(addr).await.expect("connect");
    let trickling = TcpStream::connect(addr).await.expect("connect");
    let trickler = tokio::spawn(async move {
        let mut trickling = trickling;
        for byte in b"GET /health HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if trickling.write_all(&[*byte]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        closed_by_server(&mut trickling, PROMPTLY).await
    });
    let mut kept_alive = TcpStream::connect(addr).await.expect("connect");
    kept_alive
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("request");

    for mut stream in stalled.into_iter().chain([silent, kept_alive]) {
        assert!(
            closed_by_server(&mut stream, PROMPTLY).await,
            "a stalled connection stayed open past the header timeout"
        );
    }
    assert!(
        trickler.await.expect("trickler"),
        "a connection trickling its headers stayed open past the header timeout"
    );
    eventually(PROMPTLY, "the gauge counts only the scrape", || async {
        metric(&n.metrics().await, "cfgnode_http_connections_open") == Some(1.0)
    })
    .await;
    n.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_at_once_and_counted() {
    const CAP: usize = 16;
    let n = start(|c| {
        c.http_max_connections = CAP;
        // Only the cap can close a connection within this test.
        c.http_header_timeout = Duration::from_secs(120);
    })
    .await;
    let addr = n.node().http_addr();
    let mut held = Vec::with_capacity(CAP);
    for _ in 0..CAP {
        held.push(stalled_connection(addr).await);
    }
    // Accepted after the ones before it (the backlog is first in, first out): no slot left.
    let mut over = TcpStream::connect(addr).await.expect("connect");
    assert!(
        closed_by_server(&mut over, PROMPTLY).await,
        "a connection over the cap was kept open"
    );
    drop(held);
    eventually(PROMPTLY, "slots are free again", || async {
        n.http
            .get(format!("{}/health", n.base))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    let refused = metric(&n.metrics().await, "cfgnode_http_connections_refused_total");
    assert!(refused.is_some_and(|r| r >= 1.0), "refused: {refused:?}");
    n.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_in_gets_408_and_writes_nothing() {
    let n = start(|c| {
        c.http_body_timeout = Duration::from_millis(500);
        c.http_header_timeout = Duration::from_secs(120);
    })
    .await;
    let mut stream = TcpStream::connect(n.node().http_addr())
        .await
        .expect("connect");
    let head = format!(
        "PUT /v1/namespaces/app/keys/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n",
        n.token
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let (mut read, mut write) = stream.into_split();
    // One byte every 100 ms: each gap is short, the whole body takes 10 s.
    let trickler = tokio::spawn(async move {
        for _ in 0..100 {
            if write.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read_answer = async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(k) => answer.extend_from_slice(&buf[..k]),
            }
        }
    };
    timeout(PROMPTLY, read_answer)
        .await
        .expect("the node answered a trickling body within its body timeout");
    trickler.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "expected 408, got: {answer}"
    );
    assert!(answer.contains("request_timeout"), "{answer}");
    let missing = n
        .http
        .get(format!("{}/v1/namespaces/app/keys/slow", n.base))
        .bearer_auth(&n.token)
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    n.shutdown().await;
}

/// `count` random upper-case words of 12 letters (random enough that no route or label has
/// them by chance).
fn random_words(count: usize) -> Vec<String> {
    let mut bytes = vec![0u8; count * 12];
    getrandom::fill(&mut bytes).expect("randomness");
    bytes
        .chunks(12)
        .map(|c| c.iter().map(|b| char::from(b'A' + b % 26)).collect())
        .collect()
}

/// The label sets of `cfgnode_http_requests_total` in a metrics page.
fn request_series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with("cfgnode_http_requests_total{"))
        .filter_map(|l| l.split_once('}').map(|(labels, _)| labels.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_chosen_methods_and_paths_do_not_grow_metric_labels() {
    let n = start(|_| {}).await;
    // Every kind of answer once, so the page before already has the series a request of
    // each kind makes.
    n.http
        .request(
            Method::from_bytes(b"WARMUP").expect("method"),
            format!("{}/health", n.base),
        )
        .send()
        .await
        .expect("send");
    n.http
        .get(format!("{}/warm/up", n.base))
        .send()
        .await
        .expect("send");
    n.http
        .request(
            Method::from_bytes(b"WARMUP").expect("method"),
            format!("{}/warm/up", n.base),
        )
        .send()
        .await
        .expect("send");
    let before = request_series(&n.metrics().await);

    let methods = random_words(50);
    let paths = random_words(50);
    for (method, path) in methods.iter().zip(&paths) {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let custom_on_route = n
            .http
            .request(method.clone(), format!("{}/health", n.base))
            .send()
            .await
            .expect("send");
        assert_eq!(custom_on_route.status(), StatusCode::METHOD_NOT_ALLOWED);
        let unmatched = n
            .http
            .get(format!("{}/{path}/{path}", n.base))
            .send()
            .await
            .expect("send");
        assert_eq!(unmatched.status(), StatusCode::NOT_FOUND);
        let both = n
            .http
            .request(method, format!("{}/x/{path}", n.base))
            .send()
            .await
            .expect("send");
        assert_eq!(both.status(), StatusCode::NOT_FOUND);
    }
    let page = n.metrics().await;
    for word in methods.iter().chain(&paths) {
        assert!(
            !page.contains(word.as_str()),
            "{word} became a label:\n{page}"
        );
    }
    let after = request_series(&page);
    let grown: Vec<_> = after.difference(&before).collect();
    // At most the scrape's own series (`GET /metrics 200`) is new.
    assert!(grown.len() <= 1, "new series: {grown:#?}");
    assert!(
        after
            .iter()
            .any(|s| s.contains(r#"method="other""#) && s.contains(r#"route="unmatched""#)),
        "{after:#?}"
    );
    assert!(
        after
            .iter()
            .any(|s| s.contains(r#"method="other""#) && s.contains(r#"route="/health""#)),
        "{after:#?}"
    );
    let latency_routes: BTreeSet<_> = page
        .lines()
        .filter(|l| l.starts_with("cfgnode_http_request_duration_seconds_count{"))
        .collect();
    assert!(latency_routes.len() <= 4, "{latency_routes:#?}");
    n.shutdown().await;
}
