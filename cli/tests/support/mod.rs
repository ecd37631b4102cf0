//! Runs the real `cfgnode` binary for process-level tests: spawn on a free loopback port with a
//! temp data dir, wait for health, kill with SIGKILL (also on drop, so a failing test leaks no
//! process).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to answer /health after spawning.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// A `cfgnode start` child process.
pub struct NodeProcess {
    child: Option<Child>,
    /// The data dir.
    pub dir: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The QUIC address, `127.0.0.1:PORT`.
    pub quic: String,
    /// The admin token.
    pub token: String,
    /// Where the child's stderr goes.
    pub log: PathBuf,
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// A UDP port that was free a moment ago (for `--listen`).
pub fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral UDP port");
    socket.local_addr().expect("local addr").port()
}

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_cfgnode")
}

/// Polls `f` until it returns `Some`, or panics with `what` at the deadline.
pub async fn poll_until<T, F, Fut>(deadline: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(value) = f().await {
            return value;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl NodeProcess {
    /// Starts a node on `dir` with extra flags, retrying on a port clash, and waits for health.
    pub async fn start(dir: &Path, extra: &[&str]) -> NodeProcess {
        for _ in 0..5 {
            let port = free_port();
            let quic = format!("127.0.0.1:{}", free_udp_port());
            let log = dir.with_extension(format!("{port}.log"));
            let child = Command::new(binary())
                .arg("start")
                .arg("--data-dir")
                .arg(dir)
                .arg("--http")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--listen")
                .arg(&quic)
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .expect("spawn cfgnode");
            let mut node = NodeProcess {
                child: Some(child),
                dir: dir.to_path_buf(),
                base: format!("http://127.0.0.1:{port}"),
                quic,
                token: String::new(),
                log,
            };
            if node.wait_healthy().await {
                // Absent when the node was started with --token-file.
                node.token = std::fs::read_to_string(dir.join("admin.token"))
                    .map(|t| t.trim().to_string())
                    .unwrap_or_default();
                return node;
            }
            // Exited early (most likely the port was taken meanwhile): try another port.
            node.kill9();
        }
        panic!("cfgnode did not start on any of 5 ports");
    }

    /// True once /health answers; false if the process exits first.
    async fn wait_healthy(&mut self) -> bool {
        let client = reqwest::Client::new();
        let end = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(resp) = client.get(format!("{}/health", self.base)).send().await
                && resp.status().is_success()
            {
                return true;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                return false;
            }
            assert!(
                Instant::now() < end,
                "cfgnode not healthy in time; log: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (e.g. "TERM") and waits for the exit, up to a deadline.
    pub async fn signal_and_wait(&mut self, signal: &str) -> ExitStatus {
        let pid = self.pid().to_string();
        let sent = Command::new("kill")
            .args([format!("-{signal}"), pid])
            .status()
            .expect("kill");
        assert!(sent.success());
        let mut child = self.child.take().expect("running");
        poll_until(Duration::from_secs(30), "the node to exit", || {
            let status = child.try_wait().expect("try_wait");
            async move { status }
        })
        .await
    }

    /// What the node logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
