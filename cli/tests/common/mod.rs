//! A harness for process-level tests of the real `cfgnode` binary.
//!
//! [`Launch`] describes one `cfgnode start` (data dir, flags, environment); [`Node::start`] runs
//! it on a free loopback port (retrying on a port clash), sends its stderr to a file in the test's
//! temp dir, waits until `GET /health` answers and the admin token is accepted, and returns a
//! handle that SIGKILLs the process on drop, so a panicking test leaks no process.
//! [`run_to_exit`] runs a command that is expected to end by itself (help, usage errors, refused
//! starts) and captures its exit status and output.
//!
//! Every wait polls a condition against a deadline; nothing sleeps its way to synchronisation.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder, StatusCode};

/// The binary under test, built by cargo for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_cfgnode");

/// How long a node may take from spawn to answering `/health` (debug build, busy 2-core box).
pub const START_DEADLINE: Duration = Duration::from_secs(20);

/// How long a process may take to exit once told to (signal) or once it should (usage error).
pub const EXIT_DEADLINE: Duration = Duration::from_secs(20);

/// Waits are shared with the in-process multi-node tests (`tests/`).
pub use cfgnode_tests::{POLL_INTERVAL, poll_until};

/// Starts tried, each on a fresh port, before giving up on port clashes.
const START_ATTEMPTS: usize = 5;

/// The stderr line the node logs once it serves (see `node/src/node.rs`).
pub const SERVING_LINE: &str = "cfgnode node serving";

/// Numbers the log files of every process this test binary starts.
static PROCESS_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A loopback port that was free a moment ago (bind port 0, read it, let it go). Another
/// process may take it before the node binds it; [`Node::start`] retries then.
pub fn free_port() -> u16 {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    listener
        .local_addr()
        .expect("a bound listener has an address")
        .port()
}

/// Writes a cluster key (64 hex characters, as `cfgnode certs cluster-key` makes) to
/// `<dir>/cluster.key` and returns its path. Every node of a test cluster is started with
/// `--cluster-key-file` on this one file: a node that joins must hold the key its seed holds,
/// or the seed refuses its connections.
pub fn write_cluster_key(dir: &Path) -> PathBuf {
    let path = dir.join("cluster.key");
    std::fs::write(&path, cfgnode_tests::CLUSTER_KEY).expect("write the cluster key file");
    path
}

/// A `Command` for the binary, isolated from the developer's environment: no inherited
/// `CFGNODE_*` or `RUST_LOG`, run in `cwd` (so a default `./cfgnode-data` would land in the temp
/// dir, never in the source tree), stdin closed.
pub fn command(cwd: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd).stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CFGNODE_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd
}

/// A fresh path for one process's output, in `dir`.
fn output_path(dir: &Path, stream: &str) -> PathBuf {
    let n = PROCESS_SEQ.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("cfgnode-{n}.{stream}"))
}

/// How a process that was expected to end by itself ended.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// What it wrote to stdout.
    pub stdout: String,
    /// What it wrote to stderr.
    pub stderr: String,
}

impl Finished {
    /// The exit code; panics (with the output) if a signal ended the process.
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {self:?}"))
    }
}

