//! Group commit at work: durable write throughput and batch sizes for 1, 16 and 64 concurrent
//! writers, with group commit and with the one-commit-per-write baseline (`max_batch: 1`).
//!
//! Prints a markdown table (with the process's CPU time per write, from `/proc/self/stat`);
//! asserts nothing. Run:
//!
//! ```sh
//! BENCH_SECS=5 cargo bench -p cfgnode-storage --bench commit_throughput
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cfgnode_storage::{
    Codec, CommitObserver, CommitStats, PutRequest, Store, StoreOptions, WriteMode,
};

#[derive(Default)]
struct Counts {
    commits: AtomicU64,
    writes: AtomicU64,
}

impl CommitObserver for Counts {
    fn on_commit(&self, stats: &CommitStats) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.writes
            .fetch_add(stats.batch_size as u64, Ordering::Relaxed);
    }
}

struct Figures {
    writes_per_sec: f64,
    commits_per_sec: f64,
    mean_batch: f64,
    p50_us: u128,
    p99_us: u128,
    cpu_us_per_write: f64,
}

/// This process's CPU time so far (user + system), from `/proc/self/stat`, in microseconds.
fn cpu_micros() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the name.
    (ticks(11) + ticks(12)) * 1e6 / 100.0
}

fn value() -> Vec<u8> {
    // A 256-byte JSON document.
    let filler = "x".repeat(256 - r#"{"v":""}"#.len());
    format!(r#"{{"v":"{filler}"}}"#).into_bytes()
}

async fn run_case(writers: usize, max_batch: usize, duration: Duration) -> Figures {
    let dir = tempfile::tempdir_in(std::env::temp_dir()).expect("tempdir");
    let counts = Arc::new(Counts::default());
    let options = StoreOptions {
        max_batch,
        observer: Some(Arc::clone(&counts) as Arc<dyn CommitObserver>),
        ..StoreOptions::default()
    };
    let store = Store::open(&dir.path().join("bench.redb"), None, options).expect("open");
    let started = Instant::now();
    let cpu_before = cpu_micros();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let request = PutRequest {
                    namespace: format!("bench-{}", w % 4),
                    key: format!("w{w}/k{}", i % 100),
                    value: value(),
                    codec: Codec::Json,
                    mode: WriteMode::Upsert,
                    if_version: None,
                };
                let t = Instant::now();
                store.put(request).await.expect("write");
                latencies.push(t.elapsed());
                i += 1;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("writer"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_micros() - cpu_before;
    latencies.sort_unstable();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0, Duration::as_micros)
    };
    let commits = counts.commits.load(Ordering::Relaxed) as f64;
    let writes = counts.writes.load(Ordering::Relaxed) as f64;
    Figures {
        writes_per_sec: latencies.len() as f64 / elapsed,
        commits_per_sec: commits / elapsed,
        mean_batch: if commits > 0.0 { writes / commits } else { 0.0 },
        p50_us: pick(0.50),
        p99_us: pick(0.99),
        cpu_us_per_write: cpu / (latencies.len().max(1) as f64),
    }
}

fn main() {
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("durable writes of 256-byte JSON values, {secs} s per case");
    println!();
    println!(
        "| writers | mode | writes/s | commits/s | mean batch | p50 µs | p99 µs | CPU µs/write |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    for writers in [1, 16, 64] {
        for (mode, max_batch) in [("one commit per write", 1), ("group commit", 1024)] {
            let f = runtime.block_on(run_case(writers, max_batch, Duration::from_secs(secs)));
            println!(
                "| {writers} | {mode} | {:.0} | {:.0} | {:.1} | {} | {} | {:.0} |",
                f.writes_per_sec,
                f.commits_per_sec,
                f.mean_batch,
                f.p50_us,
                f.p99_us,
                f.cpu_us_per_write
            );
        }
    }
}
