//! W4: a 16 MiB `Vec<u8>` argument echoed back by a worker, beside the same 16 MiB sent
//! through a unix socketpair to a thread and back (the raw floor for one copy each way).
//! The pool side also pays for cloning the 16 MiB argument each iteration (`run`
//! takes it by value), a few ms of the total.
//!
//! Beside them, the shared-memory payload path: a 16 MiB `SharedMemory` passed to the
//! worker and returned (only its descriptor travels: `pool_shm_handle`), and the same
//! with the worker copying all 16 MiB out of it once (`pool_shm_copy_out`, one memcpy
//! of the payload). Throughput counts 2 × 16 MiB per echo in every case.
//!
//! ```text
//! cargo bench --bench pool_payload
//! ```

// criterion_group! generates an undocumented pub fn.
#![allow(missing_docs)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const SIZE: usize = 16 << 20;

fn echo(v: Vec<u8>) -> Vec<u8> {
    v
}

fn echo_shm(m: procpool::SharedMemory) -> procpool::SharedMemory {
    m
}

fn copy_out_shm(m: procpool::SharedMemory) -> (procpool::SharedMemory, u8) {
    let mut buf = vec![0u8; m.len()];
    m.read(0, &mut buf);
    let last = buf[buf.len() - 1];
    (m, last)
}

fn payload(c: &mut Criterion) {
    let rt = common::runtime();
    let pool = common::ready_pool(&rt, 1);
    let data: Vec<u8> = (0..SIZE).map(|i| i as u8).collect();
    let mut group = c.benchmark_group("echo_16mib");
    group.throughput(Throughput::Bytes(2 * SIZE as u64));
    group.bench_function("pool_vec_u8", |b| {
        b.to_async(&rt)
            .iter(|| async { pool.run(echo, data.clone()).await.unwrap() })
    });

    let shm = procpool::SharedMemory::new(SIZE).unwrap();
    shm.write(0, &data);
    group.bench_function("pool_shm_handle", |b| {
        b.to_async(&rt)
            .iter(|| async { pool.run(echo_shm, shm.clone()).await.unwrap() })
    });
    group.bench_function("pool_shm_copy_out", |b| {
        b.to_async(&rt)
            .iter(|| async { pool.run(copy_out_shm, shm.clone()).await.unwrap() })
    });

    let (mut a, mut peer) = UnixStream::pair().unwrap();
    let echoer = std::thread::spawn(move || {
        let mut buf = vec![0u8; SIZE];
        while peer.read_exact(&mut buf).is_ok() {
            if peer.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let mut back = vec![0u8; SIZE];
    group.bench_function("socketpair_threads", |b| {
        b.iter(|| {
            // Writer on its own thread so neither side blocks on a full socket buffer.
            std::thread::scope(|s| {
                let mut w = a.try_clone().unwrap();
                let data = &data;
                s.spawn(move || w.write_all(data).unwrap());
                a.read_exact(&mut back).unwrap();
            });
            back[SIZE - 1]
        })
    });
    group.finish();
    drop(a);
    echoer.join().unwrap();
    rt.block_on(pool.shutdown());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(20);
    targets = payload
}
criterion_main!(benches);
