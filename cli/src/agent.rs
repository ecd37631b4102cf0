//! `cfgnode agent`: the sidecar that keeps a file, a local worker, or a command in sync with a
//! namespace (docs/push.md, Agents).
//!
//! It applies the namespace's snapshot (filtered by prefixes) at start, then holds a watch and
//! applies the snapshot again after every change (a burst of changes costs one snapshot: events
//! at or below the applied revision are skipped). When the watch delivers nothing for
//! `--poll-interval` (not even its 5 s progress), it polls the snapshot with its ETag instead,
//! until the watch speaks again. It heartbeats to the node so `cfgnode agents` lists it.
//!
//! Rendering is pure ([`render`], [`env_name`]); the IO is in [`run`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use cfgnode_client::{
    Agent, Client, ClientError, Snapshot, SnapshotResult, WatchEvent, WatchOptions,
};
use cfgnode_transport::AtomicWrite;
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use crate::exit::CliError;

/// How `--out` renders the snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A JSON object, key -> value (JSON values embedded, text as strings, binary as
    /// `{"base64": ...}`).
    Json,
    /// `NAME='value'` lines for a shell or an env file (names uppercased, prefix stripped).
    Env,
    /// The value bytes of exactly one key.
    Raw,
}

/// Flags of `cfgnode agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The namespace to follow.
    #[arg(long)]
    pub namespace: String,
    /// Only keys starting with this; may be given several times.
    #[arg(long = "prefix")]
    pub prefixes: Vec<String>,
    /// Keep this file in sync (written atomically: temp file, fsync, rename; an existing
    /// file keeps its mode and, when the agent runs as root, its owner).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Let `--out` be a symbolic link: the file it points to is replaced (in that file's
    /// directory) and the link kept. Without it a link at `--out` is refused.
    #[arg(long)]
    pub follow_symlinks: bool,
    /// How `--out` is rendered.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// POST the snapshot (JSON, with its ETag) to this http:// URL after each change.
    #[arg(long)]
    pub post: Option<String>,
    /// Run this shell command after each applied change (env: CFGNODE_NAMESPACE,
    /// CFGNODE_REVISION, CFGNODE_ETAG, CFGNODE_FILE).
    #[arg(long)]
    pub exec: Option<String>,
    /// Poll the snapshot with its ETag this often while the watch is silent.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// Heartbeat to the node this often.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub heartbeat: Duration,
    /// The agent's id in `cfgnode agents` (default: HOST-PID-NAMESPACE).
    #[arg(long)]
    pub id: Option<String>,
    /// Apply once and exit.
    #[arg(long)]
    pub once: bool,
}

/// What the heartbeat reports, updated as the agent goes.
#[derive(Debug, Default)]
struct Status {
    applied_revision: u64,
    mode: &'static str,
    last_error: Option<String>,
}

/// What was last applied.
#[derive(Debug, Default)]
struct Applied {
    revision: u64,
    etag: Option<String>,
    /// The filtered entries last applied, rendered as JSON: what the POST sent and the command
    /// ran for. A new ETag with the same content (a write outside `--prefix`, a registry or
    /// route record in the namespace) neither POSTs nor runs the command again.
    content: Option<Vec<u8>>,
    /// The POST still owed (it failed last time).
    post_pending: bool,
}

