//! Registry figures for docs/benchmarks.md, with real in-process nodes on loopback:
//!
//! - **registrations**: `REGISTRATIONS` (default 20 000) instance PUTs without a check through
//!   the HTTP API of one node, from 64 keep-alive connections; ops/s and p50 / p99 latency.
//! - **checks**: `INSTANCES` (default 10 000) instances with 1 s HTTP checks (timeout 500 ms)
//!   on one holder, against raw-TCP HTTP/1.1 responders (keep-alive, `200`) in a **child
//!   process** (this same binary, re-run with `REGBENCH_RESPONDERS` set), so the node's CPU
//!   (this process) and the responders' CPU (the child) are measured apart. Over a window of
//!   `SECONDS` (default 20 s) after a warm-up: checks/s (the node's `cfgnode_registry_checks`
//!   counter), CPU of both processes, the node process's resident memory before and after
//!   registering, and the lag of checks behind their schedule measured where the request
//!   arrives (the responders) as well as the node's own lag histogram.
//! - **detection**: 3 nodes; an instance with a 200 ms check and `unhealthy_after` 3 whose
//!   backend is killed (listener and connections closed, so connections are refused); the time
//!   until a watcher on a node that does not hold the namespace sees `unhealthy` over SSE,
//!   `RUNS` (default 10) times, against the goal interval x threshold + 100 ms = 700 ms.
//!
//! Run: `cargo bench -p cfgnode-tests --bench registry` (optimized build).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use cfgnode_node::Node;
use cfgnode_tests::{
    DEADLINE, SseReader, TOKEN, TestCluster, metric_sum, poll_until, shutdown_all,
};
use hdrhistogram::Histogram;
use reqwest::Method;
use serde_json::{Value, json};

/// Set in the child process that runs the responders: how many listeners to open.
const RESPONDER_ENV: &str = "REGBENCH_RESPONDERS";
/// Concurrent HTTP connections that register.
const CONNECTIONS: usize = 64;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time (user + system) of process `pid` ("self" for this one), from /proc (Linux).
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces, so split after its ')').
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    // /proc reports in USER_HZ, which is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// Resident memory of this process, in MiB (Linux).
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// PUTs `count` instances `service/{prefix}{i}` into `ns` through `node` from [`CONNECTIONS`]
/// keep-alive connections; `body(i)` is instance `i`'s registration. Returns the latency of
/// every PUT (µs) and the wall time.
async fn register_all(
    node: &Node,
    ns: &str,
    service: &str,
    count: usize,
    body: impl Fn(usize) -> Value + Send + Sync + Clone + 'static,
) -> (Histogram<u64>, Duration) {
    let base = format!(
        "http://{}/v1/namespaces/{ns}/services/{service}/instances",
        node.http_addr()
    );
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..CONNECTIONS {
        // One client per connection: a pool of at most one idle connection, used serially.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .no_proxy()
            .build()
            .expect("client");
        let base = base.clone();
        let body = body.clone();
        workers.spawn(async move {
            let mut histogram = Histogram::<u64>::new(3).expect("histogram");
            let mut i = w;
            while i < count {
                let sent = Instant::now();
                let resp = client
                    .put(format!("{base}/i{i}"))
                    .bearer_auth(TOKEN)
                    .json(&body(i))
                    .send()
                    .await
                    .expect("the node answers");
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                assert!(status.is_success(), "PUT instance {i}: {status} {text}");
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                histogram.record(micros).expect("record");
                i += CONNECTIONS;
            }
            histogram
        });
    }
    let mut all = Histogram::<u64>::new(3).expect("histogram");
    while let Some(h) = workers.join_next().await {
        all.add(h.expect("worker")).expect("add");
    }
    (all, started.elapsed())
}

async fn registrations() {
    let count = env("REGISTRATIONS", 20_000);
    let mut cluster = TestCluster::start(1).await;
    let node = cluster.node(0);
    cluster.put(node, "regs", "seed", "x").await;
    let (latency, took) = register_all(node, "regs", "web", count, |i| {
        json!({"endpoints": [{"name": "api", "protocol": "http", "address": "10.0.0.5",
               "port": 8080 + (i % 1000)}], "tags": ["v1"], "metadata": {"zone": "a"}})
    })
    .await;
    println!(
        "registrations: {count} instance PUTs (no check) through HTTP, {CONNECTIONS} keep-alive connections, one node: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        count as f64 / took.as_secs_f64(),
        ms(latency.value_at_quantile(0.50)),
        ms(latency.value_at_quantile(0.99)),
        ms(latency.max()),
    );
    shutdown_all(&mut cluster).await;
}

