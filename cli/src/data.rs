//! Data commands: get, set, del, ls, history, diff, snapshot, namespaces, alias, codecs.
//!
//! `--output text` (default) prints what a person wants to read: a bare value for `get`, one
//! line per item for listings. `--output json` prints one JSON document per command, with
//! values base64-encoded, for scripts.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cfgnode_client::{
    Alias, Client, ClientError, Entry, Page, PutOptions, SnapshotResult, Version, WriteMode,
};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::exit::CliError;

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// One JSON document per command, for scripts.
    Json,
}

/// Flags of `cfgnode set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// Namespace.
    pub namespace: String,
    /// Key.
    pub key: String,
    /// The value; `-` reads it from standard input (or use --file; a value that is exactly
    /// `-` needs --file).
    #[arg(conflicts_with = "file")]
    pub value: Option<String>,
    /// Read the value from this file, `-` for stdin.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Codec: json, yaml, toml, text, bytes, or client:<name>.
    #[arg(long, default_value = "text")]
    pub codec: String,
    /// Only create: fail (exit 4) if the key exists.
    #[arg(long, conflicts_with = "update")]
    pub create: bool,
    /// Only update: fail (exit 4) if the key does not exist.
    #[arg(long)]
    pub update: bool,
    /// Compare-and-set: only write if the key is at this version (0 = absent).
    #[arg(long)]
    pub if_version: Option<u64>,
}

/// `cfgnode alias ...`.
#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    /// Point ALIAS at TARGET.
    Set {
        /// Namespace.
        namespace: String,
        /// Alias name.
        alias: String,
        /// Target key.
        target: String,
    },
    /// Show an alias.
    Get {
        /// Namespace.
        namespace: String,
        /// Alias name.
        alias: String,
    },
    /// Remove an alias.
    Rm {
        /// Namespace.
        namespace: String,
        /// Alias name.
        alias: String,
    },
    /// List a namespace's aliases.
    Ls {
        /// Namespace.
        namespace: String,
    },
}

pub(crate) fn time(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn entry_json(e: &Entry) -> Value {
    let mut v = json!({
        "namespace": e.namespace,
        "key": e.key,
        "value": STANDARD.encode(&e.value),
        "codec": e.codec,
        "version": e.version,
        "revision": e.revision,
        "created_at": time(e.created_at),
        "updated_at": time(e.updated_at),
    });
    if let Some(alias) = &e.alias {
        v["alias"] = json!(alias);
    }
    v
}

/// One entry as a listing line: key, version, codec, size.
fn entry_line(e: &Entry) -> String {
    format!(
        "{}\tv{}\t{}\t{} bytes",
        e.key,
        e.version,
        e.codec,
        e.value.len()
    )
}

fn version_json(v: &Version) -> Value {
    json!({
        "key": v.key,
        "version": v.version,
        "revision": v.revision,
        "value": v.value.as_ref().map(|b| STANDARD.encode(b)),
        "codec": v.codec,
        "deleted": v.value.is_none(),
        "at": time(v.at),
    })
}

fn alias_json(a: &Alias) -> Value {
    json!({
        "namespace": a.namespace,
        "alias": a.alias,
        "target": a.target,
        "revision": a.revision,
        "created_at": time(a.created_at),
    })
}

/// Follows `next_cursor` until a listing is complete.
async fn all_pages<T, F, Fut>(mut page: F) -> Result<Vec<T>, CliError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Page<T>, ClientError>>,
{
    let mut items = Vec::new();
    let mut cursor = None;
    loop {
        let next = page(cursor).await?;
        items.extend(next.items);
        match next.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(items),
        }
    }
}

pub(crate) fn print_json(value: &Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::other(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// `cfgnode get NS KEY`: the bare value (text) or the entry (json).
pub async fn get(
    client: &Client,
    out: Output,
    ns: &str,
    key: &str,
    stale: bool,
) -> Result<(), CliError> {
    let (entry, copy_revision) = if stale {
        let (entry, revision) = client.get_stale(ns, key).await?;
        (entry, Some(revision))
    } else {
        (client.get(ns, key).await?, None)
    };
    match out {
        Output::Json => {
            let mut json = entry_json(&entry);
            if let Some(revision) = copy_revision {
                json["copy_revision"] = json!(revision);
            }
            print_json(&json)
        }
        Output::Text => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&entry.value)?;
            if !entry.value.ends_with(b"\n") && std::io::IsTerminal::is_terminal(&stdout) {
                stdout.write_all(b"\n")?;
            }
            Ok(())
        }
    }
}

