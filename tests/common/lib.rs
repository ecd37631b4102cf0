//! A harness for multi-node tests: real nodes (the `cfgnode-node` crate, in this process) on
//! loopback ports chosen by the OS, each with its own temp data dir, all sharing one admin
//! token file the way `cfgnode start --token-file` does in production.
//!
//! Single-node tests (HTTP API, QUIC front end, client library) start their node with
//! [`SingleNode`] / [`start_single_node`] (`single.rs`).
//!
//! Every wait polls a condition against a deadline; nothing sleeps its way to synchronisation.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cfgnode_client::Client;
use cfgnode_node::{Node, NodeConfig};
use serde_json::Value;

mod backend;
mod single;
pub use backend::{Backend, pattern_byte};
mod sse;
pub use single::{SingleNode, node_token, single_node_config, start_single_node};
pub use sse::{Message, SseReader};

/// The token every node of a test cluster accepts.
pub const TOKEN: &str = "multi-node-test-token-0123456789abcdef";

/// The cluster key every node of a test cluster holds (64 hex characters).
pub const CLUSTER_KEY: &str = "7e577e577e577e577e577e577e577e577e577e577e577e577e577e577e577e57";

/// How long a cluster-wide condition may take (debug build, busy 2-core machine).
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Between two polls of a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `check` every [`POLL_INTERVAL`] until it yields `Some`; panics naming `what` after
/// `deadline`. (The process-level tests in `cli/tests` use it too.)
pub async fn poll_until<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A test cluster: nodes `n1..nN` in one temp dir.
pub struct TestCluster {
    /// Holds every data dir and the token file.
    pub dir: tempfile::TempDir,
    /// The running nodes, by position (`nodes[0]` is `n1`); `None` once stopped.
    pub nodes: Vec<Option<Node>>,
    http: reqwest::Client,
    /// Applied to every node's config (e.g. a short log retention).
    tweak: fn(&mut NodeConfig),
}

impl TestCluster {
    /// Starts `n` nodes (n1 first, the others joining through it) and waits until every node
    /// sees every other alive.
    pub async fn start(n: usize) -> TestCluster {
        Self::start_with(n, |_| {}).await
    }

