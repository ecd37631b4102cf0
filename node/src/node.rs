//! [`Node`]: opens storage, loads the admin token, binds the HTTP port, serves until shut down.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cfgnode_storage::{Store, StoreOptions, validate_node_id};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::auth::{TokenVerifier, load_admin_token};
use crate::error::NodeError;
use crate::http::{AppState, router};
use crate::metrics::{CommitMetrics, Metrics};

/// File name of the redb database inside the data dir.
pub const DATABASE_FILE: &str = "cfgnode.redb";

/// Everything a node needs to start. Built by `cfgnode start` from flags and environment.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Where the database and the admin token live.
    pub data_dir: PathBuf,
    /// The node id to use; `None` keeps the stored one or makes one on first start.
    pub node_id: Option<String>,
    /// The HTTP admin address; port 0 picks a free port (tests).
    pub http_addr: SocketAddr,
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
    /// Versions kept per key.
    pub history_per_key: u64,
    /// Events kept per namespace log.
    pub log_per_namespace: u64,
    /// Use the token in this file instead of `<data_dir>/admin.token`.
    pub token_file: Option<PathBuf>,
}

impl NodeConfig {
    /// The defaults of `cfgnode start`, with the given data dir.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let defaults = StoreOptions::default();
        NodeConfig {
            data_dir: data_dir.into(),
            node_id: None,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_value_bytes: defaults.max_value_bytes,
            history_per_key: defaults.history_per_key,
            log_per_namespace: defaults.log_per_namespace,
            token_file: None,
        }
    }
}

/// A running node. Dropping it without [`Node::shutdown`] stops serving abruptly.
#[derive(Debug)]
pub struct Node {
    node_id: String,
    http_addr: SocketAddr,
    data_dir: PathBuf,
    token_path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Node {
    /// Opens storage, loads (or creates) the admin token, binds the HTTP port and starts serving.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        if let Some(id) = &config.node_id {
            validate_node_id(id)?;
        }
        if config.max_value_bytes == 0 {
            return Err(NodeError::Config(
                "--max-value-bytes must be at least 1".to_string(),
            ));
        }
        create_private_dir(&config.data_dir)?;
        let (token, token_source) =
            load_admin_token(&config.data_dir, config.token_file.as_deref())?;

        // The metrics registry is labelled with the node id, which storage settles; the observer
        // reaches the registry through a slot filled right after opening.
        let metrics_slot: Arc<std::sync::OnceLock<Arc<Metrics>>> = Arc::default();
        let observer = Arc::new(LateCommitMetrics(Arc::clone(&metrics_slot)));
        let options = StoreOptions {
            max_value_bytes: config.max_value_bytes,
            history_per_key: config.history_per_key,
            log_per_namespace: config.log_per_namespace,
            observer: Some(observer),
            ..StoreOptions::default()
        };
        let db_path = config.data_dir.join(DATABASE_FILE);
        let store = {
            let node_id = config.node_id.clone();
            tokio::task::spawn_blocking(move || Store::open(&db_path, node_id.as_deref(), options))
                .await
                .map_err(|e| NodeError::Config(format!("storage open task failed: {e}")))??
        };
        let node_id = store.node_id().to_string();
        let metrics = Metrics::new(&node_id);
        let _ = metrics_slot.set(Arc::clone(&metrics));

        let listener = TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| NodeError::Bind {
                addr: config.http_addr.to_string(),
                flag: "--http",
                source,
            })?;
        let http_addr = listener.local_addr().map_err(NodeError::Http)?;

        let state = Arc::new(AppState {
            store,
            verifier: TokenVerifier::new(token),
            metrics: Arc::clone(&metrics),
        });
        let app = router(state);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        metrics.up.set(1);
        tracing::info!(
            node_id = %node_id,
            http = %http_addr,
            data_dir = %config.data_dir.display(),
            token_file = %token_source.path.display(),
            token_created = token_source.created,
            "cfgnode node serving"
        );
        Ok(Node {
            node_id,
            http_addr,
            data_dir: config.data_dir,
            token_path: token_source.path,
            stop: Some(stop),
            server,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The bound HTTP address (the real port when 0 was asked for).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The file holding the admin token.
    pub fn token_path(&self) -> &Path {
        &self.token_path
    }

    /// Stops accepting requests, lets in-flight requests (and their writes) finish, then closes
    /// storage: when this returns, every acknowledged write is committed and the writer stopped.
    pub async fn shutdown(mut self) -> Result<(), NodeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let served = (&mut self.server)
            .await
            .map_err(|e| NodeError::Http(std::io::Error::other(e.to_string())))?;
        served.map_err(NodeError::Http)?;
        tracing::info!(node_id = %self.node_id, "cfgnode node stopped");
        Ok(())
    }
}

/// Forwards commit stats to the metrics once they exist.
struct LateCommitMetrics(Arc<std::sync::OnceLock<Arc<Metrics>>>);

impl cfgnode_storage::CommitObserver for LateCommitMetrics {
    fn on_commit(&self, stats: &cfgnode_storage::CommitStats) {
        if let Some(metrics) = self.0.get() {
            cfgnode_storage::CommitObserver::on_commit(&CommitMetrics(Arc::clone(metrics)), stats);
        }
    }
}

/// Creates the data dir (mode 0700 on Unix: it holds the admin token).
fn create_private_dir(dir: &Path) -> Result<(), NodeError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| {
        NodeError::Config(format!("cannot create the data dir {}: {e}", dir.display()))
    })
}
