//! The registry commands against a real node process over QUIC: `register` with endpoint,
//! tag, metadata and check flags, `instances` and `services` (text and `--output json`),
//! `deregister`, `register --keepalive` as a sidecar that SIGTERM deregisters, and bad flags
//! refused with a message that names them.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{
    EXIT_DEADLINE, KillOnDrop, Launch, Node, assert_exit, command, poll_until, send_signal, stderr,
    stdout,
};
use reqwest::Method;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(15);

/// The instance names of an `instances --output json` answer.
fn names(view: &Value) -> Vec<String> {
    view["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["instance"].as_str().expect("name").to_string())
        .collect()
}

/// An instance's status through the HTTP API, `None` when it is not registered.
async fn http_status(node: &Node, service: &str, instance: &str) -> Option<String> {
    let view: Value = node
        .request(
            Method::GET,
            &format!("/v1/namespaces/shop/services/{service}"),
        )
        .send()
        .await
        .expect("GET the service")
        .json()
        .await
        .ok()?;
    view["instances"]
        .as_array()?
        .iter()
        .find(|i| i["instance"] == instance)
        .and_then(|i| i["status"].as_str())
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_list_and_deregister_with_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&Launch::new(dir.path())).await;
    // What the tcp check connects to: accepting is enough for it to pass.
    let backend = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a backend");
    let check = format!("tcp://{}", backend.local_addr().expect("addr"));

    let registered = node.cli_json(&[
        "register",
        "shop",
        "web",
        "w1",
        "--endpoint",
        "http://10.0.0.5:8080",
        "--endpoint",
        "admin=grpc://10.0.0.5:9090",
        "--tag",
        "v2",
        "--tag",
        "canary",
        "--meta",
        "zone=eu-1",
        "--check",
        &check,
        "--interval",
        "200ms",
        "--check-timeout",
        "100ms",
        "--unhealthy-after",
        "2",
        "--healthy-after",
        "1",
    ]);
    assert_eq!(registered["created"], true);
    assert_eq!(registered["status"], "unknown", "checked, not decided yet");
    let plain = node.cli(&[
        "register",
        "shop",
        "web",
        "w2",
        "--endpoint",
        "http://10.0.0.6:8080",
    ]);
    assert_exit(&plain, 0);
    assert!(
        stdout(&plain).starts_with("shop/web/w2 registered status healthy"),
        "{}",
        stdout(&plain)
    );

    let view = node.cli_json(&["instances", "shop", "web"]);
    assert_eq!(names(&view), ["w1", "w2"]);
    let w1 = &view["instances"][0];
    assert_eq!(
        w1["endpoints"],
        serde_json::json!([
            {"name": "http", "protocol": "http", "address": "10.0.0.5", "port": 8080},
            {"name": "admin", "protocol": "grpc", "address": "10.0.0.5", "port": 9090},
        ])
    );
    assert_eq!(w1["tags"], serde_json::json!(["v2", "canary"]));
    assert_eq!(w1["metadata"], serde_json::json!({"zone": "eu-1"}));
    assert_eq!(
        w1["check"],
        serde_json::json!({"kind": "tcp", "address": check.trim_start_matches("tcp://"),
            "interval": "200ms", "timeout": "100ms", "unhealthy_after": 2, "healthy_after": 1})
    );
    // The check runs with those flags: w1 turns healthy.
    poll_until("w1's tcp check passes", DEADLINE, || async {
        let healthy = node.cli_json(&["instances", "shop", "web", "--status", "healthy"]);
        (names(&healthy) == ["w1", "w2"]).then_some(())
    })
    .await;
    let canary = node.cli_json(&["instances", "shop", "web", "--tag", "canary"]);
    assert_eq!(names(&canary), ["w1"]);
    let grpc = node.cli_json(&["instances", "shop", "web", "--protocol", "grpc"]);
    assert_eq!(names(&grpc), ["w1"]);
    let table = stdout(&node.cli(&["instances", "shop", "web"]));
    assert!(
        table.contains("http://10.0.0.5:8080,admin=grpc://10.0.0.5:9090"),
        "{table}"
    );

    node.cli_json(&["register", "shop", "db", "d1"]);
    let services = node.cli_json(&["services", "shop"]);
    assert_eq!(
        services["services"],
        serde_json::json!([
            {"service": "db", "instances": 1, "healthy": 1, "unhealthy": 0, "unknown": 0},
            {"service": "web", "instances": 2, "healthy": 2, "unhealthy": 0, "unknown": 0},
        ])
    );
    let text = stdout(&node.cli(&["services", "shop"]));
    assert!(text.lines().any(|l| l.starts_with("web ")), "{text}");

    let gone = node.cli_json(&["deregister", "shop", "web", "w2"]);
    assert_eq!(gone["deregistered"], true);
    assert_eq!(names(&node.cli_json(&["instances", "shop", "web"])), ["w1"]);
    assert_exit(&node.cli(&["deregister", "shop", "web", "w2"]), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_are_refused_naming_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&Launch::new(dir.path())).await;
    let register = |extra: &[&str]| {
        let mut args = vec!["register", "shop", "web", "w1"];
        args.extend(extra);
        node.cli(&args)
    };
    for (flags, named) in [
        (&["--endpoint", "10.0.0.5:8080"][..], "--endpoint"),
        (&["--endpoint", "http://10.0.0.5"][..], "--endpoint"),
        (&["--endpoint", "http://10.0.0.5:99999"][..], "--endpoint"),
        (
            &["--endpoint", "http://a:1", "--endpoint", "http://b:2"][..],
            "--endpoint",
        ),
        (&["--check", "udp://10.0.0.5:53"][..], "--check"),
        (&["--meta", "novalue"][..], "--meta"),
        (&["--interval", "1s"][..], "--check"),
        (&["--ttl", "10s", "--check", "tcp://a:1"][..], "--ttl"),
    ] {
        let out = register(flags);
        assert_exit(&out, 2);
        assert!(
            stderr(&out).contains(named),
            "{flags:?}: the message names {named}: {}",
            stderr(&out)
        );
    }
    // What only the node checks comes back with the field named, exit 1.
    let out = register(&["--ttl", "10ms"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("ttl"), "{}", stderr(&out));
    // Nothing was registered by any of them: not even the namespace exists.
    let listed = node.cli(&["instances", "shop", "web"]);
    assert_exit(&listed, 3);
    assert!(
        stderr(&listed).contains("namespace_not_found"),
        "{}",
        stderr(&listed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_keepalive_heartbeats_until_sigterm_then_deregisters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&Launch::new(dir.path())).await;
    let out_path = dir.path().join("keepalive.stdout");
    let mut sidecar = KillOnDrop(
        command(dir.path())
            .args([
                "register",
                "shop",
                "jobs",
                "j1",
                "--endpoint",
                "http://10.0.0.7:8080",
                "--ttl",
                "1s",
                "--keepalive",
                "--addr",
                &node.quic.to_string(),
            ])
            .arg("--data-dir")
            .arg(node.data_dir())
            .stdout(std::fs::File::create(&out_path).expect("stdout file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn register --keepalive"),
    );
    poll_until("the sidecar's first heartbeat", DEADLINE, || async {
        (http_status(&node, "jobs", "j1").await.as_deref() == Some("healthy")).then_some(())
    })
    .await;
    // More than three TTLs, healthy at every look: only heartbeats keep a 1 s TTL so.
    let until = tokio::time::Instant::now() + Duration::from_millis(3500);
    while tokio::time::Instant::now() < until {
        assert_eq!(
            http_status(&node, "jobs", "j1").await.as_deref(),
            Some("healthy"),
            "the sidecar let the TTL run out"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sidecar.0.try_wait().expect("try_wait").is_none(),
        "still in the foreground"
    );

    send_signal(sidecar.0.id(), "TERM");
    let status = poll_until("the sidecar to exit", EXIT_DEADLINE, || {
        let exited = sidecar.0.try_wait().expect("try_wait");
        async move { exited }
    })
    .await;
    assert!(status.success(), "exit 0 after SIGTERM: {status}");
    // It deregistered before exiting.
    assert_eq!(http_status(&node, "jobs", "j1").await, None);
    let printed = std::fs::read_to_string(&out_path).expect("stdout");
    assert!(
        printed.contains("shop/jobs/j1 registered") && printed.contains("deregistered"),
        "{printed}"
    );
}