/// The whole of standard input, for a value given as `-`.
fn read_stdin() -> Result<Vec<u8>, CliError> {
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf)?;
    Ok(buf)
}

/// `cfgnode set NS KEY VALUE`.
pub async fn set(client: &Client, out: Output, args: SetArgs) -> Result<(), CliError> {
    let value = match (&args.value, &args.file) {
        (Some(v), None) if v == "-" => read_stdin()?,
        (Some(v), None) => v.clone().into_bytes(),
        (None, Some(path)) if path.as_os_str() == "-" => read_stdin()?,
        (None, Some(path)) => std::fs::read(path)
            .map_err(|e| CliError::other(format!("cannot read {}: {e}", path.display())))?,
        _ => return Err(CliError::usage("give a VALUE or --file PATH (- for stdin)")),
    };
    let mode = if args.create {
        WriteMode::Create
    } else if args.update {
        WriteMode::Update
    } else {
        WriteMode::Upsert
    };
    let options = PutOptions {
        codec: Some(args.codec),
        mode,
        if_version: args.if_version,
    };
    let written = client
        .put(&args.namespace, &args.key, value, options)
        .await?;
    match out {
        Output::Json => {
            let mut v = entry_json(&written);
            if let Some(map) = v.as_object_mut() {
                map.remove("value");
            }
            print_json(&v)
        }
        Output::Text => {
            println!(
                "{}/{} version {} revision {}",
                written.namespace, written.key, written.version, written.revision
            );
            Ok(())
        }
    }
}

/// `cfgnode del NS KEY`.
pub async fn del(
    client: &Client,
    out: Output,
    ns: &str,
    key: &str,
    if_version: Option<u64>,
) -> Result<(), CliError> {
    let d = client.delete(ns, key, if_version).await?;
    match out {
        Output::Json => print_json(&json!({
            "namespace": d.namespace, "key": d.key, "version": d.version,
            "revision": d.revision, "deleted": true,
        })),
        Output::Text => {
            println!(
                "deleted {}/{} (version {}, revision {})",
                d.namespace, d.key, d.version, d.revision
            );
            Ok(())
        }
    }
}

/// `cfgnode ls NS`: every entry under the prefix (all pages).
pub async fn ls(client: &Client, out: Output, ns: &str, prefix: &str) -> Result<(), CliError> {
    let entries =
        all_pages(|c| async move { client.list(ns, prefix, c.as_deref(), Some(1000)).await })
            .await?;
    match out {
        Output::Json => print_json(&Value::Array(entries.iter().map(entry_json).collect())),
        Output::Text => {
            for e in &entries {
                println!("{}", entry_line(e));
            }
            Ok(())
        }
    }
}

/// `cfgnode history NS KEY`.
pub async fn history(
    client: &Client,
    out: Output,
    ns: &str,
    key: &str,
    limit: u32,
) -> Result<(), CliError> {
    let page = client.versions(ns, key, None, Some(limit)).await?;
    match out {
        Output::Json => print_json(&Value::Array(page.items.iter().map(version_json).collect())),
        Output::Text => {
            for v in &page.items {
                let what = match &v.value {
                    Some(bytes) => format!(
                        "set {} ({} bytes)",
                        v.codec.as_deref().unwrap_or("?"),
                        bytes.len()
                    ),
                    None => "deleted".to_string(),
                };
                println!(
                    "v{}\trevision {}\t{}\t{what}",
                    v.version,
                    v.revision,
                    time(v.at)
                );
            }
            Ok(())
        }
    }
}

/// `cfgnode diff NS KEY V1 V2`.
pub async fn diff(
    client: &Client,
    out: Output,
    ns: &str,
    key: &str,
    v1: u64,
    v2: u64,
) -> Result<(), CliError> {
    let d = client.diff(ns, key, Some(v1), Some(v2)).await?;
    let structural: Value = d
        .structural_json
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| CliError::other(format!("unreadable diff from the node: {e}")))?
        .unwrap_or(Value::Null);
    match out {
        Output::Json => print_json(&json!({
            "namespace": ns, "key": key, "v1": version_json(&d.v1), "v2": version_json(&d.v2),
            "changed": d.changed, "structural": structural,
        })),
        Output::Text => {
            if !d.changed {
                println!("v{v1} and v{v2} are identical");
                return Ok(());
            }
            if structural.is_null() {
                let show = |v: &Version| match &v.value {
                    Some(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                    None => "(deleted)".to_string(),
                };
                println!("--- v{v1}\n{}\n+++ v{v2}\n{}", show(&d.v1), show(&d.v2));
                return Ok(());
            }
            let items = |name: &str| structural[name].as_array().cloned().unwrap_or_default();
            for a in items("added") {
                println!(
                    "+ {} = {}",
                    a["path"].as_str().unwrap_or_default(),
                    a["value"]
                );
            }
            for r in items("removed") {
                println!(
                    "- {} = {}",
                    r["path"].as_str().unwrap_or_default(),
                    r["value"]
                );
            }
            for c in items("changed") {
                println!(
                    "~ {}: {} -> {}",
                    c["path"].as_str().unwrap_or_default(),
                    c["from"],
                    c["to"]
                );
            }
            Ok(())
        }
    }
}

