//! `cfgnode start` as an operator meets it: signals, the admin token, the data dir lock, the
//! stored node id, environment variables, log format, help and usage errors, `--token-file`.
//! Each test runs the real binary (see `common`).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{ArmedSignal, Launch, Node, SERVING_LINE, fresh_address_args, run_to_exit};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// PUTs a JSON value and insists on 200.
async fn put(node: &Node, ns: &str, key: &str, value: &Value) {
    let response = node
        .request(Method::PUT, &format!("/v1/namespaces/{ns}/keys/{key}"))
        .header("content-type", "application/json")
        .body(value.to_string())
        .send()
        .await
        .expect("PUT");
    assert_eq!(response.status(), StatusCode::OK, "PUT {ns}/{key}");
}

/// The value of a key as raw bytes, or `None` when it is missing.
async fn get_raw(node: &Node, ns: &str, key: &str) -> Option<Vec<u8>> {
    let response = node
        .request(
            Method::GET,
            &format!("/v1/namespaces/{ns}/keys/{key}?raw=true"),
        )
        .send()
        .await
        .expect("GET");
    match response.status() {
        StatusCode::OK => Some(response.bytes().await.expect("body").to_vec()),
        StatusCode::NOT_FOUND => None,
        other => panic!("GET {ns}/{key}: {other}"),
    }
}

/// The node id `/health` reports.
async fn health_node_id(node: &Node) -> String {
    let health: Value = node
        .http
        .get(format!("{}/health", node.base))
        .send()
        .await
        .expect("GET /health")
        .json()
        .await
        .expect("health JSON");
    health["node_id"]
        .as_str()
        .expect("health names the node")
        .to_string()
}

/// Writes, then sends `signal` while a writer is still writing: the process exits 0 through the
/// graceful path, and after a restart everything acknowledged is there.
async fn graceful_stop_keeps_data(signal: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start(&Launch::new(tmp.path())).await;
    for i in 0..10 {
        put(&node, "app", &format!("before/{i}"), &json!({ "i": i })).await;
    }

    // A writer keeps writing through the signal; what it got acknowledged must survive.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = {
        let (http, base, token, stop) = (
            node.http.clone(),
            node.base.clone(),
            node.token.clone(),
            Arc::clone(&stop),
        );
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let sent = http
                    .put(format!("{base}/v1/namespaces/app/keys/during/{i}"))
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(json!({ "i": i }).to_string())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == StatusCode::OK => acked.push(i),
                    Ok(r) => panic!("write during shutdown answered {}", r.status()),
                    Err(_) => break,
                }
            }
            acked
        })
    };
    common::poll_until("the writer to get going", common::START_DEADLINE, || {
        let node = &node;
        async move { get_raw(node, "app", "during/3").await.map(|_| ()) }
    })
    .await;

    let status = node.signal_and_wait(signal).await;
    stop.store(true, Ordering::SeqCst);
    let acked = acked.await.expect("writer task");
    let stderr = node.stderr();
    assert_eq!(
        status.code(),
        Some(0),
        "SIG{signal} must end the node with 0 (status {status}, signal {:?}); stderr:\n{stderr}",
        status.signal()
    );
    assert!(
        stderr.contains(&format!("signal=SIG{signal}")) && stderr.contains("cfgnode node stopped"),
        "the graceful path logs the signal and the stop; stderr:\n{stderr}"
    );

    let node = node.restart().await;
    for i in 0..10 {
        assert_eq!(
            get_raw(&node, "app", &format!("before/{i}")).await,
            Some(json!({ "i": i }).to_string().into_bytes()),
            "before/{i} after SIG{signal} and restart"
        );
    }
    assert!(
        acked.len() >= 3,
        "the writer was writing when the signal came"
    );
    for i in acked {
        assert_eq!(
            get_raw(&node, "app", &format!("during/{i}")).await,
            Some(json!({ "i": i }).to_string().into_bytes()),
            "during/{i} was acknowledged before SIG{signal}"
        );
    }
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully_and_keeps_data() {
    graceful_stop_keeps_data("TERM").await;
}

#[tokio::test]
async fn sigint_shuts_down_gracefully_and_keeps_data() {
    graceful_stop_keeps_data("INT").await;
}

/// Sends `GET /health` on a raw connection: true when it answers 200. Plain blocking IO, so
/// the answer is seen the moment it arrives.
fn health_answers(addr: std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let request = b"GET /health HTTP/1.1\r\nHost: cfgnode\r\nConnection: close\r\n\r\n";
    let mut head = [0u8; 12];
    stream.write_all(request).is_ok()
        && stream.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.1 200")
}

