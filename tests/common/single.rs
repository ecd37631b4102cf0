//! The single-node harness: one real node (the `cfgnode-node` crate, in this process) on
//! loopback ports chosen by the OS, in its own temp data dir, with its own admin token. The HTTP,
//! QUIC and client-library tests all start their node here, so what "a test node" is (loopback
//! only, port 0, a fresh dir) is decided in one place.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use cfgnode_node::{Node, NodeConfig};
use cfgnode_storage::CommitObserver;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

/// The config of a test node in `dir`: HTTP and QUIC on loopback port 0 (the OS picks free
/// ports, so tests never collide), everything else at its default.
pub fn single_node_config(dir: &Path) -> NodeConfig {
    let mut config = NodeConfig::new(dir);
    config.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.quic_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config
}

/// Starts a node in `dir` with [`single_node_config`] changed by `tweak` (e.g. a fixed QUIC
/// address to restart on, TLS files, a small value limit). For tests that manage the data dir
/// and the node's lifetime themselves; [`SingleNode`] does both.
pub async fn start_single_node(dir: &Path, tweak: impl FnOnce(&mut NodeConfig)) -> Node {
    let mut config = single_node_config(dir);
    tweak(&mut config);
    Node::start(config).await.expect("the test node starts")
}

/// The admin token `node` made in its data dir on first start.
pub fn node_token(node: &Node) -> String {
    std::fs::read_to_string(node.token_path())
        .expect("the node's admin token file")
        .trim()
        .to_string()
}

/// One running node with its temp dir, its addresses, its token and an HTTP client.
pub struct SingleNode {
    /// `None` only while [`SingleNode::restart`] swaps it.
    node: Option<Node>,
    /// The data dir; removed when the harness is dropped, after the node.
    pub dir: tempfile::TempDir,
    /// `http://<http addr>`, for building URLs.
    pub base: String,
    /// The QUIC address, for clients and raw streams.
    pub quic: SocketAddr,
    /// The admin token the node accepts.
    pub token: String,
    /// The client [`SingleNode::request`] uses; replace it with [`SingleNode::with_http`] when a
    /// test needs no pooling or a timeout.
    pub http: reqwest::Client,
}

impl SingleNode {
    /// A node with the default test config.
    pub async fn start() -> SingleNode {
        Self::start_with(|_| {}).await
    }

    /// A node whose config `tweak` adjusts.
    pub async fn start_with(tweak: impl FnOnce(&mut NodeConfig)) -> SingleNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = start_single_node(dir.path(), tweak).await;
        Self::around(dir, node)
    }

    /// A node whose storage reports every commit to `hook` before answering (to hold the
    /// writer at a chosen moment).
    pub async fn start_with_commit_hook(hook: Arc<dyn CommitObserver>) -> SingleNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = Node::start_with_commit_hook(single_node_config(dir.path()), hook)
            .await
            .expect("the test node starts");
        Self::around(dir, node)
    }

    fn around(dir: tempfile::TempDir, node: Node) -> SingleNode {
        SingleNode {
            base: format!("http://{}", node.http_addr()),
            quic: node.quic_addr(),
            token: node_token(&node),
            node: Some(node),
            dir,
            http: reqwest::Client::new(),
        }
    }

    /// Uses `http` for [`SingleNode::request`] from now on.
    pub fn with_http(mut self, http: reqwest::Client) -> SingleNode {
        self.http = http;
        self
    }

    /// The running node.
    pub fn node(&self) -> &Node {
        self.node.as_ref().expect("the node is running")
    }

    /// Shuts the node down cleanly and starts it again on the same data dir (new ports).
    pub async fn restart(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await.expect("clean shutdown");
        }
        let node = start_single_node(self.dir.path(), |_| {}).await;
        self.base = format!("http://{}", node.http_addr());
        self.quic = node.quic_addr();
        self.node = Some(node);
    }

    /// Shuts the node down cleanly (a test that ends with it checks the shutdown too).
    pub async fn shutdown(mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await.expect("clean shutdown");
        }
    }

    /// An HTTP request to `path` with the admin token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// A GET of `path` with the admin token.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    /// Writes a JSON value to `ns/key`, asserting 200; returns the answer.
    pub async fn put_json(&self, ns: &str, key: &str, value: Value) -> Value {
        let resp = self
            .request(Method::PUT, &format!("/v1/namespaces/{ns}/keys/{key}"))
            .header("content-type", "application/json")
            .body(value.to_string())
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::OK, "put {ns}/{key}");
        resp.json().await.expect("json")
    }

    /// GETs `path`, asserting 200; returns the JSON body.
    pub async fn json(&self, path: &str) -> Value {
        let resp = self.get(path).send().await.expect("send");
        assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
        resp.json().await.expect("json")
    }

    /// The current revision of `ns`, from its snapshot.
    pub async fn revision(&self, ns: &str) -> u64 {
        let snap = self.json(&format!("/v1/namespaces/{ns}/snapshot")).await;
        snap["revision"].as_u64().expect("revision")
    }

    /// The node's Prometheus page.
    pub async fn metrics(&self) -> String {
        let resp = self.get("/metrics").send().await.expect("scrape");
        assert_eq!(resp.status(), StatusCode::OK);
        resp.text().await.expect("metrics text")
    }
}