/// Runs the agent until SIGINT/SIGTERM (or once).
pub async fn run(client: Client, args: AgentArgs) -> Result<(), CliError> {
    if args.out.is_none() && args.post.is_none() && args.exec.is_none() {
        return Err(CliError::usage(
            "choose what the agent does: --out FILE, --post URL and/or --exec CMD",
        ));
    }
    if args.format == Format::Raw && args.out.is_none() {
        return Err(CliError::usage("--format raw needs --out FILE"));
    }
    if let Some(out) = &args.out {
        // Up front, so a refused link is a usage error now, not a failure at every change.
        out_target(out, args.follow_symlinks).map_err(CliError::usage)?;
    }
    if let Some(url) = &args.post
        && !url.starts_with("http://")
    {
        return Err(CliError::usage(format!(
            "--post {url}: only http:// URLs are supported (the worker runs next to the agent)"
        )));
    }
    if args.poll_interval < Duration::from_millis(100)
        || args.heartbeat < Duration::from_millis(100)
    {
        return Err(CliError::usage(
            "--poll-interval and --heartbeat must be at least 100ms",
        ));
    }
    let host = hostname();
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| format!("{host}-{}-{}", std::process::id(), args.namespace));
    let status = Arc::new(Mutex::new(Status {
        mode: "starting",
        ..Status::default()
    }));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| CliError::other(format!("HTTP client: {e}")))?;
    let mut applied = Applied::default();

    // First application: retried until the node answers (a sidecar may start before it).
    let mut delay = Duration::from_millis(200);
    loop {
        match fetch(&client, &args.namespace, None).await {
            Ok(Some(snapshot)) => {
                apply(&args, &http, &snapshot, &mut applied, &status).await;
                break;
            }
            Ok(None) => unreachable!("no ETag was sent"),
            Err(e) if args.once || !retryable(&e) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the namespace yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
    if args.once {
        return match lock(&status).last_error.clone() {
            Some(e) => Err(CliError::other(e)),
            None => Ok(()),
        };
    }

    let heartbeat = tokio::spawn(heartbeats(
        client.clone(),
        Agent {
            id: id.clone(),
            namespace: args.namespace.clone(),
            prefixes: args.prefixes.clone(),
            applied_revision: 0,
            outputs: outputs(&args),
            mode: String::new(),
            hostname: host,
            pid: std::process::id(),
            started_at: now_millis(),
            last_error: None,
        },
        Arc::clone(&status),
        args.heartbeat,
    ));
    let mut options = WatchOptions::new()
        .namespace_after(args.namespace.clone(), applied.revision)
        .progress_every(Duration::from_secs(5))
        .resync_on_reset(true);
    for prefix in &args.prefixes {
        options = options.prefix(prefix.clone());
    }
    let mut watch = client.watch(options);
    let mut shutdown = std::pin::pin!(shutdown_signal());
    let result = loop {
        let next = tokio::select! {
            next = tokio::time::timeout(args.poll_interval, watch.next()) => next,
            _ = &mut shutdown => break Ok(()),
        };
        match next {
            Ok(Ok(item)) => {
                lock(&status).mode = "watch";
                let newer = match item {
                    // Records (registry, proxy state) are not in the snapshot it renders.
                    WatchEvent::Change(event) => {
                        event.revision > applied.revision && !event.kind.is_record()
                    }
                    WatchEvent::Resynced(_) | WatchEvent::Reset { .. } => true,
                    WatchEvent::Progress { .. } => applied.post_pending,
                };
                if newer && let Ok(Some(snapshot)) = fetch(&client, &args.namespace, None).await {
                    apply(&args, &http, &snapshot, &mut applied, &status).await;
                }
            }
            Ok(Err(e)) => break Err(CliError::from(e)),
            Err(_silent) => {
                // The watch is broken or the node unreachable: poll with the ETag meanwhile.
                lock(&status).mode = "poll";
                let etag = if applied.post_pending {
                    None
                } else {
                    applied.etag.clone()
                };
                match fetch(&client, &args.namespace, etag.as_deref()).await {
                    Ok(Some(snapshot)) => {
                        apply(&args, &http, &snapshot, &mut applied, &status).await;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "poll failed; trying again"),
                }
            }
        }
    };
    heartbeat.abort();
    if let Err(e) = client.agent_leave(&id).await {
        tracing::debug!(error = %e, "could not deregister");
    }
    result
}

fn lock(status: &Mutex<Status>) -> std::sync::MutexGuard<'_, Status> {
    status.lock().unwrap_or_else(|p| p.into_inner())
}

fn retryable(e: &ClientError) -> bool {
    matches!(e, ClientError::Unavailable(_) | ClientError::Timeout(_))
}