/// The signal handlers are in place before the node serves, so a SIGTERM the moment `/health`
/// first answers takes the graceful path too (exit 0) instead of the default action (killed).
/// Without that, about one round in four fails (the gap is a fraction of a millisecond).
#[test]
fn sigterm_the_moment_health_answers_is_graceful() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let launch = Launch::new(tmp.path());
    for round in 0..20 {
        let (mut child, addr, stderr_path) = launch.spawn_unchecked();
        let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let sigterm = ArmedSignal::new(child.0.id(), "TERM");
        // Poll without pausing: the signal must follow the first answer as closely as it can.
        let deadline = Instant::now() + common::START_DEADLINE;
        while !health_answers(addr) {
            if let Some(status) = child.0.try_wait().expect("try_wait") {
                panic!(
                    "round {round}: exited with {status} before serving:\n{}",
                    stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: not serving:\n{}",
                stderr()
            );
        }
        sigterm.fire();
        let deadline = Instant::now() + common::EXIT_DEADLINE;
        let status = loop {
            if let Some(status) = child.0.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: still running after SIGTERM; stderr:\n{}",
                stderr()
            );
            std::thread::sleep(common::POLL_INTERVAL);
        };
        assert_eq!(
            status.code(),
            Some(0),
            "round {round}: {status} (signal {:?}); stderr:\n{}",
            status.signal(),
            stderr()
        );
    }
}

#[tokio::test]
async fn admin_token_is_private_stable_and_never_logged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A data dir that does not exist yet: the node creates it.
    let launch = Launch {
        data_dir: tmp.path().join("fresh").join("data"),
        ..Launch::new(tmp.path())
    };
    let node = Node::start(&launch).await;

    let token_path = launch.data_dir.join("admin.token");
    let mode = std::fs::metadata(&token_path)
        .expect("admin.token exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "admin.token mode {mode:o}");
    let dir_mode = std::fs::metadata(&launch.data_dir)
        .expect("data dir")
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700, "data dir mode {dir_mode:o}");
    assert!(
        node.token.len() >= 32,
        "a long random token: {}",
        node.token.len()
    );

    // The token guards the API: none or a wrong one is refused.
    let listing = format!("{}/v1/namespaces", node.base);
    let anonymous = node.http.get(&listing).send().await.expect("GET");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let wrong = node
        .http
        .get(&listing)
        .bearer_auth(format!("{}x", node.token))
        .send()
        .await
        .expect("GET");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    // The log names the token's file, never the token.
    let stderr = serving_log(&node).await;
    assert!(
        stderr.contains("admin.token"),
        "the log names the token file; stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains(&node.token),
        "the token leaked into the log:\n{stderr}"
    );

    // A restart keeps the token: clients configured with it keep working.
    let first_token = node.token.clone();
    drop(node);
    let node = Node::start(&launch).await;
    assert_eq!(node.token, first_token);
    assert!(!node.stderr().contains(&first_token));
}

#[tokio::test]
async fn second_process_on_the_same_data_dir_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut first = Node::start(&Launch::new(tmp.path())).await;
    put(&first, "app", "k", &json!(1)).await;

    let data_dir = first.data_dir().to_str().expect("utf-8 path").to_string();
    let mut args = vec!["start", "--data-dir", &data_dir];
    let addresses = fresh_address_args();
    args.extend(addresses.iter().map(String::as_str));
    let second = run_to_exit(tmp.path(), &args, &[]).await;
    assert_eq!(second.code(), 1, "{second:?}");
    assert!(second.stderr.contains("in use"), "{second:?}");

    // The first one carries on, unharmed.
    assert!(first.is_running());
    assert_eq!(get_raw(&first, "app", "k").await, Some(b"1".to_vec()));
    put(&first, "app", "k", &json!(2)).await;
    assert_eq!(get_raw(&first, "app", "k").await, Some(b"2".to_vec()));
}

