//! `cfgnode`: the binary. `cfgnode start` runs a node; the data commands, the registry
//! commands (`registry`), the proxy's routes (`route`), `certs` and `bench` talk to nodes over
//! QUIC through the client library.
//!
//! Exit codes: 0 success, 1 error, 2 usage, 3 not found, 4 conflict (see `exit`).

mod agent;
mod bench;
mod certs;
mod cluster;
mod connect;
mod data;
mod exit;
mod registry;
mod route;
mod start;
mod watch;

use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use cfgnode_client::Client;

use crate::connect::ConnectArgs;
use crate::data::{AliasCommand, Output, SetArgs};
use crate::exit::CliError;

/// mimalloc instead of glibc's malloc: the proxy and the HTTP front end allocate and free small
/// buffers on every request from several threads, where glibc's arenas cost about a tenth of
/// the proxy's CPU (docs/benchmarks.md, "Proxy"; docs/dependencies.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The cfgnode configuration and service-discovery node.
#[derive(Debug, Parser)]
#[command(
    name = "cfgnode",
    version,
    about,
    propagate_version = true,
    after_help = "Exit codes: 0 success, 1 error, 2 usage, 3 not found, 4 conflict."
)]
struct Cli {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CFGNODE_LOG_FORMAT")]
    log_format: LogFormat,

    /// How client commands reach a node and print results. Every flag is global, so it may
    /// come before or after the subcommand (`cfgnode --addr A get ...` or `cfgnode get --addr
    /// A ...`), as with etcdctl; commands that talk to no node refuse them (see
    /// [`refuse_connection_flags`]).
    #[command(flatten)]
    conn: ConnectArgs,

