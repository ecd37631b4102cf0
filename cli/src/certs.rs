//! `cfgnode certs init|issue`: the cluster CA and the certificates it signs.

use std::path::PathBuf;

use cfgnode_transport::ClusterCa;
use clap::Subcommand;

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
    },
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
        CertsCommand::Issue { ca, name, out } => {
            let authority = ClusterCa::load(&ca).map_err(tls)?;
            let (cert, key) = authority.issue(&name, &out).map_err(tls)?;
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