/// The responders' child process and its pipes.
struct Responders {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    ports: Vec<u16>,
}

impl Responders {
    fn start(listeners: usize) -> Responders {
        let mut child = Command::new(std::env::current_exe().expect("this binary"))
            .env(RESPONDER_ENV, listeners.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the responders");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the responders' ports");
        let ports = line
            .split_whitespace()
            .map(|p| p.parse().expect("a port"))
            .collect();
        Responders {
            child,
            stdin,
            stdout,
            ports,
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Sends a command; `stop` answers with one JSON line of figures (the responders keep
    /// answering until they are dropped).
    fn command(&mut self, what: &str) -> Option<Value> {
        writeln!(self.stdin, "{what}").expect("command the responders");
        self.stdin.flush().expect("flush");
        if what != "stop" {
            return None;
        }
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("the responders' figures");
        Some(serde_json::from_str(&line).expect("figures are JSON"))
    }
}

impl Drop for Responders {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The node's probe-lag histogram: cumulative `(upper bound s, count)` buckets.
fn lag_buckets(page: &str) -> Vec<(f64, f64)> {
    page.lines()
        .filter(|l| l.starts_with("cfgnode_registry_check_lag_seconds_bucket{"))
        .filter_map(|l| {
            // The node's constant labels sit next to `le`, in either order.
            let (_, from_le) = l.split_once("le=\"")?;
            let (le, _) = from_le.split_once('"')?;
            let rest = l.rsplit_once('}')?.1;
            let count = rest.rsplit(' ').next()?.parse().ok()?;
            Some((le.parse().ok()?, count))
        })
        .collect()
}

/// The upper bound of the bucket holding quantile `q` of the difference of two scrapes.
fn bucket_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> f64 {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .zip(before)
        .map(|((le, a), (_, b))| (*le, a - b))
        .collect();
    let total = delta.last().map(|(_, c)| *c).unwrap_or(0.0);
    delta
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(le, _)| *le)
        .unwrap_or(f64::NAN)
}

async fn checks() {
    let instances = env("INSTANCES", 10_000);
    let seconds = env("SECONDS", 20);
    let mut responders = Responders::start(4);
    let mut cluster = TestCluster::start(1).await;
    let node = cluster.node(0);
    cluster.put(node, "checked", "seed", "x").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss_mib();
    let ports = responders.ports.clone();
    let started = Instant::now();
    let (latency, took) = register_all(node, "checked", "web", instances, move |i| {
        let port = ports[i % ports.len()];
        json!({"endpoints": [{"name": "api", "protocol": "http", "address": "127.0.0.1", "port": port}],
               "check": {"kind": "http", "url": format!("http://127.0.0.1:{port}/i/{i}"),
                         "interval": "1s", "timeout": "500ms"}})
    })
    .await;
    let registered = took.as_secs_f64();
    let rss_registered = rss_mib();
    poll_until("every instance checked", DEADLINE, || async {
        let page = cluster.metrics(node).await;
        (metric_sum(&page, "cfgnode_registry_checked_instances", "") as usize == instances)
            .then_some(())
    })
    .await;
    // Warm-up: every probe past its random first offset, the keep-alive pools filled.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let page = cluster.metrics(node).await;
    let (ok0, failed0) = (
        metric_sum(&page, "cfgnode_registry_checks_total", "outcome=\"ok\""),
        metric_sum(&page, "cfgnode_registry_checks_total", "outcome=\"failed\""),
    );
    let lag0 = lag_buckets(&page);
    let (cpu0, child0, wall0) = (
        cpu_time("self"),
        cpu_time(&responders.pid()),
        Instant::now(),
    );
    responders.command("start");
    tokio::time::sleep(Duration::from_secs(seconds as u64)).await;
    let figures = responders.command("stop").expect("figures");
    let (cpu1, child1, wall) = (
        cpu_time("self"),
        cpu_time(&responders.pid()),
        wall0.elapsed().as_secs_f64(),
    );
    let page = cluster.metrics(node).await;
    let (ok1, failed1) = (
        metric_sum(&page, "cfgnode_registry_checks_total", "outcome=\"ok\""),
        metric_sum(&page, "cfgnode_registry_checks_total", "outcome=\"failed\""),
    );
    let lag1 = lag_buckets(&page);
    let rss_after = rss_mib();
    let failing = failing_outputs(&cluster, node).await;
    println!(
        "checks: registered {instances} instances with 1 s HTTP checks in {registered:.2} s ({:.0}/s, p99 {:.2} ms)",
        instances as f64 / registered,
        ms(latency.value_at_quantile(0.99)),
    );
    println!(
        "checks: over {wall:.1} s: {:.0} checks/s run ({:.0} failed in all), responders saw {:.0} requests/s",
        (ok1 + failed1 - ok0 - failed0) / wall,
        failed1 - failed0,
        figures["requests_per_second"].as_f64().unwrap_or(f64::NAN),
    );
    println!(
        "checks: CPU of the node process {:.0} % of one core, of the responders' process {:.0} %; node process RSS {rss_before:.1} MiB before registering, {rss_registered:.1} MiB just after, {rss_after:.1} MiB at the end, {:.0} s after registering began ({:.1} KiB per instance); {} connections to the responders",
        (cpu1 - cpu0).as_secs_f64() / wall * 100.0,
        (child1 - child0).as_secs_f64() / wall * 100.0,
        wall0.duration_since(started).as_secs_f64() + wall,
        (rss_after - rss_before) * 1024.0 / instances as f64,
        figures["connections"],
    );
    println!(
        "checks: lag at the responders (arrival vs the instance's own 1 s schedule): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; |interval - 1 s| between arrivals p50 {:.2} ms, p99 {:.2} ms; {} rounds missed",
        figures["lag_p50_ms"].as_f64().unwrap_or(f64::NAN),
        figures["lag_p99_ms"].as_f64().unwrap_or(f64::NAN),
        figures["lag_max_ms"].as_f64().unwrap_or(f64::NAN),
        figures["jitter_p50_ms"].as_f64().unwrap_or(f64::NAN),
        figures["jitter_p99_ms"].as_f64().unwrap_or(f64::NAN),
        figures["missed"],
    );
    println!(
        "checks: node's cfgnode_registry_check_lag_seconds (start vs schedule): p50 <= {:.2} ms, p99 <= {:.2} ms (bucket upper bounds)",
        bucket_quantile(&lag0, &lag1, 0.50) * 1000.0,
        bucket_quantile(&lag0, &lag1, 0.99) * 1000.0,
    );
    if !failing.is_empty() {
        println!("checks: instances whose latest check failed, by output: {failing:?}");
    }
    shutdown_all(&mut cluster).await;
    drop(responders);
}

/// How many instances of `checked/web` have a failed latest check, by the check's output.
async fn failing_outputs(
    cluster: &TestCluster,
    node: &Node,
) -> std::collections::BTreeMap<String, usize> {
    let view = cluster
        .get_json(node, "/v1/namespaces/checked/services/web")
        .await;
    let mut outputs = std::collections::BTreeMap::new();
    for instance in view["instances"].as_array().into_iter().flatten() {
        let check = &instance["last_check"];
        if check["ok"] == false {
            let mut output = check["output"].as_str().unwrap_or_default().to_string();
            // Group by what happened, not by URL.
            if let Some(from) = output.find(" (http://")
                && let Some(len) = output[from..].find(')')
            {
                output.replace_range(from..from + len + 1, "");
            }
            *outputs.entry(output).or_insert(0) += 1;
        }
    }
    outputs
}

/// A backend for the detection runs: answers `200` (keep-alive) until killed.
struct Backend {
    url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start() -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a backend");
        let url = format!("http://{}/health", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            // Connections live in the set: aborting the server drops the listener (refused
            // from now on) and every open connection with it.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((socket, _)) = listener.accept().await {
                connections.spawn(responder::serve(socket, |_| {}));
            }
        });
        Backend { url, server }
    }