    #[command(subcommand)]
    command: Command,
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node in the foreground until SIGINT or SIGTERM.
    Start(Box<start::StartArgs>),
    /// Print a key's value (an alias resolves to its target).
    Get {
        /// Namespace.
        namespace: String,
        /// Key or alias.
        key: String,
        /// Read the connected node's own copy (any replica, however far behind) instead of the
        /// holder's; `--output json` then adds the copy's revision as `copy_revision`.
        #[arg(long)]
        stale: bool,
    },
    /// Write a key.
    Set {
        #[command(flatten)]
        args: SetArgs,
    },
    /// Delete a key.
    Del {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// Only if the key is at this version.
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// List a namespace's keys.
    Ls {
        /// Namespace.
        namespace: String,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Show a key's retained versions, newest first.
    History {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// How many versions.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Compare two versions of a key.
    Diff {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// Older version.
        v1: u64,
        /// Newer version.
        v2: u64,
    },
    /// Every entry and alias of a namespace at one revision.
    Snapshot {
        /// Namespace.
        namespace: String,
        /// Print "not modified" (exit 0) if the namespace still has this ETag.
        #[arg(long)]
        if_none_match: Option<String>,
    },
    /// Follow changes in namespaces, one line per change, until Ctrl-C (or --count).
    Watch {
        #[command(flatten)]
        args: watch::WatchArgs,
    },
    /// Keep a file, a local worker (POST) or a command in sync with a namespace (sidecar).
    Agent {
        #[command(flatten)]
        args: agent::AgentArgs,
    },
    /// Every agent of the cluster: namespace, applied revision, last seen.
    Agents {
        /// Only agents following this namespace.
        #[arg(long)]
        namespace: Option<String>,
    },
    /// List namespaces that hold keys.
    Namespaces {
        /// Only names starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Manage aliases.
    Alias {
        #[command(subcommand)]
        command: AliasCommand,
    },
    /// List the codecs nodes know.
    Codecs,
    /// Cluster views: members, placement of a namespace, namespaces per node.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Claim a namespace for a node: it moves there and follows the node while it lives.
    Claim {
        /// Namespace.
        namespace: String,
        /// The claimant (default: the node the command talks to).
        #[arg(long)]
        node: Option<String>,
    },
    /// Drop a namespace's claim (the ring places it again).
    Release {
        /// Namespace.
        namespace: String,
    },
    /// Pin a namespace to a node: its preferred holder (with replication it fails over while
    /// the node is down and comes back), or with --strict its only holder.
    Pin {
        /// Namespace.
        namespace: String,
        /// Node id.
        node: String,
        /// Keep the namespace on the node even while it is down (503 holder_down meanwhile).
        #[arg(long)]
        strict: bool,
    },
    /// Drop a namespace's pin.
    Unpin {
        /// Namespace.
        namespace: String,
    },
    /// Register (create or replace) an instance of a service, with its endpoints, tags,
    /// metadata and health check; with --keepalive, stay and heartbeat until a signal.
    Register {
        #[command(flatten)]
        args: Box<registry::RegisterArgs>,
    },
    /// Remove an instance of a service.
    Deregister {
        #[command(flatten)]
        at: registry::InstanceArgs,
    },
    /// Renew an instance's TTL check once.
    Heartbeat {
        #[command(flatten)]
        at: registry::InstanceArgs,
    },
    /// List a namespace's services with their instance counts by status.
    Services {
        /// Namespace.
        namespace: String,
    },
    /// List a service's instances: status, endpoints, tags, last check.
    Instances {
        #[command(flatten)]
        args: registry::InstancesArgs,
    },
    /// Manage the proxy's routes: which hosts and paths go to which backends.
    Route {
        #[command(subcommand)]
        command: route::RouteCommand,
    },
    /// Make a cluster CA and issue node and client certificates.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Generate load against nodes and print throughput and latency.
    Bench {
        #[command(flatten)]
        args: bench::BenchArgs,
    },
}

fn main() -> ExitCode {
    let parsed = Cli::command().try_get_matches().and_then(|matches| {
        refuse_connection_flags(&matches)?;
        Cli::from_arg_matches(&matches)
    });
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    init_tracing(cli.log_format, matches!(cli.command, Command::Start(_)));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            e.exit_code()
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let conn = cli.conn;
    match cli.command {
        Command::Start(args) => start::run(*args).await.map_err(|e| {
            tracing::error!("{e:#}");
            CliError::from(e)
        }),
        Command::Certs(command) => certs::run(command),
        Command::Get {
            namespace,
            key,
            stale,
        } => {
            with_client(&conn, |c, out| async move {
                data::get(&c, out, &namespace, &key, stale).await
            })
            .await
        }
        Command::Set { args } => {
            with_client(
                &conn,
                |c, out| async move { data::set(&c, out, args).await },
            )
            .await
        }
        Command::Del {
            namespace,
            key,
            if_version,
        } => {
            with_client(&conn, |c, out| async move {
                data::del(&c, out, &namespace, &key, if_version).await
            })
            .await
        }
        Command::Ls { namespace, prefix } => {
            with_client(&conn, |c, out| async move {
                data::ls(&c, out, &namespace, &prefix).await
            })
            .await
        }
        Command::History {
            namespace,
            key,
            limit,
        } => {
            with_client(&conn, |c, out| async move {
                data::history(&c, out, &namespace, &key, limit).await
            })
            .await
        }
        Command::Diff {
            namespace,
            key,
            v1,
            v2,
        } => {
            with_client(&conn, |c, out| async move {
                data::diff(&c, out, &namespace, &key, v1, v2).await
            })
            .await
        }
        Command::Snapshot {
            namespace,
            if_none_match,
        } => {
            with_client(&conn, |c, out| async move {
                data::snapshot(&c, out, &namespace, if_none_match.as_deref()).await
            })
            .await
        }
        Command::Watch { args } => {
            with_client(
                &conn,
                |c, out| async move { watch::run(&c, out, args).await },
            )
            .await
        }
        Command::Agent { args } => {
            with_client(&conn, |c, _| async move { agent::run(c, args).await }).await
        }
        Command::Agents { namespace } => {
            with_client(&conn, |c, out| async move {
                agents(&c, out, namespace.as_deref()).await
            })
            .await
        }
        Command::Namespaces { prefix } => {
            with_client(&conn, |c, out| async move {
                data::namespaces(&c, out, &prefix).await
            })
            .await
        }
        Command::Alias { command } => {
            with_client(&conn, |c, out| async move {
                data::alias(&c, out, command).await
            })
            .await
        }
        Command::Codecs => {
            with_client(&conn, |c, out| async move { data::codecs(&c, out).await }).await
        }
        Command::Cluster { command } => {
            with_client(&conn, |c, out| async move {
                cluster::run(&c, out, command).await
            })
            .await
        }
        Command::Claim { namespace, node } => {
            with_client(&conn, |c, out| async move {
                cluster::placement(out, &c.claim(&namespace, node.as_deref()).await?)
            })
            .await
        }
        Command::Release { namespace } => {
            with_client(&conn, |c, out| async move {
                cluster::placement(out, &c.release(&namespace).await?)
            })
            .await
        }
        Command::Pin {
            namespace,
            node,
            strict,
        } => {
            with_client(&conn, |c, out| async move {
                cluster::placement(out, &c.pin_with(&namespace, &node, strict).await?)
            })
            .await
        }
        Command::Unpin { namespace } => {
            with_client(&conn, |c, out| async move {
                cluster::placement(out, &c.unpin(&namespace).await?)
            })
            .await
        }
        Command::Register { args } => {
            with_client(&conn, |c, out| async move {
                registry::register(&c, out, *args).await
            })
            .await
        }
        Command::Deregister { at } => {
            with_client(&conn, |c, out| async move {
                registry::deregister(&c, out, at).await
            })
            .await
        }
        Command::Heartbeat { at } => {
            with_client(&conn, |c, out| async move {
                registry::heartbeat(&c, out, at).await
            })
            .await
        }
        Command::Services { namespace } => {
            with_client(&conn, |c, out| async move {
                registry::services(&c, out, &namespace).await
            })
            .await
        }
        Command::Instances { args } => {
            with_client(&conn, |c, out| async move {
                registry::instances(&c, out, args).await
            })
            .await
        }
        Command::Route { command } => {
            with_client(
                &conn,
                |c, out| async move { route::run(&c, out, command).await },
            )
            .await
        }
        Command::Bench { args } => {
            with_client(&conn, |c, _| async move { bench::run(c, args).await }).await
        }
    }
}

/// Prints the cluster's agents.
async fn agents(client: &Client, out: Output, namespace: Option<&str>) -> Result<(), CliError> {
    let (agents, missing) = client.agents().await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let agents: Vec<_> = agents
        .into_iter()
        .filter(|a| namespace.is_none_or(|ns| a.agent.namespace == ns))
        .collect();
    match out {
        Output::Json => {
            println!(
                "{}",
                serde_json::json!({ "agents": agents.iter().map(|s| serde_json::json!({
                    "id": s.agent.id,
                    "namespace": s.agent.namespace,
                    "applied_revision": s.agent.applied_revision,
                    "mode": s.agent.mode,
                    "outputs": s.agent.outputs,
                    "last_seen_ms_ago": now.saturating_sub(s.last_seen),
                    "node": s.node,
                    "last_error": s.agent.last_error,
                })).collect::<Vec<_>>(), "missing": missing })
            );
        }
        Output::Text => {
            println!(
                "{:<32} {:<20} {:>9} {:<6} {:>9} {:<12} ERROR",
                "ID", "NAMESPACE", "REVISION", "MODE", "SEEN", "NODE"
            );
            for s in &agents {
                println!(
                    "{:<32} {:<20} {:>9} {:<6} {:>8}s {:<12} {}",
                    s.agent.id,
                    s.agent.namespace,
                    s.agent.applied_revision,
                    s.agent.mode,
                    now.saturating_sub(s.last_seen) / 1000,
                    s.node,
                    s.agent.last_error.as_deref().unwrap_or("-")
                );
            }
            if !missing.is_empty() {
                eprintln!("warning: not asked (unreachable): {}", missing.join(", "));
            }
        }
    }
    Ok(())
}

/// Builds a client from the connection flags, runs `f`, and closes the connections.
async fn with_client<F, Fut>(conn: &ConnectArgs, f: F) -> Result<(), CliError>
where
    F: FnOnce(Client, Output) -> Fut,
    Fut: std::future::Future<Output = Result<(), CliError>>,
{
    let client = conn.client()?;
    let result = f(client.clone(), conn.output).await;
    client.close().await;
    result
}

/// The subcommands that talk to no node: `start` runs one, `certs` writes files.
const NO_CONNECTION: &[&str] = &["start", "certs"];

/// Refuses a connection flag (global, so clap accepts it everywhere) given on the command line
/// of a command that talks to no node, e.g. `cfgnode start --token T`, which would otherwise be
/// silently ignored. A flag the subcommand defines itself (`start --data-dir`, `certs issue
/// --ca`) is that subcommand's own and passes.
fn refuse_connection_flags(matches: &clap::ArgMatches) -> Result<(), clap::Error> {
    let Some((name, sub)) = matches.subcommand() else {
        return Ok(());
    };
    if !NO_CONNECTION.contains(&name) {
        return Ok(());
    }
    let mut root = Cli::command();
    // The deepest subcommand given (`certs issue`), with its own (not propagated) arguments.
    let (mut command, mut leaf) = match root.find_subcommand(name) {
        Some(command) => (command.clone(), sub),
        None => return Ok(()),
    };
    let mut path = name.to_string();
    while let Some((name, sub)) = leaf.subcommand() {
        match command.find_subcommand(name) {
            Some(next) => (command, leaf) = (next.clone(), sub),
            None => break,
        }
        path = format!("{path} {name}");
    }
    for arg in ConnectArgs::augment_args(clap::Command::new("connect")).get_arguments() {
        let id = arg.get_id();
        let own = command.get_arguments().any(|a| a.get_id() == id);
        if !own && leaf.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine) {
            let flag = arg.get_long().unwrap_or(id.as_str());
            return Err(root.error(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "--{flag} is a flag of the commands that talk to a node; `cfgnode {path}` \
                     does not use it"
                ),
            ));
        }
    }
    Ok(())
}

/// Logs to stderr; `RUST_LOG` sets levels (default `info` for the node, `warn` for client
/// commands, whose output is their result).
fn init_tracing(format: LogFormat, node: bool) {
    let default = if node { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Clap's own consistency checks (unique names, valid requires/conflicts) for every
    /// subcommand: a clash would otherwise only show up when a user runs that command.
    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
