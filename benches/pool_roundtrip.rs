//! Round trip of a trivial task and `map` throughput, each beside its references in the
//! same run:
//! - `pool`: procpool, one worker per measured stream of tasks;
//! - `spawn_blocking`: tokio's blocking pool doing the same work in-process (what a
//!   service would do without process isolation);
//! - `pool_startup`: building a pool, waiting for its workers and shutting it down.
//! - `socketpair_threads`: an 8-byte ping-pong over a unix socketpair between two
//!   threads, the floor any cross-process round trip is measured against.
//!
//! ```text
//! cargo bench --bench pool_roundtrip
//! ```

// criterion_group! generates an undocumented pub fn.
#![allow(missing_docs)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use procpool::ProcessPoolExecutor;

fn trivial(x: u64) -> u64 {
    x.wrapping_mul(2654435761)
}

fn roundtrip(c: &mut Criterion) {
    let rt = common::runtime();
    let pool = common::ready_pool(&rt, 1);
    let mut group = c.benchmark_group("roundtrip_trivial_task");
    group.bench_function("pool", |b| {
        b.to_async(&rt)
            .iter(|| async { pool.run(trivial, 7).await.unwrap() })
    });
    group.bench_function("spawn_blocking", |b| {
        b.to_async(&rt)
            .iter(|| async { tokio::task::spawn_blocking(|| trivial(7)).await.unwrap() })
    });

    let (mut a, mut peer) = UnixStream::pair().unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 8];
        while peer.read_exact(&mut buf).is_ok() {
            if peer.write_all(&buf).is_err() {
                break;
            }
        }
    });
    group.bench_function("socketpair_threads", |b| {
        b.iter(|| {
            let mut buf = 7u64.to_le_bytes();
            a.write_all(&buf).unwrap();
            a.read_exact(&mut buf).unwrap();
            u64::from_le_bytes(buf)
        })
    });
    group.finish();
    drop(a);
    echo.join().unwrap();
    rt.block_on(pool.shutdown());
}

fn map_throughput(c: &mut Criterion) {
    const ITEMS: u64 = 10_000;
    let rt = common::runtime();
    let pool = common::ready_pool(&rt, 2);
    let mut group = c.benchmark_group("map_10k_trivial_items");
    group.throughput(Throughput::Elements(ITEMS));
    for chunk in [1usize, 64, 512] {
        group.bench_with_input(
            BenchmarkId::new("pool_chunk", chunk),
            &chunk,
            |b, &chunk| {
                b.to_async(&rt)
                    .iter(|| async { pool.map(trivial, 0..ITEMS).chunk_size(chunk).await.unwrap() })
            },
        );
    }
    group.bench_function("pool_chunk_auto", |b| {
        b.to_async(&rt)
            .iter(|| async { pool.map(trivial, 0..ITEMS).await.unwrap() })
    });
    group.bench_function("spawn_blocking_per_item", |b| {
        b.to_async(&rt).iter(|| async {
            let handles: Vec<_> = (0..ITEMS)
                .map(|i| tokio::task::spawn_blocking(move || trivial(i)))
                .collect();
            let mut out = Vec::with_capacity(ITEMS as usize);
            for h in handles {
                out.push(h.await.unwrap());
            }
            out
        })
    });
    group.finish();
    rt.block_on(pool.shutdown());
}

fn startup(c: &mut Criterion) {
    let rt = common::runtime();
    let mut group = c.benchmark_group("pool_startup");
    for workers in [1usize, 2] {
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
    // The same with 1 GiB of touched heap in the parent: workers are started with
    // posix_spawn (vfork semantics), so the cost must not grow with the parent's size.
    let heap: Vec<u8> = vec![1u8; 1 << 30];
    group.bench_function("build_ready_shutdown_1gib_parent/1", |b| {
        b.to_async(&rt).iter(|| async {
            let pool = ProcessPoolExecutor::builder().workers(1).build().unwrap();
            pool.ready().await.unwrap();
            pool.shutdown().await;
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
    targets = roundtrip, map_throughput, startup
}
criterion_main!(benches);
