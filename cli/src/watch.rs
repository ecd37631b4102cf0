//! `cfgnode watch NS...`: follows changes over a QUIC watch and prints one line per change
//! (text) or one JSON document per line (`--output json`), until Ctrl-C or `--count` changes.
//!
//! The client library resumes the watch by itself after disconnects, node restarts and
//! namespace moves, so the printed sequence is every change after the start, once, in order.

use cfgnode_client::{Client, Event, EventKind, WatchEvent, WatchOptions};
use clap::Args;
use serde_json::json;

use crate::data::Output;
use crate::exit::CliError;

/// Flags of `cfgnode watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Namespaces to watch.
    #[arg(required = true)]
    pub namespaces: Vec<String>,
    /// Only keys (and aliases) starting with this; may be given several times.
    #[arg(long = "prefix")]
    pub prefixes: Vec<String>,
    /// Start after this revision in every namespace (0: everything the log retains); default:
    /// from now.
    #[arg(long)]
    pub after: Option<u64>,
    /// Exit after this many changes.
    #[arg(long)]
    pub count: Option<u64>,
    /// Print progress items too.
    #[arg(long)]
    pub progress: bool,
}

/// Runs `cfgnode watch`.
pub async fn run(client: &Client, out: Output, args: WatchArgs) -> Result<(), CliError> {
    let mut options = WatchOptions::new();
    for ns in &args.namespaces {
        options = match args.after {
            Some(after) => options.namespace_after(ns.clone(), after),
            None => options.namespace(ns.clone()),
        };
    }
    for prefix in &args.prefixes {
        options = options.prefix(prefix.clone());
    }
    let mut watch = client.watch(options);
    let mut changes = 0u64;
    while args.count.is_none_or(|n| changes < n) {
        let item = tokio::select! {
            item = watch.next() => item?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        match item {
            WatchEvent::Change(event) => {
                changes += 1;
                print_change(out, &event);
            }
            WatchEvent::Progress {
                namespace,
                revision,
            } if args.progress => match out {
                Output::Text => println!("{revision} {namespace} progress"),
                Output::Json => println!(
                    "{}",
                    json!({"type": "progress", "namespace": namespace, "revision": revision})
                ),
            },
            WatchEvent::Reset {
                namespace,
                oldest_retained,
                current,
            } => {
                eprintln!(
                    "warning: {namespace}: changes before revision {oldest_retained} are no longer in the log; continuing after {current} (read `cfgnode snapshot {namespace}` for the full state)"
                );
            }
            _ => {}
        }
    }
    Ok(())
}

fn print_change(out: Output, event: &Event) {
    match out {
        Output::Text => {
            let what = match &event.kind {
                EventKind::Set {
                    key,
                    version,
                    value,
                    ..
                } => match std::str::from_utf8(value) {
                    Ok(text) if !text.contains('\n') => format!("set {key} v{version} {text}"),
                    _ => format!("set {key} v{version} <{} bytes>", value.len()),
                },
                EventKind::Delete { key, version } => format!("delete {key} v{version}"),
                EventKind::AliasSet { alias, target } => format!("alias {alias} -> {target}"),
                EventKind::AliasDelete { alias } => format!("unalias {alias}"),
                EventKind::RecordSet {
                    kind,
                    name,
                    version,
                    value,
                } => match std::str::from_utf8(value) {
                    Ok(text) if !text.contains('\n') => {
                        format!("record_set {kind} {name} v{version} {text}")
                    }
                    _ => format!(
                        "record_set {kind} {name} v{version} <{} bytes>",
                        value.len()
                    ),
                },
                EventKind::RecordDelete {
                    kind,
                    name,
                    version,
                } => format!("record_delete {kind} {name} v{version}"),
            };
            println!("{} {} {what}", event.revision, event.namespace);
        }
        // The same shape as SSE events and webhook bodies (values in base64).
        Output::Json => println!("{}", cfgnode_node::event_json(event)),
    }
}
