//! `cfgnode start`: flags, then run a node until a signal.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use cfgnode_node::{Node, NodeConfig};
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
}

/// Runs a node until SIGINT or SIGTERM, then shuts it down gracefully.
pub async fn run(args: StartArgs) -> anyhow::Result<()> {
    let config = NodeConfig {
        data_dir: args.data_dir,
        node_id: args.node_id,
        http_addr: args.http_addr,
        max_value_bytes: args.max_value_bytes,
        history_per_key: args.history_limit,
        log_per_namespace: args.log_retention,
        token_file: args.token_file,
    };
    let node = Node::start(config).await.context("cannot start the node")?;
    let signal = wait_for_signal().await?;
    tracing::info!(%signal, "shutting down: finishing in-flight requests");
    node.shutdown().await.context("shutdown failed")?;
    Ok(())
}

/// Resolves with the name of the first SIGINT or SIGTERM.
async fn wait_for_signal() -> anyhow::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .context("cannot watch Ctrl-C")?;
        Ok("Ctrl-C")
    }
}
