//! Cluster commands: `cluster members|placement|ring`, `claim`, `release`, `pin`, `unpin`.
//!
//! Any node answers them: the cluster map is the same everywhere (gossip plus anti-entropy).
//! A claim or pin is answered at once with the new placement; the data then moves in the
//! background (`cfgnode cluster placement NS` shows when `holder` reaches the desired owner).

use cfgnode_client::{Client, Placement};
use clap::Subcommand;
use serde_json::json;

use crate::data::Output;
use crate::exit::CliError;

/// `cfgnode cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Every member the node knows, with its state.
    Members,
    /// Where a namespace is (holder, epoch) and should be (desired owner, and why).
    Placement {
        /// Namespace.
        namespace: String,
    },
    /// How many namespaces each node holds and should hold.
    Ring,
}

/// Runs a `cluster` subcommand.
pub async fn run(client: &Client, out: Output, command: ClusterCommand) -> Result<(), CliError> {
    match command {
        ClusterCommand::Members => {
            let members = client.members().await?;
            match out {
                Output::Json => print(&json!(members)),
                Output::Text => {
                    println!(
                        "{:<20} {:<8} {:<22} {:<22} GENERATION",
                        "ID", "STATE", "QUIC", "HTTP"
                    );
                    for m in members {
                        println!(
                            "{:<20} {:<8} {:<22} {:<22} {}",
                            m.id, m.state, m.quic_addr, m.http_addr, m.generation
                        );
                    }
                    Ok(())
                }
            }
        }
        ClusterCommand::Placement { namespace } => {
            placement(out, &client.placement(&namespace).await?)
        }
        ClusterCommand::Ring => {
            let shares = client.ring().await?;
            match out {
                Output::Json => print(&json!(shares)),
                Output::Text => {
                    println!(
                        "{:<20} {:<8} {:>6} {:>8}",
                        "NODE", "STATE", "HOLDS", "DESIRED"
                    );
                    for s in shares {
                        println!(
                            "{:<20} {:<8} {:>6} {:>8}",
                            s.node, s.state, s.holds, s.desired
                        );
                    }
                    Ok(())
                }
            }
        }
    }
}

/// Prints a placement: one `field: value` line each (text) or the JSON object.
pub fn placement(out: Output, p: &Placement) -> Result<(), CliError> {
    match out {
        Output::Json => print(&json!(p)),
        Output::Text => {
            let none = "-".to_string();
            println!("namespace:     {}", p.namespace);
            println!(
                "desired owner: {}",
                p.desired_owner.as_ref().unwrap_or(&none)
            );
            println!("holder:        {}", p.holder.as_ref().unwrap_or(&none));
            println!("epoch:         {}", p.epoch);
            let strict = if p.strict { " (strict)" } else { "" };
            println!(
                "reason:        {}{strict}",
                p.reason.as_ref().unwrap_or(&none)
            );
            if !p.replicas.is_empty() {
                println!("replicas:      node  state  epoch/revision  lag  set");
                for r in &p.replicas {
                    let position = r
                        .position
                        .map_or(none.clone(), |at| format!("{}/{}", at.epoch, at.revision));
                    let lag = r.lag.map_or(none.clone(), |lag| lag.to_string());
                    let set = r
                        .set_version
                        .map_or(none.clone(), |v| format!("{}/{}", v.epoch, v.revision));
                    let error = r
                        .error
                        .as_ref()
                        .map_or(String::new(), |e| format!("  ({e})"));
                    println!("  {}  {}  {position}  {lag}  {set}{error}", r.node, r.state);
                }
            }
            Ok(())
        }
    }
}

fn print(value: &serde_json::Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::other(e.to_string()))?;
    println!("{text}");
    Ok(())
}
