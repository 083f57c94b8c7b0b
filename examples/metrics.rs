//! Exporting the pool's statistics: a load of mixed tasks, and a snapshot printed
//! every second, as an exporter (Prometheus, StatsD, OpenTelemetry) would read it.
//!
//! ```text
//! cargo run --release --example metrics
//! ```

use std::time::Duration;

use procpool::{PoolStats, ProcessPoolExecutor};

/// Some work, and now and then a panic.
fn work(n: u64) -> u64 {
    assert!(!n.is_multiple_of(97), "item {n} is unlucky");
    (0..100_000 + n % 1000).fold(n, |acc, x| acc.wrapping_mul(31).wrapping_add(x))
}

fn print(elapsed: Duration, s: &PoolStats) {
    println!(
        "{:>4.1}s  queued {:>5}  running {:>3}  completed {:>6}  failed {:>3} \
         (panicked {:>3})  workers {}  latency p50 {:>8.2?} p99 {:>8.2?} max {:>8.2?}",
        elapsed.as_secs_f64(),
        s.queued,
        s.running,
        s.completed,
        s.failed,
        s.panicked,
        s.workers_live,
        s.latency.p50,
        s.latency.p99,
        s.latency.max,
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = ProcessPoolExecutor::builder().build()?;
    pool.ready().await?;
    let started = tokio::time::Instant::now();

    // The load: tasks submitted one by one (waiting for room), and a long map.
    let submitter = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut handles = Vec::new();
            for n in 0..20_000u64 {
                handles.push(pool.submit(work, n).await?);
            }
            futures::future::join_all(handles).await;
            Ok::<_, procpool::TaskError>(())
        })
    };
    let mapper = {
        let pool = pool.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            pool.map_unordered(work, 0..50_000u64).count().await
        })
    };

    // The exporter: read a snapshot on its own schedule until the load is done.
    let load = async { tokio::try_join!(submitter, mapper) };
    tokio::pin!(load);
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.tick().await;
    let (submitted, mapped) = loop {
        tokio::select! {
            _ = every.tick() => print(started.elapsed(), &pool.stats()),
            done = &mut load => break done?,
        }
    };
    submitted?;
    let s = pool.stats();
    print(started.elapsed(), &s);
    println!(
        "done: {} items submitted ({mapped} through the map), {} completed, {} failed",
        s.submitted, s.completed, s.failed
    );
    pool.shutdown().await;
    Ok(())
}
