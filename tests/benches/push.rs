//! Push figures for docs/benchmarks.md, with real in-process nodes on loopback:
//!
//! - **watch latency**: `WATCHERS` watchers (default 1000) spread over 3 nodes, each on one of
//!   10 namespaces, while writers write `RATE` writes/s (default 500) for `SECONDS` (default
//!   10); the time from a write's acknowledgement (at the writer) to its arrival at each
//!   watcher, as p50 / p99 / max. An event that arrives before its writer saw the
//!   acknowledgement counts as 0.
//! - **idle watcher memory**: the process's resident memory before and after opening
//!   `IDLE` (default 5000) idle watches on one node, per watch. Client and node share the
//!   process, so the figure covers both ends of a watch.
//!
//! Run: `cargo bench -p cfgnode-tests --bench push` (optimized build).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cfgnode_client::{PutOptions, WatchEvent, WatchOptions};
use cfgnode_tests::{TestCluster, shutdown_all};
use hdrhistogram::Histogram;

const NAMESPACES: usize = 10;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Write acknowledgements: (namespace index, revision) -> when the writer saw the ack.
type Acks = Arc<Mutex<HashMap<(usize, u64), Instant>>>;

async fn latency() {
    let watchers = env("WATCHERS", 1000);
    let rate = env("RATE", 500);
    let seconds = env("SECONDS", 10);
    let mut cluster = TestCluster::start(3).await;
    let clients: Vec<_> = cluster.running().map(|n| cluster.client(n)).collect();
    // Create the namespaces (spread by the ring) before anyone watches.
    for ns in 0..NAMESPACES {
        cluster
            .put(cluster.node(ns % 3), &format!("ns{ns}"), "seed", "0")
            .await;
    }
    let total_writes = rate * seconds;
    let per_namespace = total_writes / NAMESPACES;

    // Watchers: watcher i on node i % 3, namespace i % 10.
    let mut tasks = tokio::task::JoinSet::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(watchers);
    for i in 0..watchers {
        let client = clients[i % 3].clone();
        let ns = i % NAMESPACES;
        let ready = ready_tx.clone();
        tasks.spawn(async move {
            // From now: the first item (progress) proves the stream is open end to end.
            let mut watch = client.watch(WatchOptions::new().namespace(format!("ns{ns}")));
            let first = watch.next().await.expect("watch opens");
            assert!(matches!(first, WatchEvent::Progress { .. }));
            let _ = ready.send(()).await;
            let mut arrivals = Vec::with_capacity(per_namespace);
            while arrivals.len() < per_namespace {
                match watch.next().await.expect("watch") {
                    WatchEvent::Change(e) => arrivals.push((ns, e.revision, Instant::now())),
                    WatchEvent::Progress { .. } => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            arrivals
        });
    }
    for _ in 0..watchers {
        ready_rx.recv().await;
    }

    let acks: Acks = Arc::default();
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for ns in 0..NAMESPACES {
        let client = clients[ns % 3].clone();
        let acks = Arc::clone(&acks);
        let every = Duration::from_secs_f64(NAMESPACES as f64 / rate as f64);
        writers.spawn(async move {
            let mut tick = tokio::time::interval(every);
            for i in 0..per_namespace {
                tick.tick().await;
                let written = client
                    .put(
                        &format!("ns{ns}"),
                        &format!("key/{}", i % 100),
                        format!("value {i}").into_bytes(),
                        PutOptions::default(),
                    )
                    .await
                    .expect("put");
                acks.lock()
                    .expect("acks")
                    .insert((ns, written.revision), Instant::now());
            }
        });
    }
    while writers.join_next().await.is_some() {}
    let wrote_for = started.elapsed();
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    let mut late = Vec::new();
    while let Some(arrivals) = tasks.join_next().await {
        late.push(arrivals.expect("watcher"));
    }
    let acks = std::mem::take(&mut *acks.lock().expect("acks"));
    for arrivals in &late {
        for (ns, revision, at) in arrivals {
            let acked = acks[&(*ns, *revision)];
            let micros = at.saturating_duration_since(acked).as_micros();
            histogram
                .record(u64::try_from(micros).unwrap_or(u64::MAX))
                .expect("record");
        }
    }
    println!(
        "watch latency, write ack -> watcher: {watchers} watchers over 3 nodes, {NAMESPACES} namespaces, {total_writes} writes at {:.0}/s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} deliveries",
        total_writes as f64 / wrote_for.as_secs_f64(),
        histogram.value_at_quantile(0.50) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        histogram.max() as f64 / 1000.0,
        histogram.len()
    );
    shutdown_all(&mut cluster).await;
}

/// Resident memory of this process, in bytes (Linux).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

async fn idle_memory() {
    let idle = env("IDLE", 5000);
    let mut cluster = TestCluster::start(1).await;
    let node = cluster.node(0);
    for ns in 0..NAMESPACES {
        cluster.put(node, &format!("idle{ns}"), "k", "v").await;
    }
    // Several connections (a QUIC connection carries at most 1024 streams).
    let clients: Vec<_> = (0..idle.div_ceil(1000))
        .map(|_| cluster.client(node))
        .collect();
    // Warm up: one watch per namespace, so the hub's topics exist before measuring.
    let mut watches = Vec::new();
    for ns in 0..NAMESPACES {
        let mut w = clients[0].watch(WatchOptions::new().namespace(format!("idle{ns}")));
        w.next().await.expect("progress");
        watches.push(w);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss();
    for i in 0..idle {
        let mut w = clients[i / 1000]
            .watch(WatchOptions::new().namespace(format!("idle{}", i % NAMESPACES)));
        // The first item (progress, "from now") proves the stream is open end to end.
        w.next().await.expect("progress");
        watches.push(w);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss();
    println!(
        "idle watchers: {idle} watches on one node raise resident memory by {:.1} MiB: {:.1} KiB per watch (client and node ends together)",
        after.saturating_sub(before) as f64 / (1024.0 * 1024.0),
        after.saturating_sub(before) as f64 / 1024.0 / idle as f64
    );
    drop(watches);
    shutdown_all(&mut cluster).await;
}

fn main() {
    cfgnode_tests::run_bench(async {
        latency().await;
        idle_memory().await;
    });
}