/// The namespace's snapshot, or `None` while it still has `etag`. A namespace with no data yet
/// reads as empty at revision 0.
async fn fetch(
    client: &Client,
    namespace: &str,
    etag: Option<&str>,
) -> Result<Option<Snapshot>, ClientError> {
    match client.snapshot(namespace, etag).await {
        Ok(SnapshotResult::Modified(snapshot)) => Ok(Some(snapshot)),
        Ok(SnapshotResult::NotModified { .. }) => Ok(None),
        Err(ClientError::NotFound { .. }) => Ok(Some(Snapshot {
            namespace: namespace.to_string(),
            revision: 0,
            etag: String::new(),
            entries: Vec::new(),
            aliases: Vec::new(),
        })),
        Err(e) => Err(e),
    }
}

/// Applies a snapshot: file, POST, command. Failures go to the status (and the log), and are
/// retried at the next change or poll.
async fn apply(
    args: &AgentArgs,
    http: &reqwest::Client,
    snapshot: &Snapshot,
    applied: &mut Applied,
    status: &Mutex<Status>,
) {
    let mut error = None;
    let content = match render(Format::Json, snapshot, &args.prefixes) {
        Ok(content) => content,
        Err(e) => {
            // Rendering JSON of stored entries cannot fail today; should it, apply anyway.
            tracing::warn!(error = %e, "cannot render the snapshot to compare it");
            Vec::new()
        }
    };
    let changed = applied.content.as_deref() != Some(content.as_slice());
    if let Some(out) = &args.out {
        match render(args.format, snapshot, &args.prefixes) {
            Ok(bytes) => {
                if let Err(e) = write_out(out, &bytes, args.follow_symlinks) {
                    error = Some(e);
                }
            }
            Err(e) => error = Some(e),
        }
    }
    if error.is_none()
        && let Some(url) = &args.post
        && (changed || applied.post_pending)
    {
        let body = content.clone();
        let mut request = http
            .post(url)
            .header("content-type", "application/json")
            .header("etag", &snapshot.etag)
            .body(body);
        if let Some(previous) = &applied.etag {
            request = request.header("if-none-match", previous);
        }
        match request.send().await {
            Ok(resp) if resp.status().is_success() || resp.status().as_u16() == 304 => {
                applied.post_pending = false;
            }
            Ok(resp) => {
                applied.post_pending = true;
                error = Some(format!("POST {url}: {}", resp.status()));
            }
            Err(e) => {
                applied.post_pending = true;
                error = Some(format!("POST {url}: {e}"));
            }
        }
    }
    if error.is_none()
        && changed
        && let Some(command) = &args.exec
    {
        let file = args
            .out
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let ran = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("CFGNODE_NAMESPACE", &snapshot.namespace)
            .env("CFGNODE_REVISION", snapshot.revision.to_string())
            .env("CFGNODE_ETAG", &snapshot.etag)
            .env("CFGNODE_FILE", file)
            .status()
            .await;
        match ran {
            Ok(s) if s.success() => {}
            Ok(s) => error = Some(format!("--exec {command:?} exited with {s}")),
            Err(e) => error = Some(format!("--exec {command:?}: {e}")),
        }
    }
    let mut status = lock(status);
    match &error {
        Some(e) => tracing::warn!(error = %e, revision = snapshot.revision, "applying failed"),
        None => tracing::info!(revision = snapshot.revision, "applied"),
    }
    if error.is_none() || args.out.is_none() {
        applied.revision = snapshot.revision;
        applied.etag = Some(snapshot.etag.clone());
        applied.content = Some(content);
        status.applied_revision = snapshot.revision;
    }
    status.last_error = error;
}