/// Runs the binary with `args` and extra `envs` in `dir` until it exits by itself, capturing
/// its output into files in `dir`. A process still running at [`EXIT_DEADLINE`] (for example a
/// start that should have been refused but serves instead) is SIGKILLed and the test fails.
pub async fn run_to_exit(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Finished {
    let stdout_path = output_path(dir, "stdout");
    let stderr_path = output_path(dir, "stderr");
    let mut child = KillOnDrop(
        command(dir)
            .args(args)
            .envs(envs.iter().copied())
            .stdout(std::fs::File::create(&stdout_path).expect("create the stdout file"))
            .stderr(std::fs::File::create(&stderr_path).expect("create the stderr file"))
            .spawn()
            .expect("spawn cfgnode"),
    );
    let what = format!("cfgnode {args:?} to exit by itself");
    let status = poll_until(&what, EXIT_DEADLINE, || {
        let exited = child.0.try_wait().expect("try_wait on the child");
        async move { exited }
    })
    .await;
    Finished {
        status,
        stdout: std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
    }
}

/// Sends `signal` (`"TERM"`, `"INT"`) to `pid` with `kill(1)`.
pub fn send_signal(pid: u32, signal: &str) {
    let sent = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill(1)");
    assert!(sent.success(), "kill -{signal} {pid} failed");
}

/// A signal ready to go to a process with as little delay as possible: a shell already waits
/// in `read` to run its `kill` builtin, so firing costs a pipe write and a wake-up, not a fork
/// and exec of `kill(1)`.
pub struct ArmedSignal {
    shell: KillOnDrop,
}

impl ArmedSignal {
    /// Prepares `signal` (`"TERM"`, `"INT"`) for `pid`.
    pub fn new(pid: u32, signal: &str) -> ArmedSignal {
        let shell = Command::new("sh")
            .arg("-c")
            .arg(r#"read _ && kill -"$0" "$1""#)
            .arg(signal)
            .arg(pid.to_string())
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        ArmedSignal {
            shell: KillOnDrop(shell),
        }
    }

    /// Sends the signal and waits until it is sent.
    pub fn fire(mut self) {
        use std::io::Write;
        let mut stdin = self.shell.0.stdin.take().expect("piped stdin");
        stdin.write_all(b"go\n").expect("write to sh");
        drop(stdin);
        let status = self.shell.0.wait().expect("wait for sh");
        assert!(status.success(), "sh could not send the signal: {status}");
    }
}

/// A child process that is SIGKILLed and reaped when dropped (a no-op once it has exited).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One way to run `cfgnode start`.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The test's temp dir: the processes run there and their stderr files go there.
    pub root: PathBuf,
    /// The data dir handed to the node.
    pub data_dir: PathBuf,
    /// Pass the data dir and the HTTP address as `CFGNODE_DATA_DIR` / `CFGNODE_HTTP` instead of
    /// `--data-dir` / `--http`.
    pub via_env: bool,
    /// More arguments after `start`.
    pub args: Vec<String>,
    /// More environment variables.
    pub envs: Vec<(String, String)>,
    /// The admin token the node will accept, when it does not come from `<data-dir>/admin.token`
    /// (`--token-file`).
    pub token: Option<String>,
}

impl Launch {
    /// `cfgnode start --data-dir <root>/data` with defaults.
    pub fn new(root: &Path) -> Launch {
        Launch {
            root: root.to_path_buf(),
            data_dir: root.join("data"),
            via_env: false,
            args: Vec::new(),
            envs: Vec::new(),
            token: None,
        }
    }

    /// Adds arguments after `start`.
    pub fn args(mut self, args: &[&str]) -> Launch {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, name: &str, value: &str) -> Launch {
        self.envs.push((name.to_string(), value.to_string()));
        self
    }

    /// Spawns `cfgnode start` on a fresh port without waiting for anything: for tests that
    /// race the start. Returns the process, its HTTP address and its stderr file.
    pub fn spawn_unchecked(&self) -> (KillOnDrop, SocketAddr, PathBuf) {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let quic = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        let stderr_path = output_path(&self.root, "stderr");
        let child = self.spawn(addr, quic, &stderr_path);
        (KillOnDrop(child), addr, stderr_path)
    }

    fn spawn(&self, http: SocketAddr, quic: SocketAddr, stderr_path: &Path) -> Child {
        let mut cmd = command(&self.root);
        cmd.arg("start").arg("--listen").arg(quic.to_string());
        if self.via_env {
            cmd.env("CFGNODE_DATA_DIR", &self.data_dir)
                .env("CFGNODE_HTTP", http.to_string());
        } else {
            cmd.arg("--data-dir")
                .arg(&self.data_dir)
                .arg("--http")
                .arg(http.to_string());
        }
        cmd.args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(stderr_path).expect("create the stderr file"))
            .spawn()
            .expect("spawn cfgnode start")
    }
}

/// A UDP loopback port that was free a moment ago (QUIC listens on UDP).
pub fn free_udp_port() -> u16 {
    let socket =
        std::net::UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral loopback UDP port");
    socket
        .local_addr()
        .expect("a bound socket has an address")
        .port()
}