    /// Starts `n` nodes whose configs `tweak` adjusts (also at restarts). With `RUST_LOG` set,
    /// the nodes' logs go to stderr (run the test with `--nocapture`).
    pub async fn start_with(n: usize, tweak: fn(&mut NodeConfig)) -> TestCluster {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_writer(std::io::stderr)
                .try_init();
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("token"), TOKEN).expect("token file");
        std::fs::write(dir.path().join("cluster.key"), CLUSTER_KEY).expect("cluster key file");
        let mut cluster = TestCluster {
            dir,
            nodes: Vec::new(),
            http: reqwest::Client::new(),
            tweak,
        };
        for i in 1..=n {
            cluster.add(&format!("n{i}")).await;
        }
        cluster.wait_converged().await;
        cluster
    }

    /// The config of node `id` (joining through `n1` when it is running).
    pub fn config(&self, id: &str) -> NodeConfig {
        let mut config = NodeConfig::new(self.data_dir(id));
        config.http_addr = "127.0.0.1:0".parse().expect("addr");
        config.quic_addr = "127.0.0.1:0".parse().expect("addr");
        config.node_id = Some(id.to_string());
        config.token_file = Some(self.dir.path().join("token"));
        config.cluster_key_file = Some(self.dir.path().join("cluster.key"));
        if let Some(Some(seed)) = self.nodes.first()
            && seed.node_id() != id
        {
            config.join = vec![seed.quic_addr()];
        }
        // One copy per namespace unless a test asks for more (`tweak`): these clusters test
        // placement, handoff and forwarding as such; the replicated default (3) has its own
        // tests (tests/replication.rs) and the process tests run it (cli/tests).
        config.replicas = 1;
        (self.tweak)(&mut config);
        config
    }

    /// Where node `id` keeps its data.
    pub fn data_dir(&self, id: &str) -> PathBuf {
        self.dir.path().join(id)
    }

    /// Starts one more node `id` (or restarts a stopped one at its position).
    pub async fn add(&mut self, id: &str) -> usize {
        let node = Node::start(self.config(id)).await.expect("node starts");
        let index: usize = id[1..].parse::<usize>().expect("ids are nN") - 1;
        while self.nodes.len() <= index {
            self.nodes.push(None);
        }
        self.nodes[index] = Some(node);
        index
    }

    /// Starts node `id` with a config changed by `f` (restarts keep their QUIC address so
    /// peers find them where they were).
    pub async fn restart_at(&mut self, id: &str, quic: SocketAddr, http: SocketAddr) {
        let mut config = self.config(id);
        config.quic_addr = quic;
        config.http_addr = http;
        let index: usize = id[1..].parse::<usize>().expect("ids are nN") - 1;
        let node = Node::start(config).await.expect("node restarts");
        self.nodes[index] = Some(node);
    }

    /// The running node at position `i`.
    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("node running")
    }

    /// Every running node.
    pub fn running(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().flatten()
    }

    /// The position of node `id`.
    pub fn index_of(&self, id: &str) -> usize {
        id[1..].parse::<usize>().expect("ids are nN") - 1
    }

    /// Stops node `i` gracefully (it leaves the cluster).
    pub async fn stop(&mut self, i: usize) -> Node {
        self.nodes[i].take().expect("node running")
    }

    /// Waits until every running node sees every running node alive.
    pub async fn wait_converged(&self) {
        let ids: Vec<String> = self.running().map(|n| n.node_id().to_string()).collect();
        for node in self.running() {
            let what = format!("{} to see {ids:?} alive", node.node_id());
            let ids = ids.clone();
            poll_until(&what, DEADLINE, || {
                let members = self.members(node);
                let ids = ids.clone();
                async move {
                    let members = members.await;
                    ids.iter()
                        .all(|id| {
                            members
                                .iter()
                                .any(|m| m["id"] == id.as_str() && m["state"] == "alive")
                        })
                        .then_some(())
                }
            })
            .await;
        }
    }

    /// An HTTP request to `node` with the token.
    pub fn request(
        &self,
        node: &Node,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("http://{}{path}", node.http_addr()))
            .bearer_auth(TOKEN)
    }

    /// The Prometheus page of `node`.
    pub async fn metrics(&self, node: &Node) -> String {
        let resp = self
            .request(node, reqwest::Method::GET, "/metrics")
            .send()
            .await
            .expect("scrape");
        assert_eq!(resp.status(), reqwest::StatusCode::OK);
        resp.text().await.expect("metrics text")
    }

    /// `GET /v1/cluster/members` of `node`.
    pub async fn members(&self, node: &Node) -> Vec<Value> {
        let Ok(resp) = self
            .request(node, reqwest::Method::GET, "/v1/cluster/members")
            .send()
            .await
        else {
            return Vec::new();
        };
        let body: Value = resp.json().await.unwrap_or_default();
        body["members"].as_array().cloned().unwrap_or_default()
    }

    /// `GET path` of `node`, answered with JSON (any status).
    pub async fn get_json(&self, node: &Node, path: &str) -> Value {
        self.request(node, reqwest::Method::GET, path)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} answers: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {path} is JSON: {e}"))
    }

    /// `METHOD path` with an optional JSON body through `node`: the status and the JSON answer
    /// (`null` when the answer has no JSON body).
    pub async fn call(
        &self,
        node: &Node,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.request(node, method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let resp = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path} answers: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `GET /v1/cluster/placement/{ns}` of `node`.
    pub async fn placement(&self, node: &Node, ns: &str) -> Value {
        self.get_json(node, &format!("/v1/cluster/placement/{ns}"))
            .await
    }

    /// Waits until every running node agrees `ns` is held by its desired owner, and returns
    /// that holder.
    pub async fn wait_settled(&self, ns: &str) -> String {
        let what = format!("namespace {ns} held by its desired owner on every node");
        poll_until(&what, DEADLINE, || async {
            let mut seen = Vec::new();
            for node in self.running() {
                seen.push(self.placement(node, ns).await);
            }
            let first = seen.first()?.clone();
            let settled = first["holder"].is_string()
                && first["holder"] == first["desired_owner"]
                && seen
                    .iter()
                    .all(|p| p["holder"] == first["holder"] && p["epoch"] == first["epoch"]);
            settled.then(|| first["holder"].as_str().unwrap_or_default().to_string())
        })
        .await
    }

    /// Waits until every running node agrees `ns` is held by `node`, its desired owner.
    pub async fn wait_held_by(&self, ns: &str, node: &str) {
        let what = format!("namespace {ns} held by {node} on every node");
        poll_until(&what, DEADLINE, || async {
            for n in self.running() {
                let p = self.placement(n, ns).await;
                if p["holder"] != node || p["desired_owner"] != node {
                    return None;
                }
            }
            Some(())
        })
        .await
    }

    /// A client library instance talking to `node` only.
    pub fn client(&self, node: &Node) -> Client {
        Client::builder([node.quic_addr()])
            .token(TOKEN)
            .insecure()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client")
    }

    /// Sets a directive (`kind` is `claims` or `pins`) for `ns` to `node`, through node `via`.
    pub async fn direct(&self, via: usize, kind: &str, ns: &str, node: &str) {
        let resp = self
            .request(
                self.node(via),
                reqwest::Method::PUT,
                &format!("/v1/cluster/{kind}/{ns}"),
            )
            .json(&serde_json::json!({ "node": node }))
            .send()
            .await
            .expect("directive answers");
        assert_eq!(resp.status(), 200, "{kind} {ns} -> {node}");
    }

    /// Writes a text value through `node` over HTTP; returns the answer's JSON.
    pub async fn put(&self, node: &Node, ns: &str, key: &str, value: &str) -> Value {
        let resp = self
            .request(
                node,
                reqwest::Method::PUT,
                &format!("/v1/namespaces/{ns}/keys/{key}"),
            )
            .header("content-type", "text/plain")
            .body(value.to_string())
            .send()
            .await
            .expect("put answers");
        let status = resp.status();
        let body: Value = resp.json().await.expect("JSON");
        assert!(
            status.is_success(),
            "PUT {ns}/{key} via {}: {status} {body}",
            node.node_id()
        );
        body
    }

    /// Reads a raw value through `node` over HTTP: status and body.
    pub async fn get(&self, node: &Node, ns: &str, key: &str) -> (u16, String, Option<String>) {
        let resp = self
            .request(
                node,
                reqwest::Method::GET,
                &format!("/v1/namespaces/{ns}/keys/{key}?raw=true"),
            )
            .send()
            .await
            .expect("get answers");
        let status = resp.status().as_u16();
        let served_by = resp
            .headers()
            .get("x-cfgnode-node")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (status, resp.text().await.unwrap_or_default(), served_by)
    }
}

