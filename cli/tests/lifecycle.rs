//! `cfgnode start` as a process: signals, exit codes, the admin token, the data-dir lock,
//! environment variables and log formats.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use support::{NodeProcess, binary, free_port, free_udp_port};

async fn put(node: &NodeProcess, key: &str, body: &[u8]) -> reqwest::StatusCode {
    reqwest::Client::new()
        .put(format!("{}/v1/namespaces/life/keys/{key}", node.base))
        .bearer_auth(&node.token)
        .header("content-type", "application/octet-stream")
        .body(body.to_vec())
        .send()
        .await
        .expect("send")
        .status()
}

async fn get_status(node: &NodeProcess, key: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .get(format!("{}/v1/namespaces/life/keys/{key}", node.base))
        .bearer_auth(&node.token)
        .send()
        .await
        .expect("send")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_shut_down_cleanly_and_keep_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    for signal in ["TERM", "INT"] {
        let mut node = NodeProcess::start(&data, &[]).await;
        assert_eq!(put(&node, signal, b"v").await, reqwest::StatusCode::OK);
        let status = node.signal_and_wait(signal).await;
        assert!(status.success(), "SIG{signal} exit status {status:?}");
        assert!(
            node.log_text().contains("shutting down"),
            "{}",
            node.log_text()
        );
    }
    let node = NodeProcess::start(&data, &[]).await;
    for key in ["TERM", "INT"] {
        assert_eq!(
            get_status(&node, key).await,
            reqwest::StatusCode::OK,
            "{key} kept"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_is_private_and_never_logged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let node = NodeProcess::start(&data, &[]).await;
    let mode = std::fs::metadata(data.join("admin.token"))
        .expect("token")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let data_mode = std::fs::metadata(&data).expect("dir").permissions().mode();
    assert_eq!(data_mode & 0o777, 0o700);
    assert_eq!(node.token.len(), 64);
    let log = node.log_text();
    assert!(log.contains("admin.token"), "the path is logged: {log}");
    assert!(
        !log.contains(&node.token),
        "the token itself is never logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let node = NodeProcess::start(&data, &[]).await;
    let second = Command::new(binary())
        .args([
            "start",
            "--http",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
        ])
        .arg(&data)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("in use by another process"), "{stderr}");
    // The first node is unharmed.
    assert_eq!(put(&node, "still", b"ok").await, reqwest::StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_node_id_on_an_existing_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut node = NodeProcess::start(&data, &["--node-id", "alpha"]).await;
    assert!(node.signal_and_wait("TERM").await.success());
    let output = Command::new(binary())
        .args([
            "start",
            "--node-id",
            "beta",
            "--http",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .arg("--data-dir")
        .arg(&data)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("\"alpha\"") && stderr.contains("--node-id alpha"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_variables_configure_the_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("env-data");
    let port = free_port();
    let log = dir.path().join("env.log");
    let mut child = Command::new(binary())
        .arg("start")
        .env("CFGNODE_DATA_DIR", &data)
        .env("CFGNODE_HTTP", format!("127.0.0.1:{port}"))
        .env("CFGNODE_MAX_VALUE_BYTES", "100")
        .env("CFGNODE_LISTEN", format!("127.0.0.1:{}", free_udp_port()))
        .env("CFGNODE_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    support::poll_until(std::time::Duration::from_secs(30), "health", || {
        let request = client.get(format!("{base}/health")).send();
        async move { request.await.ok().filter(|r| r.status().is_success()) }
    })
    .await;
    let token =
        std::fs::read_to_string(data.join("admin.token")).expect("token in CFGNODE_DATA_DIR");
    let send = |len: usize| {
        client
            .put(format!("{base}/v1/namespaces/env/keys/k"))
            .bearer_auth(token.trim())
            .body(vec![b'x'; len])
            .send()
    };
    assert_eq!(
        send(100).await.expect("send").status(),
        reqwest::StatusCode::OK
    );
    assert_eq!(
        send(101).await.expect("send").status(),
        reqwest::StatusCode::PAYLOAD_TOO_LARGE
    );
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).expect("log");
    let first = text.lines().next().expect("a log line");
    let parsed: serde_json::Value = serde_json::from_str(first).expect("JSON log lines");
    assert!(parsed.get("level").is_some(), "{first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_token_file_replaces_the_generated_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("cluster.token");
    std::fs::write(&token_file, "shared-token-0123456789abcdef\n").expect("write");
    let data = dir.path().join("data");
    let mut node =
        NodeProcess::start(&data, &["--token-file", token_file.to_str().expect("utf8")]).await;
    assert!(
        !data.join("admin.token").exists(),
        "no token is generated when one is given"
    );
    node.token = "shared-token-0123456789abcdef".to_string();
    assert_eq!(put(&node, "k", b"v").await, reqwest::StatusCode::OK);

    let weak = dir.path().join("weak.token");
    std::fs::write(&weak, "short").expect("write");
    let output = Command::new(binary())
        .args([
            "start",
            "--http",
            &format!("127.0.0.1:{}", free_port()),
            "--token-file",
        ])
        .arg(&weak)
        .arg("--data-dir")
        .arg(dir.path().join("other"))
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("at least 16"));
}

#[test]
fn usage_errors_exit_2_and_help_lists_the_flags() {
    let help = Command::new(binary())
        .args(["start", "--help"])
        .output()
        .expect("run");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--node-id",
        "--data-dir",
        "--http",
        "--max-value-bytes",
        "--history-limit",
        "--log-retention",
        "--token-file",
        "--log-format",
        "--listen",
        "--cluster-id",
        "--tls-ca",
        "--tls-cert",
        "--tls-key",
        "CFGNODE_DATA_DIR",
    ] {
        assert!(text.contains(flag), "help mentions {flag}: {text}");
    }
    for args in [
        vec!["start", "--http", "not-an-address"],
        vec!["start", "--max-value-bytes", "-5"],
        vec!["start", "--history-limit", "0"],
        vec!["start", "--log-format", "xml"],
        vec!["start", "--tls-ca", "ca.pem"],
        vec!["frobnicate"],
    ] {
        let output = Command::new(binary()).args(&args).output().expect("run");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
}
