//! The route commands against a real node process over QUIC: `route set` from flags, then
//! `route get --output json` shows every flag in the HTTP API's shape; `route set --file` and
//! `--file -` (stdin); `route ls` (text and json); `route del`; bad flags refused (exit 2)
//! naming the flag, and a route the node refuses (exit 1) naming the field, changing nothing.

mod common;

use common::{Launch, Node, assert_exit, stderr, stdout};
use serde_json::{Value, json};

fn names(listing: &Value) -> Vec<String> {
    listing["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|r| r["name"].as_str().expect("name").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_set_from_flags_get_ls_and_del() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&Launch::new(dir.path())).await;

    let set = node.cli(&[
        "route",
        "set",
        "shop",
        "web",
        "--host",
        "shop.example.com",
        "--host",
        "*.shop.example.com",
        "--target",
        "http://127.0.0.1:9001",
        "--target",
        "http://127.0.0.1:9002",
        "--path-prefix",
        "/api",
        "--backend-timeout",
        "5s",
        "--retries",
        "2",
        "--rate-limit",
        "600/min",
        "--burst",
        "50",
        "--check",
        "http:/health",
        "--check-interval",
        "1s",
    ]);
    assert_exit(&set, 0);
    assert_eq!(stdout(&set).trim(), "shop/web created");

    let route = node.cli_json(&["route", "get", "shop", "web"]);
    assert_eq!(route["name"], "web");
    assert_eq!(
        route["hosts"],
        json!(["shop.example.com", "*.shop.example.com"])
    );
    assert_eq!(
        route["backend"],
        json!({"targets": ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]})
    );
    assert_eq!(route["path_prefix"], "/api");
    assert_eq!(route["timeout"], "5s");
    assert_eq!(route["retries"], 2);
    assert_eq!(
        route["rate_limit"],
        json!({"per_client_per_minute": 600, "burst": 50})
    );
    assert_eq!(
        route["check"],
        json!({"kind": "http", "path": "/health", "interval": "1s"})
    );
    assert_eq!(route["version"], 1);
    let text = stdout(&node.cli(&["route", "get", "shop", "web"]));
    assert!(
        text.contains("rate_limit   600/min burst 50")
            && text.contains("check        http:/health every 1s"),
        "{text}"
    );

    // A service backend, and the same route from a file and from stdin.
    let api = node.cli_json(&[
        "route",
        "set",
        "shop",
        "api",
        "--host",
        "api.example.com",
        "--service",
        "api",
        "--endpoint",
        "grpc",
    ]);
    assert_eq!(api["created"], true);
    assert_eq!(
        api["backend"],
        json!({"service": "api", "endpoint": "grpc"})
    );
    let file = dir.path().join("route.json");
    std::fs::write(
        &file,
        json!({"hosts": ["file.example.com"], "backend": {"service": "files"}}).to_string(),
    )
    .expect("write route.json");
    let from_file = node.cli_json(&[
        "route",
        "set",
        "shop",
        "files",
        "--file",
        file.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(from_file["hosts"], json!(["file.example.com"]));
    let from_stdin = node.cli_with_stdin(
        &["route", "set", "shop", "files", "--file", "-"],
        r#"{"hosts": ["stdin.example.com"], "backend": {"service": "files"}}"#,
    );
    assert_exit(&from_stdin, 0);
    assert_eq!(stdout(&from_stdin).trim(), "shop/files replaced");
    assert_eq!(
        node.cli_json(&["route", "get", "shop", "files"])["hosts"],
        json!(["stdin.example.com"])
    );

    let listed = node.cli_json(&["route", "ls", "shop"]);
    assert_eq!(names(&listed), ["api", "files", "web"]);
    assert_eq!(listed["routes"][2], route, "ls shows what get shows");
    let table = stdout(&node.cli(&["route", "ls", "shop"]));
    assert!(
        table.lines().any(|l| l.starts_with("api ")
            && l.contains("api.example.com")
            && l.contains("service api (endpoint grpc)")),
        "{table}"
    );

    let deleted = node.cli_json(&["route", "del", "shop", "web"]);
    assert_eq!(deleted["deleted"], true);
    assert!(deleted["revision"].as_u64().expect("revision") > 0);
    let gone = node.cli(&["route", "get", "shop", "web"]);
    assert_exit(&gone, 3);
    assert!(
        stderr(&gone).contains("proxy_route_not_found"),
        "{}",
        stderr(&gone)
    );
    assert_exit(&node.cli(&["route", "del", "shop", "web"]), 3);
    assert_eq!(
        names(&node.cli_json(&["route", "ls", "shop"])),
        ["api", "files"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_route_flags_exit_2_and_refused_routes_exit_1_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&Launch::new(dir.path())).await;
    let set = |extra: &[&str]| {
        let mut args = vec!["route", "set", "shop", "web"];
        args.extend(extra);
        node.cli(&args)
    };
    let host = ["--host", "shop.example.com"];
    let with_host = |extra: &[&'static str]| [&host[..], extra].concat();
    for (flags, named) in [
        (with_host(&[]), "--service"),
        (vec!["--service", "web"], "--host"),
        (
            with_host(&["--service", "web", "--target", "http://a:1"]),
            "--target",
        ),
        (with_host(&["--target", "ftp://a:1"]), "--target"),
        (
            with_host(&["--service", "web", "--rate-limit", "600"]),
            "--rate-limit",
        ),
        (
            with_host(&["--service", "web", "--rate-limit", "1/fortnight"]),
            "--rate-limit",
        ),
        (
            with_host(&["--service", "web", "--burst", "5"]),
            "--rate-limit",
        ),
        (
            with_host(&["--target", "http://a:1", "--check", "udp"]),
            "--check",
        ),
        (
            with_host(&["--service", "web", "--check", "tcp"]),
            "--check",
        ),
        (
            with_host(&["--service", "web", "--backend-timeout", "soon"]),
            "--backend-timeout",
        ),
        (
            with_host(&["--service", "web", "--retries", "many"]),
            "--retries",
        ),
        (
            with_host(&["--target", "http://a:1", "--endpoint", "x"]),
            "--endpoint",
        ),
        (with_host(&["--file", "route.json"]), "--file"),
    ] {
        let out = set(&flags);
        assert_exit(&out, 2);
        assert!(
            stderr(&out).contains(named),
            "{flags:?}: the message names {named}: {}",
            stderr(&out)
        );
    }
    // What only the node checks comes back with the field named, exit 1.
    for (flags, field) in [
        (vec!["--host", "bad host", "--service", "web"], "hosts[0]"),
        (
            with_host(&["--service", "web", "--retries", "99"]),
            "retries",
        ),
        (
            with_host(&["--target", "http://a:1", "--check-interval", "10ms"]),
            "check.interval",
        ),
        (
            with_host(&["--target", "http://127.0.0.1:1/path"]),
            "backend.targets[0]",
        ),
    ] {
        let out = set(&flags);
        assert_exit(&out, 1);
        assert!(
            stderr(&out).contains("invalid_route") && stderr(&out).contains(field),
            "{flags:?}: the message names {field}: {}",
            stderr(&out)
        );
    }
    let not_json = node.cli_with_stdin(&["route", "set", "shop", "web", "--file", "-"], "{");
    assert_exit(&not_json, 1);
    assert!(
        stderr(&not_json).contains("not JSON"),
        "{}",
        stderr(&not_json)
    );
    // Nothing was written by any of them: no route, not even the namespace.
    assert_eq!(node.cli_json(&["route", "ls", "shop"])["routes"], json!([]));
    let snapshot = node.cli(&["snapshot", "shop"]);
    assert_exit(&snapshot, 3);
    assert!(
        stderr(&snapshot).contains("namespace_not_found"),
        "{}",
        stderr(&snapshot)
    );
}