/// A config tweak for [`TestCluster::start_with`]: lets webhooks reach receivers on
/// The sum of the samples of metric `name` in a Prometheus page whose line contains `label`
/// (`""` for every sample; 0 when there is none).
pub fn metric_sum(page: &str, name: &str, label: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// 127.0.0.1 (like `--webhook-allow 127.0.0.1/32`), which the node refuses by default.
pub fn allow_loopback_webhooks(config: &mut NodeConfig) {
    config
        .webhook_allow
        .push("127.0.0.1/32".parse().expect("a CIDR"));
}

/// One request a [`Receiver`] got: its headers (lowercase names) and body.
#[derive(Clone, Debug)]
pub struct Received {
    /// Header name (lowercase) -> value.
    pub headers: std::collections::HashMap<String, String>,
    /// The body bytes.
    pub body: Vec<u8>,
}

/// A real HTTP/1.1 server on loopback for tests that need a receiver (webhooks, agent POSTs):
/// records every request and answers with the status set by [`Receiver::set_status`] (200 at
/// first); [`Receiver::set_down`] makes it refuse connections' requests by closing them.
pub struct Receiver {
    /// `http://127.0.0.1:PORT/hook`.
    pub url: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
    /// When set, every request is answered `302 Found` to this location (and not recorded).
    redirect: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl Receiver {
    /// Starts the server.
    pub async fn start() -> Receiver {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU16, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let got: Arc<std::sync::Mutex<Vec<Received>>> = Arc::default();
        let status = Arc::new(AtomicU16::new(200));
        let redirect: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let (seen, answer, moved) = (Arc::clone(&got), Arc::clone(&status), Arc::clone(&redirect));
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (seen, answer) = (Arc::clone(&seen), Arc::clone(&answer));
                let moved = Arc::clone(&moved);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    let (head_end, length) = loop {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + length {
                            break (end, length);
                        }
                    };
                    let location = moved.lock().expect("lock").clone();
                    if let Some(location) = location {
                        let reply = format!(
                            "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        );
                        let _ = socket.write_all(reply.as_bytes()).await;
                        return;
                    }
                    let status = answer.load(Ordering::Relaxed);
                    if status == 0 {
                        return; // "down": close without answering
                    }
                    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                    let headers = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let body = buf[head_end + 4..head_end + 4 + length].to_vec();
                    if (200..300).contains(&status) {
                        seen.lock().expect("lock").push(Received { headers, body });
                    }
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                });
            }
        });
        Receiver {
            url,
            got,
            status,
            redirect,
        }
    }

    /// Answers later requests with `302 Found` to `location` (a receiver that redirects).
    pub fn set_redirect(&self, location: &str) {
        *self.redirect.lock().expect("lock") = Some(location.to_string());
    }

    /// The status later requests get (only 2xx answers are recorded as received).
    pub fn set_status(&self, status: u16) {
        self.status
            .store(status, std::sync::atomic::Ordering::Relaxed);
    }

    /// Closes later requests' connections without an answer (a receiver that is down).
    pub fn set_down(&self) {
        self.set_status(0);
    }

    /// Every request answered with 2xx so far.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }
}

