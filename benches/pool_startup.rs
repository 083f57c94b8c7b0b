//! W5: a pool built and its first result back, and a whole build-ready-shutdown
//! cycle, for 1 and 2 workers; an elastic pool's first result with no worker up; the same with 1 GiB of touched heap in the parent
//! (workers start with posix_spawn, vfork semantics: the cost must not grow with the
//! parent's size).
//!
//! ```text
//! cargo bench --bench pool_startup
//! ```

// criterion_group! generates an undocumented pub fn.
#![allow(missing_docs)]

use std::time::Duration;

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use procpool::ProcessPoolExecutor;

fn trivial(x: u64) -> u64 {
    x + 1
}

async fn first_result(workers: usize) -> ProcessPoolExecutor {
    let pool = ProcessPoolExecutor::builder()
        .workers(workers)
        .build()
        .unwrap();
    pool.run(trivial, 1).await.unwrap();
    pool
}

fn startup(c: &mut Criterion) {
    let rt = common::runtime();
    let mut group = c.benchmark_group("pool_startup");
    for workers in [1usize, 2] {
        // Only the build and the first result are timed; shutdown happens outside.
        group.bench_with_input(
            BenchmarkId::new("build_first_result", workers),
            &workers,
            |b, &n| {
                b.to_async(&rt).iter_custom(|iters| async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = std::time::Instant::now();
                        let pool = first_result(n).await;
                        total += t.elapsed();
                        pool.shutdown().await;
                    }
                    total
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("build_ready_shutdown", workers),
            &workers,
            |b, &n| {
                b.to_async(&rt).iter(|| async move {
                    let pool = ProcessPoolExecutor::builder().workers(n).build().unwrap();
                    pool.ready().await.unwrap();
                    pool.shutdown().await;
                })
            },
        );
    }
    // An elastic pool at min_workers = 0 whose workers all retired: the time from
    // submitting to the first result, a worker's start included. Only that is timed;
    // waiting for the retirement is not.
    group.bench_function("elastic_cold_first_result", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let pool = ProcessPoolExecutor::builder()
                .min_workers(0)
                .max_workers(2)
                .idle_timeout(Duration::from_millis(1))
                .build()
                .unwrap();
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                pool.__wait_for_live_workers(0).await;
                let t = std::time::Instant::now();
                pool.run(trivial, 1).await.unwrap();
                total += t.elapsed();
            }
            pool.shutdown().await;
            total
        })
    });
    let heap: Vec<u8> = vec![1u8; 1 << 30];
    group.bench_function("build_first_result_1gib_parent/2", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = std::time::Instant::now();
                let pool = first_result(2).await;
                total += t.elapsed();
                pool.shutdown().await;
            }
            total
        })
    });
    group.finish();
    assert_eq!(
        heap.iter()
            .step_by(4096)
            .map(|&b| b as usize)
            .sum::<usize>(),
        1 << 18
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = startup
}
criterion_main!(benches);
