//! The global flags every data command shares, and how they become a [`Client`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use cfgnode_client::{Client, ClientBuilder};
use clap::Args;

use crate::data::Output;
use crate::exit::CliError;

/// How to reach and authenticate to a node, and how to print results: the flags every client
/// command takes.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// How results are printed.
    #[arg(global = true, long, value_enum, default_value_t = Output::Text, env = "CFGNODE_OUTPUT")]
    pub output: Output,

    /// Node QUIC address(es), comma-separated; the client fails over along the list.
    #[arg(
        global = true,
        long,
        env = "CFGNODE_ADDR",
        default_value = "127.0.0.1:7000",
        value_delimiter = ','
    )]
    pub addr: Vec<String>,

    /// Bearer token (default: the admin.token in --data-dir, when it is there).
    #[arg(global = true, long, env = "CFGNODE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Data dir of a local node: its admin.token and its certificate are used when no
    /// --token or --ca is given.
    #[arg(
        global = true,
        long,
        env = "CFGNODE_DATA_DIR",
        default_value = "./cfgnode-data"
    )]
    pub data_dir: PathBuf,

    /// Cluster CA certificate to verify nodes with.
    #[arg(global = true, long, env = "CFGNODE_CA")]
    pub ca: Option<PathBuf>,

    /// Client certificate (for clusters running mutual TLS).
    #[arg(
        global = true,
        long = "cert",
        id = "client_cert",
        value_name = "PATH",
        env = "CFGNODE_CERT",
        requires = "client_key"
    )]
    pub cert: Option<PathBuf>,

    /// Client private key (for clusters running mutual TLS).
    #[arg(
        global = true,
        long = "key",
        id = "client_key",
        value_name = "PATH",
        env = "CFGNODE_KEY",
        requires = "client_cert"
    )]
    pub key: Option<PathBuf>,

    /// Encrypt but do not verify the node's certificate (self-signed remote nodes).
    #[arg(global = true, long, conflicts_with = "ca")]
    pub insecure: bool,

    /// Cluster id of the nodes.
    #[arg(
        global = true,
        long,
        env = "CFGNODE_CLUSTER_ID",
        default_value = "cfgnode"
    )]
    pub cluster_id: String,

    /// Deadline of each call, retries included (e.g. 5s, 500ms).
    #[arg(global = true, long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

impl ConnectArgs {
    /// The node addresses, resolved.
    pub fn addrs(&self) -> Result<Vec<SocketAddr>, CliError> {
        let mut out = Vec::new();
        for addr in &self.addr {
            let resolved = addr
                .to_socket_addrs()
                .map_err(|e| CliError::usage(format!("--addr {addr}: {e}")))?;
            out.extend(resolved.take(1));
        }
        Ok(out)
    }

    /// A client configured from the flags. Trust: --ca, else --insecure, else the local node's
    /// own certificate from --data-dir (pinned), else an error saying what to pass.
    pub fn client(&self) -> Result<Client, CliError> {
        let mut builder: ClientBuilder = Client::builder(self.addrs()?)
            .cluster_id(self.cluster_id.clone())
            .timeout(self.timeout);
        builder = match self.token.clone().or_else(|| self.local_token()) {
            Some(token) => builder.token(token),
            None => builder,
        };
        let identity = self.cert.as_deref().zip(self.key.as_deref());
        let local_cert = self.data_dir.join("tls").join("node.pem");
        builder = if let Some(ca) = &self.ca {
            builder.ca(ca, identity).map_err(CliError::from)?
        } else if self.insecure {
            builder.insecure()
        } else if local_cert.exists() {
            builder.ca(&local_cert, identity).map_err(CliError::from)?
        } else {
            return Err(CliError::usage(format!(
                "no way to verify the node: pass --ca CA.pem (cluster CA), --insecure (self-signed \
                 node, unverified), or --data-dir of a local node (found no {})",
                local_cert.display()
            )));
        };
        builder.build().map_err(CliError::from)
    }

    fn local_token(&self) -> Option<String> {
        std::fs::read_to_string(self.data_dir.join("admin.token"))
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    }
}
