//! `cfgnode bench`: a load generator over the client library.
//!
//! N workers issue operations for a fixed duration against the given nodes; a progress line
//! shows throughput every second; the end prints throughput and latency percentiles
//! (hdrhistogram, microseconds).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cfgnode_client::{Client, PutOptions};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;

use crate::exit::CliError;

/// What the workers do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchOp {
    /// Writes only.
    Put,
    /// Reads only (keys are written first).
    Get,
    /// 90 % reads, 10 % writes.
    Mixed,
}

/// Flags of `cfgnode bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Concurrent workers.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// How long to run (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Operation mix.
    #[arg(long, value_enum, default_value_t = BenchOp::Put)]
    pub op: BenchOp,
    /// Size of each value written.
    #[arg(long, default_value_t = 256)]
    pub value_bytes: usize,
    /// Distinct keys per namespace.
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Namespaces the keys are spread over.
    #[arg(long, default_value_t = 4)]
    pub namespaces: u64,
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Runs the benchmark and prints its figures.
pub async fn run(client: Client, args: BenchArgs) -> Result<(), CliError> {
    if args.concurrency == 0 || args.keys == 0 || args.namespaces == 0 {
        return Err(CliError::usage(
            "--concurrency, --keys and --namespaces must be at least 1",
        ));
    }
    let value = vec![b'x'; args.value_bytes];
    if args.op != BenchOp::Put {
        eprintln!("preparing {} keys ...", args.keys * args.namespaces);
        for ns in 0..args.namespaces {
            for key in 0..args.keys {
                client
                    .put(
                        &format!("bench-{ns}"),
                        &format!("k{key}"),
                        value.clone(),
                        PutOptions::default(),
                    )
                    .await?;
            }
        }
    }
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let client = client.clone();
        let value = value.clone();
        let (done, errors) = (Arc::clone(&done), Arc::clone(&errors));
        let (op, keys, namespaces) = (args.op, args.keys, args.namespaces);
        workers.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .expect("valid histogram bounds");
            let mut rng =
                0x9e37_79b9_7f4a_7c15u64 ^ (w as u64 + 1).wrapping_mul(0xff51_afd7_ed55_8ccd);
            while Instant::now() < deadline {
                let r = xorshift(&mut rng);
                let ns = format!("bench-{}", r % namespaces);
                let key = format!("k{}", (r >> 16) % keys);
                let write = match op {
                    BenchOp::Put => true,
                    BenchOp::Get => false,
                    BenchOp::Mixed => (r >> 40).is_multiple_of(10),
                };
                let t = Instant::now();
                let result = if write {
                    client
                        .put(&ns, &key, value.clone(), PutOptions::default())
                        .await
                        .map(drop)
                } else {
                    client.get(&ns, &key).await.map(drop)
                };
                let micros = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                histogram.saturating_record(micros.max(1));
                match result {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
            histogram
        }));
    }
    let progress = {
        let (done, errors) = (Arc::clone(&done), Arc::clone(&errors));
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let now = done.load(Ordering::Relaxed);
                eprint!(
                    "\r{:>5.0}s  {:>8} ops/s  {:>10} done  {:>6} errors",
                    started.elapsed().as_secs_f64(),
                    now - last,
                    now,
                    errors.load(Ordering::Relaxed)
                );
                last = now;
            }
        })
    };
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    for worker in workers {
        let h = worker
            .await
            .map_err(|e| CliError::other(format!("worker failed: {e}")))?;
        histogram
            .add(&h)
            .map_err(|e| CliError::other(e.to_string()))?;
    }
    progress.abort();
    eprintln!();
    let elapsed = started.elapsed().as_secs_f64();
    let ok = done.load(Ordering::Relaxed);
    println!(
        "op={:?} concurrency={} value_bytes={} keys={}x{} duration={:.1}s",
        args.op, args.concurrency, args.value_bytes, args.namespaces, args.keys, elapsed
    );
    println!(
        "throughput: {:.0} ops/s ({} ok, {} errors)",
        ok as f64 / elapsed,
        ok,
        errors.load(Ordering::Relaxed)
    );
    println!(
        "latency µs: p50 {}  p90 {}  p99 {}  max {}",
        histogram.value_at_quantile(0.50),
        histogram.value_at_quantile(0.90),
        histogram.value_at_quantile(0.99),
        histogram.max()
    );
    Ok(())
}