#[tokio::test]
async fn node_id_is_stored_and_a_mismatch_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let launch = Launch::new(tmp.path()).args(&["--node-id", "alpha-1"]);
    let mut node = Node::start(&launch).await;
    assert_eq!(health_node_id(&node).await, "alpha-1");
    assert_eq!(node.signal_and_wait("TERM").await.code(), Some(0));

    let data_dir = launch.data_dir.to_str().expect("utf-8 path").to_string();
    let mut args = vec!["start", "--data-dir", &data_dir, "--node-id", "beta-2"];
    let addresses = fresh_address_args();
    args.extend(addresses.iter().map(String::as_str));
    let refused = run_to_exit(tmp.path(), &args, &[]).await;
    assert_eq!(refused.code(), 1, "{refused:?}");
    assert!(
        refused.stderr.contains("alpha-1") && refused.stderr.contains("beta-2"),
        "the error names the stored id (and the asked one): {refused:?}"
    );

    // Without --node-id the stored id is kept.
    let node = Node::start(&Launch::new(tmp.path())).await;
    assert_eq!(health_node_id(&node).await, "alpha-1");
}

#[tokio::test]
async fn environment_variables_configure_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let launch = Launch {
        via_env: true,
        data_dir: tmp.path().join("from-env"),
        ..Launch::new(tmp.path())
    }
    .env("CFGNODE_MAX_VALUE_BYTES", "100")
    .env("CFGNODE_NODE_ID", "env-node");
    // Serving at all proves CFGNODE_HTTP (no --http is given) and CFGNODE_DATA_DIR (the token
    // was read from there).
    let node = Node::start(&launch).await;
    assert!(launch.data_dir.join("admin.token").is_file());
    assert!(launch.data_dir.join("cfgnode.redb").is_file());
    assert_eq!(health_node_id(&node).await, "env-node");

    let put_bytes = |key: &'static str, len: usize| {
        node.request(Method::PUT, &format!("/v1/namespaces/app/keys/{key}"))
            .header("content-type", "application/octet-stream")
            .body(vec![b'x'; len])
            .send()
    };
    let fits = put_bytes("fits", 100).await.expect("PUT");
    assert_eq!(fits.status(), StatusCode::OK);
    let over = put_bytes("over", 101).await.expect("PUT");
    assert_eq!(over.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let error: Value = over.json().await.expect("error JSON");
    assert_eq!(error["error"]["code"], "value_too_large", "{error}");
    assert_eq!(get_raw(&node, "app", "fits").await, Some(vec![b'x'; 100]));
    assert_eq!(get_raw(&node, "app", "over").await, None);
}

#[tokio::test]
async fn log_format_json_writes_one_json_object_per_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start(&Launch::new(tmp.path()).args(&["--log-format", "json"])).await;
    assert_eq!(node.signal_and_wait("TERM").await.code(), Some(0));

    let stderr = serving_log(&node).await;
    let lines: Vec<Value> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\nstderr:\n{stderr}"))
        })
        .collect();
    assert!(
        lines.iter().all(|l| l["level"].is_string()),
        "every line has a level: {stderr}"
    );
    let serving = lines
        .iter()
        .find(|l| l["fields"]["message"] == SERVING_LINE)
        .unwrap_or_else(|| panic!("no serving line: {stderr}"));
    assert_eq!(serving["fields"]["http"], node.addr.to_string());
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "cfgnode node stopped"),
        "{stderr}"
    );
    assert!(!stderr.contains(&node.token), "the token leaked: {stderr}");
}

#[tokio::test]
async fn help_lists_every_flag() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let help = run_to_exit(tmp.path(), &["start", "--help"], &[]).await;
    assert_eq!(help.code(), 0, "{help:?}");
    for flag in [
        "--data-dir",
        "--http",
        "--node-id",
        "--max-value-bytes",
        "--history-limit",
        "--log-retention",
        "--token-file",
        "--log-format",
        "--listen",
        "--webhook-allow",
        "CFGNODE_DATA_DIR",
    ] {
        assert!(
            help.stdout.contains(flag),
            "{flag} missing from:\n{}",
            help.stdout
        );
    }

    let top = run_to_exit(tmp.path(), &["--help"], &[]).await;
    assert_eq!(top.code(), 0, "{top:?}");
    assert!(top.stdout.contains("start"), "{}", top.stdout);
}

