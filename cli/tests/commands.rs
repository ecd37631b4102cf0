//! The `cfgnode` data, certs and bench commands against a real node process over QUIC: output,
//! exit codes (0 ok, 1 error, 2 usage, 3 not found, 4 conflict), and mutual TLS end to end.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};

use common::{Launch, Node, assert_exit, command, stdout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_commands_and_exit_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&Launch::new(dir.path())).await;

    let set = node.cli(&[
        "set",
        "shop",
        "db/config",
        r#"{"port":1}"#,
        "--codec",
        "json",
    ]);
    assert_exit(&set, 0);
    assert_eq!(stdout(&set).trim(), "shop/db/config version 1 revision 1");
    assert_exit(
        &node.cli(&[
            "set",
            "shop",
            "db/config",
            r#"{"port":2}"#,
            "--codec",
            "json",
        ]),
        0,
    );
    let get = node.cli(&["get", "shop", "db/config"]);
    assert_exit(&get, 0);
    assert_eq!(
        stdout(&get),
        r#"{"port":2}"#,
        "text output is the bare value"
    );
    let json: serde_json::Value = serde_json::from_slice(
        &node
            .cli(&["get", "shop", "db/config", "--output", "json"])
            .stdout,
    )
    .expect("json output");
    assert_eq!(json["version"], 2);
    assert_eq!(json["codec"], "json");

    // Exit codes: 3 not found, 4 conflict, 1 invalid, 2 usage.
    assert_exit(&node.cli(&["get", "shop", "missing"]), 3);
    assert_exit(&node.cli(&["set", "shop", "db/config", "x", "--create"]), 4);
    assert_exit(
        &node.cli(&["set", "shop", "db/config", "x", "--if-version", "1"]),
        4,
    );
    assert_exit(&node.cli(&["set", "shop", "new", "x", "--update"]), 4);
    assert_exit(
        &node.cli(&["set", "shop", "bad", "{nope", "--codec", "json"]),
        1,
    );
    assert_exit(&node.cli(&["set", "shop", "k"]), 2);
    assert_exit(&node.cli(&["get", "shop"]), 2);
    assert_exit(
        &node.cli(&[
            "set",
            "shop",
            "db/config",
            r#"{"port":3}"#,
            "--codec",
            "json",
            "--if-version",
            "2",
        ]),
        0,
    );

    // A value from a file and from stdin.
    let file = dir.path().join("value.yaml");
    std::fs::write(&file, "a: 1\n").expect("write");
    assert_exit(
        &node.cli(&[
            "set",
            "shop",
            "from-file",
            "--codec",
            "yaml",
            "--file",
            file.to_str().expect("utf8"),
        ]),
        0,
    );
    assert_eq!(stdout(&node.cli(&["get", "shop", "from-file"])), "a: 1\n");
    let mut piped = command(dir.path())
        .args([
            "set",
            "shop",
            "from-stdin",
            "--file",
            "-",
            "--addr",
            &node.quic.to_string(),
        ])
        .arg("--data-dir")
        .arg(node.data_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        piped
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"piped")
            .expect("write");
    }
    assert!(piped.wait().expect("wait").success());
    assert_eq!(stdout(&node.cli(&["get", "shop", "from-stdin"])), "piped");

    // Listings, history, diff, snapshot, aliases, codecs.
    let ls = stdout(&node.cli(&["ls", "shop"]));
    assert_eq!(ls.lines().count(), 3, "{ls}");
    assert!(
        ls.lines()
            .next()
            .is_some_and(|l| l.starts_with("db/config\tv3\tjson")),
        "{ls}"
    );
    let history = stdout(&node.cli(&["history", "shop", "db/config"]));
    assert_eq!(
        history
            .lines()
            .map(|l| l.split('\t').next().unwrap_or(""))
            .collect::<Vec<_>>(),
        ["v3", "v2", "v1"]
    );
    assert_eq!(
        stdout(&node.cli(&["diff", "shop", "db/config", "1", "3"])).trim(),
        "~ /port: 1 -> 3"
    );
    assert_exit(&node.cli(&["diff", "shop", "db/config", "1", "9"]), 3);
    let snapshot: serde_json::Value =
        serde_json::from_slice(&node.cli(&["snapshot", "shop", "--output", "json"]).stdout)
            .expect("json");
    let etag = snapshot["etag"].as_str().expect("etag").to_string();
    assert_eq!(snapshot["entries"].as_array().map(Vec::len), Some(3));
    let unchanged = node.cli(&["snapshot", "shop", "--if-none-match", &etag]);
    assert!(
        stdout(&unchanged).starts_with("not modified"),
        "{}",
        stdout(&unchanged)
    );
    assert_exit(
        &node.cli(&["alias", "set", "shop", "current", "db/config"]),
        0,
    );
    assert_eq!(
        stdout(&node.cli(&["alias", "ls", "shop"])).trim(),
        "current -> db/config"
    );
    assert_eq!(
        stdout(&node.cli(&["get", "shop", "current"])),
        r#"{"port":3}"#
    );
    assert_exit(
        &node.cli(&["alias", "set", "shop", "current", "from-file"]),
        4,
    );
    assert_exit(&node.cli(&["alias", "rm", "shop", "current"]), 0);
    assert_exit(&node.cli(&["alias", "get", "shop", "current"]), 3);
    assert!(stdout(&node.cli(&["namespaces"])).starts_with("shop\t3 keys"));
    assert!(stdout(&node.cli(&["codecs"])).contains("toml"));

    assert_exit(
        &node.cli(&["del", "shop", "db/config", "--if-version", "1"]),
        4,
    );
    assert_exit(&node.cli(&["del", "shop", "db/config"]), 0);
    assert_exit(&node.cli(&["del", "shop", "db/config"]), 3);

    // Wrong token, unreachable node, no way to verify the node.
    assert_exit(
        &node.cli_with(&["get", "shop", "k"], &["--token", "wrong-token"]),
        1,
    );
    let unreachable = command(dir.path())
        .args([
            "get",
            "shop",
            "k",
            "--addr",
            "127.0.0.1:1",
            "--insecure",
            "--timeout",
            "1s",
        ])
        .output()
        .expect("run");
    assert_eq!(unreachable.status.code(), Some(1));
    let unverifiable = command(dir.path())
        .args([
            "get",
            "shop",
            "k",
            "--addr",
            &node.quic.to_string(),
            "--data-dir",
            "/nonexistent",
        ])
        .output()
        .expect("run");
    assert_eq!(unverifiable.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unverifiable.stderr).contains("--insecure"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_prints_throughput_and_percentiles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&Launch::new(dir.path())).await;
    let out = node.cli(&[
        "bench",
        "--duration",
        "1s",
        "--concurrency",
        "4",
        "--op",
        "mixed",
        "--keys",
        "10",
        "--namespaces",
        "2",
    ]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("throughput:") && text.contains(" ok, 0 errors"),
        "{text}"
    );
    assert!(
        text.contains("p50") && text.contains("p99") && text.contains("max"),
        "{text}"
    );
}

