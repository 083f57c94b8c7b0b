//! The main job: count primes in ranges, serially and through a process pool, print
//! both wall times and the speedup, and show a panicking task handled as an error.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```

use std::time::Instant;

use procpool::{PanicInfo, ProcessPoolExecutor, TaskError};

/// Counts the primes in `[start, end)` by trial division: honest CPU work.
fn count_primes((start, end): (u64, u64)) -> u64 {
    (start.max(2)..end)
        .filter(|&n| (2..).take_while(|d| d * d <= n).all(|d| n % d != 0))
        .count() as u64
}

fn reject_negative(x: i64) -> i64 {
    if x < 0 {
        panic!("negative input: {x}");
    }
    x * 2
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    const LIMIT: u64 = 6_000_000;
    const RANGES: u64 = 48;
    let step = LIMIT / RANGES;
    let ranges: Vec<(u64, u64)> = (0..RANGES).map(|i| (i * step, (i + 1) * step)).collect();

    let t = Instant::now();
    let serial: u64 = ranges.iter().map(|&r| count_primes(r)).sum();
    let serial_time = t.elapsed();
    println!("serial:   {serial} primes below {LIMIT} in {serial_time:.2?}");

    let t = Instant::now();
    let pool = ProcessPoolExecutor::new()?;
    pool.ready().await?;
    let startup = t.elapsed();
    println!(
        "pool:     {} worker processes started in {startup:.2?}",
        pool.workers()
    );

    let t = Instant::now();
    let counts = pool
        .map(count_primes, ranges.iter().copied())
        .chunk_size(1)
        .await?;
    let pooled: u64 = counts.iter().sum();
    let pool_time = t.elapsed();
    println!("pooled:   {pooled} primes below {LIMIT} in {pool_time:.2?} ({RANGES} tasks)");
    assert_eq!(serial, pooled, "the pool must compute the same answer");
    println!(
        "speedup:  {:.2}x on {} workers",
        serial_time.as_secs_f64() / pool_time.as_secs_f64(),
        pool.workers()
    );

    // One task that panics: an error value, and the worker serves the next task.
    let handle = pool.submit(reject_negative, -5).await?;
    let pid = handle.started().await;
    match handle.await {
        Err(TaskError::Panicked(PanicInfo {
            message, location, ..
        })) => println!(
            "panic:    handled as an error: {message:?} at {} (worker {pid:?})",
            location.unwrap_or_default()
        ),
        other => println!("panic:    unexpected outcome {other:?}"),
    }
    let after = pool.run(reject_negative, 21).await?;
    println!("after:    the pool goes on: reject_negative(21) = {after}");

    pool.shutdown().await;
    let stats = pool.stats();
    println!(
        "stats:    {} completed, {} failed, {} worker restarts",
        stats.completed, stats.failed, stats.worker_restarts
    );
    Ok(())
}
