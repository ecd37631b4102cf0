//! The connection flags (`--addr --token --ca --cert --key --insecure --timeout --output`) are
//! global: accepted before or after the subcommand, as with etcdctl, against a real node process
//! running mutual TLS (so `--cert`/`--key` matter); commands that talk to no node refuse them.
//! And `cfgnode set NS KEY -` reads the value from standard input.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use common::{Launch, Node, assert_exit, command, run_to_exit, stdout};

fn path(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

/// Runs `cfgnode BEFORE... ARGS... AFTER...` in `cwd`, stdin closed.
fn run(cwd: &Path, before: &[&str], args: &[&str], after: &[&str]) -> Output {
    command(cwd)
        .args(before)
        .args(args)
        .args(after)
        .output()
        .expect("run cfgnode")
}

/// A CA, a node certificate and a client certificate in `dir`.
fn issue(dir: &Path) {
    let ca = dir.join("ca");
    let issued = dir.join("issued");
    assert_exit(
        &run(dir, &[], &["certs", "init", "--out", path(&ca)], &[]),
        0,
    );
    for (name, role) in [("node-1", "node"), ("ops", "client")] {
        let args = [
            "certs",
            "issue",
            "--ca",
            path(&ca),
            "--name",
            name,
            "--role",
            role,
            "--out",
            path(&issued),
        ];
        assert_exit(&run(dir, &[], &args, &[]), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flags_go_before_or_after_the_subcommand() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    issue(root);
    let (ca, issued) = (root.join("ca").join("ca.pem"), root.join("issued"));
    let node = Node::start(&Launch::new(root).args(&[
        "--tls-ca",
        path(&ca),
        "--tls-cert",
        path(&issued.join("node-1.pem")),
        "--tls-key",
        path(&issued.join("node-1.key")),
    ]))
    .await;
    // No --data-dir anywhere: the token and the trust come from these flags only.
    let quic = node.quic.to_string();
    let (cert, key) = (issued.join("ops.pem"), issued.join("ops.key"));
    let verified = [
        "--addr",
        quic.as_str(),
        "--token",
        node.token.as_str(),
        "--ca",
        path(&ca),
        "--cert",
        path(&cert),
        "--key",
        path(&key),
        "--timeout",
        "10s",
        "--output",
        "json",
    ];

    // After the subcommand (as always), then before it: same result, JSON both times.
    let set = run(root, &[], &["set", "shop", "k", "after"], &verified);
    assert_exit(&set, 0);
    let set: serde_json::Value = serde_json::from_slice(&set.stdout).expect("json");
    assert_eq!(set["version"], 1);
    let set = run(root, &verified, &["set", "shop", "k", "before"], &[]);
    assert_exit(&set, 0);
    let set: serde_json::Value = serde_json::from_slice(&set.stdout).expect("json");
    assert_eq!(set["version"], 2, "written through the flags before `set`");
    let get = run(root, &verified, &["get", "shop", "k"], &[]);
    assert_exit(&get, 0);
    let get: serde_json::Value = serde_json::from_slice(&get.stdout).expect("json");
    assert_eq!(get["version"], 2);

    // Split either side of the subcommand, and of a nested one.
    let (front, back) = verified.split_at(6);
    let get = run(root, front, &["get", "shop", "k"], back);
    assert_exit(&get, 0);
    let aliases = run(root, back, &["alias", "ls", "shop"], front);
    assert_exit(&aliases, 0);
    let json: serde_json::Value = serde_json::from_slice(&aliases.stdout).expect("json");
    assert!(json.is_object() || json.is_array(), "{json}");

    // Each flag before the subcommand is really used: without a client certificate the
    // handshake fails, with a wrong token the node refuses, --insecure stands in for --ca, and a
    // bad --timeout is a usage error.
    let no_cert = [
        "--addr",
        quic.as_str(),
        "--token",
        node.token.as_str(),
        "--ca",
        path(&ca),
    ];
    assert_exit(&run(root, &no_cert, &["get", "shop", "k"], &[]), 1);
    let mut wrong_token = verified;
    wrong_token[3] = "not-the-token";
    let refused = run(root, &wrong_token, &["get", "shop", "k"], &[]);
    assert_ne!(refused.status.code(), Some(0), "a wrong token is refused");
    // Without --ca, --insecure or a data dir the client has no way to verify the node (usage
    // error); --insecure before the subcommand gets it past that to the handshake, which this
    // mutual-TLS node then refuses, since an insecure client presents no certificate.
    let untrusted = ["--addr", quic.as_str(), "--token", node.token.as_str()];
    let unverifiable = run(root, &untrusted, &["get", "shop", "k"], &[]);
    assert_exit(&unverifiable, 2);
    let insecure = run(root, &untrusted, &["--insecure", "get", "shop", "k"], &[]);
    assert_exit(&insecure, 1);
    let stderr = String::from_utf8_lossy(&insecure.stderr);
    // The node's refusal reaches the client as the handshake's failure, or (when its TLS alert
    // loses the race with the connection's close) as the connection lost: both are refusals.
    assert!(
        stderr.contains("handshake") || stderr.contains("connection lost"),
        "{stderr}"
    );
    let get = run(root, &verified[..12], &["get", "shop", "k"], &[]);
    assert_exit(&get, 0);
    assert_eq!(stdout(&get), "before", "--output text by default");
    assert_exit(
        &run(root, &["--timeout", "soon"], &["get", "shop", "k"], &[]),
        2,
    );

    // `set NS KEY -` reads standard input, flags before or after.
    for (before, after) in [(&verified[..12], &[][..]), (&[][..], &verified[..12])] {
        let mut piped = command(root)
            .args(before)
            .args(["set", "shop", "piped", "-"])
            .args(after)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn");
        piped
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"from\nstdin")
            .expect("write");
        assert!(piped.wait().expect("wait").success());
        let get = run(root, &verified[..12], &["get", "shop", "piped"], &[]);
        assert_exit(&get, 0);
        assert_eq!(stdout(&get), "from\nstdin", "not the literal \"-\"");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_that_talk_to_no_node_refuse_connection_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    // Were the flag accepted, this start would serve: run_to_exit kills it and fails.
    let mut args = vec!["--token", "t", "start"];
    let fresh = common::fresh_address_args();
    args.extend(fresh.iter().map(String::as_str));
    let start = run_to_exit(root, &args, &[]).await;
    assert_eq!(start.code(), 2, "{start:?}");
    assert!(start.stderr.contains("--token"), "{start:?}");
    let out = root.join("ca");
    assert_exit(
        &run(
            root,
            &[],
            &["certs", "init", "--out", path(&out)],
            &["--addr", "x:1"],
        ),
        2,
    );
    assert!(!out.exists(), "nothing written");
    // Their own flags of the same names still work: `certs issue --ca DIR`.
    assert_exit(
        &run(root, &[], &["certs", "init", "--out", path(&out)], &[]),
        0,
    );
    let issued = root.join("issued");
    assert_exit(
        &run(
            root,
            &[],
            &["certs", "issue", "--ca", path(&out), "--name", "n1"],
            &["--out", path(&issued)],
        ),
        0,
    );
}
