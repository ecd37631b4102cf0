//! `cfgnode agent` as a real process against a real node process: it keeps its file, a worker
//! (POST) and a command in sync, shows in `GET /v1/agents` and `cfgnode agents`, survives a
//! SIGKILL and restart of the node, deregisters on SIGTERM; bad flags are refused.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cfgnode_tests::Receiver;
use common::{KillOnDrop, Launch, Node, command, send_signal};
use reqwest::Method;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);

fn set(node: &Node, key: &str, value: &str) {
    let out = node.cli(&["set", "shop", key, value]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `GET /v1/agents{query}`.
async fn agents(node: &Node, query: &str) -> Value {
    node.request(Method::GET, &format!("/v1/agents{query}"))
        .send()
        .await
        .expect("agents")
        .json()
        .await
        .expect("json")
}

/// Polls `check` until it returns `Some`, or panics naming `what`.
async fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_keeps_its_file_worker_and_command_in_sync_across_a_node_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start(&Launch::new(dir.path())).await;
    set(&node, "app/port", "8080");
    set(&node, "other/x", "ignored");
    let out = dir.path().join("app.json");
    let log = dir.path().join("exec.log");
    let worker = Receiver::start().await;
    let url = worker.url.clone();
    let stderr = std::fs::File::create(dir.path().join("agent.stderr")).expect("stderr");
    let exec = format!("echo $CFGNODE_REVISION >> {}", log.display());
    let mut agent = KillOnDrop(
        command(dir.path())
            .args(["agent", "--namespace", "shop", "--prefix", "app/"])
            .arg("--out")
            .arg(&out)
            .args(["--post", &url, "--exec", &exec, "--id", "test-agent"])
            .args(["--heartbeat", "200ms", "--poll-interval", "1s"])
            .args(["--addr", &node.quic.to_string()])
            .arg("--data-dir")
            .arg(node.data_dir())
            .env("RUST_LOG", "cfgnode=debug")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("agent runs"),
    );

    let file = until("the first file", || read_json(&out)).await;
    assert_eq!(file["app/port"], "8080");
    assert!(file.get("other/x").is_none(), "the prefix filters");

    set(&node, "app/port", "9090");
    until("the file to follow a write", || {
        read_json(&out).filter(|f| f["app/port"] == "9090")
    })
    .await;
    until("the command to run for revision 3", || {
        let log = std::fs::read_to_string(&log).ok()?;
        log.lines().any(|l| l == "3").then_some(())
    })
    .await;
    until("the worker to get revision 3", || {
        worker
            .received()
            .iter()
            .any(|r| {
                let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                r.headers.get("etag").is_some_and(|e| e.ends_with("-3\""))
                    && body["app/port"] == "9090"
            })
            .then_some(())
    })
    .await;

    // The registry shows the agent with what it applied.
    let end = Instant::now() + DEADLINE;
    loop {
        let body = agents(&node, "?namespace=shop").await;
        let found = body["agents"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["id"] == "test-agent").cloned());
        if let Some(a) = found.filter(|a| a["applied_revision"] == 3) {
            assert_eq!(a["status"], "live");
            assert_eq!(a["namespace"], "shop");
            break;
        }
        assert!(Instant::now() < end, "agent not listed: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let table = node.cli(&["agents"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("test-agent"));

    // The node crashes and comes back on the same address: the agent carries on.
    node.kill9();
    let node = node.restart_in_place().await;
    set(&node, "app/port", "7070");
    let agent_log = dir.path().join("agent.stderr");
    let end = Instant::now() + DEADLINE;
    while read_json(&out)
        .filter(|f| f["app/port"] == "7070")
        .is_none()
    {
        assert!(
            Instant::now() < end,
            "the file did not follow after the node's restart; agent stderr:\n{}",
            std::fs::read_to_string(&agent_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // SIGTERM: a clean exit that deregisters.
    send_signal(agent.0.id(), "TERM");
    let status = until("the agent to exit", || agent.0.try_wait().expect("wait")).await;
    assert!(status.success(), "{status}");
    let body = agents(&node, "").await;
    assert!(
        body["agents"]
            .as_array()
            .expect("list")
            .iter()
            .all(|a| a["id"] != "test-agent"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_format_once_and_bad_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&Launch::new(dir.path())).await;
    set(&node, "app/db-url", "postgres://x");
    set(&node, "app/port", "8080");
    let env = dir.path().join("app.env");
    let once = node.cli(&[
        "agent",
        "--namespace",
        "shop",
        "--prefix",
        "app/",
        "--format",
        "env",
        "--once",
        "--out",
        env.to_str().expect("path"),
    ]);
    assert!(
        once.status.success(),
        "{}",
        String::from_utf8_lossy(&once.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&env).expect("env file"),
        "DB_URL='postgres://x'\nPORT='8080'\n"
    );
    // Nothing to do: usage error.
    assert_eq!(
        node.cli(&["agent", "--namespace", "shop"]).status.code(),
        Some(2)
    );
    // Raw with several keys: refused with the reason, exit 1.
    let raw = node.cli(&[
        "agent",
        "--namespace",
        "shop",
        "--prefix",
        "app/",
        "--format",
        "raw",
        "--once",
        "--out",
        "raw.bin",
    ]);
    assert_eq!(raw.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&raw.stderr).contains("exactly one"));
    // A bad namespace: the node's reason, exit 1.
    let bad = node.cli(&["agent", "--namespace", "Bad", "--once", "--out", "x.json"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid"));
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_out_file_keeps_its_mode_and_a_symlink_needs_follow_symlinks() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&Launch::new(dir.path())).await;
    set(&node, "app/port", "8080");
    let once = |out: &Path, extra: &[&str]| {
        let mut args = vec!["agent", "--namespace", "shop", "--once", "--out"];
        args.push(out.to_str().expect("path"));
        args.extend_from_slice(extra);
        node.cli(&args)
    };
    let mode = |path: &Path| std::fs::metadata(path).expect("meta").permissions().mode() & 0o777;

    // The operator's private file stays private when the agent replaces it.
    let private = dir.path().join("private.json");
    std::fs::write(&private, b"{}").expect("write");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = once(&private, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_json(&private).expect("json")["app/port"], "8080");
    assert_eq!(mode(&private), 0o600);

    // A symlink at --out: refused (usage, exit 2), the file it points to untouched.
    let target = dir.path().join("target.json");
    std::fs::write(&target, b"{}").expect("write");
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let refused = once(&link, &[]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("symbolic link") && stderr.contains("--follow-symlinks"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&target).expect("read"), b"{}");

    // With --follow-symlinks: the target is replaced, the link stays a link.
    let followed = once(&link, &["--follow-symlinks"]);
    assert!(
        followed.status.success(),
        "{}",
        String::from_utf8_lossy(&followed.stderr)
    );
    assert_eq!(read_json(&target).expect("json")["app/port"], "8080");
    assert!(
        std::fs::symlink_metadata(&link)
            .expect("meta")
            .file_type()
            .is_symlink()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_write_in_the_namespace_does_not_rerun_the_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&Launch::new(dir.path())).await;
    set(&node, "app/port", "8080");
    let log = dir.path().join("exec.log");
    let exec = format!("echo $CFGNODE_REVISION >> {}", log.display());
    // No --prefix: the agent's watch also gets the namespace's record events.
    let _agent = KillOnDrop(
        command(dir.path())
            .args([
                "agent",
                "--namespace",
                "shop",
                "--exec",
                &exec,
                "--id",
                "quiet",
            ])
            .args(["--heartbeat", "200ms", "--poll-interval", "1s"])
            .args(["--addr", &node.quic.to_string()])
            .arg("--data-dir")
            .arg(node.data_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("agent runs"),
    );
    let ran = |revision: &str| {
        let log = std::fs::read_to_string(&log).ok()?;
        log.lines().any(|l| l == revision).then_some(())
    };
    until("the command to run for revision 1", || ran("1")).await;

    // Revision 2: an instance registered in the same namespace; the entries stay the same.
    let registered = node
        .request(Method::PUT, "/v1/namespaces/shop/services/web/instances/a")
        .json(&serde_json::json!({
            "endpoints": [{"name": "http", "protocol": "http", "address": "127.0.0.1", "port": 9}]
        }))
        .send()
        .await
        .expect("register");
    assert_eq!(registered.status(), 201, "{:?}", registered.text().await);
    // Wait until the agent has applied revision 2 on its own (its heartbeat reports it), so
    // the next write is not folded into the same snapshot.
    let end = Instant::now() + DEADLINE;
    loop {
        let body = agents(&node, "?namespace=shop").await;
        let applied = body["agents"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["id"] == "quiet"))
            .map(|a| a["applied_revision"].clone());
        if applied == Some(Value::from(2)) {
            break;
        }
        assert!(
            Instant::now() < end,
            "the agent did not apply revision 2: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    set(&node, "app/port", "9090");
    until("the command to run for revision 3", || ran("3")).await;
    let log = std::fs::read_to_string(&log).expect("exec log");
    assert!(
        !log.lines().any(|l| l == "2"),
        "the command ran for a registry write: {log:?}"
    );
}
