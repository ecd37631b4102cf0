//! `cfgnode certs init|issue|cluster-key`: the cluster CA, the certificates it signs, and the
//! cluster key.

use std::path::PathBuf;

use cfgnode_transport::{CertRole, ClusterCa, ClusterKey};
use clap::{Subcommand, ValueEnum};

use crate::exit::CliError;

/// `cfgnode certs ...`.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Make a cluster CA: DIR/ca.pem and DIR/ca.key (keep the key safe; it admits members).
    Init {
        /// Where to write the CA.
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a certificate for a node or client: OUT/NAME.pem and OUT/NAME.key.
    Issue {
        /// The CA dir (made by `certs init`).
        #[arg(long)]
        ca: PathBuf,
        /// The node or client name.
        #[arg(long)]
        name: String,
        /// Where to write the certificate and key.
        #[arg(long)]
        out: PathBuf,
        /// `node` (server and client auth: may join the cluster) or `client` (client auth
        /// only: may call the API with a token, never act as a node).
        #[arg(long, value_enum, default_value_t = Role::Node)]
        role: Role,
    },
    /// Write a new cluster key to FILE (mode 0600): start every node with
    /// `--cluster-key-file FILE` (the first node of a cluster makes one by itself otherwise).
    ClusterKey {
        /// Where to write it (refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
    },
}

/// What an issued certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// A cluster node.
    Node,
    /// An operator, agent or application.
    Client,
}

/// Runs a certs command.
pub fn run(command: CertsCommand) -> Result<(), CliError> {
    let tls = |e: cfgnode_transport::TlsError| CliError::other(e.to_string());
    match command {
        CertsCommand::Init { out } => {
            ClusterCa::init(&out).map_err(tls)?;
            println!(
                "cluster CA written: {}, {}",
                out.join(ClusterCa::CERT_FILE).display(),
                out.join(ClusterCa::KEY_FILE).display()
            );
            println!(
                "next: cfgnode certs issue --ca {} --name NODE --out DIR",
                out.display()
            );
        }
        CertsCommand::ClusterKey { out } => {
            let key = ClusterKey::generate().map_err(CliError::other)?;
            cfgnode_transport::write_private_atomically(
                &out,
                format!("{}\n", key.to_hex()).as_bytes(),
            )
            .map_err(|e| CliError::other(format!("cannot write {}: {e}", out.display())))?;
            println!("cluster key written: {}", out.display());
            println!(
                "copy it to every node and start each with --cluster-key-file {}",
                out.display()
            );
        }
        CertsCommand::Issue {
            ca,
            name,
            out,
            role,
        } => {
            let authority = ClusterCa::load(&ca).map_err(tls)?;
            let role = match role {
                Role::Node => CertRole::Node,
                Role::Client => CertRole::Client,
            };
            let (cert, key) = authority.issue_for(&name, role, &out).map_err(tls)?;
            println!("certificate written: {}, {}", cert.display(), key.display());
            println!(
                "start a node with: cfgnode start --tls-ca {} --tls-cert {} --tls-key {}",
                ca.join(ClusterCa::CERT_FILE).display(),
                cert.display(),
                key.display()
            );
        }
    }
    Ok(())
}
