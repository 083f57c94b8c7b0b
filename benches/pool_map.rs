//! W2 and W3: throughput of many trivial tasks, and CPU-bound tasks spread over two
//! workers, beside their references in the same run.
//!
//! - `map_1m_trivial/pool_map_auto`: `pool.map(f, 0..1_000_000)` with automatic chunks;
//!   `pool_submit`: the same million as individual `submit`s (no chunking), at most
//!   65,536 outstanding; `spawn_blocking`: tokio's blocking pool, the same way.
//! - `cpu_64x10ms/pool_map`: 64 tasks of about 10 ms each on 2 workers (chunk size
//!   1); `serial`: the same 64 in this thread.
//!
//! ```text
//! cargo bench --bench pool_map
//! ```

// criterion_group! generates an undocumented pub fn.
#![allow(missing_docs)]

use std::time::Duration;

mod common;

use common::{calibrate_10ms, spin, trivial, windowed};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const TASKS: u64 = 1_000_000;

fn many_trivial(c: &mut Criterion) {
    let rt = common::runtime();
    let pool = rt.block_on(common::ready_pool_on(2));
    let mut group = c.benchmark_group("map_1m_trivial");
    group.throughput(Throughput::Elements(TASKS));
    group.bench_function("pool_map_auto", |b| {
        b.to_async(&rt)
            .iter(|| async { pool.map(trivial, 0..TASKS).await.unwrap() })
    });
    group.bench_function("pool_submit", |b| {
        b.to_async(&rt)
            .iter(|| windowed(TASKS, |i| pool.try_submit(trivial, i).unwrap()))
    });
    group.bench_function("spawn_blocking", |b| {
        b.to_async(&rt)
            .iter(|| windowed(TASKS, |i| tokio::task::spawn_blocking(move || trivial(i))))
    });
    group.finish();
    rt.block_on(pool.shutdown());
}

fn cpu_bound(c: &mut Criterion) {
    let iters = calibrate_10ms();
    let rt = common::runtime();
    let pool = common::ready_pool(&rt, 2);
    let mut group = c.benchmark_group("cpu_64x10ms");
    group.bench_function("pool_map", |b| {
        b.to_async(&rt).iter(|| async {
            pool.map(spin, std::iter::repeat_n(iters, 64))
                .chunk_size(1)
                .await
                .unwrap()
        })
    });
    group.bench_function("serial", |b| {
        b.iter(|| {
            (0..64)
                .map(|_| spin(std::hint::black_box(iters)))
                .collect::<Vec<_>>()
        })
    });
    group.finish();
    rt.block_on(pool.shutdown());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .sample_size(10);
    targets = many_trivial, cpu_bound
}
criterion_main!(benches);