/// Renders the snapshot's entries under `prefixes` (all when empty).
pub fn render(format: Format, snapshot: &Snapshot, prefixes: &[String]) -> Result<Vec<u8>, String> {
    let entries: Vec<_> = snapshot
        .entries
        .iter()
        .filter(|e| prefixes.is_empty() || prefixes.iter().any(|p| e.key.starts_with(p.as_str())))
        .collect();
    match format {
        Format::Json => {
            let mut object = serde_json::Map::new();
            for e in entries {
                let value = if e.codec == "json" {
                    serde_json::from_slice(&e.value).unwrap_or(Value::Null)
                } else {
                    match std::str::from_utf8(&e.value) {
                        Ok(text) => Value::String(text.to_string()),
                        Err(_) => json!({
                            "base64": base64::engine::general_purpose::STANDARD.encode(&e.value)
                        }),
                    }
                };
                object.insert(e.key.clone(), value);
            }
            let mut out = serde_json::to_vec_pretty(&Value::Object(object))
                .map_err(|e| format!("rendering JSON: {e}"))?;
            out.push(b'\n');
            Ok(out)
        }
        Format::Env => {
            let mut lines = BTreeMap::new();
            for e in entries {
                let name = env_name(&e.key, prefixes);
                let text = std::str::from_utf8(&e.value)
                    .map_err(|_| format!("key {:?} holds binary data: use --format json", e.key))?;
                if let Some(other) = lines.insert(name.clone(), text.to_string()) {
                    let _ = other;
                    return Err(format!(
                        "two keys map to the environment name {name}: rename one or narrow --prefix"
                    ));
                }
            }
            let mut out = String::new();
            for (name, value) in lines {
                out.push_str(&format!("{name}='{}'\n", value.replace('\'', r"'\''")));
            }
            Ok(out.into_bytes())
        }
        Format::Raw => match entries.as_slice() {
            [one] => Ok(one.value.clone()),
            [] => Err(
                "no key matches: --format raw needs exactly one key (name it with --prefix)"
                    .to_string(),
            ),
            many => Err(format!(
                "{} keys match: --format raw needs exactly one (name it with --prefix)",
                many.len()
            )),
        },
    }
}

/// An environment variable name for `key`: the first matching prefix stripped, uppercased,
/// every other character `_`, never starting with a digit.
pub fn env_name(key: &str, prefixes: &[String]) -> String {
    let rest = prefixes
        .iter()
        .find_map(|p| key.strip_prefix(p.as_str()))
        .filter(|rest| !rest.is_empty())
        .unwrap_or(key);
    let mut name: String = rest
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

/// Most symbolic links followed from `--out` (the kernel's own limit is 40).
const MAX_LINK_HOPS: usize = 40;

/// The file `--out` names: `path` itself, or (with `follow`) the file its chain of symbolic
/// links leads to, which may not exist yet. A link without `follow` is refused, since
/// replacing what it points to could overwrite any file the agent may write (and replacing the
/// link itself would silently stop updating the file it pointed to).
fn out_target(path: &Path, follow: bool) -> Result<PathBuf, String> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_LINK_HOPS {
        let is_link = match std::fs::symlink_metadata(&current) {
            Ok(meta) => meta.file_type().is_symlink(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(format!("--out {}: {e}", path.display())),
        };
        if !is_link {
            return Ok(current);
        }
        let points_to =
            std::fs::read_link(&current).map_err(|e| format!("--out {}: {e}", path.display()))?;
        if !follow {
            return Err(format!(
                "--out {} is a symbolic link (to {}): refusing to write through it; point --out \
                 at the file itself, or pass --follow-symlinks to replace the file it points to",
                path.display(),
                points_to.display()
            ));
        }
        current = match current.parent() {
            Some(dir) => dir.join(points_to),
            None => points_to,
        };
    }
    Err(format!(
        "--out {}: more than {MAX_LINK_HOPS} symbolic links (a loop?)",
        path.display()
    ))
}

/// Writes `bytes` to `--out` atomically (temp file in the target's dir, fsync, rename, fsync
/// the dir: `cfgnode_transport::write_atomically`); does nothing when the file already holds
/// exactly `bytes`. An existing file keeps its mode and owner (the owner only when the agent
/// may give it, i.e. as root), so an operator's 0600 file stays 0600. The error says which
/// file and why.
fn write_out(path: &Path, bytes: &[u8], follow: bool) -> Result<(), String> {
    let target = out_target(path, follow)?;
    if std::fs::read(&target).is_ok_and(|have| have == bytes) {
        return Ok(());
    }
    let existing = std::fs::metadata(&target).ok();
    let how = AtomicWrite {
        mode: existing.as_ref().and_then(unix_mode),
        owner: existing.as_ref().and_then(unix_owner),
        replace: true,
    };
    cfgnode_transport::write_atomically(&target, bytes, how)
        .map_err(|e| format!("writing {}: {e}", target.display()))
}

#[cfg(unix)]
fn unix_mode(meta: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    Some(meta.permissions().mode() & 0o777)
}

#[cfg(unix)]
fn unix_owner(meta: &std::fs::Metadata) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.uid(), meta.gid()))
}