/// `cfgnode snapshot NS`.
pub async fn snapshot(
    client: &Client,
    out: Output,
    ns: &str,
    if_none_match: Option<&str>,
) -> Result<(), CliError> {
    match client.snapshot(ns, if_none_match).await? {
        SnapshotResult::NotModified { etag } => match out {
            Output::Json => {
                print_json(&json!({ "namespace": ns, "etag": etag, "not_modified": true }))
            }
            Output::Text => {
                println!("not modified (etag {etag})");
                Ok(())
            }
        },
        SnapshotResult::Modified(s) => match out {
            Output::Json => print_json(&json!({
                "namespace": s.namespace,
                "revision": s.revision,
                "etag": s.etag,
                "entries": s.entries.iter().map(entry_json).collect::<Vec<_>>(),
                "aliases": s.aliases.iter().map(alias_json).collect::<Vec<_>>(),
            })),
            Output::Text => {
                println!(
                    "namespace {} revision {} etag {}",
                    s.namespace, s.revision, s.etag
                );
                for e in &s.entries {
                    println!("{}", entry_line(e));
                }
                for a in &s.aliases {
                    println!("{} -> {}\talias", a.alias, a.target);
                }
                Ok(())
            }
        },
    }
}

/// `cfgnode namespaces`.
pub async fn namespaces(client: &Client, out: Output, prefix: &str) -> Result<(), CliError> {
    let all =
        all_pages(|c| async move { client.namespaces(prefix, c.as_deref(), Some(1000)).await })
            .await?;
    match out {
        Output::Json => print_json(&Value::Array(
            all.iter()
                .map(|n| {
                    json!({
                        "name": n.name, "key_count": n.key_count, "alias_count": n.alias_count,
                        "revision": n.revision, "etag": n.etag,
                        "created_at": time(n.created_at), "updated_at": time(n.updated_at),
                    })
                })
                .collect(),
        )),
        Output::Text => {
            for n in &all {
                println!(
                    "{}\t{} keys\t{} aliases\trevision {}",
                    n.name, n.key_count, n.alias_count, n.revision
                );
            }
            Ok(())
        }
    }
}

/// `cfgnode alias ...`.
pub async fn alias(client: &Client, out: Output, command: AliasCommand) -> Result<(), CliError> {
    let shown = match command {
        AliasCommand::Set {
            namespace,
            alias,
            target,
        } => client.put_alias(&namespace, &alias, &target).await?.0,
        AliasCommand::Get { namespace, alias } => client.get_alias(&namespace, &alias).await?,
        AliasCommand::Rm { namespace, alias } => client.delete_alias(&namespace, &alias).await?,
        AliasCommand::Ls { namespace } => {
            let ns = namespace.as_str();
            let all =
                all_pages(
                    |c| async move { client.list_aliases(ns, c.as_deref(), Some(1000)).await },
                )
                .await?;
            return match out {
                Output::Json => print_json(&Value::Array(all.iter().map(alias_json).collect())),
                Output::Text => {
                    for a in &all {
                        println!("{} -> {}", a.alias, a.target);
                    }
                    Ok(())
                }
            };
        }
    };
    match out {
        Output::Json => print_json(&alias_json(&shown)),
        Output::Text => {
            println!("{} -> {}", shown.alias, shown.target);
            Ok(())
        }
    }
}

/// `cfgnode codecs`.
pub async fn codecs(client: &Client, out: Output) -> Result<(), CliError> {
    let codecs = client.codecs().await?;
    match out {
        Output::Json => print_json(&Value::Array(
            codecs
                .iter()
                .map(|c| {
                    json!({
                        "name": c.name, "content_type": c.content_type,
                        "validated": c.validated, "description": c.description,
                    })
                })
                .collect(),
        )),
        Output::Text => {
            for c in &codecs {
                println!("{}\t{}\t{}", c.name, c.content_type, c.description);
            }
            println!(
                "client:<name>\tapplication/octet-stream\tan application-defined codec; not inspected"
            );
            Ok(())
        }
    }
}