/// `--http` and `--listen` with fresh loopback ports, for a start that is expected to be
/// refused: it must not fail on a taken default port instead.
pub fn fresh_address_args() -> Vec<String> {
    vec![
        "--http".to_string(),
        format!("127.0.0.1:{}", free_port()),
        "--listen".to_string(),
        format!("127.0.0.1:{}", free_udp_port()),
    ]
}

/// Whether a start failed because an address was taken (another process won the free port).
fn is_address_clash(stderr: &str) -> bool {
    stderr.contains("cannot listen on") || stderr.contains("Address already in use")
}

/// What a start attempt came to.
enum Started {
    /// Serving on the address, accepting the token.
    Ready(String),
    /// The process exited before serving.
    Exited(ExitStatus),
}

/// A running `cfgnode start` process. Dropping it SIGKILLs the process.
pub struct Node {
    child: Child,
    /// How it was started (to restart it on the same data dir).
    pub launch: Launch,
    /// The HTTP admin address.
    pub addr: SocketAddr,
    /// The QUIC address (for the CLI's data commands).
    pub quic: SocketAddr,
    /// `http://<addr>`.
    pub base: String,
    /// The admin token it accepts.
    pub token: String,
    /// Where its stderr goes.
    pub stderr_path: PathBuf,
    /// A client for requests to it.
    pub http: reqwest::Client,
}

impl Node {
    /// Starts `launch` on a free port and waits until it serves; retries on another port when the
    /// port was taken meanwhile. Panics with the node's stderr if it fails otherwise.
    pub async fn start(launch: &Launch) -> Node {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("build an HTTP client");
        let mut clashes = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let quic = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
            let stderr_path = output_path(&launch.root, "stderr");
            let mut node = Node {
                child: launch.spawn(addr, quic, &stderr_path),
                launch: launch.clone(),
                addr,
                quic,
                base: format!("http://{addr}"),
                token: String::new(),
                stderr_path,
                http: http.clone(),
            };
            match node.wait_serving().await {
                Started::Ready(token) => {
                    node.token = token;
                    return node;
                }
                Started::Exited(status) => {
                    let stderr = node.stderr();
                    assert!(
                        is_address_clash(&stderr),
                        "cfgnode start exited with {status} before serving; stderr:\n{stderr}"
                    );
                    clashes.push(addr);
                }
            }
        }
        panic!("cfgnode could not bind any of {clashes:?}");
    }

    /// Starts the same launch again (same data dir, flags and environment), on a new port.
    pub async fn restart(&self) -> Node {
        Node::start(&self.launch).await
    }

    /// Starts the same launch again on the same HTTP and QUIC ports (after this one exited),
    /// so clients configured with its address find it again.
    pub async fn restart_in_place(&self) -> Node {
        let stderr_path = output_path(&self.launch.root, "stderr");
        let mut node = Node {
            child: self.launch.spawn(self.addr, self.quic, &stderr_path),
            launch: self.launch.clone(),
            addr: self.addr,
            quic: self.quic,
            base: self.base.clone(),
            token: String::new(),
            stderr_path,
            http: self.http.clone(),
        };
        match node.wait_serving().await {
            Started::Ready(token) => {
                node.token = token;
                node
            }
            Started::Exited(status) => panic!(
                "cfgnode did not restart on {} / {}: {status}; stderr:\n{}",
                self.addr,
                self.quic,
                node.stderr()
            ),
        }
    }

    /// Polls until `/health` answers and the token is accepted on a local route (so the answer came from this
    /// process, not from a stranger that holds the port), or until the process exits.
    async fn wait_serving(&mut self) -> Started {
        let end = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait on the child") {
                return Started::Exited(status);
            }
            if let Some(token) = self.probe().await {
                return Started::Ready(token);
            }
            assert!(
                Instant::now() < end,
                "cfgnode did not serve on {} within {START_DEADLINE:?}; stderr:\n{}",
                self.addr,
                self.stderr()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// One readiness probe: `Some(token)` when this node serves.
    async fn probe(&self) -> Option<String> {
        let health = self
            .http
            .get(format!("{}/health", self.base))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        if health.status() != StatusCode::OK {
            return None;
        }
        let token = match &self.launch.token {
            Some(token) => token.clone(),
            None => std::fs::read_to_string(self.launch.data_dir.join("admin.token"))
                .ok()?
                .trim()
                .to_string(),
        };
        let authed = self
            .http
            .get(format!("{}/v1/codecs", self.base))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        (authed.status() == StatusCode::OK).then_some(token)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.launch.data_dir
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// A request with the admin token; `path` starts with `/`.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("try_wait on the child")
            .is_none()
    }

    /// SIGKILL (`Child::kill` sends SIGKILL on Unix), then reap.
    pub fn kill9(&mut self) -> ExitStatus {
        self.child.kill().expect("SIGKILL the node");
        self.child.wait().expect("reap the node")
    }

    /// Sends `signal` (`"TERM"`, `"INT"`) with `kill(1)` and waits for the process to exit.
    pub async fn signal_and_wait(&mut self, signal: &str) -> ExitStatus {
        send_signal(self.pid(), signal);
        let end = Instant::now() + EXIT_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait on the child") {
                return status;
            }
            // The stderr shows how far the shutdown got (a hang names its last step).
            assert!(
                Instant::now() < end,
                "cfgnode still running {EXIT_DEADLINE:?} after SIG{signal}; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // SIGKILL, so a failing test leaves no process behind; harmless once it has exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a command printed on stdout, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What a command printed on stderr, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a command's exit code, showing both its outputs when it differs.
pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

impl Node {
    /// `cfgnode ARGS --addr QUIC --timeout 10s --data-dir DIR`: a client command against this
    /// node, with its token and certificate from the data dir.
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut command = command(&self.launch.root);
        command
            .args(args)
            .args(["--addr", &self.quic.to_string(), "--timeout", "10s"])
            .arg("--data-dir")
            .arg(self.data_dir());
        command
    }

    /// Runs [`Node::cli_command`] to its end.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with(args, &[])
    }

    /// Runs [`Node::cli_command`] with `extra` arguments after the connection flags.
    pub fn cli_with(&self, args: &[&str], extra: &[&str]) -> Output {
        self.cli_command(args)
            .args(extra)
            .output()
            .expect("run cfgnode")
    }

    /// Runs [`Node::cli_command`] with `input` on its stdin.
    pub fn cli_with_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .cli_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cfgnode");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("cfgnode exits")
    }

    /// Runs a command with `--output json`, expects exit 0, and parses its output.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.cli(&all);
        assert_exit(&out, 0);
        serde_json::from_slice(&out.stdout).expect("json output")
    }
}