    fn kill(&self) {
        self.server.abort();
    }
}

async fn detection() {
    const NS: &str = "detect";
    let runs = env("RUNS", 10);
    let (interval_ms, threshold) = (200u64, 3u64);
    let goal = interval_ms * threshold + 100;
    let mut cluster = TestCluster::start(3).await;
    cluster.put(cluster.node(0), NS, "seed", "x").await;
    let holder = cluster.index_of(&cluster.wait_settled(NS).await);
    let others: Vec<usize> = (0..3).filter(|i| *i != holder).collect();
    let (via, watcher) = (cluster.node(others[0]), cluster.node(others[1]));
    let response = cluster
        .request(watcher, Method::GET, &format!("/v1/watch?namespaces={NS}"))
        .send()
        .await
        .expect("watch");
    assert_eq!(response.status(), 200);
    // (instance record name, status, when the watcher read it).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String, Instant)>();
    let reader = tokio::spawn(async move {
        let mut sse = SseReader::new(response);
        loop {
            let m = sse.next_change().await;
            if m.data["kind"] == "instance" {
                let name = m.data["name"].as_str().unwrap_or_default().to_string();
                let status = m.data["value"]["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if tx.send((name, status, Instant::now())).is_err() {
                    return;
                }
            }
        }
    });
    let wait_for =
        async |rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, String, Instant)>,
               name: &str,
               want: &str| {
            tokio::time::timeout(DEADLINE, async {
                loop {
                    let (n, s, at) = rx.recv().await.expect("the watch stays open");
                    if n == name && s == want {
                        return at;
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{name} {want} within {DEADLINE:?}"))
        };
    let mut took = Vec::new();
    for run in 0..runs {
        let backend = Backend::start().await;
        let path = format!("/v1/namespaces/{NS}/services/web/instances/b{run}");
        let resp = cluster
            .request(via, Method::PUT, &path)
            .json(&json!({"endpoints": [{"protocol": "http", "address": "127.0.0.1", "port": 1}],
                "check": {"kind": "http", "url": backend.url, "interval": format!("{interval_ms}ms"),
                          "timeout": "150ms", "unhealthy_after": threshold, "healthy_after": 1}}))
            .send()
            .await
            .expect("register");
        assert_eq!(resp.status(), 201, "{:?}", resp.text().await);
        let name = format!("web/b{run}");
        wait_for(&mut rx, &name, "healthy").await;
        // Kill at a random phase of the probe schedule (being healthy was seen just after a
        // probe): a few rounds, then 0..interval more.
        let phase = u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos(),
        ) % interval_ms;
        tokio::time::sleep(Duration::from_millis(3 * interval_ms + phase)).await;
        backend.kill();
        let killed = Instant::now();
        let seen = wait_for(&mut rx, &name, "unhealthy").await;
        took.push(seen.saturating_duration_since(killed));
        let resp = cluster
            .request(via, Method::DELETE, &path)
            .send()
            .await
            .expect("deregister");
        assert!(resp.status().is_success());
    }
    took.sort();
    let show = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    println!(
        "detection: backend killed -> unhealthy seen by an SSE watcher on a non-holder node, check every {interval_ms} ms, unhealthy_after {threshold}, {runs} runs: min {}, median {}, max {} (goal <= {goal} ms); all: {}",
        show(took[0]),
        show(took[took.len() / 2]),
        show(took[took.len() - 1]),
        took.iter().map(|d| show(*d)).collect::<Vec<_>>().join(", "),
    );
    reader.abort();
    shutdown_all(&mut cluster).await;
}

/// The responders' process: HTTP/1.1 over raw TCP, keep-alive, `200 ok` to every GET, and a
/// record of when each instance's check (`/i/{n}`) arrived.
mod responder {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Arrival times (µs since the process started) per instance.
    type Arrivals = Arc<Mutex<Vec<Vec<u64>>>>;

    /// Answers requests on one connection until it closes; `seen(path)` for each.
    pub async fn serve(mut socket: tokio::net::TcpStream, seen: impl Fn(&str)) {
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        loop {
            while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                buf.drain(..end + 4);
                let path = head.split(' ').nth(1).unwrap_or_default();
                seen(path);
                let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if socket.write_all(reply).await.is_err() {
                    return;
                }
            }
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The child's main: prints its ports, serves, and on `stop` prints the figures of the
    /// window since `start` as one JSON line; it exits when its stdin closes.
    pub fn main(listeners: usize) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let epoch = Instant::now();
        let arrivals: Arrivals = Arc::default();
        let connections = Arc::new(AtomicUsize::new(0));
        runtime.block_on(async {
            let mut ports = Vec::new();
            for _ in 0..listeners {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind a responder");
                ports.push(listener.local_addr().expect("addr").port().to_string());
                let arrivals = Arc::clone(&arrivals);
                let connections = Arc::clone(&connections);
                tokio::spawn(async move {
                    while let Ok((socket, _)) = listener.accept().await {
                        connections.fetch_add(1, Ordering::Relaxed);
                        let arrivals = Arc::clone(&arrivals);
                        tokio::spawn(serve(socket, move |path| {
                            let Some(i) = path
                                .strip_prefix("/i/")
                                .and_then(|i| i.parse::<usize>().ok())
                            else {
                                return;
                            };
                            let at = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
                            let mut all = arrivals.lock().expect("arrivals");
                            if all.len() <= i {
                                all.resize_with(i + 1, Vec::new);
                            }
                            all[i].push(at);
                        }));
                    }
                });
            }
            println!("{}", ports.join(" "));
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            std::thread::spawn(move || {
                for line in std::io::stdin().lines() {
                    let Ok(line) = line else { return };
                    let at = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
                    if tx.send((line, at)).is_err() {
                        return;
                    }
                }
            });
            let mut start = 0;
            while let Some((line, at)) = rx.recv().await {
                match line.trim() {
                    "start" => start = at,
                    "stop" => {
                        let all = arrivals.lock().expect("arrivals").clone();
                        let mut figures = figures(&all, start, at);
                        figures["connections"] = connections.load(Ordering::Relaxed).into();
                        println!("{figures}");
                        // Keep answering: the node still checks (until stdin closes).
                    }
                    _ => {}
                }
            }
        });
    }

    /// The figures of the arrivals within `[start, stop]` (µs): requests/s; per instance, the
    /// lag of each arrival behind the instance's 1 s schedule, taking its earliest arrival
    /// (relative to the schedule) as on time; the deviation of gaps from 1 s; rounds missed.
    fn figures(all: &[Vec<u64>], start: u64, stop: u64) -> serde_json::Value {
        const INTERVAL: f64 = 1_000_000.0;
        let mut lag = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
        let mut jitter = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
        let (mut requests, mut missed) = (0u64, 0u64);
        for arrivals in all {
            let window: Vec<u64> = arrivals
                .iter()
                .copied()
                .filter(|t| (start..=stop).contains(t))
                .collect();
            requests += window.len() as u64;
            let Some(first) = window.first() else {
                continue;
            };
            // Round k of the schedule: the nearest whole interval after the first arrival.
            let offsets: Vec<f64> = window
                .iter()
                .map(|t| {
                    let since = (t - first) as f64;
                    since - (since / INTERVAL).round() * INTERVAL
                })
                .collect();
            let on_time = offsets.iter().copied().fold(f64::INFINITY, f64::min);
            for o in &offsets {
                lag.record((o - on_time) as u64).expect("record");
            }
            for pair in window.windows(2) {
                let gap = (pair[1] - pair[0]) as f64;
                jitter
                    .record((gap - INTERVAL).abs() as u64)
                    .expect("record");
                if gap > 1.5 * INTERVAL {
                    missed += (gap / INTERVAL).round() as u64 - 1;
                }
            }
        }
        let ms = |us: u64| us as f64 / 1000.0;
        serde_json::json!({
            "requests_per_second": requests as f64 / ((stop - start) as f64 / 1e6),
            "lag_p50_ms": ms(lag.value_at_quantile(0.5)),
            "lag_p99_ms": ms(lag.value_at_quantile(0.99)),
            "lag_max_ms": ms(lag.max()),
            "jitter_p50_ms": ms(jitter.value_at_quantile(0.5)),
            "jitter_p99_ms": ms(jitter.value_at_quantile(0.99)),
            "missed": missed,
        })
    }
}

fn main() {
    if let Some(listeners) = std::env::var(RESPONDER_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        responder::main(listeners);
        return;
    }
    cfgnode_tests::run_bench(async {
        // Checks first: the process's resident memory is measured before anything else ran.
        checks().await;
        registrations().await;
        detection().await;
    });
}