#[cfg(not(unix))]
fn unix_mode(_meta: &std::fs::Metadata) -> Option<u32> {
    None
}

#[cfg(not(unix))]
fn unix_owner(_meta: &std::fs::Metadata) -> Option<(u32, u32)> {
    None
}

fn outputs(args: &AgentArgs) -> Vec<String> {
    let mut outputs = Vec::new();
    if let Some(out) = &args.out {
        outputs.push(format!("out:{}", out.display()));
    }
    if let Some(url) = &args.post {
        outputs.push(format!("post:{url}"));
    }
    if args.exec.is_some() {
        outputs.push("exec".to_string());
    }
    outputs
}

/// Heartbeats until aborted; a failed heartbeat is retried at the next interval.
async fn heartbeats(client: Client, mut agent: Agent, status: Arc<Mutex<Status>>, every: Duration) {
    loop {
        {
            let status = lock(&status);
            agent.applied_revision = status.applied_revision;
            agent.mode = status.mode.to_string();
            agent.last_error = status.last_error.clone();
        }
        if let Err(e) = client.agent_heartbeat(agent.clone()).await {
            tracing::debug!(error = %e, "heartbeat failed");
        }
        tokio::time::sleep(every).await;
    }
}

/// Starts watching SIGTERM and SIGINT now and resolves at the first one. Registered once, before
/// the loop, and polled by every turn of it: a signal that arrives while a change is being
/// applied (outside the `select!`) is kept for the next turn instead of being lost.
pub(crate) fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cfgnode_client::Entry;

    fn snapshot(entries: &[(&str, &[u8], &str)]) -> Snapshot {
        Snapshot {
            namespace: "shop".to_string(),
            revision: 7,
            etag: "\"e\"".to_string(),
            entries: entries
                .iter()
                .map(|(key, value, codec)| Entry {
                    namespace: "shop".to_string(),
                    key: key.to_string(),
                    value: value.to_vec(),
                    codec: codec.to_string(),
                    version: 1,
                    revision: 1,
                    created_at: 0,
                    updated_at: 0,
                    alias: None,
                })
                .collect(),
            aliases: Vec::new(),
        }
    }

    #[test]
    fn formats_render_the_filtered_snapshot() {
        let s = snapshot(&[
            ("app/port", b"8080", "text"),
            ("app/db", br#"{"host":"pg"}"#, "json"),
            ("app/bin", &[0xff, 0x00], "bytes"),
            ("other/x", b"no", "text"),
        ]);
        let json: Value =
            serde_json::from_slice(&render(Format::Json, &s, &["app/".into()]).expect("json"))
                .expect("valid");
        assert_eq!(json["app/port"], "8080");
        assert_eq!(json["app/db"]["host"], "pg");
        assert_eq!(json["app/bin"]["base64"], "/wA=");
        assert!(json.get("other/x").is_none());
        let env = render(Format::Env, &s, &["app/p".into()]).expect("env");
        assert_eq!(String::from_utf8(env).expect("utf8"), "ORT='8080'\n");
        assert!(
            render(Format::Env, &s, &["app/".into()]).is_err(),
            "binary value"
        );
        assert_eq!(
            render(Format::Raw, &s, &["other/".into()]).expect("raw"),
            b"no"
        );
        assert!(
            render(Format::Raw, &s, &["app/".into()]).is_err(),
            "several keys"
        );
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).expect("meta").permissions().mode() & 0o777
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[cfg(unix)]
    #[test]
    fn an_existing_file_keeps_its_mode_and_owner() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("app.json");
        std::fs::write(&out, b"old").expect("write");
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        // As root (where an owner can be kept), the file belongs to someone else.
        let root = std::fs::metadata(&out).expect("meta").uid() == 0;
        if root {
            std::os::unix::fs::chown(&out, Some(4242), Some(4243)).expect("chown");
        }
        write_out(&out, b"new", false).expect("written");
        assert_eq!(std::fs::read(&out).expect("read"), b"new");
        assert_eq!(mode(&out), 0o600, "the operator's 0600 stays");
        if root {
            let meta = std::fs::metadata(&out).expect("meta");
            assert_eq!((meta.uid(), meta.gid()), (4242, 4243), "the owner stays");
        }
        assert_eq!(names(dir.path()), ["app.json"], "no temporary file left");
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_is_refused_unless_followed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let real_dir = dir.path().join("real");
        std::fs::create_dir(&real_dir).expect("dir");
        let target = real_dir.join("app.json");
        std::fs::write(&target, b"old").expect("write");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink("real/app.json", &link).expect("symlink");

        let err = write_out(&link, b"new", false).expect_err("refused");
        assert!(
            err.contains("symbolic link") && err.contains("--follow-symlinks"),
            "{err}"
        );
        assert_eq!(std::fs::read(&target).expect("read"), b"old", "untouched");
        assert!(
            std::fs::symlink_metadata(&link)
                .expect("meta")
                .file_type()
                .is_symlink()
        );

        write_out(&link, b"new", true).expect("followed");
        assert_eq!(std::fs::read(&target).expect("read"), b"new");
        assert_eq!(mode(&target), 0o640, "the target keeps its mode");
        assert!(
            std::fs::symlink_metadata(&link)
                .expect("meta")
                .file_type()
                .is_symlink(),
            "the link is kept"
        );
        assert_eq!(names(&real_dir), ["app.json"], "replaced in its own dir");
        assert_eq!(names(dir.path()), ["link.json", "real"]);

        // A dangling link, followed, creates the file it names.
        std::fs::remove_file(&target).expect("rm");
        write_out(&link, b"again", true).expect("created");
        assert_eq!(std::fs::read(&target).expect("read"), b"again");
        // A loop is an error, not a hang.
        let a = dir.path().join("a");
        std::os::unix::fs::symlink("b", &a).expect("symlink");
        std::os::unix::fs::symlink("a", dir.path().join("b")).expect("symlink");
        assert!(
            write_out(&a, b"x", true)
                .expect_err("loop")
                .contains("loop")
        );
    }

    #[test]
    fn a_failed_write_leaves_the_file_and_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let taken = dir.path().join("taken");
        std::fs::create_dir(&taken).expect("dir");
        std::fs::write(taken.join("x"), b"x").expect("write");
        let err = write_out(&taken, b"new", false).expect_err("a directory");
        assert!(err.contains("taken"), "{err}");
        assert_eq!(names(dir.path()), ["taken"]);
    }

    #[test]
    fn env_names_are_safe() {
        assert_eq!(env_name("db/max-conns", &[]), "DB_MAX_CONNS");
        assert_eq!(env_name("app/db.url", &["app/".into()]), "DB_URL");
        assert_eq!(env_name("9lives", &[]), "_9LIVES");
        let s = snapshot(&[("a'b", b"it's", "text")]);
        assert_eq!(
            String::from_utf8(render(Format::Env, &s, &[]).expect("env")).expect("utf8"),
            "A_B='it'\\''s'\n"
        );
    }
}
