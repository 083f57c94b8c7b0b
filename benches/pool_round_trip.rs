//! W1: the round trip of a trivial task (`pool.run(f, x).await` in a loop), beside its
//! references in the same run:
//! - `pool`: procpool, one worker, driven from a 2-thread runtime;
//! - `pool_current_thread`: the same from a current-thread runtime (caller and
//!   driver share a thread);
//! - `spawn_blocking`: tokio's blocking pool doing the same work in-process (what a
//!   service would do without process isolation);
//! - `socketpair_threads`: an 8-byte ping-pong over a unix socketpair between two
//!   threads. `cargo bench --bench compare` has the same between two processes.
//!
//! ```text
//! cargo bench --bench pool_round_trip
//! ```

// criterion_group! generates an undocumented pub fn.
#![allow(missing_docs)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

mod common;

use common::trivial;

use criterion::{criterion_group, criterion_main, Criterion};

fn roundtrip(c: &mut Criterion) {
    let rt = common::runtime();
    let pool = common::ready_pool(&rt, 1);
    let mut group = c.benchmark_group("roundtrip_trivial_task");
    group.bench_function("pool", |b| {
        b.to_async(&rt)
            .iter(|| async { pool.run(trivial, 7).await.unwrap() })
    });
    let ct = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ct_pool = ct.block_on(common::ready_pool_on(1));
    group.bench_function("pool_current_thread", |b| {
        b.to_async(&ct)
            .iter(|| async { ct_pool.run(trivial, 7).await.unwrap() })
    });
    ct.block_on(ct_pool.shutdown());
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

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = roundtrip
}
criterion_main!(benches);