fn certs(cwd: &Path, args: &[&str]) -> Output {
    command(cwd).arg("certs").args(args).output().expect("run")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_two_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca");
    let issued = dir.path().join("issued");
    assert_exit(&certs(dir.path(), &["init", "--out", path(&ca)]), 0);
    assert_exit(&certs(dir.path(), &["init", "--out", path(&ca)]), 1);
    for name in ["node-1", "ops"] {
        assert_exit(
            &certs(
                dir.path(),
                &[
                    "issue",
                    "--ca",
                    path(&ca),
                    "--name",
                    name,
                    "--out",
                    path(&issued),
                ],
            ),
            0,
        );
    }
    assert_exit(
        &certs(
            dir.path(),
            &[
                "issue",
                "--ca",
                path(&ca),
                "--name",
                "ops",
                "--out",
                path(&issued),
            ],
        ),
        1,
    );

    let ca_pem = ca.join("ca.pem");
    let launch = Launch::new(dir.path()).args(&[
        "--tls-ca",
        path(&ca_pem),
        "--tls-cert",
        path(&issued.join("node-1.pem")),
        "--tls-key",
        path(&issued.join("node-1.key")),
    ]);
    let node = Node::start(&launch).await;
    let (ops_cert, ops_key) = (issued.join("ops.pem"), issued.join("ops.key"));
    let member = [
        "--ca",
        path(&ca_pem),
        "--cert",
        path(&ops_cert),
        "--key",
        path(&ops_key),
    ];
    assert_exit(&node.cli_with(&["set", "secure", "k", "v"], &member), 0);
    assert_eq!(
        stdout(&node.cli_with(&["get", "secure", "k"], &member)),
        "v"
    );
    // A client with the CA but no certificate of its own is refused at the handshake.
    assert_exit(
        &node.cli_with(&["get", "secure", "k"], &["--ca", path(&ca_pem)]),
        1,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_every_change_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&Launch::new(dir.path())).await;
    assert_exit(&node.cli(&["set", "shop", "a", "1"]), 0);
    assert_exit(&node.cli(&["set", "shop", "other/b", "2"]), 0);
    assert_exit(&node.cli(&["del", "shop", "a"]), 0);

    // From the start of the log: the three changes, in order, then exit.
    let replay = node.cli(&["watch", "shop", "--after", "0", "--count", "3"]);
    assert_exit(&replay, 0);
    assert_eq!(
        stdout(&replay).lines().collect::<Vec<_>>(),
        [
            "1 shop set a v1 1",
            "2 shop set other/b v1 2",
            "3 shop delete a v2"
        ]
    );

    // From now, filtered, as JSON: only the change written after it started.
    let mut live = command(&node.launch.root)
        .args(["watch", "shop", "--prefix", "other/", "--count", "1"])
        .args(["--addr", &node.quic.to_string(), "--output", "json"])
        .arg("--data-dir")
        .arg(node.data_dir())
        .stdout(Stdio::piped())
        .spawn()
        .expect("watch runs");
    // Written repeatedly until the watch (which starts "from now") has seen one and exited.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        assert_exit(&node.cli(&["set", "shop", "a", "x"]), 0);
        assert_exit(&node.cli(&["set", "shop", "other/c", "3"]), 0);
        if let Some(status) = live.try_wait().expect("wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the watch did not exit"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(status.success());
    let mut printed = String::new();
    std::io::Read::read_to_string(&mut live.stdout.take().expect("stdout"), &mut printed)
        .expect("read");
    let doc: serde_json::Value = serde_json::from_str(printed.trim()).expect("one JSON line");
    assert_eq!(doc["key"], "other/c");
    assert_eq!(doc["type"], "set");

    let bad = node.cli(&["watch", "Bad Name"]);
    assert_exit(&bad, 1);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid_watch"));
    assert_exit(&node.cli(&["watch"]), 2);
}
