//! Locks, events and shared values across processes, beside Python's
//! `multiprocessing` doing the same work in the same run.
//!
//! `cargo bench --bench sync` prints one table: procpool's figure, Python's
//! (`benches/python/sync.py`, when `python3` is on the PATH) and the ratio (how many
//! times better procpool is). Median of `RUNS` runs each.
//!
//! - `lock_uncontended`: lock + unlock in one process, ns per pair.
//! - `lock_contended_2`: two child processes each lock + unlock `N` times on one lock,
//!   released together by an event; ns per pair.
//! - `event_round_trip`: parent sets event A, a child waiting on A clears it and sets
//!   B, the parent waiting on B clears it; µs per round trip (the parent async).
//! - `value_increments_2`: two children each do `N` locked increments of one shared
//!   `Value<i64>`; increments per second.
//!
//! `PROCPOOL_BENCH_QUICK=1` for a short smoke run.

use std::time::Instant;

use procpool::{Event, Lock, Process, Value};

mod common;

const RUNS: usize = 5;

fn n() -> usize {
    if std::env::var_os("PROCPOOL_BENCH_QUICK").is_some() {
        10_000
    } else {
        100_000
    }
}

fn contend((lock, n, start): (Lock, usize, Event)) {
    start.blocking_wait().unwrap();
    for _ in 0..n {
        drop(lock.blocking_lock().unwrap());
    }
}

fn bounce((mine, theirs, n): (Event, Event, usize)) {
    for _ in 0..n {
        theirs.blocking_wait().unwrap();
        theirs.clear();
        mine.set();
    }
}

fn increment((v, n, start): (Value<i64>, usize, Event)) {
    start.blocking_wait().unwrap();
    for _ in 0..n {
        v.update(|x| *x += 1);
    }
}

fn lock_uncontended(n: usize) -> f64 {
    let lock = Lock::new().unwrap();
    let t0 = Instant::now();
    for _ in 0..n {
        drop(lock.blocking_lock().unwrap());
    }
    t0.elapsed().as_secs_f64() / n as f64 * 1e9
}

async fn lock_contended(n: usize) -> f64 {
    let lock = Lock::new().unwrap();
    let start = Event::new().unwrap();
    let ps: Vec<_> = (0..2)
        .map(|_| Process::spawn(contend, (lock.clone(), n, start.clone())).unwrap())
        .collect();
    let t0 = Instant::now();
    start.set();
    for mut p in ps {
        p.join().await.unwrap();
    }
    t0.elapsed().as_secs_f64() / (2 * n) as f64 * 1e9
}

async fn event_round_trip(n: usize) -> f64 {
    let trips = (n / 50).max(100);
    let (a, b) = (Event::new().unwrap(), Event::new().unwrap());
    let mut p = Process::spawn(bounce, (b.clone(), a.clone(), trips)).unwrap();
    let t0 = Instant::now();
    for _ in 0..trips {
        a.set();
        b.wait().await.unwrap();
        b.clear();
    }
    let dt = t0.elapsed().as_secs_f64();
    p.join().await.unwrap();
    dt / trips as f64 * 1e6
}

async fn value_increments(n: usize) -> f64 {
    let v = Value::new(0i64).unwrap();
    let start = Event::new().unwrap();
    let ps: Vec<_> = (0..2)
        .map(|_| Process::spawn(increment, (v.clone(), n, start.clone())).unwrap())
        .collect();
    let t0 = Instant::now();
    start.set();
    for mut p in ps {
        p.join().await.unwrap();
    }
    let dt = t0.elapsed().as_secs_f64();
    assert_eq!(v.load(), 2 * n as i64);
    (2 * n) as f64 / dt
}

fn main() {
    let n = n();
    let rt = common::runtime();
    let mut ours: Vec<(&str, f64, &str)> = Vec::new();
    rt.block_on(async {
        let (mut a, mut b, mut c, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..RUNS {
            // Blocking code: off the runtime's threads, as a user's would be.
            a.push(
                tokio::task::spawn_blocking(move || lock_uncontended(n))
                    .await
                    .unwrap(),
            );
            b.push(lock_contended(n).await);
            c.push(event_round_trip(n).await);
            d.push(value_increments(n).await);
        }
        ours.push(("lock_uncontended", common::median(a), "ns"));
        ours.push(("lock_contended_2", common::median(b), "ns"));
        ours.push(("event_round_trip", common::median(c), "us"));
        ours.push(("value_increments_2", common::median(d), "ops/s"));
    });
    let py = common::python("sync.py", &[n.to_string()], RUNS);
    common::print_table(
        &format!("n = {n}, median of {RUNS} runs"),
        &ours,
        py.as_deref(),
    );
}