#[tokio::test]
async fn invalid_flag_values_are_usage_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("never-created");
    let data_dir = data_dir.to_str().expect("utf-8 path");
    for (flag, value) in [
        ("--http", "not-an-address"),
        ("--history-limit", "0"),
        ("--log-retention", "many"),
        ("--max-value-bytes", "1MiB"),
        ("--log-format", "xml"),
        ("--webhook-allow", "10.0.0.0/33"),
    ] {
        let run = run_to_exit(
            tmp.path(),
            &["start", "--data-dir", data_dir, flag, value],
            &[],
        )
        .await;
        assert_eq!(run.code(), 2, "{flag} {value}: {run:?}");
        assert!(run.stderr.contains(flag), "the error names {flag}: {run:?}");
    }
    let unknown = run_to_exit(tmp.path(), &["start", "--no-such-flag"], &[]).await;
    assert_eq!(unknown.code(), 2, "{unknown:?}");
    let bad_env = run_to_exit(
        tmp.path(),
        &["start", "--data-dir", data_dir],
        &[("CFGNODE_HTTP", "nowhere")],
    )
    .await;
    assert_eq!(bad_env.code(), 2, "{bad_env:?}");

    // A value clap accepts but the node refuses is an error (1), with the fix in the message.
    let mut args = vec!["start", "--data-dir", data_dir, "--max-value-bytes", "0"];
    let addresses = fresh_address_args();
    args.extend(addresses.iter().map(String::as_str));
    let zero = run_to_exit(tmp.path(), &args, &[]).await;
    assert_eq!(zero.code(), 1, "{zero:?}");
    assert!(zero.stderr.contains("--max-value-bytes"), "{zero:?}");
    assert!(
        !tmp.path().join("never-created").exists(),
        "a refused start created the data dir"
    );
}

#[tokio::test]
async fn token_file_sets_the_accepted_token() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let token = "shared-cluster-token-0123456789abcdef";
    let token_file = tmp.path().join("cluster.token");
    std::fs::write(&token_file, format!("{token}\n")).expect("write the token file");
    let token_path = token_file.to_str().expect("utf-8 path");

    let launch = Launch {
        token: Some(token.to_string()),
        ..Launch::new(tmp.path()).args(&["--token-file", token_path])
    };
    // Serving means the token was accepted (the harness checks it against the API).
    let node = Node::start(&launch).await;
    put(&node, "app", "k", &json!("v")).await;
    let other = node
        .http
        .get(format!("{}/v1/namespaces", node.base))
        .bearer_auth("another-token-of-enough-length-0000")
        .send()
        .await
        .expect("GET");
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
    assert!(
        !launch.data_dir.join("admin.token").exists(),
        "with --token-file no other token is made"
    );
    assert!(
        !node.stderr().contains(token),
        "the token leaked into the log"
    );

    // A weak token is refused at start.
    std::fs::write(&token_file, "short").expect("write the token file");
    let data_dir = tmp.path().join("weak");
    let data_dir = data_dir.to_str().expect("utf-8 path");
    let mut args = vec!["start", "--data-dir", data_dir, "--token-file", token_path];
    let addresses = fresh_address_args();
    args.extend(addresses.iter().map(String::as_str));
    let weak = run_to_exit(tmp.path(), &args, &[]).await;
    assert_eq!(weak.code(), 1, "{weak:?}");
    assert!(weak.stderr.contains("at least 16"), "{weak:?}");
}

#[tokio::test]
async fn listening_on_every_interface_needs_an_advertised_address() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data").to_string_lossy().into_owned();
    let http = format!("127.0.0.1:{}", common::free_port());
    let listen = format!("0.0.0.0:{}", common::free_udp_port());
    let refused = run_to_exit(
        tmp.path(),
        &[
            "start",
            "--data-dir",
            &data_dir,
            "--http",
            &http,
            "--listen",
            &listen,
        ],
        &[],
    )
    .await;
    assert_eq!(refused.code(), 1, "{refused:?}");
    assert!(
        refused.stderr.contains("--advertise"),
        "says what to add: {refused:?}"
    );
    let bad = run_to_exit(
        tmp.path(),
        &[
            "start",
            "--data-dir",
            &data_dir,
            "--http",
            &http,
            "--listen",
            &listen,
            "--advertise",
            "0.0.0.0:7000",
        ],
        &[],
    )
    .await;
    assert_eq!(bad.code(), 1, "{bad:?}");
    assert!(bad.stderr.contains("--advertise"), "{bad:?}");
}

/// The node's log once it holds the serving line, which can land a moment after the HTTP port
/// answers (readiness is probed over HTTP).
async fn serving_log(node: &Node) -> String {
    common::poll_until(
        "the serving line in the log",
        Duration::from_secs(10),
        || async {
            let stderr = node.stderr();
            stderr.contains(SERVING_LINE).then_some(stderr)
        },
    )
    .await
}
