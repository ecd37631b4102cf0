//! `cfgnode start`: flags, then run a node until a signal.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use cfgnode_node::{Cidr, Node, NodeConfig, TlsFiles};
use clap::Args;

/// Flags of `cfgnode start`; each can also come from `CFGNODE_<NAME>`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// This node's id (default: the id stored in the data dir, or a random one on first start).
    #[arg(long, env = "CFGNODE_NODE_ID")]
    node_id: Option<String>,

    /// Where the database and the admin token live.
    #[arg(long, env = "CFGNODE_DATA_DIR", default_value = "./cfgnode-data")]
    data_dir: PathBuf,

    /// The HTTP admin address (JSON API, metrics, health).
    #[arg(long = "http", env = "CFGNODE_HTTP", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,

    /// The QUIC address for clients and peers.
    #[arg(
        long = "listen",
        env = "CFGNODE_LISTEN",
        default_value = "127.0.0.1:7000"
    )]
    quic_addr: SocketAddr,

    /// The QUIC address peers and clients reach this node at, when it differs from --listen
    /// (required when --listen is 0.0.0.0 or [::]).
    #[arg(long, env = "CFGNODE_ADVERTISE")]
    advertise: Option<SocketAddr>,

    /// The HTTP address shown to operators in the member list, when it differs from --http.
    #[arg(long, env = "CFGNODE_ADVERTISE_HTTP")]
    advertise_http: Option<SocketAddr>,

    /// QUIC addresses of nodes to join through, comma-separated (announced to until they
    /// answer, so a node started before its seeds joins once they come up).
    #[arg(long, env = "CFGNODE_JOIN", value_delimiter = ',')]
    join: Vec<SocketAddr>,

    /// The cluster id: QUIC requests naming another cluster are refused.
    #[arg(long, env = "CFGNODE_CLUSTER_ID", default_value = cfgnode_node::DEFAULT_CLUSTER_ID)]
    cluster_id: String,

    /// Cluster CA certificate: with --tls-cert and --tls-key, turns on mutual TLS (peers and
    /// clients without a certificate from this CA are refused).
    #[arg(long, env = "CFGNODE_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,

    /// This node's certificate from the cluster CA (see `cfgnode certs issue`).
    #[arg(long, env = "CFGNODE_TLS_CERT", requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,

    /// This node's private key.
    #[arg(long, env = "CFGNODE_TLS_KEY", requires_all = ["tls_ca", "tls_cert"])]
    tls_key: Option<PathBuf>,

    /// Largest value accepted, in bytes.
    #[arg(long, env = "CFGNODE_MAX_VALUE_BYTES", default_value_t = 1024 * 1024)]
    max_value_bytes: usize,

    /// Versions kept per key (history and diff reach this far back).
    #[arg(long, env = "CFGNODE_HISTORY_LIMIT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    history_limit: u64,

    /// Events kept per namespace log (watchers further behind resync from a snapshot).
    #[arg(long, env = "CFGNODE_LOG_RETENTION", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    log_retention: u64,

    /// Use the admin token in this file instead of `<data-dir>/admin.token` (share one token
    /// across a cluster).
    #[arg(long, env = "CFGNODE_TOKEN_FILE")]
    token_file: Option<PathBuf>,

    /// The cluster's secret key (64 hex characters), the same file on every node: nodes prove
    /// it to each other before any gossip, handoff or forward. Default: `<data-dir>/cluster.key`,
    /// created by the first node of a new cluster; a node started with --join needs this flag
    /// (copy the first node's file).
    #[arg(long, env = "CFGNODE_CLUSTER_KEY_FILE")]
    cluster_key_file: Option<PathBuf>,
    /// Most HTTP connections open at once; connections beyond it are closed as soon as they
    /// are accepted (counted in cfgnode_http_connections_refused_total).
    #[arg(
        long,
        env = "CFGNODE_HTTP_MAX_CONNECTIONS",
        default_value_t = cfgnode_node::HTTP_DEFAULT_MAX_CONNECTIONS
    )]
    http_max_connections: usize,

    /// How long an HTTP client may take to send a request's headers (and an idle keep-alive
    /// connection may wait for its next request) before its connection is closed.
    #[arg(
        long,
        env = "CFGNODE_HTTP_HEADER_TIMEOUT",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    http_header_timeout: std::time::Duration,

    /// How long an HTTP request body may take to arrive in full before the request gets 408.
    #[arg(
        long,
        env = "CFGNODE_HTTP_BODY_TIMEOUT",
        default_value = "30s",
        value_parser = humantime::parse_duration
    )]
    http_body_timeout: std::time::Duration,
    /// Non-public networks webhooks may be delivered to, comma-separated CIDRs (e.g.
    /// 10.1.0.0/16,fd00::/8); loopback, private, link-local, CGNAT and the like are refused
    /// otherwise. Give every node the same list.
    #[arg(long, env = "CFGNODE_WEBHOOK_ALLOW", value_delimiter = ',')]
    webhook_allow: Vec<Cidr>,

    /// How often each registry subscription is sent the full state of its services (a
    /// `reconcile` notification), so a subscriber that missed a change catches up.
    #[arg(
        long,
        env = "CFGNODE_REGISTRY_RECONCILE",
        default_value = "60s",
        value_parser = parse_reconcile
    )]
    registry_reconcile: std::time::Duration,

    /// Run the reverse proxy on this address (plain HTTP), e.g. 0.0.0.0:8000. Off unless given.
    #[arg(long, env = "CFGNODE_PROXY")]
    proxy: Option<std::net::SocketAddr>,

    /// The namespaces whose routes the proxy serves, comma-separated (required with --proxy).
    #[arg(long, env = "CFGNODE_PROXY_NAMESPACES", value_delimiter = ',')]
    proxy_namespaces: Vec<String>,

    /// Terminate TLS on the proxy listener with this certificate chain (PEM); needs
    /// --proxy-tls-key.
    #[arg(long, env = "CFGNODE_PROXY_TLS_CERT", requires = "proxy_tls_key")]
    proxy_tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --proxy-tls-cert.
    #[arg(long, env = "CFGNODE_PROXY_TLS_KEY", requires = "proxy_tls_cert")]
    proxy_tls_key: Option<PathBuf>,

    /// How many threads serve the proxy, each with its own listening socket and backend
    /// connections (default: one per core).
    #[arg(long, env = "CFGNODE_PROXY_THREADS", value_parser = clap::value_parser!(u16).range(1..=256))]
    proxy_threads: Option<u16>,

    /// How many nodes keep each namespace, the holder included: a write is answered once a
    /// majority of them has it durably, and a set of three or more fails over when its holder
    /// dies (1: no replication). Fewer on a smaller cluster, never an even number fewer: two
    /// nodes keep one copy each, three or more keep three. See docs/replication.md.
    #[arg(long, env = "CFGNODE_REPLICAS", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=64))]
    replicas: u8,
}