/// Runs a benchmark's body on a 2-worker runtime; `RUST_LOG` shows the nodes' logs.
pub fn run_bench<F: Future<Output = ()>>(body: F) {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(body);
}

/// Shuts every running node down.
pub async fn shutdown_all(cluster: &mut TestCluster) {
    for slot in cluster.nodes.iter_mut() {
        if let Some(node) = slot.take() {
            node.shutdown().await.expect("shutdown");
        }
    }
}

/// The data dir path helper for assertions.
pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// A node-to-node speaker built from the project's own transport code, for tests that play a
/// rogue or misbehaving node: it dials a node with the peer ALPN, runs the real cluster-key
/// handshake with `key` (right or wrong) under a node id of its choice, then sends peer
/// requests or raw datagrams on the authenticated connection.
pub struct PeerProbe {
    /// Kept so the connection stays open.
    _endpoint: quinn::Endpoint,
    connection: quinn::Connection,
}

impl PeerProbe {
    /// Dials `addr` as node `node_id` (generation `generation`) of cluster `cfgnode` holding
    /// `key`. Fails when the handshake fails (a wrong key is refused by the node).
    pub async fn connect(
        addr: SocketAddr,
        key: cfgnode_transport::ClusterKey,
        node_id: &str,
        generation: u64,
    ) -> Result<PeerProbe, String> {
        use cfgnode_transport::{ClientTls, PeerClaim, PeerCredentials};
        let config = cfgnode_transport::peer_client_config(&ClientTls::Insecure { identity: None })
            .map_err(|e| e.to_string())?;
        let endpoint = cfgnode_transport::bind_endpoint_with(
            "127.0.0.1:0".parse().expect("addr"),
            None,
            config,
        )
        .map_err(|e| e.to_string())?;
        let connection = endpoint
            .connect(addr, cfgnode_transport::SERVER_NAME)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let credentials = PeerCredentials {
            key,
            claim: PeerClaim {
                cluster_id: cfgnode_node::DEFAULT_CLUSTER_ID.to_string(),
                node_id: node_id.to_string(),
                generation,
            },
        };
        cfgnode_transport::dial_handshake(&connection, &credentials)
            .await
            .map_err(|e| e.to_string())?;
        Ok(PeerProbe {
            _endpoint: endpoint,
            connection,
        })
    }

    /// The test cluster's key.
    pub fn cluster_key() -> cfgnode_transport::ClusterKey {
        cfgnode_transport::ClusterKey::parse(CLUSTER_KEY).expect("the test key parses")
    }

    /// Sends one peer request and reads the answer.
    pub async fn call(
        &self,
        request: cfgnode_transport::PeerRequest,
    ) -> Result<cfgnode_transport::Response, cfgnode_transport::WireError> {
        use cfgnode_transport::{
            PeerEnvelope, ResponseEnvelope, WireError, decode_payload, encode_payload, read_frame,
            write_frame,
        };
        let broke = |e: String| WireError::new("probe_failed", e);
        let (mut send, mut recv) = self
            .connection
            .open_bi()
            .await
            .map_err(|e| broke(e.to_string()))?;
        let envelope = PeerEnvelope {
            request_id: 1,
            request,
        };
        write_frame(&mut send, &encode_payload(&envelope))
            .await
            .map_err(|e| broke(e.to_string()))?;
        let _ = send.finish();
        let frame = read_frame(&mut recv, cfgnode_transport::MAX_FRAME_BYTES)
            .await
            .map_err(|e| broke(e.to_string()))?
            .ok_or_else(|| broke("no answer".to_string()))?;
        let answer: ResponseEnvelope = decode_payload(&frame).map_err(|e| broke(e.to_string()))?;
        answer.result
    }

    /// Sends a raw datagram on the connection.
    pub fn send_datagram(&self, datagram: Vec<u8>) -> Result<(), String> {
        self.connection
            .send_datagram(datagram.into())
            .map_err(|e| e.to_string())
    }
}