/// Starts cluster member `name` under `dir` (its root `dir/name`), with the shared token and
/// cluster key files `dir/token` and `dir/cluster.key` (see [`write_cluster_key`]), joining
/// `seed` unless it is the first, with `extra` flags and environment `envs`.
pub async fn start_member(
    dir: &Path,
    name: &str,
    seed: Option<&str>,
    token: &str,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> Node {
    let root = dir.join(name);
    std::fs::create_dir_all(&root).expect("node dir");
    let token_file = dir.join("token").to_string_lossy().into_owned();
    let key_file = dir.join("cluster.key").to_string_lossy().into_owned();
    let mut args = vec![
        "--node-id",
        name,
        "--token-file",
        &token_file,
        "--cluster-key-file",
        &key_file,
    ];
    args.extend(extra);
    if let Some(seed) = seed {
        args.extend(["--join", seed]);
    }
    let mut launch = Launch::new(&root).args(&args);
    for (name, value) in envs {
        launch = launch.env(name, value);
    }
    launch.token = Some(token.to_string());
    Node::start(&launch).await
}

/// Waits (up to 30 s) until every node in `nodes` sees every member in `names` alive.
pub async fn alive_everywhere(nodes: &[Node], names: &[&str]) {
    for node in nodes {
        for name in names {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut last = serde_json::Value::Null;
            loop {
                let body: Option<serde_json::Value> = async {
                    node.request(Method::GET, "/v1/cluster/members")
                        .send()
                        .await
                        .ok()?
                        .json()
                        .await
                        .ok()
                }
                .await;
                if let Some(body) = body {
                    let alive = body["members"].as_array().is_some_and(|ms| {
                        ms.iter().any(|m| m["id"] == *name && m["state"] == "alive")
                    });
                    if alive {
                        break;
                    }
                    last = body;
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out after 30s waiting for {name} alive as seen by {}; its member list: {last}",
                    node.addr
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