/// A reconcile period: at least one second (a faster one is a load generator).
fn parse_reconcile(text: &str) -> Result<std::time::Duration, String> {
    let period = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if period < std::time::Duration::from_secs(1) {
        return Err(format!("{text} is under the minimum of 1s"));
    }
    Ok(period)
}

/// Runs a node until SIGINT or SIGTERM, then shuts it down gracefully.
pub async fn run(args: StartArgs) -> anyhow::Result<()> {
    let config = NodeConfig {
        data_dir: args.data_dir,
        node_id: args.node_id,
        http_addr: args.http_addr,
        quic_addr: args.quic_addr,
        advertise_quic: args.advertise,
        advertise_http: args.advertise_http,
        cluster_id: args.cluster_id,
        join: args.join,
        tls: match (args.tls_ca, args.tls_cert, args.tls_key) {
            (Some(ca), Some(cert), Some(key)) => Some(TlsFiles { ca, cert, key }),
            _ => None,
        },
        max_value_bytes: args.max_value_bytes,
        history_per_key: args.history_limit,
        log_per_namespace: args.log_retention,
        token_file: args.token_file,
        cluster_key_file: args.cluster_key_file,
        http_max_connections: args.http_max_connections,
        http_header_timeout: args.http_header_timeout,
        http_body_timeout: args.http_body_timeout,
        webhook_allow: args.webhook_allow,
        registry_reconcile: args.registry_reconcile,
        proxy: args.proxy,
        proxy_namespaces: args.proxy_namespaces,
        proxy_tls: args.proxy_tls_cert.zip(args.proxy_tls_key),
        proxy_threads: args.proxy_threads.map(usize::from),
        replicas: usize::from(args.replicas),
    };
    // Watch the signals before serving: a SIGTERM that arrives as soon as /health answers must
    // take the graceful path, not the default action (die at once, exit status "killed").
    let mut signal = std::pin::pin!(shutdown_signal()?);
    let node = tokio::select! {
        started = Node::start(config) => started.context("cannot start the node")?,
        signal = &mut signal => {
            // Nothing serves yet: dropping the half-done start is the whole shutdown.
            tracing::info!(signal = %signal?, "stopping before the node started serving");
            return Ok(());
        }
    };
    let signal = signal.await?;
    tracing::info!(%signal, "shutting down: finishing in-flight requests");
    node.shutdown().await.context("shutdown failed")?;
    Ok(())
}

/// Starts watching SIGINT and SIGTERM now (from here on they no longer kill the process); the
/// future resolves with the name of the first one that arrives.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = anyhow::Result<&'static str>>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => Ok("SIGTERM"),
                _ = int.recv() => Ok("SIGINT"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        // Registers at its first poll, which `run` does before the node serves.
        Ok(async {
            tokio::signal::ctrl_c()
                .await
                .context("cannot watch Ctrl-C")?;
            Ok("Ctrl-C")
        })
    }
}
